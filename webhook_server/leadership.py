"""Which process runs rollouts: exactly one per journal at a time.

On the SQLite journal (one host) it is whoever holds a lock file beside the database; the OS frees it the
moment its holder dies. On PostgreSQL, receivers on several managers share the journal and a lease row:
the holder renews it every ``RENEW_SECONDS`` and the database's own clock expires it ``LEASE_SECONDS`` after
the last renewal, so a receiver that dies, hangs or loses the database is replaced without anyone having to
notice it. A holder also steps down when its own Docker stops being a manager that can reach the swarm's
leader: another receiver, whose Docker can, takes over. Whoever takes over follows a rollout left running
to Swarm's real outcome (the journal says what was started); Swarm's service versions refuse an update
based on a stale read, so two holders for a moment cannot both apply one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from webhook_server.cluster import Swarm
from webhook_server.errors import DockerError, JournalUnavailable
from webhook_server.journal import Journal

log = logging.getLogger(__name__)

LEASE_NAME = "executor"
# A dead holder is replaced at most LEASE_SECONDS + ACQUIRE_SECONDS after its last renewal.
LEASE_SECONDS = 5.0
RENEW_SECONDS = 1.5
ACQUIRE_SECONDS = 0.5

# None when this process may lead; otherwise why not, for the log.
Eligibility = Callable[[], str | None]


class Runnable(Protocol):
    def run(self, stop: threading.Event) -> None: ...


class ExecutorLock(Protocol):
    def try_acquire(self) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...


class FileLock:
    """An exclusive lock file: its holder is this host's one executor."""

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

    def renew(self) -> bool:
        return self._fd is not None  # the OS holds it for as long as we live

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class LeaseLock:
    """The lease row in the shared journal, with a fencing epoch that changes with every new holder."""

    def __init__(self, journal: Journal, *, holder: str, ttl: float = LEASE_SECONDS) -> None:
        self._journal = journal
        self.holder = holder
        self._ttl = ttl
        self._epoch: int | None = None

    def try_acquire(self) -> bool:
        try:
            self._epoch = self._journal.acquire_lease(LEASE_NAME, holder=self.holder, ttl=self._ttl)
        except JournalUnavailable as e:
            log.debug("cannot ask for the executor lease: %s", e.message)
            self._epoch = None
        return self._epoch is not None

    def renew(self) -> bool:
        if self._epoch is None:
            return False
        try:
            held = self._journal.renew_lease(LEASE_NAME, holder=self.holder, epoch=self._epoch, ttl=self._ttl)
        except JournalUnavailable as e:
            log.warning("cannot renew the executor lease: %s", e.message)
            held = False
        if not held:
            self._epoch = None
        return held

    def release(self) -> None:
        epoch, self._epoch = self._epoch, None
        if epoch is None:
            return
        try:
            self._journal.release_lease(LEASE_NAME, holder=self.holder, epoch=epoch)
        except JournalUnavailable as e:
            log.warning("cannot release the executor lease (it expires by itself): %s", e.message)


def executor_lock(journal: Journal) -> ExecutorLock:
    if journal.shared:
        return LeaseLock(journal, holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    return FileLock(journal.path.with_name(journal.path.name + ".executor.lock"))


def manager_problem(swarm: Swarm) -> str | None:
    """Why this process's Docker cannot run rollouts now: unreachable, not a manager, or cut off from the
    swarm's leader (listing nodes needs the Raft leader, so a partitioned manager fails it)."""
    node = swarm.node()
    if node.problems:
        return "; ".join(node.problems)
    try:
        swarm.schedulable_nodes()
    except DockerError as e:
        return e.message
    return None


@contextlib.contextmanager
def renewed(lock: ExecutorLock) -> Iterator[threading.Event]:
    """Keep an acquired lock renewed for the block (the CLI rolling out by itself); the event is set when it
    was lost, so the caller stops and a server takes over."""
    done, lost = threading.Event(), threading.Event()
    keeper = threading.Thread(target=_keep, args=(lock, lambda: None, done, lost), name="lease", daemon=True)
    keeper.start()
    try:
        yield lost
    finally:
        done.set()
        keeper.join()
        lock.release()


def run_when_elected(
    executor: Runnable, lease: ExecutorLock, stop: threading.Event, *, eligible: Eligibility = lambda: None
) -> None:
    """Until ``stop``: wait to be eligible and hold the lease, then run the executor for as long as both
    last. A holder that steps down competes again once it is eligible."""
    said: str | None = None
    while not stop.is_set():
        problem = eligible()
        if problem is not None and problem != said:
            log.warning("not running rollouts while this lasts: %s", problem)
        said = problem
        if problem is None and lease.try_acquire():
            log.info("this process runs rollouts now")
            term = threading.Event()
            keeper = threading.Thread(target=_keep, args=(lease, eligible, stop, term), name="lease", daemon=True)
            keeper.start()
            try:
                executor.run(term)
            finally:
                term.set()
                keeper.join()
                lease.release()
            continue
        stop.wait(ACQUIRE_SECONDS)


def _keep(lease: ExecutorLock, eligible: Eligibility, stop: threading.Event, term: threading.Event) -> None:
    """Renew the lease while the executor runs; end its term when the lease or the eligibility goes."""
    while not stop.wait(RENEW_SECONDS) and not term.is_set():
        problem = eligible()
        if problem is not None:
            log.warning("stepping down from running rollouts: %s", problem)
            break
        if not lease.renew():
            log.warning("stepping down from running rollouts: the lease was lost")
            break
    term.set()
