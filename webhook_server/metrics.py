"""Prometheus metrics: the only module that imports prometheus_client.

Under gunicorn each worker counts in its own process, so the server runs prometheus_client's multiprocess
mode: :func:`setup_multiprocess` in the master, before workers fork, points every process at one directory
of memory-mapped files (one directory per server, emptied at start); ``/metrics`` in any worker sums them.
Without it (the CLI, tests) the counts live in this process.

What the journal already knows (the queue, rollouts in progress, the build) is read from it at scrape time
rather than counted, so it is right whichever worker is asked and after a restart.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from webhook_server import __version__
from webhook_server.errors import ConfigError
from webhook_server.journal import Deployment, Journal

log = logging.getLogger(__name__)

__all__ = [
    "ENV",
    "PREFIX",
    "WebhookResult",
    "deployment_finished",
    "docker_error",
    "remove_multiprocess_dir",
    "render",
    "setup_multiprocess",
    "subscribe",
    "webhook_received",
    "worker_exited",
]

PREFIX = "webhook_server"
ENV = "PROMETHEUS_MULTIPROC_DIR"
WebhookResult = Literal["accepted", "ignored", "rejected"]
# Rollouts take seconds (health-gated: at least the monitor window) to many minutes.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_RAN = frozenset({"succeeded", "rolled_back", "failed"})

_lock = threading.Lock()
# The directory setup_multiprocess made itself (and so may remove); None when the operator named one.
_made_dir: Path | None = None


# ---- multiprocess mode ----------------------------------------------------------------------------------
def setup_multiprocess(directory: Path | str | None = None) -> Path:
    """In the gunicorn master, before any worker forks: use ``directory`` (default: ``$PROMETHEUS_MULTIPROC_DIR``
    if set, else a new private temporary directory) for every process's counts, emptied first so a restart
    does not add up the previous run's. Returns the directory. It must belong to this server alone."""
    global _made_dir
    if directory is None and os.environ.get(ENV):
        directory = os.environ[ENV]
    if directory is None:
        path = Path(tempfile.mkdtemp(prefix="webhook-server-metrics-"))
        _made_dir = path
    else:
        path = Path(directory)
        try:
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):
                stale.unlink()
        except OSError as e:
            raise ConfigError(f"{ENV} {path}: cannot use it for metrics: {e.strerror or e}") from None
    os.environ[ENV] = str(path)
    # prometheus_client picks its value class when it is first imported, from the environment: this module
    # may have been imported before the variable was set, so switch explicitly. Metrics made from now on
    # (and in forked workers) write to the directory.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return path


def worker_exited(pid: int) -> None:
    """gunicorn's ``child_exit`` hook, in the master: drop the dead worker's live gauges."""
    directory = os.environ.get(ENV)
    if directory:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def remove_multiprocess_dir() -> None:
    """When the server exits: remove the directory if :func:`setup_multiprocess` made it."""
    global _made_dir
    if _made_dir is not None:
        shutil.rmtree(_made_dir, ignore_errors=True)
        _made_dir = None


def _multiprocess_dir() -> str | None:
    directory = os.environ.get(ENV)
    return directory if directory and os.path.isdir(directory) else None


# ---- the instruments (made once per process, on first use) ----------------------------------------------
@dataclass(frozen=True)
class _Instruments:
    registry: CollectorRegistry
    webhooks: Counter
    deployments: Counter
    durations: Histogram
    docker_errors: Counter
    last_success: Gauge


_instruments: _Instruments | None = None


def _made() -> _Instruments:
    """The instruments, made on first use: after setup_multiprocess, so they write where it says."""
    global _instruments
    with _lock:
        if _instruments is None:
            # Registered only here, for single-process rendering; in multiprocess mode the files are read.
            registry = CollectorRegistry(auto_describe=True)
            _instruments = _Instruments(
                registry=registry,
                webhooks=Counter(
                    f"{PREFIX}_webhooks_received",
                    "Webhook and API deployment requests, by result (accepted, ignored, rejected).",
                    ["result"],
                    registry=registry,
                ),
                deployments=Counter(
                    f"{PREFIX}_deployments_finished",
                    "Deployments that reached a final state, by service and state.",
                    ["service", "state"],
                    registry=registry,
                ),
                durations=Histogram(
                    f"{PREFIX}_rollout_duration_seconds",
                    "From claim to outcome, for deployments that ran (succeeded, rolled_back, failed).",
                    ["service"],
                    buckets=DURATION_BUCKETS,
                    registry=registry,
                ),
                docker_errors=Counter(
                    f"{PREFIX}_docker_errors",
                    "Errors from the Docker API, by the project's error code.",
                    ["code"],
                    registry=registry,
                ),
                last_success=Gauge(
                    f"{PREFIX}_last_success_timestamp_seconds",
                    "When the service's latest successful deployment finished (Unix time), since the server started.",
                    ["service"],
                    # The newest across every process, and kept after the process that set it exits.
                    multiprocess_mode="max",
                    registry=registry,
                ),
            )
        return _instruments


def webhook_received(result: WebhookResult) -> None:
    """Count one webhook (or API deployment request) by its result."""
    try:
        _made().webhooks.labels(result=result).inc()
    except Exception:
        # Metrics must never fail a request.
        log.exception("metrics: cannot count a webhook")


def docker_error(code: str) -> None:
    """Count one error from the Docker API; ``code`` is the error's ``code`` (``docker_unavailable``, …)."""
    try:
        _made().docker_errors.labels(code=code).inc()
    except Exception:
        log.exception("metrics: cannot count a Docker error")


def deployment_finished(dep: Deployment) -> None:
    """The journal listener: count the outcome, time the rollout, note the last success."""
    try:
        made = _made()
        made.deployments.labels(service=dep.service, state=dep.state).inc()
        if dep.finished_at is None:
            return
        finished = datetime.fromisoformat(dep.finished_at)
        if dep.state in _RAN and dep.started_at is not None:
            seconds = (finished - datetime.fromisoformat(dep.started_at)).total_seconds()
            made.durations.labels(service=dep.service).observe(max(seconds, 0.0))
        if dep.state == "succeeded":
            made.last_success.labels(service=dep.service).set(finished.timestamp())
    except Exception:
        log.exception("metrics: cannot count deployment %s", dep.id)


def subscribe(journal: Journal) -> None:
    """Count every outcome ``journal`` records in this process (the executor's)."""
    journal.subscribe(deployment_finished)


# ---- scraping ----------------------------------------------------------------------------------------
class _Certificates(Collector):
    """Seconds until each certificate nginx serves expires, read from the files at scrape time: right in
    every worker, with no counter to keep."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, float]]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_certificate_expiry_seconds",
            "Seconds until the certificate of each lineage the proxy config names expires (negative: expired).",
            labels=["lineage"],
        )
        try:
            found = sorted(self._read())
        except Exception:
            log.exception("metrics: cannot read the certificates")
            return
        for lineage, seconds in found:
            family.add_metric([lineage], seconds)
        yield family


class _FromJournal(Collector):
    """What the journal knows, read at scrape time: queue depth and rollouts in progress by service, and
    the build."""

    def __init__(self, journal: Journal | None) -> None:
        self._journal = journal

    def collect(self) -> Iterable[Metric]:
        build = GaugeMetricFamily(f"{PREFIX}_build_info", "The running webhook-server's version.", labels=["version"])
        build.add_metric([__version__], 1.0)
        yield build
        if self._journal is None:
            return
        queued = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Deployments queued (waiting to run), by service.", labels=["service"]
        )
        running = GaugeMetricFamily(
            f"{PREFIX}_rollouts_in_progress", "Deployments running now, by service.", labels=["service"]
        )
        try:
            waiting = Tally(d.service for d in self._journal.find(state="queued", limit=1_000_000))
            busy = Tally(d.service for d in self._journal.running())
        except Exception:
            # A scrape must still answer with the counts when the journal cannot be read.
            log.exception("metrics: cannot read the journal")
            return
        for service, count in sorted(waiting.items()):
            queued.add_metric([service], float(count))
        for service, count in sorted(busy.items()):
            running.add_metric([service], float(count))
        yield queued
        yield running


class _Local(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def render(
    journal: Journal | None = None, *, certificates: Callable[[], Iterable[tuple[str, float]]] | None = None
) -> tuple[bytes, str]:
    """The ``/metrics`` answer: (body, content type), every process's counts summed in multiprocess mode;
    ``certificates`` gives (lineage, seconds left) of the certificates the server watches."""
    registry = CollectorRegistry(auto_describe=False)
    directory = _multiprocess_dir()
    if directory is not None:
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Local(_made().registry))
    registry.register(_FromJournal(journal))
    if certificates is not None:
        registry.register(_Certificates(certificates))
    return generate_latest(registry), CONTENT_TYPE_LATEST
