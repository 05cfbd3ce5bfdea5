"""certbot against a local pebble, through nginx, with the shipped deploy hook.

First certificate: nginx runs the ``--acme-only`` render, certbot ``certonly --webroot`` answers pebble's
http-01 challenges through it, then the full render is loaded with a SIGHUP. Renewal: ``renew --dry-run``
must not run the deploy hook; ``renew --force-renewal`` must, and nginx then serves the new certificate
without a restart. The hook is the real ``nginx/certbot/deploy-hook.sh``, installed in certbot's
renewal-hooks/deploy directory; only ``webhook-server`` is replaced by a stub that records its call and
SIGHUPs this test's nginx by its pid file (production's ``reload-proxy`` does that to Swarm tasks).
"""

from __future__ import annotations

import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bed import free_port, wait_for
from tests.e2e.nginx.conftest import HOOKS, WWW
from tests.nginx_bed import (
    Certbot,
    Nginx,
    Pebble,
    make_dir,
    prepare_prefix,
    relocate,
    request,
    require,
    serial_of,
    served_serial,
    start_nginx,
    start_pebble,
)
from webhook_server.proxy.config import ProxyConfig

pytestmark = pytest.mark.nginx

DEPLOY_HOOK = Path(__file__).parents[3] / "nginx" / "certbot" / "deploy-hook.sh"
STUB = """#!/bin/sh
# Stands in for `webhook-server`: records how the deploy hook called it, then reloads the test's nginx.
printf '%s|%s|%s\\n' "$*" "$RENEWED_LINEAGE" "$RENEWED_DOMAINS" >> "{calls}"
if [ -n "${{STUB_FAIL:-}}" ]; then echo "nginx -t failed in task x" >&2; exit 3; fi
kill -HUP "$(cat "{pid}")"
"""


@dataclass
class AcmeStack:
    root: Path
    nginx: Nginx
    pebble: Pebble
    certbot: Certbot
    config: ProxyConfig
    calls: Path

    def hook_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def lineage_serial(self) -> str:
        return serial_of((self.certbot.live / HOOKS / "cert.pem").read_bytes())


@pytest.fixture
def acme() -> Iterator[AcmeStack]:
    require("nginx", "openssl", "certbot", "pebble", "pebble-challtestsrv")
    root = make_dir("nginx-acme-")
    (root / "pebble").mkdir()
    nginx: Nginx | None = None
    pebble: Pebble | None = None
    try:
        http_port, https_port = free_port(), free_port()
        certbot_root = root / "certbot"
        pebble = start_pebble(root / "pebble", http_port=http_port)
        certbot = Certbot(certbot_root, pebble)
        config = relocate(
            ProxyConfig.model_validate(
                {
                    "webhook": {"server_name": HOOKS, "upstream": {"host": "127.0.0.1", "port": free_port()}},
                    # One certificate for both names: the site shares the receiver's lineage.
                    "sites": [
                        {"server_names": [WWW], "certificate": HOOKS, "upstream": {"host": "127.0.0.1", "port": 9}}
                    ],
                }
            ),
            root,
            http_port=http_port,
            https_port=https_port,
            certificates=certbot.live,
        )
        prepare_prefix(root, config, acme_only=True)
        nginx = start_nginx(root, http_port=http_port, https_port=https_port)

        calls = root / "hook-calls.txt"
        bin_dir = root / "bin"
        bin_dir.mkdir()
        stub = bin_dir / "webhook-server"
        stub.write_text(STUB.format(calls=calls, pid=root / "nginx.pid"))
        stub.chmod(0o755)
        certbot.env = {"WEBHOOK_SERVER": str(stub), "WEBHOOK_RELOAD_ENV": str(root / "no-such.env")}
        yield AcmeStack(root, nginx, pebble, certbot, config, calls)
    finally:
        survivors = nginx.stop() if nginx else []
        survivors += pebble.stop() if pebble else []
        shutil.rmtree(root, ignore_errors=True)
    assert not survivors, survivors


def install_deploy_hook(certbot: Certbot) -> Path:
    """As the README says: copy into renewal-hooks/deploy/, executable."""
    certbot.deploy_hooks.mkdir(parents=True, exist_ok=True)
    hook = certbot.deploy_hooks / "webhook-server-reload-proxy.sh"
    shutil.copyfile(DEPLOY_HOOK, hook)
    hook.chmod(0o755)
    assert hook.stat().st_mode & stat.S_IXUSR
    return hook


def wait_serving(stack: AcmeStack, serial: str) -> None:
    port = stack.nginx.https_port
    wait_for(lambda: served_serial(port, HOOKS) == serial, timeout=10, what=f"nginx to serve serial {serial}")


def test_issue_dry_run_and_forced_renewal_reload_nginx_without_restart(acme: AcmeStack) -> None:
    started = time.monotonic()
    certbot, nginx = acme.certbot, acme.nginx

    # 1. The first certificate, through nginx's ACME-only config.
    certbot.run(
        "certonly", "--webroot", "-w", str(acme.root / "acme"), "-d", HOOKS, "-d", WWW, "--cert-name", HOOKS,
        "--agree-tos", "--register-unsafely-without-email",
    )  # fmt: skip
    assert (certbot.live / HOOKS / "fullchain.pem").exists()

    # 2. The full config, loaded by a reload: nginx serves pebble's certificate for both names.
    prepare_prefix(acme.root, acme.config)
    master = nginx.master_pid
    nginx.reload()
    first = acme.lineage_serial()
    wait_serving(acme, first)
    root_ca = acme.root / "pebble-root.pem"
    root_ca.write_text(acme.pebble.issuing_root())
    for name in (HOOKS, WWW):
        reply = request(nginx.https_port, host=name, cafile=root_ca, path="/healthz")  # verifies the chain
        assert reply.status in (502, 503)  # no receiver behind it here; TLS is what this checks
    install_deploy_hook(certbot)

    # 3. A dry run renews against pebble but must not run deploy hooks.
    dry = certbot.run("renew", "--dry-run")
    assert "all simulated renewals succeeded" in dry.stdout
    assert acme.hook_calls() == []
    assert acme.lineage_serial() == first

    # 4. A forced renewal runs the deploy hook, which reloads nginx: new certificate, same master.
    workers_before = nginx.workers()
    renewed = certbot.run("renew", "--force-renewal")
    assert acme.hook_calls() == [f"reload-proxy|{certbot.live / HOOKS}|{HOOKS} {WWW}"]
    assert "webhook-server deploy hook: renewed" in renewed.stderr
    second = acme.lineage_serial()
    assert second != first
    wait_serving(acme, second)
    assert nginx.master_pid == master and nginx.proc.poll() is None and nginx.pid_file() == master
    assert not (nginx.workers() & workers_before)  # reloaded (new workers), not restarted

    # 5. When reload-proxy fails, the hook says so and fails; nginx keeps serving the old certificate.
    certbot.env["STUB_FAIL"] = "1"
    failed = certbot.run("renew", "--force-renewal", check=False)
    third = acme.lineage_serial()
    assert third != second
    assert "ERROR: reload-proxy failed (exit 3); nginx still serves the OLD certificate" in failed.stderr
    # certbot reports the hook's failure but (2.1, at least) still exits 0: hence the hook's own log line.
    assert "reported error code 3" in failed.stderr
    assert served_serial(nginx.https_port, HOOKS) == second
    assert nginx.master_pid == master

    elapsed = time.monotonic() - started
    print(f"certbot round trip (issue, dry run, 2 forced renewals): {elapsed:.1f}s")
