"""The HTTP layer with a fake Swarm: status codes, bodies, authentication, and what gets journaled."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.fakes import FakeSwarm
from tests.server import API_TOKEN, WEBHOOK_TOKEN, documented_payload
from webhook_server import server
from webhook_server.app import create_app
from webhook_server.cluster import NodeStatus
from webhook_server.context import Cached, services, services_of
from webhook_server.journal import Journal
from webhook_server.rules import RulesSource, load_rules
from webhook_server.settings import Settings, load_settings

RULES = """
services:
  api: {repository: acme/api, image: reg:5000/acme/api, tags: semver, policy: minor}
  worker: {repository: acme/api, image: reg:5000/acme/api, tags: "semver:<2"}
  web: {repository: acme/web, tags: latest}
"""
HOOK = f"/hooks/dockerhub/{WEBHOOK_TOKEN}"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


BROKEN_RULES = "services:\n  api: {repository: acme/api, tags: semver, policy: sideways}\n"


@pytest.fixture
def swarm() -> FakeSwarm:
    fake = FakeSwarm()
    for name in ("api", "worker", "web"):
        fake.add_service(name, f"reg:5000/acme/{name}:1.0.0")
    fake.calls.clear()
    return fake


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "deploy_rules.yaml"
    path.write_text(RULES)
    return path


def settings_for(tmp_path: Path, rules_path: Path, **env: str) -> Settings:
    return load_settings(
        env={
            "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "WEBHOOK_API_TOKEN": API_TOKEN,
            "WEBHOOK_TRUSTED_PROXIES": "10.0.0.1",
            **env,
        },
        rules_path=rules_path,
        db_path=tmp_path / "j.sqlite3",
    )


@pytest.fixture
def client(tmp_path: Path, swarm: FakeSwarm, rules_path: Path) -> FlaskClient:
    app = create_app(settings_for(tmp_path, rules_path), swarm=swarm, rules=RulesSource(rules_path))
    return app.test_client()


def journal_of(client: FlaskClient) -> Journal:
    with client.application.app_context():
        return services().journal


def test_accepted_push_is_journaled_before_the_answer_and_fans_out(client: FlaskClient, swarm: FakeSwarm) -> None:
    response = client.post(HOOK, json=documented_payload("acme/api", "1.4.0"))

    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "accepted"
    assert [(d["service"], d["image"], d["tag"]) for d in body["deployments"]] == [
        ("api", "reg:5000/acme/api", "1.4.0"),
        ("worker", "reg:5000/acme/api", "1.4.0"),
    ]
    stored = journal_of(client).find()
    assert {d.id for d in stored} == {d["id"] for d in body["deployments"]}
    assert all(d.state == "queued" and d.trigger == "dockerhub" for d in stored)
    assert swarm.calls == []  # answered without waiting for Docker


@pytest.mark.parametrize(
    ("repo", "tag", "reason"),
    [
        ("acme/other", "1.0.0", "no rule deploys repository 'acme/other'"),
        ("acme/web", "dev", "web: tag 'dev' is not 'latest'"),
        (
            "acme/api",
            "v2",
            "api: tag 'v2' is not a semantic version; worker: tag 'v2' is not a semantic version",
        ),
    ],
    ids=["no-rule", "tag-filter", "every-fan-out-rule-refuses"],
)
def test_ignored_pushes_answer_200_without_docker(
    client: FlaskClient, swarm: FakeSwarm, repo: str, tag: str, reason: str
) -> None:
    response = client.post(HOOK, json=documented_payload(repo, tag))

    assert response.status_code == 200
    assert response.get_json() == {"status": "ignored", "reason": reason}
    assert swarm.calls == []


def test_fan_out_takes_the_services_whose_rules_accept(client: FlaskClient) -> None:
    response = client.post(HOOK, json=documented_payload("acme/api", "2.0.0"))  # worker wants <2
    assert response.status_code == 202
    assert [d["service"] for d in response.get_json()["deployments"]] == ["api"]


def test_prerelease_is_ignored_under_a_release_policy(client: FlaskClient) -> None:
    body = client.post(HOOK, json=documented_payload("acme/api", "1.5.0-rc.1")).get_json()
    assert body["status"] == "ignored"
    assert "pre-release" in body["reason"]


def test_wrong_token_looks_exactly_like_an_unknown_url(client: FlaskClient) -> None:
    wrong = client.post("/hooks/dockerhub/not-the-right-token", json=documented_payload("acme/api", "1.0.0"))
    unknown = client.post("/nothing/here", json={})

    assert wrong.status_code == unknown.status_code == 404
    assert wrong.data == unknown.data
    assert journal_of(client).count_pushes() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"repository": {"repo_name": "acme/api"}}, "push_data"),
        ({"push_data": {"pusher": "x"}, "repository": {"repo_name": "acme/api"}}, "push_data.tag"),
        ({"push_data": {"tag": "1.0.0"}}, "repository"),
        ({"push_data": {"tag": "1.0.0"}, "repository": {}}, "repository.repo_name"),
        ({"push_data": {"tag": "bad tag!"}, "repository": {"repo_name": "a/b"}}, "push_data.tag"),
        ([1, 2], "JSON object"),
    ],
    ids=["no-push-data", "no-tag", "no-repository", "no-repo-name", "bad-tag", "not-an-object"],
)
def test_malformed_payloads_get_400_naming_the_field(client: FlaskClient, body: Any, field: str) -> None:
    response = client.post(HOOK, json=body)

    assert response.status_code == 400
    assert field in response.get_json()["message"]
    assert journal_of(client).count_pushes() == 0


def test_invalid_json_is_400(client: FlaskClient) -> None:
    response = client.post(HOOK, data=b"{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"


def test_legacy_payload_variants_are_accepted(client: FlaskClient) -> None:
    payload = {
        "push_data": {"pushed_at": 1417566161.5, "images": ["27d47432a69b"], "tag": "latest", "pusher": "x"},
        "repository": {"namespace": "acme", "name": "web", "something_new": {"nested": True}},
        "unknown_top_level": 1,
    }
    response = client.post(HOOK, json=payload)
    assert response.status_code == 202
    assert response.get_json()["deployments"][0]["service"] == "web"


def test_body_size_is_limited(client: FlaskClient) -> None:
    response = client.post(HOOK, data=b"x" * (1024 * 1024 + 1), content_type="application/json")
    assert response.status_code == 413


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_TOKEN}"}, {"Authorization": API_TOKEN}],
    ids=["none", "wrong", "basic", "no-scheme"],
)
def test_api_needs_the_bearer_token(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/api/deployments", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"service": "api", "tag": "1.2.0"}, 202, None),
        ({"service": "nope", "tag": "1.2.0"}, 404, "no rule in the rules file names service 'nope'"),
        ({"service": "api", "tag": "latest"}, 422, "api: tag 'latest' is not a semantic version"),
        ({"service": "api"}, 400, "tag: is required"),
        ({"service": "api", "tag": "1.2.0", "extra": 1}, 400, "extra: unknown key"),
        ({"service": "bad name", "tag": "1.2.0"}, 400, "service: has characters or a form that is not allowed"),
    ],
    ids=["ok", "unknown-service", "refused-tag", "missing-tag", "extra-field", "bad-service-name"],
)
def test_manual_deployments(client: FlaskClient, body: dict[str, Any], status: int, message: str | None) -> None:
    response = client.post("/api/deployments", json=body, headers=BEARER)
    assert response.status_code == status
    if message:
        assert response.get_json()["message"].startswith(message)
    else:
        [dep] = journal_of(client).find()
        assert dep.trigger == "manual" and dep.tag == "1.2.0"


def test_listing_and_reading_deployments(client: FlaskClient) -> None:
    client.post(HOOK, json=documented_payload("acme/api", "1.4.0"))
    client.post(HOOK, json=documented_payload("acme/web", "latest"))

    listed = client.get("/api/deployments?service=api&limit=10", headers=BEARER).get_json()["deployments"]
    assert [d["service"] for d in listed] == ["api"]
    one = client.get(f"/api/deployments/{listed[0]['id']}", headers=BEARER).get_json()
    assert one["state"] == "queued" and one["repository"] == "acme/api"
    assert one["transitions"][0]["state"] == "queued"
    assert client.get("/api/deployments/999", headers=BEARER).status_code == 404
    assert client.get("/api/deployments?limit=0", headers=BEARER).status_code == 400
    assert client.get("/api/deployments?limit=x", headers=BEARER).status_code == 400


def test_readyz_reports_docker_and_broken_rules(client: FlaskClient, swarm: FakeSwarm, rules_path: Path) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200

    swarm.down = True
    rules_path.write_text(BROKEN_RULES)
    os.utime(rules_path, (1, 1))
    response = client.get("/readyz")

    assert response.status_code == 503
    reasons = response.get_json()["reasons"]
    assert reasons[0].startswith("rules: ") and "policy" in reasons[0]
    assert reasons[1].startswith("docker: ")
    # The previous rules still apply.
    assert client.post(HOOK, json=documented_payload("acme/api", "1.4.0")).status_code == 202


def test_forwarded_headers_are_believed_only_from_trusted_proxies(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhook_server")
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    client.post(
        HOOK, json=documented_payload("acme/web", "latest"), headers=forwarded, environ_base={"REMOTE_ADDR": "10.0.0.1"}
    )
    client.post(
        HOOK,
        json=documented_payload("acme/web", "latest"),
        headers=forwarded,
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )

    clients = [p["client"] for p in reversed(journal_of(client).pushes())]
    assert clients == ["203.0.113.9", "198.51.100.7"]
    assert "accepted" in caplog.text and WEBHOOK_TOKEN not in caplog.text


# ---- /readyz: the node, the services the rules name, and running on no rules ----------------------------
def test_readyz_says_which_node_it_talks_to(client: FlaskClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "node": {
            "docker_host": "fake://",
            "hostname": "fake",
            "node_id": "n1",
            "is_manager": True,
            "swarm_state": "active",
            "problems": [],
        },
        "warnings": [],
    }


def test_readyz_is_503_when_docker_is_a_swarm_worker_or_unreachable(client: FlaskClient, swarm: FakeSwarm) -> None:
    swarm.manager = False
    worker = client.get("/readyz")
    swarm.manager, swarm.down = True, True
    down = client.get("/readyz")

    assert worker.status_code == down.status_code == 503
    assert worker.get_json()["reasons"] == ["docker: the Docker node at fake:// is a swarm worker"]
    assert worker.get_json()["node"]["is_manager"] is False
    assert down.get_json()["reasons"] == ["docker: Docker at fake:// is unreachable"]
    assert ("service_names",) not in swarm.calls


def test_readyz_is_503_for_a_node_outside_a_swarm_even_without_a_stated_problem(
    client: FlaskClient, swarm: FakeSwarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swarm, "node", lambda: NodeStatus(docker_host="tcp://10.0.0.5:2375", swarm_state="inactive"))
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["reasons"] == [
        "docker: tcp://10.0.0.5:2375 is not a swarm manager (swarm state: inactive)"
    ]


def test_readyz_warns_about_services_the_rules_name_but_swarm_lacks(client: FlaskClient, swarm: FakeSwarm) -> None:
    del swarm.services["worker"]
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json()["warnings"] == ["rule 'worker': no such service in the swarm"]
    # A burst of probes asks Docker for the service list once.
    client.get("/readyz")
    assert swarm.calls.count(("service_names",)) == 1


def test_cached_value_is_fetched_again_after_its_time_and_after_a_failure() -> None:
    now = [0.0]
    answers: list[object] = [RuntimeError("docker down"), {"a"}, {"a", "b"}]

    def fetch() -> set[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, set)
        return answer

    cached = Cached(fetch, seconds=10, clock=lambda: now[0])
    with pytest.raises(RuntimeError):
        cached.get()
    assert cached.get() == {"a"}  # the failure was not cached
    now[0] = 9.9
    assert cached.get() == {"a"}
    now[0] = 10.0
    assert cached.get() == {"a", "b"}


def test_a_worker_started_on_a_broken_file_serves_with_the_fallback_rules(
    tmp_path: Path, swarm: FakeSwarm, rules_path: Path
) -> None:
    fallback = load_rules(rules_path)
    rules_path.write_text(BROKEN_RULES)
    app = create_app(settings_for(tmp_path, rules_path), swarm=swarm, fallback=fallback)
    client = app.test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["reasons"][0].startswith(f"rules: {rules_path}: 1 error(s)")
    assert client.post(HOOK, json=documented_payload("acme/api", "1.4.0")).status_code == 202


def test_a_worker_started_on_a_broken_file_without_fallback_answers_503_saying_why(
    tmp_path: Path, swarm: FakeSwarm, rules_path: Path
) -> None:
    rules_path.write_text(BROKEN_RULES)
    client = create_app(settings_for(tmp_path, rules_path), swarm=swarm).test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["reasons"][0].startswith(f"rules: no rules are loaded: {rules_path}: 1 error(s)")
    hook = client.post(HOOK, json=documented_payload("acme/api", "1.4.0"))
    assert hook.status_code == 503
    assert hook.get_json()["error"] == "rules_unavailable"
    assert journal_of(client).count_pushes() == 0
    manual = client.post("/api/deployments", json={"service": "api", "tag": "1.2.0"}, headers=BEARER)
    assert manual.status_code == 503


# ---- tokens that base64 makes: "/" and "+" ---------------------------------------------------------------
@pytest.mark.parametrize(
    "token",
    [
        "q3N/8vKx+Zb1mW0aT9pL2sYcD4eHfJ6uRn7iVoE5gU0=",
        "a/b/c/d+e+f/g+h/i==",
        "/leading-and-trailing/+",
        "ab//cd+ef/=Qz81kLmN4pR",
    ],
    ids=["openssl-rand-base64", "many-slashes", "leading-slash", "double-slash"],
)
def test_base64_tokens_with_slashes_and_plus_are_accepted(
    tmp_path: Path, swarm: FakeSwarm, rules_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(tmp_path, rules_path, WEBHOOK_TOKEN=token)
    client = create_app(settings, swarm=swarm).test_client()

    accepted = client.post(f"/hooks/dockerhub/{token}", json=documented_payload("acme/web", "latest"))
    wrong = client.post(f"/hooks/dockerhub/{token}x", json=documented_payload("acme/web", "latest"))
    prefix = client.post(f"/hooks/dockerhub/{token.rsplit('/', 1)[0]}", json=documented_payload("acme/web", "latest"))

    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    assert wrong.status_code == prefix.status_code == 404
    assert all(part not in caplog.text for part in token.strip("/+=").split("/") if len(part) > 3)


# ---- what operators see: one line per rejection, with its reason --------------------------------------
def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "webhook_server.views" and '"POST ' in r.getMessage()]


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/hooks/dockerhub/not-the-right-token", documented_payload("acme/api", "1.0.0"), 404, "wrong webhook token"),
        (HOOK, {"repository": {"repo_name": "acme/api"}}, 400, "push_data"),
        (HOOK, [1, 2], 400, "JSON object"),
        ("/api/deployments", {"service": "api", "tag": "1.0.0"}, 401, "missing or wrong API token"),
    ],
    ids=["wrong-token", "bad-payload", "not-an-object", "no-api-token"],
)
def test_rejected_requests_are_logged_once_with_their_reason(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, path: str, body: Any, status: int, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger="webhook_server")
    assert client.post(path, json=body).status_code == status

    [line] = _request_lines(caplog)
    assert line.levelno == logging.WARNING
    text = line.getMessage()
    assert f'" {status} rejected: ' in text and reason in text
    assert "not-the-right-token" not in caplog.text and WEBHOOK_TOKEN not in caplog.text


def test_control_characters_from_the_request_are_escaped_in_the_log(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhook_server")
    forged = "\n2026-01-01 00:00:00 INFO webhook_server: deployment 1 succeeded\x1b[2J"
    client.post(
        "/nothing%0A2026-01-01%2000:00:00%20INFO%20forged",
        json={},
        headers={"X-Forwarded-For": "203.0.113.9\x1b[2J"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    client.post(HOOK, json={"push_data": {"tag": "1.0.0" + forged}, "repository": {"repo_name": "acme/api"}})

    messages = [r.getMessage() for r in caplog.records]
    assert messages and all("\n" not in m and "\x1b" not in m for m in messages)
    assert any("\\x0a2026-01-01" in m for m in messages)


# ---- shutdown --------------------------------------------------------------------------------------------
def test_gunicorn_worker_exit_stops_the_executor(tmp_path: Path, swarm: FakeSwarm, rules_path: Path) -> None:
    app: Flask = create_app(settings_for(tmp_path, rules_path), swarm=swarm, run_executor=True)
    ctx = services_of(app)
    assert ctx.executor_thread is not None and ctx.executor_thread.is_alive()

    server.worker_exit(None, SimpleNamespace(wsgi=app))

    assert ctx.stop.is_set()
    assert not ctx.executor_thread.is_alive()


def test_worker_exit_before_the_app_loaded_does_nothing() -> None:
    server.worker_exit(None, SimpleNamespace(wsgi=None))


def _metric(client: FlaskClient, name: str, **labels: str) -> float:
    from tests.unit.test_metrics import samples, value

    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return value(samples(response.get_data()), name, **labels)


def test_metrics_count_webhooks_by_result_and_show_the_queue(client: FlaskClient, swarm: FakeSwarm) -> None:
    name = "webhook_server_webhooks_received_total"
    before = {r: _metric(client, name, result=r) for r in ("accepted", "ignored", "rejected")}

    assert client.post(HOOK, json=documented_payload("acme/web", "latest")).status_code == 202
    assert client.post(HOOK, json=documented_payload("acme/nobody", "1.0.0")).status_code == 200
    assert client.post(f"/hooks/dockerhub/{'x' * 40}", json={}).status_code == 404
    assert client.post(HOOK, data="not json", content_type="application/json").status_code == 400

    after = {r: _metric(client, name, result=r) for r in ("accepted", "ignored", "rejected")}
    assert {r: after[r] - before[r] for r in after} == {"accepted": 1, "ignored": 1, "rejected": 2}
    assert _metric(client, "webhook_server_queue_depth", service="web") == 1


def test_metrics_need_the_api_token_only_when_the_setting_asks(
    tmp_path: Path, swarm: FakeSwarm, rules_path: Path
) -> None:
    settings = settings_for(tmp_path, rules_path, WEBHOOK_METRICS_TOKEN_REQUIRED="true")
    guarded = create_app(settings, swarm=swarm, rules=RulesSource(rules_path)).test_client()

    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers=BEARER).status_code == 200


def test_every_answer_has_a_request_id_and_the_deployment_keeps_it(client: FlaskClient) -> None:
    import io
    import json

    from webhook_server.logs import prepare

    stream = io.StringIO()
    handler = prepare(logging.StreamHandler(stream), fmt="json")
    package = logging.getLogger("webhook_server")
    package.addHandler(handler)
    level = package.level
    package.setLevel(logging.INFO)
    try:
        response = client.post(HOOK, json=documented_payload("acme/web", "latest"))
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    [dep] = response.get_json()["deployments"]
    assert journal_of(client).get(dep["id"]).request_id == request_id
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines and all(line["request_id"] == request_id for line in lines), lines
    assert any(line["message"].startswith("push acme/web:latest") for line in lines)
    assert client.get("/healthz").headers["X-Request-ID"] != request_id


@pytest.mark.parametrize(
    ("peer", "given", "kept"),
    [
        ("10.0.0.1", "0123456789abcdef0123456789abcdef", True),  # the trusted proxy (nginx's $request_id)
        ("10.0.0.2", "0123456789abcdef0123456789abcdef", False),  # anyone else cannot choose it
        ("10.0.0.1", "not a token", False),  # nor can the proxy pass on garbage
        ("10.0.0.1", "x" * 129, False),
    ],
)
def test_a_request_id_is_taken_only_from_a_trusted_proxy(
    client: FlaskClient, peer: str, given: str, kept: bool
) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": given}, environ_base={"REMOTE_ADDR": peer})
    assert (response.headers["X-Request-ID"] == given) is kept


def test_services_lists_every_rule_with_what_it_runs(client: FlaskClient) -> None:
    assert client.get("/api/services").status_code == 401
    response = client.get("/api/services", headers=BEARER)
    assert response.status_code == 200
    assert response.get_json()["node"]["hostname"] == "fake"
    found = {s["service"]: s for s in response.get_json()["services"]}
    assert set(found) == {"api", "worker", "web"}
    assert found["api"]["image"] == "reg:5000/acme/api:1.0.0"
    assert found["api"]["last"] is None and found["api"]["queued"] == [] and found["api"]["in_progress"] is None


def test_during_a_rotation_both_tokens_work(tmp_path: Path, swarm: FakeSwarm, rules_path: Path) -> None:
    old_hook, old_api = "old-hook-token-0123456789", "old-api-token-abcdefghijk"
    settings = settings_for(tmp_path, rules_path, WEBHOOK_TOKEN_PREVIOUS=old_hook, WEBHOOK_API_TOKEN_PREVIOUS=old_api)
    client = create_app(settings, swarm=swarm, rules=RulesSource(rules_path)).test_client()
    for token in (WEBHOOK_TOKEN, old_hook):
        assert client.post(f"/hooks/dockerhub/{token}", json=documented_payload("acme/nobody", "1")).status_code == 200
    assert client.post("/hooks/dockerhub/other-token-0123456789", json={}).status_code == 404
    for token in (API_TOKEN, old_api):
        assert client.get("/api/deployments", headers={"Authorization": f"Bearer {token}"}).status_code == 200
