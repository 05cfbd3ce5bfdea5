"""A wildcard certificate by DNS-01 and renewals that reload nginx through the receiver's API, for real.

bind9 serves ``example.test`` on a loopback port (tests/dns_bed.py); certbot's RFC 2136 plugin answers
pebble's DNS-01 challenges there with a TSIG key; pebble issues ``*.example.test`` + ``example.test`` for
ten days, under the 14-day warning, so the server's expiry watch has something to say. One bind9, pebble
and lineage serve the module.

The renewal test runs certbot the way a container would: PATH is /usr/bin:/bin (no webhook-server there)
and no DOCKER_HOST. Its deploy hook (the shipped nginx/certbot/deploy-hook.sh) POSTs /api/proxy/reload
with curl; the receiver, which holds the Docker socket, checks and SIGHUPs nginx, a Swarm service on the bed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.bed import SwarmBed, free_port, unavailable, wait_for
from tests.dns_bed import Bind, start_bind
from tests.e2e.nginx.conftest import MOUNT
from tests.nginx_bed import (
    Certbot,
    Nginx,
    Pebble,
    children,
    make_dir,
    prepare_prefix,
    relocate,
    request,
    require,
    serial_of,
    served_serial,
    start_nginx,
    start_pebble,
    start_recorder,
)
from tests.notify_sink import NotifySink
from tests.server import API_TOKEN, Server, server_env, start_server
from webhook_server import display
from webhook_server.certs import CertificateStatus
from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.lineages import certificate_lines
from webhook_server.proxy.render import render_nginx_conf

pytestmark = pytest.mark.nginx

ZONE = "example.test"
LINEAGE = ZONE
HOOKS = f"hooks.{ZONE}"
SERVED = [f"a.{ZONE}", f"b.{ZONE}", ZONE]
VALIDITY_SECONDS = 10 * 86400
DEPLOY_HOOK = Path(__file__).parents[3] / "nginx" / "certbot" / "deploy-hook.sh"
# What certbot's environment looks like in a container: system binaries only.
CONTAINER_PATH = "/usr/bin:/bin"


@dataclass
class Dns01:
    root: Path  # bind-mounted into the nginx service at MOUNT
    bind: Bind
    pebble: Pebble
    certbot: Certbot

    @property
    def live(self) -> Path:
        return self.certbot.live

    def serial(self) -> str:
        return serial_of((self.live / LINEAGE / "cert.pem").read_bytes())

    def pebble_root(self) -> Path:
        path = self.root / "pebble-root.pem"
        if not path.exists():
            path.write_text(self.pebble.issuing_root())
        return path


def require_rfc2136_plugin() -> None:
    found = subprocess.run(["/usr/bin/python3", "-c", "import certbot_dns_rfc2136"], capture_output=True)
    if found.returncode != 0:
        unavailable("certbot's RFC 2136 plugin is missing (apt-get install python3-certbot-dns-rfc2136)")


@pytest.fixture(scope="module")
def dns01() -> Iterator[Dns01]:
    require("nginx", "openssl", "certbot", "pebble", "named", "tsig-keygen", "curl")
    require_rfc2136_plugin()
    root = make_dir("nginx-dns01-")
    bind: Bind | None = None
    pebble: Pebble | None = None
    try:
        bind = start_bind(ZONE)
        (root / "pebble").mkdir()
        pebble = start_pebble(
            root / "pebble", http_port=free_port(), validity_seconds=VALIDITY_SECONDS, dns_server=bind.address
        )
        certbot = Certbot(root / "certbot", pebble)
        credentials = bind.credentials(root / "rfc2136.ini")
        started = time.monotonic()
        certbot.run(
            "certonly", "--authenticator", "dns-rfc2136", "--dns-rfc2136-credentials", str(credentials),
            "--dns-rfc2136-propagation-seconds", "1", "-d", f"*.{ZONE}", "-d", ZONE, "--cert-name", LINEAGE,
            "--agree-tos", "--register-unsafely-without-email",
        )  # fmt: skip
        print(f"wildcard certificate issued by DNS-01 in {time.monotonic() - started:.1f}s")
        yield Dns01(root, bind, pebble, certbot)
    finally:
        survivors = pebble.stop() if pebble else []
        survivors += bind.stop() if bind else []
        if bind is not None:
            shutil.rmtree(bind.root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    assert not survivors, survivors


def proxy_section(*, upstream_port: int, certificates: str, **extra: Any) -> dict[str, Any]:
    """One wildcard lineage for the receiver, every subdomain and the apex (two sites)."""
    return {
        "resolvers": "127.0.0.1",
        "paths": {"certificates": certificates},
        "webhook": {"server_name": HOOKS, "upstream": {"host": "127.0.0.1", "port": upstream_port}},
        "sites": [
            {"server_names": [f"*.{ZONE}"], "upstream": {"host": "127.0.0.1", "port": upstream_port}},
            {"server_names": [ZONE], "upstream": {"host": "127.0.0.1", "port": upstream_port}},
        ],
        "certificates": {LINEAGE: [ZONE, f"*.{ZONE}"]},
        **extra,
    }


def test_a_wildcard_by_dns01_serves_two_subdomains_and_the_apex(dns01: Dns01) -> None:
    recorder = start_recorder()
    prefix = make_dir("nginx-wildcard-")
    nginx: Nginx | None = None
    try:
        http_port, https_port = free_port(), free_port()
        config = relocate(
            ProxyConfig.model_validate(proxy_section(upstream_port=recorder.port, certificates="/unused")),
            prefix,
            http_port=http_port,
            https_port=https_port,
            certificates=dns01.live,
        )
        assert certificate_lines(config) == [
            f"  certificate {LINEAGE} (holds {ZONE}, *.{ZONE}): serves {HOOKS}, *.{ZONE}, {ZONE}"
        ]
        conf = prepare_prefix(prefix, config).read_text()
        # One lineage for every server block: the wildcard site, the apex and the receiver.
        assert conf.count(f"ssl_certificate {dns01.live}/{LINEAGE}/fullchain.pem;") == 3
        nginx = start_nginx(prefix, http_port=http_port, https_port=https_port)
        for name in SERVED:
            # Verified against pebble's root for the name asked: the chain and the wildcard both hold.
            reply = request(https_port, host=name, cafile=dns01.pebble_root(), path=f"/{name}")
            assert reply.status == 200, (name, reply.body)
            assert serial_of(reply.peer_cert or b"") == dns01.serial()
        assert [(r["headers"]["Host"], r["path"]) for r in recorder.requests] == [(n, f"/{n}") for n in SERVED]
    finally:
        survivors = nginx.stop() if nginx else []
        recorder.stop()
        shutil.rmtree(prefix, ignore_errors=True)
    assert not survivors, survivors


# ---- renewals through the API, and the expiry watch ---------------------------------------------------
def install_hook(dns01: Dns01, *, url: str) -> None:
    """The shipped hook in curl mode: URL and token file in its settings file, nothing else."""
    token = dns01.root / "api-token"
    token.write_text(API_TOKEN + "\n")
    token.chmod(0o600)
    settings = dns01.root / "reload-proxy.env"
    settings.write_text(f"WEBHOOK_RELOAD_URL={url}\nWEBHOOK_API_TOKEN_FILE={token}\n")
    dns01.certbot.deploy_hooks.mkdir(parents=True, exist_ok=True)
    hook = dns01.certbot.deploy_hooks / "webhook-server-reload-proxy.sh"
    shutil.copyfile(DEPLOY_HOOK, hook)
    hook.chmod(0o755)
    assert hook.stat().st_mode & stat.S_IXUSR
    assert shutil.which("webhook-server", path=CONTAINER_PATH) is None
    dns01.certbot.env = {"WEBHOOK_RELOAD_ENV": str(settings), "PATH": CONTAINER_PATH}
    dns01.certbot.unset = ("DOCKER_HOST", "WEBHOOK_SERVER", "VIRTUAL_ENV")


@dataclass
class NginxTask:
    bed: SwarmBed
    service: str

    def container(self) -> str:
        (task,) = self.bed.running_tasks(self.service)
        return str(task["Status"]["ContainerStatus"]["ContainerID"])  # type: ignore[index]

    def master_pid(self) -> int:
        return int(self.bed.client.containers.get(self.container()).attrs["State"]["Pid"])


def notes(sink: NotifySink, word: str) -> list[str]:
    return [
        f"{r.body.get('title')}\n{r.body.get('message')}" for r in sink.received if word in str(r.body.get("title"))
    ]


@pytest.mark.swarm
def test_renewal_reloads_nginx_over_the_api_and_expiry_is_watched(
    dns01: Dns01, bed: SwarmBed, nginx_images: Any, unique: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    image = nginx_images("command")
    recorder = start_recorder()
    sink = NotifySink().start()
    server: Server | None = None
    conf = dns01.root / "nginx.conf"
    try:
        https_port = free_port()
        # What nginx (in its container) and the receiver (on this host) read: the same files, two paths.
        live_in_container = f"{MOUNT}/{dns01.live.relative_to(dns01.root)}"
        proxy = proxy_section(
            upstream_port=recorder.port,
            certificates=live_in_container,
            nginx_version="1.26",
            openssl_version="3.5",
            listen={"addresses": ["127.0.0.1"], "http_port": free_port(), "https_port": https_port},
        )
        proxy["paths"]["acme_webroot"] = f"{MOUNT}/acme"
        conf.write_text(render_nginx_conf(ProxyConfig.model_validate(proxy)))
        conf.chmod(0o644)
        service = f"nginx{unique}"
        bed.create_service(service, image, replicas=1, networks=["host"], mounts=[f"{dns01.root}:{MOUNT}:ro"])
        nginx = NginxTask(bed, service)
        first = dns01.serial()
        wait_for(lambda: _serves(https_port) == first, timeout=30, what="nginx to serve the wildcard certificate")

        rules = tmp_path / "deploy_rules.yaml"
        rules.write_text(
            yaml.safe_dump({"services": {"web": {"repository": "acme/web", "tags": "latest"}}, "proxy": proxy})
        )
        env = server_env(
            tmp_path,
            docker_host=bed.docker_host,
            rules=rules,
            extra={
                "WEBHOOK_PROXY_SERVICE": service,
                "WEBHOOK_CERT_DIR": str(dns01.live),
                "WEBHOOK_PROXY_PROBE": f"127.0.0.1:{https_port}",
                "WEBHOOK_CERT_CHECK_INTERVAL": "1s",
                "WEBHOOK_NOTIFY_URLS": sink.url("certificates"),
            },
        )
        server = start_server(tmp_path, env=env, workers=2)

        # 1. Expiry: ten days left is under the 14-day warning: notified once, metric, API, readyz, status.
        sink.wait(1)
        [soon] = notes(sink, "expiring")
        assert re.search(rf"certificate {LINEAGE} expires soon: in (9\.\d|10\.0) days", soon), soon
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        found = re.search(rf'^webhook_server_certificate_expiry_seconds{{lineage="{LINEAGE}"}} (\S+)$', metrics, re.M)
        assert found and 9 * 86400 < float(found.group(1)) <= 10 * 86400, metrics
        certificates = wait_for(lambda: _served_known(server), timeout=15, what="the served serial to be known")
        assert [(c.lineage, c.state, c.serial, c.served_serial, c.stale) for c in certificates] == [
            (LINEAGE, "expiring", first, first, False)
        ]
        ready = requests.get(f"{server.url}/readyz", timeout=30).json()
        assert ready["status"] == "ready"
        assert any(re.match(rf"certificate {LINEAGE}: expires in (9\.\d|10\.0) days", w) for w in ready["warnings"]), (
            ready
        )
        [line] = display.certificate_lines(certificates)
        assert re.match(rf"certificate {LINEAGE}: expires soon: in (9\.\d|10\.0) days \(expires ", line), line

        install_hook(dns01, url=f"{server.url}/api/proxy/reload")
        container, master = nginx.container(), nginx.master_pid()
        workers = children(master)

        # 2. A dry run renews against pebble (DNS-01 again) but runs no deploy hook: nothing reloads.
        dry = dns01.certbot.run("renew", "--dry-run")
        assert "all simulated renewals succeeded" in dry.stdout
        assert dns01.serial() == first and _serves(https_port) == first
        assert children(master) == workers
        assert "proxy reloaded" not in server.log_text()

        # 3. A forced renewal: the hook POSTs the API with curl; same container, same master, new workers.
        renewed = dns01.certbot.run("renew", "--force-renewal")
        second = dns01.serial()
        assert second != first
        assert "webhook-server deploy hook: nginx now serves the renewed certificate" in renewed.stderr
        assert re.search(r'"reloaded":\s*\[\{"task":\s*"\w+"', renewed.stderr), renewed.stderr  # which task, node
        wait_for(lambda: _serves(https_port) == second, timeout=15, what="nginx to serve the renewed certificate")
        assert nginx.container() == container and nginx.master_pid() == master
        assert children(master) and not (children(master) & workers)

        # 4. A renewal whose reload fails (nginx -t refuses the config): 422 with nginx's error, nothing
        # reloaded, and the watch tells that nginx serves an older certificate than the file.
        good = conf.read_text()
        _replace(conf, good.replace("server_tokens off;", "server_tokens off;\n    no_such_directive on;"))
        failed = dns01.certbot.run("renew", "--force-renewal", check=False)
        third = dns01.serial()
        assert third != second
        assert "ERROR: POST" in failed.stderr and "curl exit 22" in failed.stderr, failed.stderr
        assert "proxy_config_invalid" in failed.stderr and 'unknown directive \\"no_such_directive\\"' in failed.stderr
        assert _serves(https_port) == second and nginx.master_pid() == master
        wait_for(lambda: notes(sink, "stale"), timeout=20, what="the stale-certificate notification")
        [stale] = notes(sink, "stale")
        assert f"nginx serves an older certificate for {LINEAGE} than the one on disk" in stale
        assert f"served serial {second}, on disk {third}" in stale
        assert len(notes(sink, "expiring")) == 1  # told once, not at every check
        _replace(conf, good)
        print(f"DNS-01 renewals through the API, expiry and stale watch: {time.monotonic() - started:.1f}s")
    finally:
        if conf.exists() and "no_such_directive" in conf.read_text():
            conf.unlink()
        if server is not None:
            server.stop()
        sink.stop()
        recorder.stop()


def _replace(path: Path, text: str) -> None:
    # The bind mount is a directory: a replaced file is seen in the container.
    staging = path.with_suffix(".new")
    staging.write_text(text)
    staging.chmod(0o644)
    os.replace(staging, path)


def _serves(port: int) -> str | None:
    try:
        return served_serial(port, HOOKS)
    except OSError:
        return None


def _served_known(server: Server) -> list[CertificateStatus] | None:
    body = server.api("GET", "/certificates").json()
    found = [
        CertificateStatus.model_validate({k: v for k, v in c.items() if k != "stale"}) for c in body["certificates"]
    ]
    return found if found and all(c.served_serial for c in found) else None
