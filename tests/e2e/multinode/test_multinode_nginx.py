"""nginx on every node: after a certificate renewal, `reload-proxy` makes every node's nginx serve the new
certificate without one failed request, and a check failing on any node reloads nothing anywhere.

nginx runs as a global service on the host network of each node (the bed's dockerd has no iptables, so
published ports forward nothing; host networking is also what many operators run nginx with). This node's
task is checked and signalled through this node's Docker; the others by a one-off job of the receiver's
own image on each of them (`--job-image`), which reaches its node's Docker through `--node-socket`, a
Swarm template naming each node's socket. Clients poll every node over TLS throughout.
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from docker.types import Healthcheck, Mount, ServiceMode

from tests.bed import SwarmBed, wait_for
from tests.images import Images, copy_image
from tests.multinode import MultiNodeBed, Node
from tests.nginx_bed import self_signed

pytestmark = pytest.mark.swarm

PORT = 8443
NGINX_CONF = f"""
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events {{}}
http {{
    access_log off;
    server {{
        listen {PORT} ssl;
        ssl_certificate /certs/fullchain.pem;
        ssl_certificate_key /certs/privkey.pem;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


@dataclass
class Poller:
    """Asks one node for / over a new TLS connection, again and again; notes every failure and the
    certificate served."""

    address: str
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    serial: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def once(self) -> int:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((self.address, PORT), timeout=5) as raw, context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            tls.sendall(b"GET / HTTP/1.0\r\nHost: site.test\r\n\r\n")
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(answer[:80].decode(errors="replace"))
        return x509.load_der_x509_certificate(der).serial_number

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.serial = self.once()
                self.ok += 1
            except (OSError, RuntimeError, ssl.SSLError) as e:
                self.failures.append(f"{self.address}: {e!r}")

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)


def serial_of(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def renew(certs: Path, work: Path) -> int:
    """A new certificate and key, swapped in as certbot's renewal does; returns the new serial."""
    cert, key = self_signed(work, ["site.test"])
    os.replace(key, certs / "privkey.pem")
    os.replace(cert, certs / "fullchain.pem")
    return serial_of(certs / "fullchain.pem")


@pytest.fixture(scope="module")
def job_image(swarm3: MultiNodeBed, swarm_bed: SwarmBed, images: Images) -> str:
    """The receiver's image in the multi-node bed's registry, where every node pulls it from."""
    mbed = swarm3
    repository = f"{mbed.registry}/acme/webhook-server"
    if not mbed.nodes[0].client.images.list(name=repository):
        copy_image(swarm_bed.client, images.receiver, mbed.nodes[0].client, f"{repository}:test")
        mbed.push(repository, "test")
    return f"{repository}:test"


@pytest.fixture(scope="module")
def nginx_everywhere(swarm3: MultiNodeBed, job_image: str) -> Iterator[tuple[str, Path, Path]]:
    """A global nginx on every node's host network; each node reads its own config directory (a Swarm
    template in the mount), all share one certificate directory. Yields (service, certs, configs) once every
    node serves (one nginx for the module: starting it on every node is the slow part)."""
    mbed, unique = swarm3, secrets.token_hex(3)
    root = mbed.root / f"nginx-{unique}"
    certs, configs = root / "certs", root / "conf"
    self_signed(certs, ["site.test"])
    for node in mbed.nodes:
        (configs / node.name).mkdir(parents=True)
        (configs / node.name / "nginx.conf").write_text(NGINX_CONF)
    name = f"nginx-{unique}"
    mbed.client.services.create(
        job_image,
        name=name,
        command=["nginx", "-c", "/srv/nginx/nginx.conf", "-g", "daemon off;"],
        mode=ServiceMode("global"),
        networks=["host"],
        user="root",
        healthcheck=Healthcheck(test=["NONE"]),
        mounts=[
            Mount(target="/srv/nginx", source=f"{configs}/{{{{.Node.Hostname}}}}", type="bind", read_only=True),
            Mount(target="/certs", source=str(certs), type="bind", read_only=True),
        ],
        stop_grace_period=1_000_000_000,
    )
    first = serial_of(certs / "fullchain.pem")
    wait_for(lambda: serving(mbed, first), timeout=180, interval=0.5, what="nginx serving on every node")
    yield name, certs, configs
    mbed.client.services.get(name).remove()
    wait_for(
        lambda: not any(mbed.containers_on(n, name) for n in mbed.nodes), timeout=60, interval=0.2, what="nginx gone"
    )


def sockets_by_hostname(mbed: MultiNodeBed) -> str:
    """One path per node, named by hostname, to that node's Docker socket: what --node-socket's template
    resolves to on each node (on real hosts it is simply /var/run/docker.sock everywhere)."""
    directory = mbed.root / "sockets"
    directory.mkdir(exist_ok=True)
    for node in mbed.nodes:
        link = directory / f"{node.name}.sock"
        if not link.exists():
            link.symlink_to(node.root / "docker.sock")
    return f"{directory}/{{{{.Node.Hostname}}}}.sock"


def reload_proxy(mbed: MultiNodeBed, service: str, image: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOK_", "DOCKER_"))}
    env["DOCKER_HOST"] = mbed.docker_host
    return subprocess.run(
        [sys.executable, "-m", "webhook_server", "reload-proxy", "--service", service, "--job-image", image,
         "--node-socket", sockets_by_hostname(mbed)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def containers(mbed: MultiNodeBed, service: str) -> dict[str, list[str]]:
    return {node.name: sorted(c.id for c in mbed.containers_on(node, service)) for node in mbed.nodes}


def serving(mbed: MultiNodeBed, serial: int) -> bool:
    def on(node: Node) -> bool:
        try:
            return Poller(node.address).once() == serial
        except (OSError, RuntimeError, ssl.SSLError):
            return False

    return all(on(node) for node in mbed.nodes)


def test_a_renewed_certificate_reaches_every_nodes_nginx_without_a_failed_request(
    mbed: MultiNodeBed, nginx_everywhere: tuple[str, Path, Path], job_image: str, tmp_path: Path
) -> None:
    service, certs, _ = nginx_everywhere
    before = containers(mbed, service)
    pollers = [Poller(node.address) for node in mbed.nodes]
    for poller in pollers:
        poller.start()
    try:
        wait_for(lambda: all(p.ok >= 5 for p in pollers), timeout=30, interval=0.1, what="every node polled")
        renewed = renew(certs, tmp_path / "renewal")

        result = reload_proxy(mbed, service, job_image)

        assert result.returncode == 0, result.stderr
        others = ", ".join(n.name for n in mbed.nodes[1:])
        assert result.stdout.strip() == (
            f"{service}: nginx -t passed in 1 task(s); reloaded 1 task(s) on this node with SIGHUP; "
            f"checked and reloaded by a job on {others}"
        )
        counts = [p.ok for p in pollers]
        wait_for(lambda: all(p.serial == renewed for p in pollers), timeout=30, interval=0.1, what="new cert")
        wait_for(
            lambda: all(p.ok >= c + 5 for p, c in zip(pollers, counts, strict=True)),
            timeout=30,
            interval=0.1,
            what="more requests after the reload",
        )
    finally:
        for poller in pollers:
            poller.finish()
    assert [f for p in pollers for f in p.failures] == [], "a request failed during the reload"
    assert containers(mbed, service) == before, "SIGHUP, not a restart: the same containers serve"
    # The jobs are gone once they have reported.
    assert not [s.name for s in mbed.client.services.list() if s.name.startswith("reload-proxy-")]


def test_a_check_failing_on_another_node_reloads_nothing_anywhere(
    mbed: MultiNodeBed, nginx_everywhere: tuple[str, Path, Path], job_image: str, tmp_path: Path
) -> None:
    service, certs, configs = nginx_everywhere
    first = serial_of(certs / "fullchain.pem")
    broken = mbed.nodes[2]
    (configs / broken.name / "nginx.conf").write_text(NGINX_CONF.replace("access_log off;", "acess_log off;"))
    renew(certs, tmp_path / "renewal")

    result = reload_proxy(mbed, service, job_image)

    assert result.returncode == 2, result.stdout
    [message] = result.stderr.strip().splitlines()[:1]
    assert message == f"webhook-server: nginx -t failed on {broken.name} ({service}); nothing was reloaded:"
    assert 'unknown directive "acess_log"' in result.stderr
    # Every node still serves the old certificate: none was signalled, the local one included.
    assert serving(mbed, first)
