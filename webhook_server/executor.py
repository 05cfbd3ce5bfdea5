"""Runs rollouts: one at a time per service, services in parallel, queued pushes coalesced.

One executor runs per journal: whichever process leadership.py elects. Work is found
in the journal, never handed over in memory, so a restart resumes exactly where the journal says:
a deployment left ``running`` is followed to Swarm's outcome (or queued again if its update never reached
Swarm) through the same code that runs fresh work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from webhook_server import logs
from webhook_server.cluster import ServiceState, Swarm, TaskState
from webhook_server.digests import EarlyDigest
from webhook_server.durations import format_duration
from webhook_server.errors import DockerError, DockerUnavailable, ServiceNotFound, UpdateOutOfSequence, UpdateUncertain
from webhook_server.journal import Deployment, Journal
from webhook_server.matching import Candidate, Coalesced, coalesce, policy_refusal_for
from webhook_server.rules import Rule, RuleSet, RulesSource
from webhook_server.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Executor", "Swarm", "classify"]

MAX_OUT_OF_SEQUENCE = 5
# 2**30 s is far past any max delay; capping the exponent keeps timedelta from overflowing.
MAX_BACKOFF_EXPONENT = 30
# Swarm retries placing a pending task for ever; after this long with no node for it, say so and stop.
UNSCHEDULABLE_GRACE = timedelta(seconds=5)
# Task states that say nothing went wrong (yet).
_QUIET_TASK_STATES = frozenset(
    {"new", "allocated", "assigned", "accepted", "preparing", "ready", "starting", "running", "shutdown", "complete"}
)

Final = Literal["succeeded", "rolled_back", "failed", "skipped"]
Outcome = Literal["pending", "updating", "rolling_back", "succeeded", "rolled_back", "paused", "diverged"]


def classify(state: ServiceState, *, marker: str | None, target: str) -> Outcome:
    """Where Swarm is with the update we started. ``marker`` is the UpdateStatus.StartedAt seen before it.

    An UpdateStatus with the old StartedAt belongs to an earlier update: ours has not shown up yet.
    """
    if state.update_state is None or state.update_started_at == marker:
        return "pending"
    match state.update_state:
        case "updating":
            return "updating"
        case "rollback_started":
            return "rolling_back"
        case "rollback_completed" | "rollback_paused":
            return "rolled_back"
        case "paused":
            return "paused"
        case "completed":
            return "succeeded" if state.image == target else "diverged"
    return "updating"


def reached_swarm(dep: Deployment, state: ServiceState) -> bool:
    """Whether an update this deployment sent earlier shows in Swarm (so it must be followed, not resent)."""
    if dep.image_ref is None:
        return False
    return state.image == dep.image_ref or (
        state.update_state is not None and state.update_started_at != dep.update_marker
    )


def task_errors(tasks: list[TaskState], image: str) -> list[str]:
    """Swarm's reasons for the tasks of ``image`` that did not run, one per distinct reason, with the node."""
    found: dict[str, str] = {}
    for task in tasks:
        reason = task.error or task.message
        if (
            task.image != image
            or (task.state in _QUIET_TASK_STATES and not task.error)
            # Waiting for the scheduler is normal; only a pending task's reason ("no suitable node …") says much.
            or (task.state == "pending" and not task.error and reason == "pending task scheduling")
            or not reason
            or reason in found
        ):
            continue
        where = f"task on {task.node}" if task.node else "task"
        found[reason] = f"{where}: {task.state}: {reason}"
    return list(found.values())


def unschedulable(tasks: list[TaskState], image: str) -> str | None:
    """Swarm's reason when a task of ``image`` is pending because no node can take it."""
    for task in tasks:
        reason = task.error or task.message
        if task.image == image and task.state == "pending" and "no suitable node" in reason:
            return reason
    return None


def _with(message: str, reasons: dict[str, None]) -> str:
    return "; ".join([message, *list(reasons)[:3]])


def backoff(attempts: int, max_delay: timedelta) -> timedelta:
    return min(timedelta(seconds=2 ** min(attempts, MAX_BACKOFF_EXPONENT)), max_delay)


class Executor:
    def __init__(
        self,
        *,
        journal: Journal,
        swarm: Swarm,
        rules: Callable[[], RuleSet],
        retry_limit: timedelta = timedelta(minutes=10),
        max_backoff: timedelta = timedelta(seconds=30),
        poll_interval: float = 1.0,
        watch_interval: float = 1.0,
        unschedulable_grace: timedelta = UNSCHEDULABLE_GRACE,
        rules_loaded: Callable[[], bool] = lambda: True,
    ) -> None:
        self._journal = journal
        # False while the server runs on no rules (a broken file and nothing to fall back on): queued work
        # then waits for the file to be fixed instead of failing as "no rule for service".
        self._rules_loaded = rules_loaded
        self._swarm = swarm
        self._rules = rules
        self._retry_limit = retry_limit
        self._max_backoff = max_backoff
        self._poll_interval = poll_interval
        self._watch_interval = watch_interval
        self._unschedulable_grace = unschedulable_grace
        self._wake = threading.Event()
        # Set when the process shuts down: a watch stops where it is and leaves the journal saying so.
        self._stop = threading.Event()
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, journal: Journal, swarm: Swarm, rules: RulesSource) -> Executor:
        return cls(
            journal=journal,
            swarm=swarm,
            rules=rules.current,
            rules_loaded=lambda: rules.loaded,
            retry_limit=settings.docker_retry_limit,
            max_backoff=settings.docker_retry_max_delay,
        )

    # ---- scheduling ------------------------------------------------------------------------------
    def wake(self) -> None:
        """New work was journaled in this process: look now instead of at the next poll."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        log.info("executor started")
        # Work queued by any process wakes the loop at once; the poll is the fallback (and finds retries
        # whose time has come).
        listener = threading.Thread(
            target=self._journal.listen_for_work, args=(self._wake.set, stop), name="work-listener", daemon=True
        )
        listener.start()
        while not stop.is_set():
            self._wake.clear()
            try:
                self.dispatch()
            except Exception:
                log.exception("executor: dispatch failed; retrying")
            self._wake.wait(self._poll_interval)
        for thread in [*self._threads, listener]:
            thread.join(timeout=5)
        log.info("executor stopped")

    def dispatch(self) -> None:
        """Start a drain thread for every service with work and no thread yet."""
        services = {d.service for d in self._journal.running(ready_only=True)}
        services.update(self._journal.services_with_queued_work())
        self._threads = [t for t in self._threads if t.is_alive()]
        for service in sorted(services):
            with self._busy_lock:
                if service in self._busy:
                    continue
                self._busy.add(service)
            thread = threading.Thread(target=self._drain, args=(service,), name=f"rollout-{service}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def drain(self, service: str) -> None:
        """Do all ready work for one service in this thread (the CLI runs it inline)."""
        with self._busy_lock:
            if service in self._busy:
                return
            self._busy.add(service)
        self._drain(service)

    def _drain(self, service: str) -> None:
        try:
            self._rules()  # re-reads a changed file, so a fix made while work waits counts at once
            if not self._rules_loaded():
                return
            for orphan in self._journal.running(ready_only=True):
                if orphan.service == service and not self._stop.is_set():
                    with logs.context(request_id=orphan.request_id, deployment=orphan.id):
                        self._resume(orphan)
            while not self._stop.is_set():
                early = EarlyDigest.for_queue(
                    self._swarm, self._rules().get(service), self._journal.find(service=service, state="queued")
                )
                state = self._read(service)
                claimed = self._journal.claim(service, self._decider(service, state))
                if claimed is None:
                    return
                with logs.context(request_id=claimed.request_id, deployment=claimed.id):
                    self._execute(claimed, state, early)
        except Exception:
            log.exception("executor: unexpected error while deploying %s", service)
        finally:
            with self._busy_lock:
                self._busy.discard(service)

    def _read(self, service: str) -> ServiceState | None:
        """What runs now, for the claim's decision; None when Docker cannot say (the rollout then retries)."""
        try:
            return self._swarm.inspect(service)
        except DockerError:
            return None

    def _decider(self, service: str, state: ServiceState | None) -> Callable[[Sequence[Candidate]], Coalesced]:
        rule = self._rules().get(service)
        running = state.image if state else None

        def decide(candidates: Sequence[Candidate]) -> Coalesced:
            return coalesce(rule, candidates, running_image=running, known=state is not None)

        return decide

    # ---- one rollout -----------------------------------------------------------------------------
    def _execute(self, dep: Deployment, state: ServiceState | None, early: EarlyDigest | None = None) -> None:
        """Run a claimed deployment. ``state`` is what the claim decided against: the first attempt uses it,
        so the policy check cannot disagree with the coalescing that chose this deployment. ``early`` may
        hold its digest already."""
        rule = self._rules().get(dep.service)
        if rule is None:
            self._finish(dep, "failed", f"no rule for service {dep.service!r} any more")
            return
        for _ in range(MAX_OUT_OF_SEQUENCE):
            try:
                started = self._start(dep, rule, state or self._swarm.inspect(dep.service), early)
            except UpdateOutOfSequence as e:
                self._journal.update(dep.id, note=f"{e.message}; re-reading the service and trying again")
                state = None
                continue
            except UpdateUncertain as e:
                self._journal.update(dep.id, note=f"{e.message}; finding out whether the update reached Swarm")
                self._resume(self._journal.get(dep.id))
                return
            except DockerUnavailable as e:
                self._retry_later(dep, e)
                return
            except DockerError as e:
                self._finish(dep, "failed", e.message)
                return
            if started is not None:
                self._watch(started, rule)
            return
        self._finish(dep, "failed", f"gave up after {MAX_OUT_OF_SEQUENCE} conflicting concurrent updates")

    def _start(
        self, dep: Deployment, rule: Rule, state: ServiceState, early: EarlyDigest | None = None
    ) -> Deployment | None:
        """Check against what runs now and start the update; None when there is nothing to watch."""
        if reached_swarm(dep, state):
            # An earlier attempt got through although its answer was lost: follow it, never call it "skipped".
            return self._journal.update(dep.id, note="an earlier attempt reached Swarm; following it")
        if dep.pinned_ref:
            target = dep.pinned_ref
        else:
            refusal = policy_refusal_for(rule, dep.tag, state.image)
            if refusal is not None:
                self._finish(dep, "skipped", refusal)
                return None
            known = early.digest(dep.image, dep.tag) if early is not None else None
            target = f"{dep.image}:{dep.tag}@{known or self._swarm.resolve_digest(dep.image, dep.tag)}"
        digest = target.partition("@")[2] or None
        if state.runs(target):
            self._journal.update(dep.id, image_ref=target, digest=digest, previous_image=state.image)
            self._finish(dep, "skipped", f"{dep.service} already runs {state.image}")
            return None
        # Journal first: if we die between these two lines, the restart sees the marker unchanged and
        # queues the deployment again instead of waiting for an update that never started.
        dep = self._journal.update(
            dep.id,
            note=f"updating {dep.service} from {state.image} to {target}",
            image_ref=target,
            digest=digest,
            previous_image=state.image,
            update_marker=state.update_started_at,
        )
        self._swarm.update(service=dep.service, image_ref=target, settings=rule.update, expected_version=state.version)
        return dep

    def _watch(self, dep: Deployment, rule: Rule) -> None:
        """Follow UpdateStatus until Swarm finishes our update, the rule's timeout passes, or we shut down."""
        assert dep.image_ref is not None
        deadline = time.monotonic() + rule.timeout.total_seconds()
        seen: tuple[str | None, str | None] | None = None
        last_seen = "Swarm has not started the update"
        unplaceable_since: float | None = None
        # Task errors are gathered while Swarm rolls back: once it has, the failed tasks are shut down and
        # their status says only "shutdown", and the reason would be lost.
        task_reasons: dict[str, None] = {}
        while True:
            changes = self._swarm.changes_seen(dep.service)
            try:
                state = self._swarm.inspect(dep.service)
            except ServiceNotFound as e:
                self._finish(dep, "failed", f"{e.message} (removed during the rollout)")
                return
            except DockerUnavailable as e:
                self._lost_contact(dep, e)
                return
            except DockerError as e:
                last_seen = e.message
                state = None
            if state is not None:
                outcome = classify(state, marker=dep.update_marker, target=dep.image_ref)
                swarm_says = f"swarm: {state.update_state}: {state.update_message or ''}".strip()
                if outcome != "pending" and (state.update_state, state.update_message) != seen:
                    seen = (state.update_state, state.update_message)
                    self._journal.update(dep.id, note=swarm_says)
                if outcome == "succeeded":
                    self._finish(dep, "succeeded", swarm_says)
                    return
                if outcome in ("rolling_back", "rolled_back", "paused"):
                    task_reasons.update(dict.fromkeys(self._task_errors(dep)))
                if outcome == "rolled_back":
                    self._finish(dep, "rolled_back", _with(self._rollback_message(dep, state), task_reasons))
                    return
                if outcome == "paused":
                    message = f"Swarm paused the update: {state.update_message}"
                    self._finish(dep, "failed", _with(message, task_reasons))
                    return
                if outcome == "diverged":
                    self._finish(dep, "failed", f"the update completed but {dep.service} now runs {state.image}")
                    return
                if outcome == "updating":
                    reason = self._unschedulable(dep.service, dep.image_ref)
                    unplaceable_since = (unplaceable_since or time.monotonic()) if reason else None
                    if (
                        reason
                        and time.monotonic() - (unplaceable_since or 0) >= self._unschedulable_grace.total_seconds()
                    ):
                        self._finish(dep, "failed", f"Swarm cannot place the new tasks: {reason}")
                        return
                if outcome != "pending":
                    last_seen = f"Swarm still says {state.update_state}" + (
                        f": {state.update_message}" if state.update_message else ""
                    )
            if time.monotonic() > deadline:
                message = f"no outcome within {format_duration(rule.timeout)}; {last_seen}"
                task_reasons.update(dict.fromkeys(self._task_errors(dep)))
                self._finish(dep, "failed", _with(message, task_reasons))
                return
            # Woken by Swarm's next event for the service; the interval is the fallback poll.
            self._swarm.wait_for_change(dep.service, after=changes, timeout=self._watch_interval)
            if self._stop.is_set():
                self._journal.update(dep.id, note="executor stopping; the next executor follows this rollout")
                return

    def _unschedulable(self, service: str, image: str) -> str | None:
        try:
            return unschedulable(self._swarm.tasks(service), image)
        except DockerError:
            return None

    def _task_errors(self, dep: Deployment) -> list[str]:
        """Swarm's reasons from the new image's tasks: the real cause, not only "early termination"."""
        if dep.image_ref is None:
            return []
        try:
            tasks = self._swarm.tasks(dep.service)
            health = [
                f"task on {t.node}: health check failed: {failure}"
                for t in tasks
                if t.image == dep.image_ref and t.container_id and not t.error
                if (failure := self._swarm.health_failure(t.container_id))
            ]
            return task_errors(tasks, dep.image_ref) + health
        except DockerError:
            return []

    def _nodes_of(self, dep: Deployment) -> str:
        """The nodes that ran a task of this deployment's image, for the record ("" when none or unknown)."""
        if dep.image_ref is None:
            return ""
        try:
            tasks = self._swarm.tasks(dep.service)
        except DockerError:
            return ""
        return ",".join(sorted({t.node for t in tasks if t.image == dep.image_ref and t.node}))

    def _rollback_message(self, dep: Deployment, state: ServiceState) -> str:
        # Swarm's reason is in the rollback_started message; rollback_completed only says "rollback completed".
        causes = [
            t.message
            for t in self._journal.transitions(dep.id)
            if t.message and t.message.startswith("swarm: rollback_started")
        ]
        cause = causes[-1].removeprefix("swarm: rollback_started: ") if causes else ""
        final = f"{state.update_state}: {state.update_message}"
        return f"{cause} ({final})" if cause else final

    def _resume(self, dep: Deployment) -> None:
        """A deployment left running (by a previous executor, a shutdown, or an update whose answer was lost):
        follow it to Swarm's outcome, or queue it again if its update never reached Swarm."""
        rule = self._rules().get(dep.service)
        if dep.image_ref is None or rule is None:
            self._journal.update(dep.id, state="queued", message="re-queued: the executor stopped before it began")
            return
        try:
            state = self._swarm.inspect(dep.service)
        except DockerUnavailable as e:
            self._lost_contact(dep, e)
            return
        except DockerError as e:
            self._finish(dep, "failed", e.message)
            return
        if reached_swarm(dep, state):
            self._journal.update(dep.id, note="following the update in Swarm")
            self._watch(dep, rule)
        else:
            self._journal.update(dep.id, state="queued", message="re-queued: the update had not reached Swarm")

    def _gave_up(self, dep: Deployment) -> bool:
        """Past the retry limit, counted from this deployment's first failed attempt (not its arrival)."""
        if dep.first_failed_at is None:
            return False
        return datetime.now(UTC) - datetime.fromisoformat(dep.first_failed_at) > self._retry_limit

    def _retry_later(self, dep: Deployment, error: DockerUnavailable) -> None:
        """Docker is unreachable before the update was sent: queue it again, backing off."""
        if self._gave_up(dep):
            self._finish(dep, "failed", f"gave up after {format_duration(self._retry_limit)}: {error.message}")
            return
        delay = backoff(dep.attempts, self._max_backoff)
        reason = f"{error.message}; retrying in {format_duration(delay)}"
        log.warning("deployment %s of %s: %s", dep.id, dep.service, reason)
        self._journal.retry_later(dep.id, delay=delay, reason=reason)

    def _lost_contact(self, dep: Deployment, error: DockerUnavailable) -> None:
        """Docker went away while our update was in progress: keep following it, backing off, within the
        retry limit; past it the outcome is unknown and the service is freed for new work."""
        if self._gave_up(dep):
            message = (
                f"lost contact with Docker for more than {format_duration(self._retry_limit)} during the update,"
                f" so its outcome is unknown: {error.message}"
            )
            self._finish(dep, "failed", message)
            return
        delay = backoff(dep.attempts, self._max_backoff)
        reason = f"{error.message}; following the update again in {format_duration(delay)}"
        log.warning("deployment %s of %s: %s", dep.id, dep.service, reason)
        self._journal.retry_later(dep.id, delay=delay, reason=reason, state="running")

    def _finish(self, dep: Deployment, state: Final, message: str) -> None:
        nodes = self._nodes_of(dep) if state != "skipped" else ""
        self._journal.update(dep.id, state=state, message=message, **({"nodes": nodes} if nodes else {}))
        level = logging.INFO if state in ("succeeded", "skipped") else logging.WARNING
        log.log(level, "deployment %s of %s:%s to %s: %s (%s)", dep.id, dep.image, dep.tag, dep.service, state, message)
