"""Metrics: what the listener and the counting functions add, what the journal says at scrape time, and
multiprocess mode summing forked workers as gunicorn's would be."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from webhook_server import __version__, metrics
from webhook_server.journal import Deployment, Journal, PushRecord
from webhook_server.matching import Coalesced, DeployPlan

REPO = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(body: bytes) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def queue(journal: Journal, service: str, tag: str) -> Deployment:
    push = PushRecord(trigger="dockerhub", repository=f"acme/{service}", tag=tag)
    plan = DeployPlan(service=service, repository=f"acme/{service}", image=f"acme/{service}", tag=tag)
    return journal.accept(push, [plan])[0]


def finish(journal: Journal, service: str, state: str) -> Deployment:
    dep = queue(journal, service, "1.0.0")
    journal.claim(service, lambda queued: Coalesced(chosen=queued[-1]))
    return journal.update(dep.id, state=state, message="done")  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "journal.sqlite3")
    metrics.subscribe(journal)
    return journal


def test_outcomes_are_counted_timed_and_the_last_success_noted(journal: Journal) -> None:
    before = samples(metrics.render(journal)[0])

    ok = finish(journal, "m_api", "succeeded")
    finish(journal, "m_api", "succeeded")
    finish(journal, "m_api", "rolled_back")
    finish(journal, "m_web", "skipped")

    after = samples(metrics.render(journal)[0])

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("webhook_server_deployments_finished_total", service="m_api", state="succeeded") == 2
    assert delta("webhook_server_deployments_finished_total", service="m_api", state="rolled_back") == 1
    assert delta("webhook_server_deployments_finished_total", service="m_web", state="skipped") == 1
    assert delta("webhook_server_rollout_duration_seconds_count", service="m_api") == 3
    # A skipped deployment did not roll anything out.
    assert delta("webhook_server_rollout_duration_seconds_count", service="m_web") == 0
    assert delta("webhook_server_rollout_duration_seconds_bucket", service="m_api", le="+Inf") == 3
    last = value(after, "webhook_server_last_success_timestamp_seconds", service="m_api")
    assert last >= value(before, "webhook_server_last_success_timestamp_seconds", service="m_api")
    assert last > 0 and ok.finished_at is not None


def test_webhooks_and_docker_errors_are_counted() -> None:
    before = samples(metrics.render()[0])

    metrics.webhook_received("accepted")
    metrics.webhook_received("accepted")
    metrics.webhook_received("ignored")
    metrics.webhook_received("rejected")
    metrics.docker_error("docker_unavailable")

    after = samples(metrics.render()[0])
    for result, count in (("accepted", 2), ("ignored", 1), ("rejected", 1)):
        name = "webhook_server_webhooks_received_total"
        assert value(after, name, result=result) - value(before, name, result=result) == count
    name = "webhook_server_docker_errors_total"
    assert value(after, name, code="docker_unavailable") - value(before, name, code="docker_unavailable") == 1


def test_queue_depth_running_and_build_info_come_from_the_journal(journal: Journal) -> None:
    queue(journal, "q_api", "1.0.0")
    queue(journal, "q_api", "1.0.1")
    queue(journal, "q_web", "2.0.0")
    journal.claim("q_web", lambda queued: Coalesced(chosen=queued[-1]))

    body, content_type = metrics.render(journal)

    found = samples(body)
    assert content_type.startswith("text/plain; version=")
    assert value(found, "webhook_server_queue_depth", service="q_api") == 2
    assert ("webhook_server_queue_depth", (("service", "q_web"),)) not in found
    assert value(found, "webhook_server_rollouts_in_progress", service="q_web") == 1
    assert value(found, "webhook_server_build_info", version=__version__) == 1


def test_a_broken_deployment_record_never_raises_from_the_listener(journal: Journal) -> None:
    dep = finish(journal, "m_odd", "succeeded").model_copy(update={"finished_at": "not a time"})
    metrics.deployment_finished(dep)  # logged, not raised


# Run in a fresh interpreter: multiprocess mode changes prometheus_client's process-wide value class.
_MULTIPROCESS = textwrap.dedent(
    """
    import json, multiprocessing, os, sys
    from pathlib import Path

    from webhook_server import metrics  # imported (with prometheus_client) before the directory is set
    from webhook_server.journal import Journal, PushRecord
    from webhook_server.matching import Coalesced, DeployPlan

    directory, db = Path(sys.argv[1]), sys.argv[2]
    (directory / "counter_999999.db").write_bytes(b"stale from a previous run")
    metrics.setup_multiprocess(directory)

    def worker(states):
        journal = Journal(db)
        metrics.subscribe(journal)
        for state in states:
            metrics.webhook_received("accepted")
            push = PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.0")
            [dep] = journal.accept(push, [DeployPlan("api", "acme/api", "acme/api", "1.0.0")])
            journal.claim("api", lambda queued: Coalesced(chosen=queued[-1]))
            journal.update(dep.id, state=state, message="done")
        metrics.docker_error("docker_unavailable")

    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=worker, args=(s,)) for s in (["succeeded"], ["succeeded", "rolled_back"])]
    for w in workers:  # one after the other: each claim must find the service free
        w.start()
        w.join(60)
        assert w.exitcode == 0, w.exitcode
        metrics.worker_exited(w.pid)
    body, _ = metrics.render(Journal(db))
    print(json.dumps({"body": body.decode(), "files": sorted(p.name for p in directory.iterdir())}))
    """
)


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _MULTIPROCESS, str(directory), str(tmp_path / "journal.sqlite3")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    found = samples(out["body"].encode())

    assert value(found, "webhook_server_webhooks_received_total", result="accepted") == 3
    assert value(found, "webhook_server_deployments_finished_total", service="api", state="succeeded") == 2
    assert value(found, "webhook_server_deployments_finished_total", service="api", state="rolled_back") == 1
    assert value(found, "webhook_server_rollout_duration_seconds_count", service="api") == 3
    assert value(found, "webhook_server_docker_errors_total", code="docker_unavailable") == 2
    assert value(found, "webhook_server_last_success_timestamp_seconds", service="api") > 0
    assert value(found, "webhook_server_build_info", version=__version__) == 1
    # Gauges in "max" mode carry no pid label: one series whichever worker set it.
    assert not any(key == "pid" for (_, labels) in found for key, _ in labels)
    assert "counter_999999.db" not in out["files"]


def test_setup_refuses_a_directory_it_cannot_use(tmp_path: Path) -> None:
    script = (
        "import sys\nfrom webhook_server import metrics\nfrom webhook_server.errors import ConfigError\n"
        "try:\n    metrics.setup_multiprocess(sys.argv[1])\nexcept ConfigError as e:\n    print(e.message)\n"
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-c", script, str(blocker / "sub")], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"PROMETHEUS_MULTIPROC_DIR {blocker / 'sub'}: cannot use it for metrics")


def test_a_private_directory_is_made_and_removed(tmp_path: Path) -> None:
    script = (
        "import os\nfrom webhook_server import metrics\n"
        "os.environ.pop('PROMETHEUS_MULTIPROC_DIR', None)\n"
        "path = metrics.setup_multiprocess()\nmetrics.webhook_received('ignored')\n"
        "print(path, any(path.iterdir()))\nmetrics.remove_multiprocess_dir()\nprint(path.exists())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.endswith(" True") and "webhook-server-metrics-" in first
    assert second == "False"
