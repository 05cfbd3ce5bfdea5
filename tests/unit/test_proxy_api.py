"""POST /api/proxy/reload and GET /api/certificates through the app, with fakes for Swarm and nginx; the
expiry in /readyz (a warning, never a 503) and in /metrics."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.fakes import FakeSwarm
from tests.unit.test_certs import write_certificate
from tests.unit.test_proxy_reload import LOCAL, task
from tests.unit.test_proxy_reload import FakeSwarm as FakeNginx
from tests.unit.test_views import BEARER, RULES, settings_for
from webhook_server.app import create_app
from webhook_server.errors import DockerUnavailable
from webhook_server.proxy.reload import NginxSwarm
from webhook_server.rules import RulesSource

PROXY = """
proxy:
  webhook: {server_name: hooks.example.com, upstream: {host: webhook, port: 9000}}
  sites:
    - server_names: ["*.example.com", example.com]
      upstream: {host: web, port: 80}
  certificates:
    example.com: [example.com, "*.example.com"]
"""


@pytest.fixture
def nginx() -> FakeNginx:
    return FakeNginx(tasks=[task(1), task(2)])


def make_client(tmp_path: Path, nginx: FakeNginx, **env: str) -> FlaskClient:
    rules_path = tmp_path / "deploy_rules.yaml"
    rules_path.write_text(RULES + PROXY)
    swarm = FakeSwarm()
    for name in ("api", "worker", "web"):
        swarm.add_service(name, f"reg:5000/acme/{name}:1.0.0")

    @contextlib.contextmanager
    def opened() -> Iterator[NginxSwarm]:
        yield nginx
        nginx.close()

    settings = settings_for(tmp_path, rules_path, WEBHOOK_PROXY_SERVICE="nginx", **env)
    app = create_app(settings, swarm=swarm, rules=RulesSource(rules_path), proxy_swarm=opened)
    return app.test_client()


def test_reload_checks_then_signals_and_says_which_tasks_on_which_nodes(tmp_path: Path, nginx: FakeNginx) -> None:
    response = make_client(tmp_path, nginx).post("/api/proxy/reload", headers=BEARER)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "service": "nginx",
        "mode": "signal",
        "summary": "nginx: nginx -t passed in 2 task(s); reloaded 2 task(s) on this node with SIGHUP",
        "checked": [{"task": "t1", "node": LOCAL}, {"task": "t2", "node": LOCAL}],
        "reloaded": [{"task": "t1", "node": LOCAL}, {"task": "t2", "node": LOCAL}],
        "other_nodes": [],
        "force_updated": False,
        "secrets": {},
    }
    assert nginx.calls == [("check", "c1"), ("check", "c2"), ("hup", "c1"), ("hup", "c2"), ("close",)]


def test_a_failed_check_reloads_nothing_and_answers_422_with_nginxs_error(tmp_path: Path, nginx: FakeNginx) -> None:
    nginx.bad["c2"] = 'nginx: [emerg] unknown directive "no_such_directive" in /etc/nginx/nginx.conf:12'
    response = make_client(tmp_path, nginx).post("/api/proxy/reload", headers=BEARER)
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "proxy_config_invalid"
    assert body["message"].startswith("nginx -t failed in task t2 of nginx; nothing was reloaded:\n")
    assert 'unknown directive "no_such_directive"' in body["message"]
    assert not [c for c in nginx.calls if c[0] == "hup"]


def test_reload_errors_map_to_statuses(tmp_path: Path, nginx: FakeNginx) -> None:
    nginx.tasks = []
    client = make_client(tmp_path, nginx)
    response = client.post("/api/proxy/reload", headers=BEARER)
    assert (response.status_code, response.get_json()["error"]) == (409, "reload_failed")
    nginx.error = DockerUnavailable("cannot connect to Docker")
    assert client.post("/api/proxy/reload", headers=BEARER).status_code == 503
    assert client.post("/api/proxy/reload").status_code == 401


def test_reload_in_secrets_mode_uses_the_lineages_of_the_proxy_section(tmp_path: Path, nginx: FakeNginx) -> None:
    from tests.unit.test_proxy_reload import lineage

    lineage(tmp_path / "live", "example.com")
    client = make_client(tmp_path, nginx, WEBHOOK_PROXY_MODE="secrets", WEBHOOK_CERT_DIR=str(tmp_path / "live"))
    response = client.post("/api/proxy/reload", headers=BEARER)
    assert response.status_code == 200, response.get_json()
    assert sorted(response.get_json()["secrets"]) == [
        "/etc/letsencrypt/live/example.com/fullchain.pem",
        "/etc/letsencrypt/live/example.com/privkey.pem",
    ]


def test_certificates_in_the_api_readyz_and_metrics(tmp_path: Path, nginx: FakeNginx) -> None:
    live = tmp_path / "live"
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    write_certificate(live / "example.com", ["example.com", "*.example.com"], not_after=not_after, serial=0x1F)
    client = make_client(tmp_path, nginx, WEBHOOK_CERT_DIR=str(live))
    body = client.get("/api/certificates", headers=BEARER).get_json()
    assert body["warn_days"] == 14
    [cert] = body["certificates"]
    assert (cert["lineage"], cert["state"], cert["serial"], cert["not_after"], cert["stale"]) == (
        "example.com",
        "expiring",
        "1F",
        not_after.isoformat(),
        False,
    )
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert [w for w in ready.get_json()["warnings"] if w.startswith("certificate")] == [
        "certificate example.com: expires in 5.0 days"
    ]
    metrics = client.get("/metrics").get_data(as_text=True)
    found = re.search(r'^webhook_server_certificate_expiry_seconds\{lineage="example.com"\} (\S+)$', metrics, re.M)
    assert found and 4.9 * 86400 < float(found.group(1)) <= 5 * 86400


def test_a_missing_certificate_is_a_warning_not_a_503(tmp_path: Path, nginx: FakeNginx) -> None:
    client = make_client(tmp_path, nginx, WEBHOOK_CERT_DIR=str(tmp_path / "nowhere"))
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert "certificate example.com: cannot read: No such file or directory" in ready.get_json()["warnings"]


def test_without_a_certificate_directory_nothing_is_watched(tmp_path: Path, nginx: FakeNginx) -> None:
    client = make_client(tmp_path, nginx)
    assert client.get("/api/certificates", headers=BEARER).get_json() == {"warn_days": 14, "certificates": []}
    assert "certificate_expiry" not in client.get("/metrics").get_data(as_text=True)
