"""reload-proxy against nginx running as a Swarm service on the test bed.

The image is Debian trixie's nginx from a debootstrap rootfs (made offline from the package mirror and
pushed to the bed's registry). The service uses the host network so its nginx listens on 127.0.0.1 high
ports, and bind-mounts a host directory with nginx.conf and the certificates, as production does with
/etc/letsencrypt. The tests prove a reload is a SIGHUP: same tasks, same containers, same nginx master,
new workers, the new certificate served, and not one failed request meanwhile.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.bed import SwarmBed, free_port, wait_for
from tests.e2e.nginx.conftest import MOUNT, STARTS
from tests.nginx_bed import (
    Recorder,
    children,
    make_dir,
    request,
    self_signed,
    serial_of,
    served_serial,
    start_recorder,
)
from webhook_server.cli import main
from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.render import render_nginx_conf
from webhook_server.swarm.proxy import SwarmProxy

pytestmark = [pytest.mark.nginx, pytest.mark.swarm]

HOOKS = "hooks.test"


@dataclass
class ProxyService:
    name: str
    host_dir: Path
    https_port: int
    bed: SwarmBed
    failures: list[str] = field(default_factory=list)

    def cert_dir(self) -> Path:
        return self.host_dir / "live" / HOOKS

    def containers(self) -> dict[str, str]:
        """task id → container id of the running tasks."""
        return {
            str(t["ID"]): str(t["Status"]["ContainerStatus"]["ContainerID"])  # type: ignore[index]
            for t in self.bed.running_tasks(self.name)
        }

    def master_pid(self, container_id: str) -> int:
        return int(self.bed.client.containers.get(container_id).attrs["State"]["Pid"])

    def serial(self) -> str:
        return served_serial(self.https_port, HOOKS)

    def renew(self) -> str:
        """A new certificate in place, swapped in atomically (certbot swaps the live/ symlinks)."""
        staging = self.host_dir / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        self_signed(staging, [HOOKS])
        for name in ("fullchain.pem", "privkey.pem"):
            os.replace(staging / name, self.cert_dir() / name)
        return serial_of((self.cert_dir() / "fullchain.pem").read_bytes())


def service_config(*, https_port: int, http_port: int, upstream_port: int) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "nginx_version": "1.26",
            "openssl_version": "3.5",
            # Upstream by address: the host network has no Docker DNS; nothing needs resolving.
            "resolvers": "127.0.0.1",
            "listen": {"addresses": ["127.0.0.1"], "http_port": http_port, "https_port": https_port},
            "paths": {"certificates": f"{MOUNT}/live", "acme_webroot": f"{MOUNT}/acme"},
            "webhook": {"server_name": HOOKS, "upstream": {"host": "127.0.0.1", "port": upstream_port}},
        }
    )


@pytest.fixture
def proxy_service(
    request: pytest.FixtureRequest, bed: SwarmBed, nginx_images: Callable[[str], str], unique: str
) -> Iterator[ProxyService]:
    """nginx as a Swarm service, started as ``request.param`` says (a key of STARTS; default: its command)."""
    nginx_image = nginx_images(getattr(request, "param", "command"))
    host_dir = make_dir("nginx-swarm-")
    recorder: Recorder = start_recorder()
    try:
        https_port = free_port()
        config = service_config(https_port=https_port, http_port=free_port(), upstream_port=recorder.port)
        (host_dir / "nginx.conf").write_text(render_nginx_conf(config))
        (host_dir / "nginx.conf").chmod(0o644)
        self_signed(host_dir / "live" / HOOKS, [HOOKS])
        name = f"nginx{unique}"
        bed.create_service(name, nginx_image, replicas=1, networks=["host"], mounts=[f"{host_dir}:{MOUNT}:ro"])
        svc = ProxyService(name, host_dir, https_port, bed)
        wait_for(lambda: _serves(svc), timeout=30, what="the nginx task to serve")
        yield svc
    finally:
        bed.remove_service(f"nginx{unique}")
        recorder.stop()
        shutil.rmtree(host_dir, ignore_errors=True)


def _serves(svc: ProxyService) -> bool:
    try:
        return request(svc.https_port, host=HOOKS, path="/healthz").status == 200
    except OSError:
        return False


@dataclass
class Traffic:
    """Requests through nginx in a loop, from another thread, counting every one that does not get a 200."""

    port: int
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                status = request(self.port, host=HOOKS, path="/healthz", timeout=5).status
                if status == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"status {status}")
            except OSError as e:
                self.failed.append(repr(e))


def reload_cli(bed: SwarmBed, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["reload-proxy", "--docker-host", bed.docker_host, *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("proxy_service", list(STARTS), indirect=True)
def test_reload_proxy_sighups_the_tasks_which_keep_serving(proxy_service: ProxyService) -> None:
    svc, bed = proxy_service, proxy_service.bed
    before = svc.containers()
    assert len(before) == 1
    (container_id,) = before.values()
    master = svc.master_pid(container_id)
    workers = children(master)
    old_serial = svc.serial()
    assert workers

    traffic = Traffic(svc.https_port)
    thread = threading.Thread(target=traffic.run, name="traffic")
    thread.start()
    try:
        wait_for(lambda: traffic.ok >= 20, timeout=20, what="traffic to flow")
        new_serial = svc.renew()
        assert new_serial != old_serial
        started = time.monotonic()
        code, out, err = reload_cli(bed, "--service", svc.name)
        assert code == 0, err
        assert out == f"{svc.name}: nginx -t passed in 1 task(s); reloaded 1 task(s) on this node with SIGHUP\n"
        wait_for(lambda: svc.serial() == new_serial, timeout=15, what="the new certificate to be served")
        reload_seconds = time.monotonic() - started
        served_during = traffic.ok
        wait_for(lambda: traffic.ok >= served_during + 20, timeout=20, what="traffic after the reload")
    finally:
        traffic.stop.set()
        thread.join(timeout=30)

    assert traffic.failed == [], traffic.failed[:5]
    assert svc.containers() == before  # same task, same container: not replaced
    assert svc.master_pid(container_id) == master  # the same nginx master...
    assert children(master) and not (children(master) & workers)  # ...with new workers
    print(f"reload-proxy: new certificate served {reload_seconds:.2f}s after the command started; "
          f"{traffic.ok} requests, none failed")  # fmt: skip


@pytest.mark.parametrize("proxy_service", list(STARTS), indirect=True)
def test_reload_proxy_reloads_nothing_when_nginx_t_fails(proxy_service: ProxyService) -> None:
    svc, bed = proxy_service, proxy_service.bed
    before = svc.containers()
    (container_id,) = before.values()
    workers = children(svc.master_pid(container_id))
    old_serial = svc.serial()
    conf = svc.host_dir / "nginx.conf"
    good = conf.read_text()
    # The bind mount is a directory: replacing the file (as render-nginx --out does) is seen in the container.
    staging = svc.host_dir / "nginx.conf.new"
    staging.write_text(good.replace("server_tokens off;", "server_tokens off;\n    no_such_directive on;"))
    staging.chmod(0o644)
    os.replace(staging, conf)
    svc.renew()

    since = int(time.time()) - 1
    code, out, err = reload_cli(bed, "--service", svc.name)
    assert code == 2
    assert err.startswith(
        f"webhook-server: nginx -t failed in task {next(iter(before))} of {svc.name}; nothing was reloaded"
    )
    assert 'unknown directive "no_such_directive"' in err
    assert out == ""
    # A SIGHUP goes through Docker's kill API, which records an event: there is none.
    events = bed.client.events(
        since=since, until=int(time.time()) + 1, filters={"container": container_id, "event": "kill"}, decode=True
    )
    assert list(events) == []
    assert children(svc.master_pid(container_id)) == workers
    assert svc.serial() == old_serial
    assert svc.containers() == before


def test_unknown_service(bed: SwarmBed) -> None:
    code, _, err = reload_cli(bed, "--service", "no-such-nginx")
    assert code == 2
    assert err == "webhook-server: service 'no-such-nginx' does not exist in the swarm\n"


def test_force_update_replaces_the_tasks(proxy_service: ProxyService) -> None:
    """What tasks on other nodes get (the bed has one node, so the adapter is driven directly)."""
    svc = proxy_service
    before = svc.containers()
    swarm = SwarmProxy(svc.bed.docker_host)
    try:
        swarm.force_update(svc.name)
    finally:
        swarm.close()
    wait_for(
        lambda: (now := svc.containers()) and not (set(now) & set(before)),
        timeout=60,
        what="the forced update to replace the task",
    )
    wait_for(lambda: _serves(svc), timeout=30, what="the new task to serve")


def test_secrets_are_versioned_and_mounted_where_nginx_reads_them(bed: SwarmBed, unique: str, tmp_path: Path) -> None:
    """The secrets mode's Docker side, on a plain service: new secrets by content, mounted at the targets."""
    service = f"sec{unique}"
    bed.create_service(service, bed.make_image(f"bed/{unique}", "1"), replicas=1)
    target = "/srv/secrets/live/hooks.test/fullchain.pem"
    swarm = SwarmProxy(bed.docker_host)
    created: list[str] = []
    try:
        for content in (b"first certificate\n", b"second certificate\n"):
            name = f"{service}.hooks.test.fullchain.{len(created)}"
            secret_id = swarm.ensure_secret(name, content, {"webhook-server.proxy.target": target})
            assert swarm.ensure_secret(name, content, {}) == secret_id  # same name: the existing secret
            created.append(name)
            swarm.use_secrets(service, {target: (secret_id, name)})

            def mounted(expected: bytes = content) -> bool:
                for container_id in [t["Status"]["ContainerStatus"]["ContainerID"] for t in bed.running_tasks(service)]:  # type: ignore[index]
                    container = bed.client.containers.get(container_id)
                    code, out = container.exec_run(["cat", target])
                    if code == 0 and out == expected:
                        return True
                return False

            wait_for(mounted, timeout=60, what=f"{target} to hold {content!r}")
        spec = bed.client.services.get(service).attrs["Spec"]
        refs = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
        assert [(r["SecretName"], r["File"]["Name"]) for r in refs] == [(created[-1], target)]
        assert spec["UpdateConfig"]["Order"] == "start-first"
    finally:
        swarm.close()
        bed.remove_service(service)
        for name in created:
            for secret in bed.client.secrets.list(filters={"name": name}):
                wait_for(lambda s=secret: _removed(s), timeout=30, what=f"secret {name} to be removed")


def _removed(secret: object) -> bool:
    try:
        secret.remove()  # type: ignore[attr-defined]
    except Exception:
        return False
    return True
