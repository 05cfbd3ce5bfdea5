"""Runs rollouts: one at a time per service, services in parallel, queued pushes coalesced.

One executor runs per journal: whichever process holds the lock file beside the database. Work is found
in the journal, never handed over in memory, so a restart resumes exactly where the journal says:
a deployment left ``running`` is followed to Swarm's outcome (or queued again if its update never reached
Swarm) through the same code that runs fresh work.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from webhook_server.errors import (
    DockerError,
    DockerUnavailable,
    ImageNotFound,
    ServiceNotFound,
    UpdateOutOfSequence,
)
from webhook_server.journal import Deployment, Journal
from webhook_server.matching import Candidate, pick_best, policy_refusal_for
from webhook_server.rules import Rule, RuleSet, RulesSource, UpdateSettings
from webhook_server.settings import Settings
from webhook_server.swarm import ServiceState

log = logging.getLogger(__name__)

MAX_OUT_OF_SEQUENCE = 5


class Swarm(Protocol):
    """What the executor needs from Docker (the adapter in ``webhook_server.swarm``, or a test fake)."""

    def ping(self) -> None: ...
    def inspect(self, service: str) -> ServiceState: ...
    def resolve_digest(self, image: str, tag: str) -> str: ...
    def update(
        self, *, service: str, image_ref: str, settings: UpdateSettings, expected_version: int
    ) -> ServiceState: ...


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


def _age(deployment: Deployment) -> timedelta:
    return datetime.now(UTC) - datetime.fromisoformat(deployment.created_at)


class Executor:
    def __init__(
        self,
        *,
        journal: Journal,
        swarm: Swarm,
        rules: Callable[[], RuleSet],
        retry_limit: timedelta = timedelta(minutes=10),
        max_backoff: timedelta = timedelta(seconds=30),
        poll_interval: float = 0.5,
        watch_interval: float = 0.5,
    ) -> None:
        self._journal = journal
        self._swarm = swarm
        self._rules = rules
        self._retry_limit = retry_limit
        self._max_backoff = max_backoff
        self._poll_interval = poll_interval
        self._watch_interval = watch_interval
        self._wake = threading.Event()
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, journal: Journal, swarm: Swarm, rules: RulesSource) -> Executor:
        return cls(
            journal=journal,
            swarm=swarm,
            rules=rules.current,
            retry_limit=settings.docker_retry_limit,
            max_backoff=settings.docker_retry_max_delay,
        )

    # ---- scheduling ------------------------------------------------------------------------------
    def wake(self) -> None:
        """New work was journaled in this process: look now instead of at the next poll."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        log.info("executor started")
        while not stop.is_set():
            try:
                self.dispatch()
            except Exception:
                log.exception("executor: dispatch failed; retrying")
            self._wake.wait(self._poll_interval)
            self._wake.clear()
        for thread in self._threads:
            thread.join(timeout=5)
        log.info("executor stopped")

    def dispatch(self) -> None:
        """Start a drain thread for every service with work and no thread yet."""
        services = {d.service for d in self._journal.running()}
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
            for orphan in self._journal.find(service=service, state="running"):
                self._resume(orphan)
            while (claimed := self._journal.claim(service, self._chooser(service))) is not None:
                self._execute(claimed)
        except Exception:
            log.exception("executor: unexpected error while deploying %s", service)
        finally:
            with self._busy_lock:
                self._busy.discard(service)

    def _chooser(self, service: str) -> Callable[[Sequence[Candidate]], Candidate]:
        rule = self._rules().get(service)

        def choose(candidates: Sequence[Candidate]) -> Candidate:
            if rule is None:
                return max(candidates, key=lambda c: c.order)
            return pick_best(rule, candidates)

        return choose

    # ---- one rollout -----------------------------------------------------------------------------
    def _execute(self, dep: Deployment) -> None:
        rule = self._rules().get(dep.service)
        if rule is None:
            self._finish(dep, "failed", f"no rule for service {dep.service!r} any more")
            return
        for _ in range(MAX_OUT_OF_SEQUENCE):
            try:
                started = self._start(dep, rule)
            except UpdateOutOfSequence as e:
                self._journal.update(dep.id, note=f"{e.message}; re-reading the service and trying again")
                continue
            except DockerUnavailable as e:
                self._retry_later(dep, e)
                return
            except (ImageNotFound, ServiceNotFound, DockerError) as e:
                self._finish(dep, "failed", e.message)
                return
            if started is not None:
                self._watch(started, rule)
            return
        self._finish(dep, "failed", f"gave up after {MAX_OUT_OF_SEQUENCE} conflicting concurrent updates")

    def _start(self, dep: Deployment, rule: Rule) -> Deployment | None:
        """Check against what runs now and start the update; None when there is nothing to watch."""
        state = self._swarm.inspect(dep.service)
        if dep.pinned_ref:
            target = dep.pinned_ref
        else:
            refusal = policy_refusal_for(rule, dep.tag, state.image)
            if refusal is not None:
                self._finish(dep, "skipped", refusal)
                return None
            target = f"{dep.image}:{dep.tag}@{self._swarm.resolve_digest(dep.image, dep.tag)}"
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
        """Follow UpdateStatus until Swarm finishes our update or the rule's timeout passes."""
        assert dep.image_ref is not None
        deadline = time.monotonic() + rule.timeout.total_seconds()
        seen: tuple[str | None, str | None] | None = None
        last_error = ""
        while True:
            try:
                state = self._swarm.inspect(dep.service)
            except ServiceNotFound as e:
                self._finish(dep, "failed", f"{e.message} (removed during the rollout)")
                return
            except DockerError as e:
                last_error = e.message
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
                if outcome == "rolled_back":
                    self._finish(dep, "rolled_back", self._rollback_message(dep, state))
                    return
                if outcome == "paused":
                    self._finish(dep, "failed", f"Swarm paused the update: {state.update_message}")
                    return
                if outcome == "diverged":
                    self._finish(dep, "failed", f"the update completed but {dep.service} now runs {state.image}")
                    return
                last_error = swarm_says
            if time.monotonic() > deadline:
                self._finish(dep, "failed", f"no outcome within {rule.timeout}; last seen: {last_error}")
                return
            time.sleep(self._watch_interval)

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
        """A deployment left running by a previous executor (crash or restart)."""
        rule = self._rules().get(dep.service)
        if dep.image_ref is None or rule is None:
            self._journal.update(dep.id, state="queued", message="re-queued: the executor restarted before it began")
            return
        try:
            state = self._swarm.inspect(dep.service)
        except DockerUnavailable as e:
            # Leave it running: the next dispatch retries, and the journal still says where we are.
            log.warning("cannot resume deployment %s yet: %s", dep.id, e.message)
            time.sleep(min(self._poll_interval * 4, 5))
            return
        except DockerError as e:
            self._finish(dep, "failed", e.message)
            return
        if state.image == dep.image_ref or state.update_started_at != dep.update_marker:
            self._journal.update(dep.id, note="executor restarted; following the update in Swarm")
            self._watch(dep, rule)
        else:
            self._journal.update(dep.id, state="queued", message="re-queued: the update had not reached Swarm")

    def _retry_later(self, dep: Deployment, error: DockerUnavailable) -> None:
        if _age(dep) > self._retry_limit:
            self._finish(dep, "failed", f"gave up after {self._retry_limit}: {error.message}")
            return
        delay = min(timedelta(seconds=2**dep.attempts), self._max_backoff)
        self._journal.requeue(dep.id, delay=delay, reason=f"{error.message}; retrying in {delay.total_seconds():g}s")

    def _finish(
        self,
        dep: Deployment,
        state: Literal["succeeded", "rolled_back", "failed", "skipped"],
        message: str,
    ) -> None:
        self._journal.update(dep.id, state=state, message=message)
        level = logging.INFO if state in ("succeeded", "skipped") else logging.WARNING
        log.log(
            level,
            "deployment %s of %s:%s to %s: %s (%s)",
            dep.id,
            dep.image,
            dep.tag,
            dep.service,
            state,
            message,
        )


class ExecutorLock:
    """An exclusive lock file beside the journal: its holder is this host's one executor.

    The OS releases it when the holder dies, so another worker takes over.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_path(journal: Journal) -> Path:
    return journal.path.with_name(journal.path.name + ".executor.lock")


def run_when_elected(executor: Executor, lock: ExecutorLock, stop: threading.Event) -> None:
    """Wait for the executor lock, then run the executor until ``stop``."""
    while not stop.is_set():
        if lock.try_acquire():
            try:
                executor.run(stop)
            finally:
                lock.release()
            return
        stop.wait(1.0)
