"""The multi-node swarm as a session fixture; each test gets it back with its services removed, every node
running, active and unlabelled."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.bed import BedUnavailable, bed_required, missing_prerequisites
from tests.multinode import MultiNodeBed, missing_network_prerequisites, start_multinode


@pytest.fixture(scope="session")
def swarm3() -> Iterator[MultiNodeBed]:
    """Three managers (Raft keeps quorum when one stops), each its own dockerd in its own namespace."""
    started = time.monotonic()
    try:
        bed = start_multinode(managers=3)
    except BedUnavailable as e:
        if bed_required():
            pytest.fail(f"the multi-node test bed is required here (CI / REQUIRE_SWARM=1) but cannot start: {e}")
        pytest.skip(f"multi-node test bed unavailable: {e}")
    print(f"\nmulti-node bed: 3 managers booted in {time.monotonic() - started:.1f}s on {bed.subnet}.0/24")
    yield bed
    survivors = bed.stop()
    assert not survivors, f"the multi-node bed left these behind: {survivors}"


@pytest.fixture
def multinode_prerequisites() -> None:
    """For tests that boot beds of their own: skip where the bed cannot run, fail under CI."""
    problem = missing_prerequisites() or missing_network_prerequisites()
    if problem and bed_required():
        pytest.fail(f"the multi-node test bed is required here (CI / REQUIRE_SWARM=1) but cannot start: {problem}")
    if problem:
        pytest.skip(f"multi-node test bed unavailable: {problem}")


@pytest.fixture
def mbed(swarm3: MultiNodeBed) -> Iterator[MultiNodeBed]:
    yield swarm3
    # A test that failed half-way may have left a node stopped: the next test needs all three.
    for node in swarm3.nodes:
        if node.dockerd.poll() is not None:
            swarm3.start_node(node)
    swarm3.remove_all_services()
    swarm3.reset_nodes()
