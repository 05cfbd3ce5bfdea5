"""Who runs rollouts: the lease on a shared journal, the lock file on SQLite, and stepping down."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.bed import wait_for
from tests.pg import journal_sql
from webhook_server import leadership
from webhook_server.journal import Journal
from webhook_server.leadership import FileLock, LeaseLock, run_when_elected


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leadership, "RENEW_SECONDS", 0.05)
    monkeypatch.setattr(leadership, "ACQUIRE_SECONDS", 0.02)


class Executor:
    """Runs until its term ends, counting its terms."""

    def __init__(self) -> None:
        self.terms = 0
        self.running = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self.terms += 1
        self.running.set()
        stop.wait()
        self.running.clear()


def start(
    executor: Executor, lock: leadership.ExecutorLock, **kwargs: object
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=run_when_elected, args=(executor, lock, stop), kwargs=kwargs, daemon=True)
    thread.start()
    return thread, stop


def test_one_lease_holder_at_a_time_and_the_next_takes_over_on_release(journal: Journal) -> None:
    a, b = LeaseLock(journal, holder="a:1:x", ttl=30), LeaseLock(journal, holder="b:2:y", ttl=30)
    assert a.try_acquire() and not b.try_acquire()
    assert a.renew()
    a.release()
    assert b.try_acquire() and not a.try_acquire()
    lease = journal.lease(leadership.LEASE_NAME)
    assert lease is not None and lease.holder == "b:2:y"


def test_a_holder_that_lost_its_lease_cannot_renew_it(journal: Journal) -> None:
    a, b = LeaseLock(journal, holder="a:1:x", ttl=0.2), LeaseLock(journal, holder="b:2:y", ttl=30)
    assert a.try_acquire()
    wait_for(b.try_acquire, timeout=10, interval=0.05, what="the lapsed lease to pass to b")
    assert not a.renew()
    a.release()  # a deposed holder's release changes nothing
    lease = journal.lease(leadership.LEASE_NAME)
    assert lease is not None and lease.holder == "b:2:y"


def test_the_file_lock_is_exclusive(tmp_path: Path) -> None:
    a, b = FileLock(tmp_path / "x.lock"), FileLock(tmp_path / "x.lock")
    assert a.try_acquire() and not b.try_acquire()
    a.release()
    assert b.try_acquire() and b.renew()
    b.release()


def test_the_executor_runs_while_elected_and_stops_with_the_process(journal: Journal) -> None:
    executor = Executor()
    lock = LeaseLock(journal, holder="a:1:x", ttl=30)
    thread, stop = start(executor, lock)
    assert executor.running.wait(10)
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and executor.terms == 1
    assert journal.lease(leadership.LEASE_NAME) is None  # released on the way out, not left to expire


def test_a_receiver_whose_docker_fails_steps_down_and_another_takes_over(journal: Journal) -> None:
    problem: list[str] = []
    first, second = Executor(), Executor()
    t1, stop1 = start(
        first, LeaseLock(journal, holder="a:1:x", ttl=30), eligible=lambda: problem[0] if problem else None
    )
    assert first.running.wait(10)
    t2, stop2 = start(second, LeaseLock(journal, holder="b:2:y", ttl=30))
    problem.append("the Docker node at unix:///x is not in a swarm")
    assert second.running.wait(10)
    assert not first.running.is_set()
    problem.clear()  # eligible again: it waits, the lease being held
    wait_for(lambda: first.terms == 1 and not first.running.is_set(), timeout=5, what="a to stay a follower")
    stop2.set()
    t2.join(10)
    wait_for(first.running.is_set, timeout=10, what="a to lead again")
    assert first.terms == 2
    stop1.set()
    t1.join(10)


def test_an_ineligible_receiver_never_takes_the_lease(journal: Journal) -> None:
    executor = Executor()
    thread, stop = start(executor, LeaseLock(journal, holder="a:1:x", ttl=30), eligible=lambda: "not a manager")
    try:
        with pytest.raises(TimeoutError):
            wait_for(lambda: journal.lease(leadership.LEASE_NAME), timeout=0.5, interval=0.05, what="a lease")
        assert executor.terms == 0
    finally:
        stop.set()
        thread.join(10)


def test_a_lost_lease_ends_the_term(journal: Journal) -> None:
    executor = Executor()
    lock = LeaseLock(journal, holder="a:1:x", ttl=30)
    thread, stop = start(executor, lock)
    assert executor.running.wait(10)
    # Another holder took over after a lapse (as after a network cut): the renewal fails and the term ends.
    journal_sql(journal, "UPDATE leases SET holder = 'b:2:y', epoch = epoch + 1")
    wait_for(lambda: not executor.running.is_set(), timeout=10, what="the term to end")
    stop.set()
    thread.join(10)
    lease = journal.lease(leadership.LEASE_NAME)
    assert lease is not None and lease.holder == "b:2:y"
