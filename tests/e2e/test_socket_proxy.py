"""The receiver through the shipped Docker socket proxy (deploy/docker-socket-proxy.conf, real nginx): a
rollout succeeds with only the endpoints it allows, and everything else is refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.bed import SwarmBed, free_port, unavailable, wait_for
from tests.e2e.conftest import ServerFactory
from tests.e2e.test_rollout import rules_for, spec_image
from tests.server import documented_payload

pytestmark = pytest.mark.swarm

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "docker-socket-proxy.conf"


@pytest.fixture
def socket_proxy(bed: SwarmBed, tmp_path: Path) -> Iterator[str]:
    """The shipped config on 127.0.0.1 in front of the bed's socket; yields its DOCKER_HOST."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        unavailable("nginx is not installed")
    port = free_port()
    conf = tmp_path / "docker-socket-proxy.conf"
    conf.write_text(
        CONFIG.read_text()
        .replace("listen 2375;", f"listen 127.0.0.1:{port};")
        .replace("unix:/var/run/docker.sock", f"unix:{bed.docker_host.removeprefix('unix://')}")
        .replace("access_log /dev/stdout;", f"access_log {tmp_path / 'access.log'};")
    )
    # As root the workers would drop to nobody, who cannot open the bed's socket; the shipped config leaves
    # the user to the container it runs in.
    globals_ = f"daemon off; user root; pid {tmp_path / 'nginx.pid'}; error_log {tmp_path / 'error.log'};"
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-g", globals_])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=30, interval=0.1, what="the socket proxy listening")
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/_ping", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_a_rollout_needs_only_what_the_socket_proxy_allows(
    bed: SwarmBed, unique: str, make_server: ServerFactory, socket_proxy: str
) -> None:
    repo = f"acme/{unique}"
    old = bed.make_image(repo, "1.0.0")
    new = bed.make_image(repo, "1.1.0")
    bed.make_image(repo, "1.1.1", kind="unhealthy")
    bed.create_service(unique, f"{old}@{bed.registry_digest(old)}", replicas=1)
    server = make_server(rules_for(bed, repo, unique), docker_host=socket_proxy)

    assert server.session.get(f"{server.url}/readyz", timeout=30).status_code == 200
    done = server.wait_done(server.hook(documented_payload(repo, "1.1.0")).json()["deployments"][0]["id"])
    assert done["state"] == "succeeded", done
    assert spec_image(bed, unique) == f"{new}@{bed.registry_digest(new)}"
    # A rollback's reason, health check output included, is read through the proxy too.
    failed = server.wait_done(server.hook(documented_payload(repo, "1.1.1")).json()["deployments"][0]["id"])
    assert failed["state"] == "rolled_back", failed
    assert "health check failed: exit 1" in failed["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/containers/create"),
        ("GET", "/containers/json"),
        ("POST", "/v1.41/containers/abc/exec"),
        ("GET", "/secrets"),
        ("POST", "/services/create"),
        ("DELETE", "/services/web"),
        ("POST", "/swarm/leave"),
        ("GET", "/images/json"),
    ],
)
def test_everything_else_is_refused(socket_proxy: str, method: str, path: str) -> None:
    url = socket_proxy.replace("tcp://", "http://")
    assert requests.request(method, f"{url}{path}", timeout=10).status_code == 403
