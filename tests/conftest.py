"""Shared fixtures. The real Swarm bed is a session fixture; tests that use it are marked ``swarm``.

Under pytest-xdist (``scripts/test`` runs ``-n 2 --dist loadgroup``) every test gets a group:
the tests of the multi-node beds (and of the receiver's image, which the multi-node nginx test also runs)
go to one worker, the tests of the one-node bed (and of the Debian rootfs for nginx) to one worker, and
every other module is a group of its own, run by whichever worker is free. Session fixtures are per worker,
so each expensive bed boots in the one worker whose tests need it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

# The xdist worker this process is ("gw0", "gw1", ...); empty without xdist.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")

MULTINODE = "multinode"
SINGLENODE = "singlenode"
# The session fixtures that make a group: a module with a test that needs one of them runs in that group's
# worker. A module that asks for one at run time (request.getfixturevalue) names its group: XDIST_GROUP.
GROUP_FIXTURES = {
    MULTINODE: {"swarm3", "swarm_workers", "multinode_prerequisites", "images", "job_image", "image_build"},
    SINGLENODE: {"swarm_bed", "debian_rootfs"},
}
GROUP_KEY = pytest.StashKey[str]()
GROUPS_FILE = "bed_groups"  # the workerinput key: where the workers write each test's group


def bed_group(item: pytest.Item) -> str:
    """The worker group of ``item`` (set at collection): the bed its module needs, else the module itself
    (module fixtures then boot once)."""
    return item.stash.get(GROUP_KEY, "") or item.nodeid.split("::", 1)[0]


def _fixture_group(item: pytest.Item) -> str | None:
    module = getattr(item, "module", None)
    declared: str | None = getattr(module, "XDIST_GROUP", None)
    if declared:
        return declared
    names = set(getattr(item, "fixturenames", ()))
    return next((group for group, fixtures in GROUP_FIXTURES.items() if names & fixtures), None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test its group, and under xdist put the two beds' groups first, so that the two workers
    start on them at once and the short groups fill in after."""
    modules: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        group = _fixture_group(item)
        if group and module not in modules:
            modules[module] = group
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        item.stash[GROUP_KEY] = modules.get(module, module)
    if WORKER:
        rank = {MULTINODE: 0, SINGLENODE: 1}
        items.sort(key=lambda i: rank.get(bed_group(i), 2))


# ---- the scheduler: xdist's loadscope, with the groups above as scopes ---------------------------------
# (xdist's own loadgroup reads xdist_group marks by renaming nodeids, which pytest 9.2 no longer allows.)
# The controller does not collect: each worker writes its collection's groups to a file the controller
# names, and the controller reads it when it schedules, after every worker has collected.


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    if _GROUPS_DIR not in node.config.stash:
        node.config.stash[_GROUPS_DIR] = tempfile.mkdtemp(prefix="pytest-groups-")
    directory = node.config.stash[_GROUPS_DIR]
    node.workerinput[GROUPS_FILE] = str(Path(directory) / "groups.json")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    target = getattr(session.config, "workerinput", {}).get(GROUPS_FILE)
    if target:
        mine = Path(f"{target}.{WORKER}")
        mine.write_text(json.dumps({item.nodeid: bed_group(item) for item in session.items}))
        os.replace(mine, target)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BedGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = json.loads((Path(config.stash[_GROUPS_DIR]) / "groups.json").read_text())
            return self.groups.get(nodeid, nodeid)

    return BedGroupScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_GROUPS_DIR, None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


_GROUPS_DIR = pytest.StashKey[str]()


@pytest.fixture
def bed(swarm_bed: SwarmBed) -> Iterator[SwarmBed]:
    """The session bed, with every service a test created removed after it."""
    yield swarm_bed
    swarm_bed.remove_all_services()


@pytest.fixture
def unique() -> str:
    """A name unique in the session, for services and repositories (Swarm names are global)."""
    return f"t{next(_names)}x{int(time.time() * 1000) % 100000}{WORKER}"
