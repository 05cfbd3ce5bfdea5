"""Per-client limits shared by every worker: fixed windows in one SQLite file."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from tests.fakes import FakeSwarm
from tests.server import API_TOKEN, WEBHOOK_TOKEN, documented_payload
from tests.unit.test_views import settings_for
from webhook_server.app import create_app
from webhook_server.limits import Limit, Limiter
from webhook_server.rules import RulesSource


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_counts_then_refuses_then_resets(tmp_path: Path) -> None:
    clock = Clock()
    limiter = Limiter(tmp_path / "l", requests=Limit(3, 60), auth_failures=Limit(2, 600), clock=clock)
    assert [limiter.hit("a", "request").allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.hit("b", "request").allowed  # another client has its own count
    refused = limiter.hit("a", "request")
    assert not refused.allowed and 1 <= refused.retry_after <= 60
    clock.now += refused.retry_after
    assert limiter.hit("a", "request").allowed


def test_workers_share_the_counts_and_zero_turns_a_limit_off(tmp_path: Path) -> None:
    one = Limiter(tmp_path / "l", requests=Limit(2, 60), auth_failures=Limit(0, 600))
    two = Limiter(tmp_path / "l", requests=Limit(2, 60), auth_failures=Limit(0, 600))
    assert one.hit("a", "request").allowed and two.hit("a", "request").allowed
    assert not one.hit("a", "request").allowed
    assert all(two.hit("a", "auth").allowed for _ in range(50))
    assert two.check("a", "auth").allowed


def worker(tmp_path: Path, rules_path: Path, **env: str) -> FlaskClient:
    """One app per worker, on one journal (and so one limits file)."""
    return create_app(
        settings_for(tmp_path, rules_path, **env), swarm=FakeSwarm(), rules=RulesSource(rules_path)
    ).test_client()


def test_wrong_tokens_lock_a_client_out_across_workers(tmp_path: Path, rules_path: Path) -> None:
    workers = [worker(tmp_path, rules_path, WEBHOOK_AUTH_FAILURE_LIMIT="4") for _ in range(2)]
    wrong = [workers[i % 2].post(f"/hooks/dockerhub/wrong-{i}-0123456789abc", json={}).status_code for i in range(4)]
    assert wrong == [404, 404, 404, 404]
    locked = workers[0].post(f"/hooks/dockerhub/{WEBHOOK_TOKEN}", json=documented_payload("acme/web", "latest"))
    assert locked.status_code == 429 and locked.headers["Retry-After"].isdigit()
    assert workers[1].get("/api/deployments", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 429
    # Another address (through the trusted proxy) is not affected.
    other = workers[1].post(
        f"/hooks/dockerhub/{WEBHOOK_TOKEN}",
        json=documented_payload("acme/web", "latest"),
        headers={"X-Forwarded-For": "203.0.113.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    assert other.status_code == 202


def test_request_rate_per_client_but_not_for_health_probes(tmp_path: Path, rules_path: Path) -> None:
    client = worker(tmp_path, rules_path, WEBHOOK_RATE_LIMIT="3")
    answers = [client.get("/api/deployments", headers={"Authorization": f"Bearer {API_TOKEN}"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[-1].get_json()["error"] == "rate_limited"
    assert all(client.get("/healthz").status_code == 200 for _ in range(10))


def _boot_and_hit(path: Path, ready: Any) -> None:
    ready.wait(10)
    limiter = Limiter(path, requests=Limit(1000, 60), auth_failures=Limit(10, 600))
    for _ in range(20):
        assert limiter.hit("10.0.0.1", "request").allowed
    os._exit(0)


def test_workers_booting_together_on_a_new_file_all_start(tmp_path: Path) -> None:
    """gunicorn starts its workers at once: creating the file and its WAL must not fail any of them."""
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    workers = [context.Process(target=_boot_and_hit, args=(tmp_path / "x.limits", ready)) for _ in range(6)]
    for worker in workers:
        worker.start()
    ready.set()
    for worker in workers:
        worker.join(30)
    assert [w.exitcode for w in workers] == [0] * 6
    after = Limiter(tmp_path / "x.limits", requests=Limit(200, 60), auth_failures=Limit(10, 600))
    # Every hit of every worker was counted in the one file: 120 of 121 allowed.
    assert after.hit("10.0.0.1", "request").allowed
