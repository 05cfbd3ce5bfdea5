"""Notifications and metrics of real rollouts on the Swarm bed.

A real Journal, Executor and SwarmServices run in this process; apprise posts to a local HTTP endpoint
(``json://127.0.0.1:PORT/…``) started by the test. A notifier that answers 500 or hangs must change nothing
about the deployment, and is recorded failed.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.bed import SwarmBed, wait_for
from tests.e2e.conftest import ServerFactory
from tests.e2e.test_rollout import rules_for
from tests.notify_sink import notify_sink
from tests.server import Server, documented_payload
from webhook_server import metrics
from webhook_server.executor import Executor
from webhook_server.journal import Deployment, Journal, Notification, PushRecord
from webhook_server.matching import DeployPlan
from webhook_server.notify import Notifier
from webhook_server.rules import RuleSet, parse_rules
from webhook_server.swarm import SwarmServices

pytestmark = pytest.mark.swarm

SECRET = "Zq9-notify-TOKEN-4f1c"
TIMEOUT_SECONDS = 90
# Swarm's reason for the crashing image's task (tests/bed.py: exits 3 after a second).
CRASH_ERROR = ": failed: task: non-zero exit (3)"


def rules_text(bed: SwarmBed, repo: str, service: str, *, notify: str, notify_on: str = "[rolled_back, failed]") -> str:
    return (
        "defaults:\n"
        "  update: {parallelism: 1, delay: 0s, order: start-first, failure_action: rollback, monitor: 2s}\n"
        f"  timeout: {TIMEOUT_SECONDS}s\n"
        "services:\n"
        f"  {service}:\n"
        f"    repository: {repo}\n"
        f"    image: {bed.registry}/{repo}\n"
        "    tags: semver\n"
        f'    notify: ["{notify}"]\n'
        f"    notify_on: {notify_on}\n"
    )


class Rig:
    """A journal, an executor on the bed and a notifier, as the server wires them."""

    def __init__(self, bed: SwarmBed, path: Path, rules: RuleSet, *, attempt_timeout: float = 30.0) -> None:
        self.rules = rules
        self.journal = Journal(path)
        self.notifier = Notifier(self.journal, rules=lambda: rules, attempt_timeout=attempt_timeout)
        self.notifier.subscribe()
        metrics.subscribe(self.journal)
        self.notifier.start()
        self.executor = Executor(journal=self.journal, swarm=SwarmServices(bed.docker_host), rules=lambda: rules)

    def deploy(self, service: str, repo: str, tag: str) -> tuple[Deployment, float]:
        """Accept a push and run it to its outcome on this thread; the deployment and how long that took."""
        push = PushRecord(trigger="dockerhub", repository=repo, tag=tag)
        rule = self.rules.get(service)
        assert rule is not None
        [dep] = self.journal.accept(push, [DeployPlan(service, repo, rule.image, tag)])
        started = time.monotonic()
        self.executor.drain(service)
        return self.journal.get(dep.id), time.monotonic() - started


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(bed: SwarmBed, rules: RuleSet, **kwargs: float) -> Rig:
        made.append(Rig(bed, tmp_path / f"journal{len(made)}.sqlite3", rules, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.notifier.stop(timeout=1)


def crashing_service(bed: SwarmBed, unique: str) -> str:
    """A service on a good image, with a crashing 1.0.1 in the registry; returns the repository."""
    repo = f"acme/{unique}"
    good = bed.make_image(repo, "1.0.0")
    bed.make_image(repo, "1.0.1", kind="crash")
    bed.create_service(unique, f"{good}@{bed.registry_digest(good)}", replicas=1)
    return repo


def journal_text(journal: Journal) -> str:
    with sqlite3.connect(journal.path) as conn:
        return "\n".join(repr(row) for row in conn.execute("SELECT * FROM notifications"))


def wait_recorded(journal: Journal, dep_id: int, *, timeout: float = 30.0) -> list[Notification]:
    deadline = time.monotonic() + timeout
    while not (found := journal.notifications(dep_id)):
        assert time.monotonic() < deadline, f"no notification recorded for deployment {dep_id}"
        time.sleep(0.1)
    return found


def sample(name: str, **labels: str) -> float:
    body = metrics.render()[0].decode()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def test_a_rolled_back_rollout_is_notified_once_with_swarms_reason(
    bed: SwarmBed, unique: str, rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    repo = crashing_service(bed, unique)
    with notify_sink() as sink:
        r = rig(bed, parse_rules(rules_text(bed, repo, unique, notify=sink.url(f"hooks/{SECRET}"))))

        dep, _ = r.deploy(unique, repo, "1.0.1")

        [got] = sink.wait(1)
        r.notifier.stop(timeout=10)  # drains: a second message would have been sent by now
        assert len(sink.received) == 1

    assert dep.state == "rolled_back", dep
    assert CRASH_ERROR in (dep.message or "")
    assert got.path == f"/hooks/{SECRET}"
    assert got.body["title"] == f"{unique}: rolled_back (1.0.1)"
    message = got.body["message"]
    assert message.startswith(f"{unique} rolled_back: ")
    assert " → " in message and "1.0.0 (sha256:" in message and "1.0.1 (sha256:" in message
    assert f"reason: {dep.message}" in message
    assert CRASH_ERROR in message
    assert f"trigger dockerhub · deployment {dep.id}" in message
    [record] = r.journal.notifications(dep.id)
    assert (record.outcome, record.target) == ("sent", f"json://127.0.0.1:{sink.port}/…")
    # The path is the notifier's secret: in no log line (urllib3 logs request lines at DEBUG) nor the journal.
    assert SECRET not in caplog.text
    assert SECRET not in journal_text(r.journal)
    assert sample("webhook_server_deployments_finished_total", service=unique, state="rolled_back") == 1
    assert sample("webhook_server_rollout_duration_seconds_count", service=unique) == 1


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_a_failing_notifier_changes_nothing_about_the_deployment(
    bed: SwarmBed, unique: str, rig: Callable[..., Rig], mode: str
) -> None:
    repo = crashing_service(bed, unique)
    with notify_sink(mode) as sink:  # type: ignore[arg-type]
        r = rig(bed, parse_rules(rules_text(bed, repo, unique, notify=sink.url(SECRET))), attempt_timeout=3)

        dep, took = r.deploy(unique, repo, "1.0.1")
        # The rollout thread is free before the notifier has even given up.
        pending = r.journal.notifications(dep.id) if mode == "hang" else []

        [record] = wait_recorded(r.journal, dep.id)
        sink.wait(1)

    assert pending == []
    assert dep.state == "rolled_back", dep
    assert CRASH_ERROR in (dep.message or "")
    assert took < TIMEOUT_SECONDS
    assert dep.started_at is not None and dep.finished_at is not None
    assert record.outcome == "failed", record
    assert record.target == f"json://127.0.0.1:{sink.port}/…"
    assert SECRET not in journal_text(r.journal)
    # Nothing about the deployment moved after its outcome: the notification came later and apart.
    assert r.journal.get(dep.id) == dep


def test_succeeded_rollouts_are_counted_and_notified_when_asked(
    bed: SwarmBed, unique: str, rig: Callable[..., Rig]
) -> None:
    repo = f"acme/{unique}"
    old = bed.make_image(repo, "1.0.0")
    bed.make_image(repo, "1.1.0")
    bed.make_image(repo, "1.2.0")
    bed.create_service(unique, f"{old}@{bed.registry_digest(old)}", replicas=1)
    with notify_sink() as sink:
        rules = parse_rules(rules_text(bed, repo, unique, notify=sink.url(), notify_on="[succeeded]"))
        r = rig(bed, rules)

        first, _ = r.deploy(unique, repo, "1.1.0")
        second, _ = r.deploy(unique, repo, "1.2.0")

        got = sink.wait(2)

    assert (first.state, second.state) == ("succeeded", "succeeded")
    assert [g.body["title"] for g in got] == [f"{unique}: succeeded (1.1.0)", f"{unique}: succeeded (1.2.0)"]
    assert sample("webhook_server_deployments_finished_total", service=unique, state="succeeded") == 2
    assert sample("webhook_server_rollout_duration_seconds_count", service=unique) == 2
    assert second.finished_at is not None
    last = sample("webhook_server_last_success_timestamp_seconds", service=unique)
    assert last == datetime.fromisoformat(second.finished_at).timestamp()


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_through_the_server_a_rollback_is_notified_and_counted_across_workers(
    bed: SwarmBed, unique: str, make_server: ServerFactory
) -> None:
    """The real server (gunicorn, two workers): the global notification URL from the environment, the outcome
    in the API with its notification, and /metrics summing what every worker counted: two succeeded
    rollouts and one rolled back."""
    repo = f"acme/{unique}"
    good = bed.make_image(repo, "1.0.0")
    bed.make_image(repo, "1.0.1")
    bed.make_image(repo, "1.0.2")
    bed.make_image(repo, "1.0.3", kind="crash")
    bed.create_service(unique, f"{good}@{bed.registry_digest(good)}", replicas=1)
    with notify_sink() as sink:
        server = make_server(
            rules_for(bed, repo, unique),
            docker_host=bed.docker_host,
            env={"WEBHOOK_NOTIFY_URLS": f"# ops channel\n{sink.url(f'hooks/{SECRET}')}"},
        )
        assert server.hook(documented_payload("acme/nobody-wants-this", "1.0.0")).status_code == 200
        for tag in ("1.0.1", "1.0.2"):
            done = server.wait_done(server.hook(documented_payload(repo, tag)).json()["deployments"][0]["id"])
            assert done["state"] == "succeeded", done
        dep = server.wait_done(server.hook(documented_payload(repo, "1.0.3")).json()["deployments"][0]["id"])
        [got] = sink.wait(1)
        shown = wait_for(
            lambda: server.deployment(dep["id"]) if server.deployment(dep["id"])["notifications"] else None,
            timeout=30,
            interval=0.2,
            what="the notification recorded",
        )

    assert dep["state"] == "rolled_back", dep
    assert got.body["title"] == f"{unique}: rolled_back (1.0.3)"
    assert CRASH_ERROR in got.body["message"]
    [record] = shown["notifications"]
    assert (record["outcome"], record["target"]) == ("sent", f"json://127.0.0.1:{sink.port}/…")
    # Several scrapes land on different workers; each answer is the sum over both.
    for _ in range(4):
        found = scrape(server)
        assert found[("webhook_server_webhooks_received_total", (("result", "accepted"),))] == 3
        assert found[("webhook_server_webhooks_received_total", (("result", "ignored"),))] == 1
        finished = "webhook_server_deployments_finished_total"
        assert found[(finished, (("service", unique), ("state", "succeeded")))] == 2
        assert found[(finished, (("service", unique), ("state", "rolled_back")))] == 1
        assert found[("webhook_server_rollout_duration_seconds_count", (("service", unique),))] == 3
        assert found[("webhook_server_last_success_timestamp_seconds", (("service", unique),))] > 0
    assert SECRET not in server.log_text()
