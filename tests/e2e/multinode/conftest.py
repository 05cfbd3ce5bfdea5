"""The multi-node swarms as fixtures: three managers for the session (each test gets it back with its
services removed, every node running, active and unlabelled), and a manager with three workers for the
tests about what workers do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bed import BedUnavailable, bed_required, missing_prerequisites
from tests.multinode import MultiNodeBed, missing_network_prerequisites, start_multinode

REQUIRED = "the multi-node test bed is required here (CI / REQUIRE_SWARM=1) but cannot start"


def _booted(managers: int, workers: int) -> Iterator[MultiNodeBed]:
    try:
        bed = start_multinode(managers=managers, workers=workers)
    except BedUnavailable as e:
        if bed_required():
            pytest.fail(f"{REQUIRED}: {e}")
        pytest.skip(f"multi-node test bed unavailable: {e}")
    print(f"\nmulti-node bed: {managers} manager(s) + {workers} worker(s) booted in {bed.boot_seconds:.1f}s")
    yield bed
    survivors = bed.stop()
    assert not survivors, f"the multi-node bed left these behind: {survivors}"


@pytest.fixture(scope="session")
def swarm3() -> Iterator[MultiNodeBed]:
    """Three managers (Raft keeps quorum when one stops), each its own dockerd in its own namespace."""
    yield from _booted(3, 0)


@pytest.fixture(scope="module")
def swarm_workers() -> Iterator[MultiNodeBed]:
    """One manager and three workers: the common shape where the receiver's manager runs no tasks."""
    yield from _booted(1, 3)


@pytest.fixture
def multinode_prerequisites() -> None:
    """For tests that boot beds of their own: skip where the bed cannot run, fail under CI."""
    problem = missing_prerequisites() or missing_network_prerequisites()
    if problem and bed_required():
        pytest.fail(f"{REQUIRED}: {problem}")
    if problem:
        pytest.skip(f"multi-node test bed unavailable: {problem}")


def _clean(bed: MultiNodeBed) -> Iterator[MultiNodeBed]:
    yield bed
    # A test that failed half-way may have left a node stopped: the next test needs all of them.
    for node in bed.nodes:
        if node.dockerd.poll() is not None:
            bed.start_node(node)
    bed.remove_all_services()
    bed.reset_nodes()


@pytest.fixture
def mbed(swarm3: MultiNodeBed) -> Iterator[MultiNodeBed]:
    yield from _clean(swarm3)


@pytest.fixture
def wbed(swarm_workers: MultiNodeBed) -> Iterator[MultiNodeBed]:
    yield from _clean(swarm_workers)
