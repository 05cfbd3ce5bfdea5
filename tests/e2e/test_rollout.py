"""Issue: Docker Hub push → rules → registry-pinned, health-gated Swarm rollout, end to end.

Real gunicorn over HTTP, real Swarm, real registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.bed import LONG_RUNNING as LONG
from tests.bed import SwarmBed, wait_for
from tests.e2e.conftest import ON_BOTH_JOURNALS, ServerFactory
from tests.server import API_TOKEN, WEBHOOK_TOKEN, documented_payload

# The tests that go through the journal's claim, wake-up and lease paths (a push, a fan-out, a manual
# deployment waited for over the API and the CLI) run on the embedded SQLite journal and on PostgreSQL; those
# about what Swarm, the registry or the HTTP layer do (a rollback, a missing tag, tokens, credentials) gain
# nothing from a second backend and run on SQLite.
pytestmark = [pytest.mark.swarm]
# Under xdist, in the multi-node beds' worker, which has a one-node bed of its own (the receiver's image is
# built on it): there these tests fill the minutes the build takes, and the one-node worker, the longer of
# the two, is spared them (tests/conftest.py).
XDIST_GROUP = "multinode"

FAST = "{parallelism: 1, delay: 0s, order: start-first, failure_action: rollback, monitor: 2s}"


def rules_for(bed: SwarmBed, repo: str, *services: str, tags: str = "semver", policy: str = "major") -> str:
    body = "".join(
        f'  {s}:\n    repository: {repo}\n    image: {bed.registry}/{repo}\n    tags: "{tags}"\n'
        + (f"    policy: {policy}\n" if tags.startswith("semver") else "")
        # A per-service override too, so rollouts exercise the merge of defaults and overrides.
        + "    update: {monitor: 2s, delay: 100ms}\n"
        for s in services
    )
    return f"defaults:\n  update: {FAST}\n  timeout: 90s\nservices:\n{body}"


def spec_image(bed: SwarmBed, service: str) -> str:
    return str(bed.client.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])


def assert_all_tasks_run(bed: SwarmBed, service: str, image_ref: str, replicas: int) -> None:
    wait_for(lambda: len(bed.running_tasks(service)) == replicas, timeout=30, what=f"{replicas} tasks")
    images = {t["Spec"]["ContainerSpec"]["Image"] for t in bed.running_tasks(service)}  # type: ignore[index]
    assert images == {image_ref}


@ON_BOTH_JOURNALS
def test_push_deploys_the_registry_digest_to_every_task(bed: SwarmBed, unique: str, make_server: ServerFactory):
    repo = f"acme/{unique}"
    old = bed.make_image(repo, "1.0.0")
    new = bed.make_image(repo, "1.1.0")
    bed.create_service(unique, old, replicas=2)
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host)

    response = server.hook(documented_payload(repo, "1.1.0"))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "accepted"
    [summary] = body["deployments"]
    assert summary["service"] == unique and summary["tag"] == "1.1.0"
    dep = server.wait_done(summary["id"])
    digest = bed.registry_digest(new)
    assert dep["state"] == "succeeded", dep
    assert dep["image_ref"] == f"{new}@{digest}"
    assert dep["previous_image"].startswith(old)
    assert dep["trigger"] == "dockerhub"
    assert_all_tasks_run(bed, unique, f"{new}@{digest}", replicas=2)
    states = [t["state"] for t in dep["transitions"]]
    assert states[0] == "queued" and states[-1] == "succeeded"


@ON_BOTH_JOURNALS
def test_fan_out_updates_two_services_from_one_push(bed: SwarmBed, unique: str, make_server: ServerFactory):
    repo = f"acme/{unique}"
    old = bed.make_image(repo, "2.0.0")
    new = bed.make_image(repo, "2.0.1")
    api, worker = f"{unique}_api", f"{unique}_worker"
    bed.create_service(api, old, replicas=1)
    bed.create_service(worker, old, replicas=1)
    server = make_server(rules_for(bed, repo, api, worker), docker_host=bed.docker_host)

    response = server.hook(documented_payload(repo, "2.0.1"))

    assert response.status_code == 202
    deployments = response.json()["deployments"]
    assert {d["service"] for d in deployments} == {api, worker}
    digest = bed.registry_digest(new)
    for d in deployments:
        assert server.wait_done(d["id"])["state"] == "succeeded"
        assert_all_tasks_run(bed, d["service"], f"{new}@{digest}", replicas=1)


TASK_ERRORS = {"crash": ": failed: task: non-zero exit (3)", "unhealthy": ": health check failed: exit 1"}


@pytest.mark.parametrize("kind", ["crash", "unhealthy"])
def test_failing_image_is_rolled_back_and_reported(bed: SwarmBed, unique: str, make_server: ServerFactory, kind: str):
    """A task that exits, or whose healthcheck fails, within the monitor window: Swarm rolls back."""
    repo = f"acme/{unique}"
    good = bed.make_image(repo, "1.0.0")
    bed.make_image(repo, "1.0.1", kind=kind)
    good_ref = f"{good}@{bed.registry_digest(good)}"
    bed.create_service(unique, good_ref, replicas=2)
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host)

    [summary] = server.hook(documented_payload(repo, "1.0.1")).json()["deployments"]
    dep = server.wait_done(summary["id"])

    assert dep["state"] == "rolled_back", dep
    assert "update rolled back due to failure or early termination of task" in dep["message"]
    assert "(rollback_completed: rollback completed); task on " in dep["message"]
    assert TASK_ERRORS[kind] in dep["message"]  # Swarm's reason for the task, not only "early termination"
    assert spec_image(bed, unique) == good_ref
    assert_all_tasks_run(bed, unique, good_ref, replicas=2)


def test_tag_missing_from_registry_fails_and_leaves_service_alone(
    bed: SwarmBed, unique: str, make_server: ServerFactory
):
    repo = f"acme/{unique}"
    old = bed.make_image(repo, "1.0.0")
    bed.create_service(unique, old, replicas=1)
    before = bed.client.services.get(unique).attrs["Version"]["Index"]
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host)

    [summary] = server.hook(documented_payload(repo, "1.9.9")).json()["deployments"]
    dep = server.wait_done(summary["id"])

    assert dep["state"] == "failed"
    assert "1.9.9 is not in its registry" in dep["message"]
    assert bed.client.services.get(unique).attrs["Version"]["Index"] == before


def test_push_that_no_rule_wants_is_ignored_without_touching_docker(tmp_path: Path, make_server: ServerFactory):
    """No Docker at all behind this server: an ignored push, and an accepted one, answer at once."""
    rules = "services:\n  web:\n    repository: acme/web\n    tags: semver\n    policy: minor\n"
    server = make_server(rules, docker_host=f"unix://{tmp_path}/no-docker.sock")

    ignored = server.hook(documented_payload("acme/web", "latest"))
    other_repo = server.hook(documented_payload("acme/other", "1.0.0"))
    prerelease = server.hook(documented_payload("acme/web", "2.0.0-rc.1"))
    accepted = server.hook(documented_payload("acme/web", "2.0.0"))

    assert ignored.status_code == 200
    assert ignored.json() == {"status": "ignored", "reason": "web: tag 'latest' is not a semantic version"}
    assert other_repo.json()["reason"] == "no rule deploys repository 'acme/other'"
    assert "pre-release" in prerelease.json()["reason"]
    assert accepted.status_code == 202  # acknowledged although Docker is unreachable
    ready = requests.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 503 and "docker" in ready.json()["reasons"][0]


def test_wrong_token_is_an_unknown_url_and_tokens_never_reach_the_log(
    bed: SwarmBed, unique: str, make_server: ServerFactory
):
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host)
    payload = documented_payload(repo, "1.0.0")

    wrong = server.hook(payload, token="not-the-token-at-all")
    unknown = requests.post(f"{server.url}/no/such/url", json=payload, timeout=5)
    malformed = requests.post(
        f"{server.url}/hooks/dockerhub/{WEBHOOK_TOKEN}",
        data=b"{not json",
        timeout=5,
        headers={"Content-Type": "application/json"},
    )
    missing = server.hook({"push_data": {}, "repository": {"repo_name": repo}})
    good = server.hook(payload)
    server.wait_done(good.json()["deployments"][0]["id"])
    unauthorized = requests.get(f"{server.url}/api/deployments", timeout=5)
    listed = server.api("GET", f"/deployments?service={unique}&limit=5")

    assert wrong.status_code == unknown.status_code == 404
    assert wrong.content == unknown.content
    assert malformed.status_code == 400 and "JSON" in malformed.json()["message"]
    assert missing.status_code == 400 and "push_data.tag" in missing.json()["message"]
    assert unauthorized.status_code == 401
    assert [d["service"] for d in listed.json()["deployments"]] == [unique]
    log = server.log_text()
    assert "/hooks/dockerhub/***" in log  # requests were logged ...
    assert WEBHOOK_TOKEN not in log and API_TOKEN not in log  # ... without the tokens
    assert "not-the-token-at-all" not in log


@ON_BOTH_JOURNALS
def test_manual_deploy_via_api_and_cli(bed: SwarmBed, unique: str, make_server: ServerFactory):
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    v2 = bed.make_image(repo, "1.2.0")
    v3 = bed.make_image(repo, "1.3.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    server = make_server(rules_for(bed, repo, unique, policy="minor"), docker_host=bed.docker_host)

    waited = server.api("POST", "/deployments?wait=true", json={"service": unique, "tag": "1.2.0"})
    assert waited.status_code == 200, waited.text
    assert waited.json()["state"] == "succeeded"
    assert spec_image(bed, unique) == f"{v2}@{bed.registry_digest(v2)}"

    refused = server.api("POST", "/deployments", json={"service": unique, "tag": "latest"})
    unknown = server.api("POST", "/deployments", json={"service": "nope", "tag": "1.0.0"})
    extra = server.api("POST", "/deployments", json={"service": unique, "tag": "1.0.0", "force": True})
    assert refused.status_code == 422 and "not a semantic version" in refused.json()["message"]
    assert unknown.status_code == 404
    assert extra.status_code == 400

    done = server.cli("deploy", unique, "1.3.0", "--wait")
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout
    assert spec_image(bed, unique) == f"{v3}@{bed.registry_digest(v3)}"

    downgrade = server.cli("deploy", unique, "1.2.0", "--wait")
    assert downgrade.returncode == 0 and "skipped" in downgrade.stdout and "older" in downgrade.stdout
    dry = server.cli("deploy", unique, "1.0.0", "--dry-run")
    assert "would skip" in dry.stdout
    history = server.cli("history", "--service", unique)
    assert history.returncode == 0 and "succeeded" in history.stdout and "skipped" in history.stdout
    missing = server.cli("deploy", "nope", "1.0.0")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "nope" in missing.stderr


def test_private_image_deploys_with_credentials_from_the_docker_config(
    bed: SwarmBed, unique: str, make_server: ServerFactory, tmp_path: Path
):
    import base64
    import json

    user, password = "deployer", "correct-horse-battery"
    with bed.private_registry(user, password) as registry:
        image = f"{registry}/acme/{unique}"
        old = bed.push_private(f"{image}:1.0.0", user, password, changes=[f"CMD {json.dumps(LONG)}"])
        bed.push_private(f"{image}:1.1.0", user, password, changes=[f"CMD {json.dumps(LONG)}"])
        bed.client.login(username=user, password=password, registry=registry)  # only to create the service
        bed.create_service(unique, old, replicas=1)
        config_dir = tmp_path / "docker-config"
        config_dir.mkdir()
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        (config_dir / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
        rules = (
            f"defaults:\n  update: {FAST}\n  timeout: 90s\nservices:\n"
            f"  {unique}: {{repository: acme/{unique}, image: '{image}', tags: semver}}\n"
        )
        with_creds = make_server(rules, docker_host=bed.docker_host, env={"DOCKER_CONFIG": str(config_dir)})
        without = make_server(rules, docker_host=bed.docker_host, env={"DOCKER_CONFIG": str(tmp_path / "none")})

        refused = without.wait_done(
            without.hook(documented_payload(f"acme/{unique}", "1.1.0")).json()["deployments"][0]["id"]
        )
        done = with_creds.wait_done(
            with_creds.hook(documented_payload(f"acme/{unique}", "1.1.0")).json()["deployments"][0]["id"]
        )

        assert refused["state"] == "failed"
        assert '/manifests/1.1.0": no basic auth credentials' in refused["message"]
        assert done["state"] == "succeeded", done
        assert done["image_ref"].startswith(f"{image}:1.1.0@sha256:")
        assert_all_tasks_run(bed, unique, done["image_ref"], replicas=1)
