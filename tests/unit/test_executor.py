"""The executor against a fake Swarm: outcomes, coalescing, idempotency, conflicts, outages, resumption.

Every test runs on both journals, SQLite and PostgreSQL (the ``journal`` fixture of tests/unit/conftest.py).
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes import FakeSwarm
from tests.pg import journal_sql
from webhook_server.cluster import ServiceState, TaskState
from webhook_server.errors import DockerError, NotAllowed
from webhook_server.executor import Executor, backoff, classify
from webhook_server.journal import Journal, PushRecord
from webhook_server.matching import Coalesced, DeployPlan
from webhook_server.rollback import plan_rollback
from webhook_server.rules import RuleSet, RulesSource, parse_rules

IMAGE = "reg:5000/acme/api"
RULES_TEXT = f"""
defaults: {{update: {{monitor: 1s}}, timeout: 5s}}
services:
  api: {{repository: acme/api, image: {IMAGE}, tags: semver, policy: minor}}
  web: {{repository: acme/web, image: reg:5000/acme/web, tags: latest}}
"""
RULES = parse_rules(RULES_TEXT)


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


def test_the_nodes_that_ran_the_new_image_are_recorded(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    new = f"{IMAGE}:1.1.0@{digest}"
    swarm.task_list["api"] = [
        TaskState(node="node-b", image=new, state="running", desired_state="running"),
        TaskState(node="node-a", image=new, state="running", desired_state="running"),
        TaskState(node="node-c", image=f"{IMAGE}:1.0.0@sha256:{'0' * 64}", state="shutdown", desired_state="shutdown"),
    ]
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "succeeded"
    assert dep.nodes == ("node-a", "node-b")


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

    make_executor(journal, swarm, retry_limit=timedelta(0))._execute(journal.get(dep_id), None)
    failed = journal.get(dep_id)
    assert failed.state == "failed" and failed.message == "gave up after 0s: Docker is unreachable: fake outage"


def test_missing_service_fails(journal: Journal, swarm: FakeSwarm) -> None:
    del swarm.services["api"]
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    assert journal.get(dep_id).message == "service 'api' does not exist in the swarm"


def test_resume_follows_an_update_that_reached_swarm(journal: Journal, swarm: FakeSwarm) -> None:
    """The process died after starting the update: the next executor records Swarm's outcome."""
    digest = swarm.push(IMAGE, "1.1.0")
    [dep_id] = enqueue(journal, "api", "1.1.0")
    claimed = journal.claim("api", lambda c: Coalesced(chosen=c[0]))
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
    journal.claim("api", lambda c: Coalesced(chosen=c[0]))
    journal.update(dep_id, image_ref=f"{IMAGE}:1.1.0@{digest}", update_marker=None)

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "succeeded"
    assert "re-queued: the update had not reached Swarm" in [t.message for t in journal.transitions(dep_id)]
    assert len(swarm.updates()) == 1


def test_claim_refuses_while_a_rollout_of_the_service_runs(journal: Journal) -> None:
    enqueue(journal, "api", "1.1.0", "1.2.0")
    first = journal.claim("api", lambda c: Coalesced(chosen=c[0]))
    assert first is not None
    assert journal.claim("api", lambda c: Coalesced(chosen=c[0])) is None


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


# ---- hardening: each case below once went wrong -----------------------------------------------
def test_coalescing_keeps_the_best_version_the_policy_allows(journal: Journal, swarm: FakeSwarm) -> None:
    """Runs 1.0.0 under policy minor; 1.1.0 and 2.0.0 queue: 1.1.0 deploys, 2.0.0 is refused (not the reverse)."""
    digest = swarm.push(IMAGE, "1.1.0")
    swarm.push(IMAGE, "2.0.0")
    minor, major = enqueue(journal, "api", "1.1.0", "2.0.0")

    make_executor(journal, swarm).drain("api")

    assert journal.get(minor).state == "succeeded"
    assert journal.get(major).state == "skipped"
    assert "policy 'minor' forbids it" in (journal.get(major).message or "")
    assert swarm.updates() == [("update", "api", f"{IMAGE}:1.1.0@{digest}")]


@pytest.mark.parametrize("attempts", [0, 5, 46, 47, 100, 10_000])
def test_backoff_never_overflows(attempts: int) -> None:
    assert backoff(attempts, timedelta(seconds=5)) <= timedelta(seconds=5)


def test_retry_after_many_attempts_requeues_without_error(journal: Journal, swarm: FakeSwarm) -> None:
    swarm.down = True
    [dep_id] = enqueue(journal, "api", "1.1.0")
    journal.update(dep_id, attempts=100, first_failed_at=_ago(seconds=1))

    make_executor(journal, swarm, max_backoff=timedelta(seconds=5)).drain("api")

    dep = journal.get(dep_id)
    assert (dep.state, dep.attempts) == ("queued", 101)
    assert "retrying in 5s" in (dep.message or "")


def test_retry_limit_counts_from_the_first_failure_not_arrival(journal: Journal, swarm: FakeSwarm) -> None:
    """A push that waited an hour behind others is not failed on its first hiccup."""
    swarm.down = True
    [dep_id] = enqueue(journal, "api", "1.1.0")
    _set_created_at(journal, dep_id, _ago(seconds=3600))

    make_executor(journal, swarm, retry_limit=timedelta(minutes=10)).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "queued" and dep.first_failed_at is not None


def test_a_waiting_best_candidate_is_not_overtaken_by_a_worse_ready_one(journal: Journal, swarm: FakeSwarm) -> None:
    swarm.push(IMAGE, "1.1.0")
    swarm.push(IMAGE, "1.2.0")
    best, worse = enqueue(journal, "api", "1.2.0", "1.1.0")
    journal.retry_later(best, delay=timedelta(hours=1), reason="Docker is unreachable")

    make_executor(journal, swarm).drain("api")

    assert journal.get(best).state == "queued"
    assert journal.get(worse).state == "queued"
    assert swarm.updates() == []


def test_resume_during_an_outage_backs_off_and_gives_up_past_the_limit(journal: Journal, swarm: FakeSwarm) -> None:
    """A deployment left running while Docker is down must not block its service for ever."""
    digest = swarm.push(IMAGE, "1.1.0")
    [dep_id] = enqueue(journal, "api", "1.1.0")
    journal.claim("api", lambda c: Coalesced(chosen=c[0]))
    journal.update(dep_id, image_ref=f"{IMAGE}:1.1.0@{digest}", update_marker=None)
    swarm.down = True

    make_executor(journal, swarm).drain("api")
    waiting = journal.get(dep_id)
    assert (waiting.state, waiting.attempts) == ("running", 1)
    assert journal.running(ready_only=True) == []  # not retried before its delay

    journal.update(dep_id, not_before=None, first_failed_at=_ago(seconds=60))
    make_executor(journal, swarm, retry_limit=timedelta(seconds=30)).drain("api")
    failed = journal.get(dep_id)
    assert failed.state == "failed"
    assert (failed.message or "").startswith("lost contact with Docker for more than 30s during the update")


def test_an_update_whose_answer_was_lost_is_followed_to_swarms_outcome(journal: Journal, swarm: FakeSwarm) -> None:
    """A read timeout after the update reached Swarm: follow it, never record "skipped"."""
    digest = swarm.push(IMAGE, "1.1.0")
    swarm.crashing.add(f"{IMAGE}:1.1.0@{digest}")
    swarm.lost_answers = 1
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "rolled_back", dep.message
    assert len(swarm.updates()) == 1


def test_an_update_lost_before_swarm_saw_it_is_sent_again(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    swarm.dropped_requests = 1
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    assert journal.get(dep_id).state == "succeeded"
    assert swarm.updates() == [("update", "api", f"{IMAGE}:1.1.0@{digest}")] * 2


def test_rollback_message_carries_the_tasks_errors(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    target = f"{IMAGE}:1.1.0@{digest}"
    swarm.crashing.add(target)
    swarm.task_list["api"] = [
        TaskState(
            node="node-2", image=target, state="failed", desired_state="shutdown", error="task: non-zero exit (1)"
        ),
        TaskState(node="node-1", image=f"{IMAGE}:1.0.0", state="running", desired_state="running"),
    ]
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    message = journal.get(dep_id).message or ""
    assert message.endswith("; task on node-2: failed: task: non-zero exit (1)"), message


def test_timeout_says_what_swarm_still_says_in_the_rules_units(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    swarm.stuck.add(f"{IMAGE}:1.1.0@{digest}")
    rules = parse_rules(f"services:\n  api: {{repository: acme/api, image: {IMAGE}, tags: semver, timeout: 10ms}}\n")
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm, rules=rules).drain("api")

    dep = journal.get(dep_id)
    assert dep.state == "failed"
    assert dep.message == "no outcome within 10ms; Swarm still says updating: update in progress"


def test_a_rollout_swarm_cannot_place_fails_with_swarms_reason(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    target = f"{IMAGE}:1.1.0@{digest}"
    swarm.stuck.add(target)
    reason = "no suitable node (max replicas per node limit exceed)"
    swarm.task_list["api"] = [TaskState(node="", image=target, state="pending", desired_state="running", error=reason)]
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm, unschedulable_grace=timedelta(0)).drain("api")

    dep = journal.get(dep_id)
    assert (dep.state, dep.message) == ("failed", f"Swarm cannot place the new tasks: {reason}")


def test_shutdown_leaves_the_watch_running_with_a_note_for_the_next_executor(
    journal: Journal, swarm: FakeSwarm
) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    swarm.stuck.add(f"{IMAGE}:1.1.0@{digest}")
    [dep_id] = enqueue(journal, "api", "1.1.0")
    executor = make_executor(journal, swarm)
    stop = threading.Event()
    stop.set()
    executor._stop = stop

    executor._execute(journal.claim("api", lambda c: Coalesced(chosen=c[0])), None)  # type: ignore[arg-type]

    dep = journal.get(dep_id)
    assert dep.state == "running"
    assert journal.transitions(dep_id)[-1].message == "executor stopping; the next executor follows this rollout"
    swarm.stuck.clear()
    swarm._pending["api"] = [("completed", "update completed", dep.image_ref or "")]
    make_executor(journal, swarm).drain("api")
    assert journal.get(dep_id).state == "succeeded"


def test_non_connection_errors_fail_at_once(journal: Journal, swarm: FakeSwarm) -> None:
    swarm.push(IMAGE, "1.1.0")
    swarm.update_error = DockerError("update service api: Credentials store error: StoreError('not found')")
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    dep = journal.get(dep_id)
    assert (dep.state, dep.attempts) == ("failed", 0)
    assert "Credentials store error" in (dep.message or "")


def _ago(*, seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _set_created_at(journal: Journal, dep_id: int, at: str) -> None:
    journal_sql(journal, "UPDATE deployments SET created_at = :at WHERE id = :id", at=at, id=dep_id)


# ---- rollback targets -------------------------------------------------------------------------
def test_rollback_can_return_to_the_image_from_before_the_first_deployment(journal: Journal, swarm: FakeSwarm) -> None:
    original = swarm.services["api"].image
    swarm.push(IMAGE, "1.1.0")
    [dep_id] = enqueue(journal, "api", "1.1.0")
    make_executor(journal, swarm).drain("api")

    plan, target = plan_rollback(journal=journal, rules=RULES, service="api", running_image=swarm.services["api"].image)

    assert (target.image_ref, target.id) == (original, None)
    assert f"before its first deployment here ({dep_id})" in target.description
    assert plan.tag == "1.0.0"


def test_rollback_with_nothing_earlier_says_what_is_possible(journal: Journal, swarm: FakeSwarm) -> None:
    with pytest.raises(NotAllowed, match=r"deploy a tag instead \(webhook-server deploy SERVICE TAG\)"):
        plan_rollback(journal=journal, rules=RULES, service="api", running_image=swarm.services["api"].image)


def test_rollback_message_carries_the_failed_health_check(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    target = f"{IMAGE}:1.1.0@{digest}"
    swarm.crashing.add(target)
    swarm.task_list["api"] = [
        TaskState(node="vm", image=target, state="shutdown", desired_state="shutdown", message="shutdown"),
        TaskState(node="vm", image=target, state="complete", desired_state="shutdown", container_id="c1"),
    ]
    swarm.health_failures["c1"] = "exit 1: curl: (7) Failed to connect"
    [dep_id] = enqueue(journal, "api", "1.1.0")

    make_executor(journal, swarm).drain("api")

    message = journal.get(dep_id).message or ""
    assert message.endswith(
        "(rollback_completed: rollback completed); task on vm: health check failed: exit 1: curl: (7) Failed to connect"
    ), message


def test_work_waits_while_no_rules_are_loaded_and_runs_once_the_file_is_fixed(
    journal: Journal, swarm: FakeSwarm, tmp_path: Path
) -> None:
    path = tmp_path / "deploy_rules.yaml"
    path.write_text("services: [not, a, mapping]\n")
    source = RulesSource(path)
    assert not source.loaded
    digest = swarm.push(IMAGE, "1.1.0")
    [dep_id] = enqueue(journal, "api", "1.1.0")
    executor = Executor(
        journal=journal, swarm=swarm, rules=source.current, rules_loaded=lambda: source.loaded, watch_interval=0
    )

    executor.drain("api")
    assert journal.get(dep_id).state == "queued"
    assert swarm.updates() == []

    path.write_text(RULES_TEXT)
    os.utime(path, ns=(0, 10**9))  # a new mtime even on a coarse clock
    executor.drain("api")
    assert journal.get(dep_id).state == "succeeded"
    assert journal.get(dep_id).image_ref == f"{IMAGE}:1.1.0@{digest}"


TASK_ERROR_CASES: list[tuple[str, list[TaskState], list[str]]] = [
    (
        "exit-code",
        [TaskState(node="n1", image="new", state="failed", desired_state="shutdown", error="task: non-zero exit (3)")],
        ["task on n1: failed: task: non-zero exit (3)"],
    ),
    (
        "same-reason-once",
        [
            TaskState(node="n1", image="new", state="failed", desired_state="shutdown", error="No such image: x"),
            TaskState(node="n2", image="new", state="rejected", desired_state="shutdown", error="No such image: x"),
        ],
        ["task on n1: failed: No such image: x"],
    ),
    (
        "waiting-for-the-scheduler-is-not-a-reason",
        [TaskState(node="", image="new", state="pending", desired_state="running", message="pending task scheduling")],
        [],
    ),
    (
        "no-suitable-node-is",
        [
            TaskState(
                node="",
                image="new",
                state="pending",
                desired_state="running",
                message="no suitable node (max replicas per node limit exceed)",
            )
        ],
        ["task: pending: no suitable node (max replicas per node limit exceed)"],
    ),
    ("other-image", [TaskState(node="n1", image="old", state="failed", desired_state="shutdown", error="x")], []),
    ("healthy-running", [TaskState(node="n1", image="new", state="running", desired_state="running")], []),
]


@pytest.mark.parametrize(("tasks", "expected"), [c[1:] for c in TASK_ERROR_CASES], ids=[c[0] for c in TASK_ERROR_CASES])
def test_task_errors(tasks: list[TaskState], expected: list[str]) -> None:
    from webhook_server.executor import task_errors

    assert task_errors(tasks, "new") == expected
