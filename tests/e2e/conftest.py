from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.bed import RootfsUnavailable, SwarmBed, bed_required
from tests.images import BuildFailed, Images, build_images
from tests.server import Server, server_env, start_server

ServerFactory = Callable[..., Server]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start ``webhook-server serve`` with the given rules text; every server is stopped after the test."""
    started: list[Server] = []

    def make(rules: str, *, docker_host: str | None, workers: int = 2, env: dict[str, str] | None = None) -> Server:
        root = tmp_path / f"server{len(started)}"
        root.mkdir()
        rules_path = root / "deploy_rules.yaml"
        rules_path.write_text(rules)
        server = start_server(
            root, env=server_env(root, docker_host=docker_host, rules=rules_path, extra=env), workers=workers
        )
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def images(swarm_bed: SwarmBed, tmp_path_factory: pytest.TempPathFactory) -> Images:
    """The receiver built from the Dockerfile (once per session: the build is the slow part), and nginx."""
    try:
        return build_images(swarm_bed, tmp_path_factory.mktemp("receiver-image"))
    except RootfsUnavailable as e:
        if bed_required():
            pytest.fail(f"cannot make the base image: {e}")
        pytest.skip(f"cannot make the base image: {e}")
    except BuildFailed as e:
        pytest.fail(str(e))
