"""Fixtures for nginx in front of the real receiver (``webhook-server serve``) and a recording web service.

The stack is module-scoped (nginx and gunicorn boot once per module); tests that change state use their own
client source address (127.0.0.x) so rate limits keyed on it do not leak between tests.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bed import RootfsUnavailable, SwarmBed, free_port, stop_process, unavailable
from tests.nginx_bed import (
    Nginx,
    Recorder,
    Rootfs,
    debootstrap_nginx,
    make_dir,
    prepare_prefix,
    relocate,
    require,
    self_signed,
    start_challtestsrv,
    start_nginx,
    start_recorder,
)
from tests.server import WEBHOOK_TOKEN, Server, server_env, start_server
from webhook_server.proxy.config import ProxyConfig

HOOKS = "hooks.test"
WWW = "www.test"
RULES = """\
services:
  web:
    repository: acme/web
    tags: latest
"""
# Nothing listens here: the receiver's executor retries Docker quietly, which these tests never need.
NO_DOCKER = "unix:///nonexistent/docker.sock"


def proxy_config(*, receiver_port: int, site_port: int, **webhook: object) -> ProxyConfig:
    """The proxy section under test; names resolve (through challtestsrv) to 127.0.0.1."""
    return ProxyConfig.model_validate(
        {
            "nginx_version": "1.22",
            "openssl_version": "3.0",
            "webhook": {
                "server_name": HOOKS,
                "upstream": {"host": "receiver.test", "port": receiver_port},
                "max_body_size": "64k",
                "rate": "20r/s",
                "burst": 10,
                **webhook,
            },
            "sites": [{"server_names": [WWW], "upstream": {"host": "echo.test", "port": site_port}}],
        }
    )


@dataclass
class ProxyStack:
    nginx: Nginx
    receiver: Server
    echo: Recorder
    certs: Path
    token: str = WEBHOOK_TOKEN

    def ca(self, name: str) -> Path:
        """The self-signed certificate served for ``name``: it is its own CA."""
        return self.certs / name / "fullchain.pem"


@pytest.fixture(scope="module")
def nginx_binaries() -> None:
    require("nginx", "openssl", "pebble-challtestsrv")


@pytest.fixture(scope="module")
def dns(nginx_binaries: None) -> Iterator[str]:
    """A DNS server answering 127.0.0.1 for every name: the test's stand-in for Docker's 127.0.0.11."""
    root = make_dir("nginx-dns-")
    proc, port = start_challtestsrv(root)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real receiver. It trusts X-Forwarded-For from 127.0.0.1 only: nginx's address here."""
    root = tmp_path_factory.mktemp("receiver")
    rules = root / "deploy_rules.yaml"
    rules.write_text(RULES)
    env = server_env(root, docker_host=NO_DOCKER, rules=rules, extra={"WEBHOOK_TRUSTED_PROXIES": "127.0.0.1"})
    server = start_server(root, env=env, workers=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(dns: str, receiver: Server) -> Iterator[ProxyStack]:
    prefix = make_dir("nginx-e2e-")
    echo = start_recorder()
    nginx: Nginx | None = None
    try:
        for name in (HOOKS, WWW):
            self_signed(prefix / "live" / name, [name])
        http_port, https_port = free_port(), free_port()
        receiver_port = int(receiver.url.rsplit(":", 1)[1])
        config = relocate(
            proxy_config(receiver_port=receiver_port, site_port=echo.port),
            prefix,
            http_port=http_port,
            https_port=https_port,
            resolver=dns,
        )
        prepare_prefix(prefix, config)
        nginx = start_nginx(prefix, http_port=http_port, https_port=https_port)
        yield ProxyStack(nginx=nginx, receiver=receiver, echo=echo, certs=prefix / "live")
    finally:
        survivors = nginx.stop() if nginx else []
        echo.stop()
        shutil.rmtree(prefix, ignore_errors=True)
        assert not survivors, survivors


@pytest.fixture(scope="session")
def debian_rootfs() -> Iterator[Rootfs]:
    """Debian trixie's nginx (1.26, OpenSSL 3.5) in a debootstrap rootfs, made once per session (~30 s).

    It checks the template's modern branch (``http2 on;``, the hybrid post-quantum group) with a real nginx
    that has it, and it is the Swarm test image for reload-proxy.
    """
    require("nginx")
    root = make_dir("nginx-rootfs-")
    try:
        try:
            rootfs = debootstrap_nginx(root / "rootfs")
        except RootfsUnavailable as e:
            unavailable(str(e))
        yield rootfs
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- nginx as a Swarm service (reload-proxy, and the reload over the API) ----------------------------
# Where the service's host directory (nginx.conf, certificates) is bind-mounted.
MOUNT = "/srv/proxy"
# The official nginx image's way: a wrapper entrypoint that execs its Cmd. A plain `nginx -t` in such a
# container checks the image's /etc/nginx/nginx.conf, not the -c file its nginx runs.
ENTRYPOINT = '#!/bin/sh\nset -e\nexec "$@"\n'
STARTS = {
    "command": [f'CMD ["nginx", "-c", "{MOUNT}/nginx.conf", "-g", "daemon off;"]'],
    "entrypoint": [
        'ENTRYPOINT ["/docker-entrypoint.sh"]',
        f'CMD ["nginx", "-c", "{MOUNT}/nginx.conf", "-g", "daemon off;"]',
    ],
}


@pytest.fixture(scope="session")
def nginx_images(swarm_bed: SwarmBed, debian_rootfs: Rootfs) -> Callable[[str], str]:
    """The test image started each way of STARTS, made on first use."""
    made: dict[str, str] = {}

    def image(start: str) -> str:
        if start not in made:
            tar = debian_rootfs.tar(swarm_bed.root / f"nginx-{start}.tar")
            try:
                with tarfile.open(tar, "a") as archive:
                    entry = tarfile.TarInfo("./docker-entrypoint.sh")
                    entry.size, entry.mode = len(ENTRYPOINT), 0o755
                    archive.addfile(entry, io.BytesIO(ENTRYPOINT.encode()))
                version = f"{debian_rootfs.build.nginx[0]}.{debian_rootfs.build.nginx[1]}"
                ref = f"{swarm_bed.registry}/proxy/nginx-{start}:{version}"
                made[start] = swarm_bed.import_rootfs(tar, ref, changes=STARTS[start])
            finally:
                tar.unlink(missing_ok=True)
        return made[start]

    return image
