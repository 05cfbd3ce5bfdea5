"""The HTTP layer with a fake Swarm: status codes, bodies, authentication, and what gets journaled."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.fakes import FakeSwarm
from tests.server import API_TOKEN, WEBHOOK_TOKEN, documented_payload
from webhook_server.app import create_app, services
from webhook_server.journal import Journal
from webhook_server.rules import RulesSource
from webhook_server.settings import load_settings

RULES = """
services:
  api: {repository: acme/api, image: reg:5000/acme/api, tags: semver, policy: minor}
  worker: {repository: acme/api, image: reg:5000/acme/api, tags: "semver:<2"}
  web: {repository: acme/web, tags: latest}
"""
HOOK = f"/hooks/dockerhub/{WEBHOOK_TOKEN}"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def swarm() -> FakeSwarm:
    return FakeSwarm()


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "deploy_rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture
def client(tmp_path: Path, swarm: FakeSwarm, rules_path: Path) -> FlaskClient:
    settings = load_settings(
        env={"WEBHOOK_TOKEN": WEBHOOK_TOKEN, "WEBHOOK_API_TOKEN": API_TOKEN, "WEBHOOK_TRUSTED_PROXIES": "10.0.0.1"},
        rules_path=rules_path,
        db_path=tmp_path / "j.sqlite3",
    )
    app = create_app(settings, swarm=swarm, rules=RulesSource(rules_path))
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
        ({"service": "api"}, 400, "tag: Field required"),
        ({"service": "api", "tag": "1.2.0", "extra": 1}, 400, "extra: Extra inputs are not permitted"),
        ({"service": "bad name", "tag": "1.2.0"}, 400, "service: String should match pattern"),
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
    rules_path.write_text("services:\n  api: {repository: acme/api, tags: semver, policy: sideways}\n")
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
