"""The executor against a fake Swarm: outcomes, coalescing, idempotency, conflicts, outages, resumption."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.fakes import FakeSwarm
from webhook_server.executor import Executor, classify
from webhook_server.journal import Journal, PushRecord
from webhook_server.matching import DeployPlan
from webhook_server.rules import RuleSet, parse_rules
from webhook_server.swarm import ServiceState

IMAGE = "reg:5000/acme/api"
RULES = parse_rules(
    f"""
defaults: {{update: {{monitor: 1s}}, timeout: 5s}}
services:
  api: {{repository: acme/api, image: {IMAGE}, tags: semver, policy: minor}}
  web: {{repository: acme/web, image: reg:5000/acme/web, tags: latest}}
"""
)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.sqlite3")


@pytest.fixture
def swarm() -> FakeSwarm:
    fake = FakeSwarm()
    fake.add_service("api", f"{IMAGE}:1.0.0@sha256:{'0' * 64}")
    fake.add_service("web", "reg:5000/acme/web:latest@sha256:" + "1" * 64)
    return fake


def make_executor(journal: Journal, swarm: FakeSwarm, rules: RuleSet = RULES, **kwargs: object) -> Executor:
    return Executor(journal=journal, swarm=swarm, rules=lambda: rules, watch_interval=0, **kwargs)  # type: ignore[arg-type]


def enqueue(journal: Journal, service: str, *tags: str) -> list[int]:
    rule = RULES.get(service)
    assert rule is not None
    ids = []
    for tag in tags:
        plan = DeployPlan(service=service, repository=rule.repository, image=rule.image, tag=tag)
        [dep] = journal.accept(PushRecord(trigger="dockerhub", repository=rule.repository, tag=tag), [plan])
        ids.append(dep.id)
    return ids


def test_success_pins_the_digest_and_records_every_transition(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "succeeded"
    assert dep.image_ref == f"{IMAGE}:1.1.0@{digest}"
    assert dep.previous_image == f"{IMAGE}:1.0.0@sha256:{'0' * 64}"
    assert swarm.updates() == [("update", "api", f"{IMAGE}:1.1.0@{digest}")]
    states = [t.state for t in journal.transitions(dep_id)]
    assert states[:2] == ["queued", "running"] and states[-1] == "succeeded"
    assert any("swarm: updating" in (t.message or "") for t in journal.transitions(dep_id))


def test_rollback_is_reported_with_swarms_reason(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    swarm.crashing.add(f"{IMAGE}:1.1.0@{digest}")
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "rolled_back"
    assert dep.message == (
        "update rolled back due to failure or early termination of task abc (rollback_completed: rollback completed)"
    )


@pytest.mark.parametrize(
    ("tag", "state", "reason"),
    [
        ("0.9.0", "skipped", "0.9.0 is older than the running 1.0.0; semver rules never downgrade"),
        ("2.0.0", "skipped", "2.0.0 changes the major version of the running 1.0.0; policy 'minor' forbids it"),
        ("1.5.0", "failed", f"{IMAGE}:1.5.0 is not in its registry (manifest unknown)"),
    ],
    ids=["downgrade", "major-bump", "not-in-registry"],
)
def test_refusals_make_no_update(journal: Journal, swarm: FakeSwarm, tag: str, state: str, reason: str) -> None:
    for t in ("0.9.0", "2.0.0"):
        swarm.push(IMAGE, t)
    [dep_id] = enqueue(journal, "api", tag)

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert (dep.state, dep.message) == (state, reason)
    assert swarm.updates() == []


def test_digest_already_running_is_skipped(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.0.0")
    swarm.services["api"] = ServiceState(name="api", id="x", version=3, image=f"{IMAGE}:1.0.0@{digest}")
    first, replay = enqueue(journal, "api", "1.0.0"), enqueue(journal, "api", "1.0.0")

    executor = make_executor(journal, swarm)
    executor.drain("api")

    assert journal.get(replay[0]).state == "skipped"
    assert journal.get(first[0]).state == "superseded"
    assert swarm.updates() == []


def test_queued_pushes_coalesce_to_the_highest_version(journal: Journal, swarm: FakeSwarm) -> None:
    for tag in ("1.0.3", "1.0.1", "1.0.2"):
        swarm.push(IMAGE, tag)
    ids = enqueue(journal, "api", "1.0.3", "1.0.1", "1.0.2")

    make_executor(journal, swarm).drain("api")

    states = {journal.get(i).tag: (journal.get(i).state, journal.get(i).superseded_by) for i in ids}
    assert states == {"1.0.3": ("succeeded", None), "1.0.1": ("superseded", ids[0]), "1.0.2": ("superseded", ids[0])}
    assert len(swarm.updates()) == 1


def test_non_semver_rule_coalesces_to_the_latest_push(journal: Journal, swarm: FakeSwarm) -> None:
    swarm.push("reg:5000/acme/web", "latest")
    ids = enqueue(journal, "web", "latest", "latest", "latest")

    make_executor(journal, swarm).drain("web")

    assert [journal.get(i).state for i in ids] == ["superseded", "superseded", "succeeded"]


def test_update_out_of_sequence_rereads_and_retries(journal: Journal, swarm: FakeSwarm) -> None:
    swarm.push(IMAGE, "1.1.0")
    swarm.conflicts = 2
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    assert journal.get(dep_id).state == "succeeded"
    notes = [t.message or "" for t in journal.transitions(dep_id)]
    assert sum("update out of sequence" in n for n in notes) == 2


def test_endless_conflicts_give_up(journal: Journal, swarm: FakeSwarm) -> None:
    swarm.push(IMAGE, "1.1.0")
    swarm.conflicts = 100
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "failed" and "conflicting concurrent updates" in (dep.message or "")


def test_docker_outage_requeues_with_backoff_then_fails_past_the_limit(journal: Journal, swarm: FakeSwarm) -> None:
    swarm.push(IMAGE, "1.1.0")
    swarm.down = True
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")
    waiting = journal.get(dep_id)
    assert waiting.state == "queued" and waiting.attempts == 1 and waiting.not_before is not None
    assert "retrying in 1s" in (waiting.message or "")
    assert journal.services_with_queued_work() == []  # not before the backoff has passed

    make_executor(journal, swarm, retry_limit=timedelta(0))._execute(journal.get(dep_id))
    failed = journal.get(dep_id)
    assert failed.state == "failed" and failed.message == "gave up after 0:00:00: Docker is unreachable: fake outage"


def test_missing_service_fails(journal: Journal, swarm: FakeSwarm) -> None:
    del swarm.services["api"]
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    assert journal.get(dep_id).message == "service 'api' does not exist in the swarm"


def test_resume_follows_an_update_that_reached_swarm(journal: Journal, swarm: FakeSwarm) -> None:
    """The process died after starting the update: the next executor records Swarm's outcome."""
    digest = swarm.push(IMAGE, "1.1.0")
    [dep_id] = enqueue(journal, "api", "1.1.0")
    claimed = journal.claim("api", lambda c: c[0])
    assert claimed is not None
    target = f"{IMAGE}:1.1.0@{digest}"
    journal.update(dep_id, image_ref=target, update_marker=None)
    swarm.update(service="api", image_ref=target, settings=RULES.rules["api"].update, expected_version=1)

    make_executor(journal, swarm).drain("api")

    assert journal.get(dep_id).state == "succeeded"
    assert len(swarm.updates()) == 1  # followed, not done again


def test_resume_requeues_an_update_that_never_reached_swarm(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    [dep_id] = enqueue(journal, "api", "1.1.0")
    journal.claim("api", lambda c: c[0])
    journal.update(dep_id, image_ref=f"{IMAGE}:1.1.0@{digest}", update_marker=None)

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "succeeded"
    assert "re-queued: the update had not reached Swarm" in [t.message for t in journal.transitions(dep_id)]
    assert len(swarm.updates()) == 1


def test_claim_refuses_while_a_rollout_of_the_service_runs(journal: Journal) -> None:
    enqueue(journal, "api", "1.1.0", "1.2.0")
    first = journal.claim("api", lambda c: c[0])
    assert first is not None
    assert journal.claim("api", lambda c: c[0]) is None


def _state(update_state: str | None, started: str | None, image: str = "img@sha256:a") -> ServiceState:
    return ServiceState(name="s", id="i", version=1, image=image, update_state=update_state, update_started_at=started)


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        (_state(None, None), "pending"),
        (_state("completed", "old"), "pending"),  # an earlier update's status
        (_state("updating", "new"), "updating"),
        (_state("completed", "new"), "succeeded"),
        (_state("completed", "new", image="other@sha256:b"), "diverged"),
        (_state("rollback_started", "new"), "rolling_back"),
        (_state("rollback_completed", "new"), "rolled_back"),
        (_state("rollback_paused", "new"), "rolled_back"),
        (_state("paused", "new"), "paused"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{v.update_state}@{v.update_started_at}",
)
def test_classify(state: ServiceState, outcome: str) -> None:
    assert classify(state, marker="old", target="img@sha256:a") == outcome
