"""The status view: what runs, the last deployment, what waits and a rollout's progress; the same data for
``GET /api/services`` and ``webhook-server status``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import FakeSwarm
from webhook_server.cluster import Placement, ServiceState, TaskState
from webhook_server.journal import Journal, PushRecord
from webhook_server.matching import DeployPlan
from webhook_server.rules import parse_rules
from webhook_server.status import cluster_status, progress

IMAGE = "reg:5000/acme/api"
NEW = f"{IMAGE}:1.1.0@sha256:{'1' * 64}"
OLD = f"{IMAGE}:1.0.0@sha256:{'0' * 64}"
RULES = parse_rules(
    f"""
services:
  api: {{repository: acme/api, image: {IMAGE}, tags: semver}}
  idle: {{repository: acme/idle, image: reg:5000/acme/idle, tags: latest}}
"""
)


def task(node: str, image: str, state: str = "running", desired: str = "running") -> TaskState:
    return TaskState(node=node, image=image, state=state, desired_state=desired)


def queue(journal: Journal, service: str, tag: str) -> int:
    rule = RULES.get(service)
    assert rule is not None
    plan = DeployPlan(service=service, repository=rule.repository, image=rule.image, tag=tag)
    [dep] = journal.accept(PushRecord(trigger="dockerhub", repository=rule.repository, tag=tag), [plan])
    return dep.id


PROGRESS_CASES: list[tuple[str, Placement, list[TaskState], tuple[int, int]]] = [
    ("none-yet", Placement(replicas=3), [task(n, OLD) for n in "abc"], (0, 3)),
    (
        "one-of-three",
        Placement(replicas=3),
        [task("a", NEW), task("a", OLD, "shutdown", "shutdown"), task("b", OLD), task("c", OLD)],
        (1, 3),
    ),
    ("starting-is-not-updated", Placement(replicas=2), [task("a", NEW, "starting"), task("b", OLD)], (0, 2)),
    ("all", Placement(replicas=2), [task("a", NEW), task("b", NEW)], (2, 2)),
    (
        "global-counts-nodes",
        Placement(global_mode=True),
        [task("a", NEW), task("b", OLD), task("c", OLD, "failed", "shutdown")],
        (1, 2),
    ),
]


@pytest.mark.parametrize(
    ("placement", "tasks", "expected"), [c[1:] for c in PROGRESS_CASES], ids=[c[0] for c in PROGRESS_CASES]
)
def test_progress(placement: Placement, tasks: list[TaskState], expected: tuple[int, int], tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    dep = journal.update(queue(journal, "api", "1.1.0"), state="running", image_ref=NEW)
    state = ServiceState(name="api", id="x", version=2, image=NEW, update_state="updating", placement=placement)
    found = progress(dep, state, tasks)
    assert (found.tasks_updated, found.tasks_total) == expected
    assert found.swarm_state == "updating"


def test_every_rule_is_listed_with_what_runs_and_what_happened(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    swarm = FakeSwarm()
    swarm.add_service("api", NEW)
    first = queue(journal, "api", "1.0.9")
    journal.update(first, state="running")
    journal.update(first, state="rolled_back", message="task: non-zero exit (3)")
    superseded = queue(journal, "api", "1.0.10")
    journal.update(superseded, state="superseded")
    running = queue(journal, "api", "1.1.0")
    journal.update(running, state="running", image_ref=NEW)
    waiting = queue(journal, "api", "1.2.0")
    swarm.task_list["api"] = [task("node-a", NEW)]

    api, idle = cluster_status(journal=journal, swarm=swarm, rules=RULES)

    assert (api.service, api.image, api.problem) == ("api", NEW, None)
    assert api.last is not None and (api.last.id, api.last.state) == (first, "rolled_back")
    assert api.last.message == "task: non-zero exit (3)"
    assert [q.id for q in api.queued] == [waiting]
    assert api.in_progress is not None and api.in_progress.deployment.id == running
    assert (api.in_progress.tasks_updated, api.in_progress.tasks_total) == (1, 1)
    # A rule whose service Docker does not know is still listed, with the reason.
    assert idle.service == "idle" and idle.image is None and idle.problem is not None and "idle" in idle.problem


def test_which_receiver_runs_rollouts_is_shown_when_receivers_share_the_journal(journal: Journal) -> None:
    from webhook_server import display
    from webhook_server.leadership import LEASE_NAME
    from webhook_server.status import executor_detail

    if not journal.shared:
        assert executor_detail(journal) is None  # SQLite: this host's receiver, by the lock file
        assert display.executor_lines(None) == []
        return
    nobody = executor_detail(journal)
    assert nobody == {"holder": None, "epoch": None, "expires_in_seconds": None}
    assert "no receiver holds the lease" in display.executor_lines(nobody)[0]
    epoch = journal.acquire_lease(LEASE_NAME, holder="manager-2:41:5f0c6e4f", ttl=5)
    held = executor_detail(journal)
    assert held is not None
    assert held["holder"] == "manager-2:41:5f0c6e4f" and held["epoch"] == epoch
    assert 0 < held["expires_in_seconds"] <= 5
    [line] = display.executor_lines(held)
    assert line.startswith("rollouts: run by manager-2:41:5f0c6e4f")
