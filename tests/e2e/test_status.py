"""Status at a glance on the real swarm: `webhook-server status` and GET /api/services show a rollout in
progress with its progress while Swarm updates, and the final state after."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.bed import SwarmBed, wait_for
from tests.e2e.conftest import ServerFactory
from tests.server import Server, documented_payload

pytestmark = pytest.mark.swarm


def status(server: Server) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "webhook_server", "status", "--json"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_status_shows_a_rollout_in_progress_then_its_outcome(
    bed: SwarmBed, unique: str, make_server: ServerFactory
) -> None:
    repo = f"acme/{unique}"
    old = bed.make_image(repo, "1.0.0")
    new = bed.make_image(repo, "1.1.0")
    bed.create_service(unique, f"{old}@{bed.registry_digest(old)}", replicas=3)
    # One task at a time with a pause between: the rollout is visibly part-way for several seconds.
    rules = (
        "defaults:\n  update: {parallelism: 1, delay: 3s, order: start-first, failure_action: rollback, monitor: 1s}\n"
        f"  timeout: 120s\nservices:\n"
        f"  {unique}: {{repository: {repo}, image: '{bed.registry}/{repo}', tags: semver}}\n"
    )
    server = make_server(rules, docker_host=bed.docker_host)
    dep_id = server.hook(documented_payload(repo, "1.1.0")).json()["deployments"][0]["id"]

    def part_way() -> dict[str, Any] | None:
        [mine] = [s for s in status(server)["services"] if s["service"] == unique]
        progress = mine["in_progress"]
        if progress and progress["swarm_state"] == "updating" and 0 < progress["tasks_updated"] < 3:
            return mine
        return None

    during = wait_for(part_way, timeout=90, interval=0.3, what="status showing the rollout part-way")
    assert during["in_progress"]["deployment"]["id"] == dep_id
    assert during["in_progress"]["tasks_total"] == 3
    assert during["image"].startswith(f"{new}@sha256:")  # the spec already names the new image

    assert server.wait_done(dep_id)["state"] == "succeeded"
    api = server.api("GET", "/services").json()
    [after] = [s for s in api["services"] if s["service"] == unique]
    assert after["in_progress"] is None
    assert (after["last"]["id"], after["last"]["state"], after["last"]["tag"]) == (dep_id, "succeeded", "1.1.0")
    assert api["node"]["is_manager"] is True
    [cli_after] = [s for s in status(server)["services"] if s["service"] == unique]
    assert cli_after == after
