"""Shared fixtures. The real Swarm bed is a session fixture; tests that use it are marked ``swarm``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from tests.bed import BedUnavailable, SwarmBed, bed_required, start_bed
from tests.pg import PgCluster, private_cluster


@pytest.fixture(scope="session")
def swarm_bed() -> Iterator[SwarmBed]:
    started = time.monotonic()
    try:
        bed = start_bed()
    except BedUnavailable as e:
        if bed_required():
            pytest.fail(f"the Swarm test bed is required here (CI / REQUIRE_SWARM=1) but cannot start: {e}")
        pytest.skip(f"Swarm test bed unavailable: {e}")
    bed.boot_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    yield bed
    survivors = bed.stop()
    assert not survivors, f"the test bed left these behind: {survivors}"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One private PostgreSQL for the session (skips without Debian's postgresql; fails under CI)."""
    with private_cluster() as cluster:
        yield cluster


_names = itertools.count(1)


@pytest.fixture
def bed(swarm_bed: SwarmBed) -> Iterator[SwarmBed]:
    """The session bed, with every service a test created removed after it."""
    yield swarm_bed
    swarm_bed.remove_all_services()


@pytest.fixture
def unique() -> str:
    """A name unique in the session, for services and repositories (Swarm names are global)."""
    return f"t{next(_names)}x{int(time.time() * 1000) % 100000}"
