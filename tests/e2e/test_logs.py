"""Structured logs through the real server: every line is one JSON object (gunicorn's too), and a push's
request id is in the answer's header and on every line from its accept to the rollout's outcome."""

from __future__ import annotations

import json

import pytest

from tests.bed import SwarmBed, wait_for
from tests.e2e.conftest import ServerFactory
from tests.e2e.test_rollout import rules_for
from tests.server import WEBHOOK_TOKEN, documented_payload

pytestmark = pytest.mark.swarm


def test_a_push_is_followed_by_its_request_id_from_accept_to_outcome(
    bed: SwarmBed, unique: str, make_server: ServerFactory
) -> None:
    repo = f"acme/{unique}"
    old = bed.make_image(repo, "1.0.0")
    bed.make_image(repo, "1.1.0")
    bed.create_service(unique, f"{old}@{bed.registry_digest(old)}", replicas=1)
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host, env={"WEBHOOK_LOG_FORMAT": "json"})

    response = server.hook(documented_payload(repo, "1.1.0"))
    request_id = response.headers["X-Request-ID"]
    dep_id = response.json()["deployments"][0]["id"]
    assert server.wait_done(dep_id)["state"] == "succeeded"
    outcome = f"deployment {dep_id} of "

    def lines() -> list[dict[str, object]] | None:
        found = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]
        return found if any(str(f["message"]).startswith(outcome) for f in found) else None

    logged = wait_for(lines, timeout=30, interval=0.2, what="the outcome's log line")
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in logged)
    assert any(line["logger"] == "gunicorn.error" for line in logged), "gunicorn's own lines are JSON too"
    ours = [line for line in logged if line.get("request_id") == request_id]
    messages = [str(line["message"]) for line in ours]
    assert any(m.startswith(f"push {repo}:1.1.0 from") and "accepted" in m for m in messages), messages
    assert any(m.startswith(f"service {unique}: update to") for m in messages), messages
    assert any(m.startswith(outcome) and "succeeded" in m for m in messages), messages
    # Every line about this deployment carries the request that caused it.
    about = [line for line in logged if line.get("deployment") == dep_id]
    assert about and all(line.get("request_id") == request_id for line in about)
    assert WEBHOOK_TOKEN not in server.log_text()
