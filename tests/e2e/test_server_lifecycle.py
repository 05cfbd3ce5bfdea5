"""The server's life through real gunicorn on the real Swarm bed: workers that die and come back while the
rules file is broken, and a SIGTERM in the middle of a rollout."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from tests.bed import SwarmBed, wait_for
from tests.e2e.conftest import ServerFactory
from tests.server import Server, documented_payload, start_server
from webhook_server.journal import Journal

pytestmark = pytest.mark.swarm


def rules_for(bed: SwarmBed, repo: str, service: str, *, monitor: str = "1s") -> str:
    return (
        "defaults:\n"
        f"  update: {{parallelism: 1, delay: 0s, order: start-first, failure_action: rollback, monitor: {monitor}}}\n"
        "  timeout: 90s\n"
        "services:\n"
        f"  {service}: {{repository: {repo}, image: {bed.registry}/{repo}, tags: semver}}\n"
    )


def workers(server: Server, *, unlike: frozenset[int] | set[int] = frozenset()) -> set[int]:
    """Wait for gunicorn's two workers, none of them in ``unlike`` (those it had before)."""

    def found() -> set[int] | None:
        pids = server.worker_pids()
        return pids if len(pids) == 2 and not pids & unlike else None

    result: set[int] = wait_for(found, timeout=60, what="two gunicorn workers")
    return result


def test_workers_respawned_on_a_broken_rules_file_keep_serving_the_rules_loaded_at_start(
    bed: SwarmBed, unique: str, make_server: ServerFactory
) -> None:
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    new = bed.make_image(repo, "1.1.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host)
    rules_path = server.root / "deploy_rules.yaml"
    first = workers(server)

    rules_path.write_text("services: [this is, not: a mapping\n")
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    respawned = workers(server, unlike=first)

    assert server.proc.poll() is None, server.log_text()[-3000:]
    assert "WORKER_BOOT_ERROR" not in server.log_text() and "Reason: Worker failed to boot" not in server.log_text()
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503
    [reason] = ready.json()["reasons"]
    assert reason.startswith(f"rules: {rules_path}: 1 error(s)")
    response = server.hook(documented_payload(repo, "1.1.0"))
    assert response.status_code == 202, response.text
    dep = server.wait_done(response.json()["deployments"][0]["id"])
    assert dep["state"] == "succeeded", dep
    assert dep["image_ref"] == f"{new}@{bed.registry_digest(new)}"
    assert server.worker_pids() == respawned


def test_sigterm_during_a_watch_leaves_the_rollout_for_the_next_server_to_follow(
    bed: SwarmBed, unique: str, make_server: ServerFactory
) -> None:
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    new = bed.make_image(repo, "1.1.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    # A long monitor keeps Swarm in "updating" well past the SIGTERM.
    server = make_server(rules_for(bed, repo, unique, monitor="15s"), docker_host=bed.docker_host)
    dep_id = server.hook(documented_payload(repo, "1.1.0")).json()["deployments"][0]["id"]
    wait_for(
        lambda: any(
            (t["message"] or "").startswith("swarm: updating") for t in server.deployment(dep_id)["transitions"]
        ),
        timeout=60,
        interval=0.2,
        what="the watch to see Swarm updating",
    )

    server.stop(signal.SIGTERM)

    assert server.proc.returncode == 0, server.log_text()[-3000:]
    log = server.log_text()
    assert "stopping the executor" in log and "executor stopped" in log
    journal = Journal(server.env["WEBHOOK_DB"])
    assert journal.get(dep_id).state == "running"  # left for the next executor, not failed or forgotten
    notes = [t.message or "" for t in journal.transitions(dep_id)]
    assert "executor stopping; the next executor follows this rollout" in notes, notes
    revived = start_server(server.root, env=server.env)
    try:
        done = revived.wait_done(dep_id, timeout=120)
    finally:
        revived.stop()
    assert done["state"] == "succeeded", done
    assert done["image_ref"] == f"{new}@{bed.registry_digest(new)}"
    assert any("following the update in Swarm" in (t["message"] or "") for t in done["transitions"])
    assert len([t for t in done["transitions"] if (t["message"] or "").startswith("updating ")]) == 1
