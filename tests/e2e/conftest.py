from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.bed import RootfsUnavailable, SwarmBed, bed_required
from tests.conftest import WORKER, bed_group
from tests.images import BuildFailed, Images, build_images
from tests.pg import PgCluster
from tests.server import Server, server_env, start_server

ServerFactory = Callable[..., Server]


# For modules whose every test runs on both journals: ``pytestmark = [..., ON_BOTH_JOURNALS]``.
ON_BOTH_JOURNALS = pytest.mark.parametrize("journal_backend", ["sqlite", "postgresql"])


@pytest.fixture
def journal_backend() -> str:
    """Where ``make_server`` keeps its journal; a module runs on both with a parametrized override."""
    return "sqlite"


@pytest.fixture
def make_server(tmp_path: Path, journal_backend: str, request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Start ``webhook-server serve`` with the given rules text; every server is stopped after the test."""
    started: list[Server] = []
    pg: PgCluster | None = request.getfixturevalue("pg_cluster") if journal_backend == "postgresql" else None

    def make(rules: str, *, docker_host: str | None, workers: int = 2, env: dict[str, str] | None = None) -> Server:
        root = tmp_path / f"server{len(started)}"
        root.mkdir()
        rules_path = root / "deploy_rules.yaml"
        rules_path.write_text(rules)
        extra = dict(env or {})
        if pg is not None:
            extra.setdefault("WEBHOOK_DB", pg.create_database())
        server = start_server(
            root, env=server_env(root, docker_host=docker_host, rules=rules_path, extra=extra), workers=workers
        )
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def image_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[Images]]:
    """The receiver's image, built in the background (``start_image_build``): the build is the slowest part
    of the suite (minutes), and most tests wait on Swarm, not on the CPU. The tests that need the image run
    last (``pytest_collection_modifyitems``)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-build")
    future: Future[Images] = Future()
    try:
        bed: SwarmBed = request.getfixturevalue("swarm_bed")
    except pytest.skip.Exception as e:
        future.set_exception(RootfsUnavailable(f"no Swarm test bed: {e}"))
    else:
        future = pool.submit(build_images, bed, tmp_path_factory.mktemp("receiver-image"))
    yield future
    pool.shutdown(wait=True)  # a build still running ends before the bed it builds on stops


@pytest.fixture(autouse=True)
def start_image_build(request: pytest.FixtureRequest) -> None:
    """Start the image's build at the first end-to-end test of a run that needs the image; under xdist, at
    the first test of the group that holds the image's tests (its worker alone builds it)."""
    session = request.session
    wanted = getattr(session, "_image_wanted", None)
    if wanted is None:
        wanted = {bed_group(i) for i in session.items if _needs_image(i)}
        session._image_wanted = wanted  # type: ignore[attr-defined]
    if wanted and (not WORKER or bed_group(request.node) in wanted):
        request.getfixturevalue("image_build")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that need the image last, so that its build overlaps everything before them."""
    needs = [i for i in items if _needs_image(i)]
    if needs:
        items[:] = [i for i in items if i not in needs] + needs


def _needs_image(item: pytest.Item) -> bool:
    return bool({"images", "job_image"} & set(getattr(item, "fixturenames", ())))


@pytest.fixture(scope="session")
def images(image_build: Future[Images]) -> Images:
    """The receiver built from the Dockerfile (once per session: the build is the slow part), and nginx."""
    try:
        return image_build.result()
    except RootfsUnavailable as e:
        if bed_required():
            pytest.fail(f"cannot make the base image: {e}")
        pytest.skip(f"cannot make the base image: {e}")
    except BuildFailed as e:
        pytest.fail(str(e))
