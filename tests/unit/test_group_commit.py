"""Group commit: concurrent writers share transactions, each gets its own result or error, nobody hangs."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from webhook_server.group_commit import GroupCommit


class Faulty(Exception):
    """One job's own fault: its batch is split."""


class Down(Exception):
    """The database's fault: the batch fails as a whole."""


class Store:
    def __init__(self, *, hold: threading.Event | None = None) -> None:
        self.commits: list[list[int]] = []
        self.hold = hold
        self.down = False

    def commit(self, jobs: Sequence[int]) -> list[int]:
        if self.hold is not None:
            self.hold.wait(10)  # a slow disk: writers queue meanwhile
        if self.down:
            raise Down()
        if -1 in jobs:
            raise Faulty()
        self.commits.append(list(jobs))
        return [job * 10 for job in jobs]


def submit_all(group: GroupCommit[int, int], jobs: Sequence[int]) -> dict[int, int | BaseException]:
    results: dict[int, int | BaseException] = {}

    def one(job: int) -> None:
        try:
            results[job] = group.submit(job)
        except BaseException as e:
            results[job] = e

    threads = [threading.Thread(target=one, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
        assert not thread.is_alive(), "a writer never got its answer"
    return results


def gate_then_open(store: Store, group: GroupCommit[int, int], jobs: Sequence[int]) -> dict[int, int | BaseException]:
    """The first commit waits until every other writer has queued behind it."""
    assert store.hold is not None
    hold = store.hold
    opener = threading.Thread(target=lambda: (_wait_queued(group, len(jobs) - 1), hold.set()))
    opener.start()
    try:
        return submit_all(group, jobs)
    finally:
        hold.set()
        opener.join()


def _wait_queued(group: GroupCommit[int, int], count: int) -> None:
    done = threading.Event()
    while not done.wait(0.005):
        with group._lock:
            if len(group._queued) >= count:
                return


def test_one_writer_alone_commits_alone() -> None:
    store = Store()
    group = GroupCommit(store.commit, alone_after=lambda e: isinstance(e, Faulty))
    assert group.submit(7) == 70
    assert store.commits == [[7]]


def test_writers_that_queue_during_a_commit_share_the_next_and_each_gets_its_own_result() -> None:
    store = Store(hold=threading.Event())
    group = GroupCommit(store.commit, alone_after=lambda e: isinstance(e, Faulty))
    results = gate_then_open(store, group, list(range(1, 11)))
    assert results == {job: job * 10 for job in range(1, 11)}
    assert len(store.commits) == 2  # the first writer's own commit, then the nine that queued behind it
    assert sorted(job for commit in store.commits for job in commit) == list(range(1, 11))


def test_a_job_that_fails_on_its_own_fails_alone_and_the_others_are_committed() -> None:
    store = Store(hold=threading.Event())
    group = GroupCommit(store.commit, alone_after=lambda e: isinstance(e, Faulty))
    results = gate_then_open(store, group, [1, 2, -1, 3, 4])
    assert isinstance(results[-1], Faulty)
    assert {job: results[job] for job in (1, 2, 3, 4)} == {1: 10, 2: 20, 3: 30, 4: 40}


def test_when_the_database_fails_every_writer_of_the_batch_hears_it_without_a_retry_each() -> None:
    store = Store(hold=threading.Event())
    calls = []
    original = store.commit

    def counted(jobs: Sequence[int]) -> list[int]:
        calls.append(len(jobs))
        return original(jobs)

    group = GroupCommit(counted, alone_after=lambda e: isinstance(e, Faulty))
    store.down = True
    results = gate_then_open(store, group, [1, 2, 3, 4, 5])
    assert all(isinstance(r, Down) for r in results.values())
    assert calls == [1, 4]  # no job tried again on its own
    store.down = False
    assert group.submit(6) == 60  # and the next writer leads again


@pytest.mark.parametrize("writers", [2, 50])
def test_many_writers_at_once_all_finish(writers: int) -> None:
    store = Store()
    group = GroupCommit(store.commit, alone_after=lambda e: isinstance(e, Faulty))
    results = submit_all(group, list(range(writers)))
    assert results == {job: job * 10 for job in range(writers)}
    assert sorted(job for commit in store.commits for job in commit) == list(range(writers))


GREENLETS = """
from gevent import monkey
monkey.patch_all()
import threading
from webhook_server.group_commit import GroupCommit

commits = []
def commit(jobs):
    commits.append(list(jobs))
    return list(jobs)

group = GroupCommit(commit, alone_after=lambda e: False)
go = threading.Event()  # like requests whose data arrived together: all can run at once
threads = [threading.Thread(target=lambda i=i: (go.wait(), group.submit(i))) for i in range(10)]
for t in threads:
    t.start()
go.set()
for t in threads:
    t.join()
print(len(commits), sorted(j for c in commits for j in c) == list(range(10)))
"""


def test_under_gevent_the_greenlets_that_can_run_join_the_leaders_batch() -> None:
    # A database call never yields a greenlet, so without the leader's switch each would commit alone.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", GREENLETS], capture_output=True, text=True, timeout=60, check=True)
    commits, complete = out.stdout.split()
    assert complete == "True"
    assert int(commits) == 1, out.stdout


def test_a_leader_stopped_mid_commit_fails_its_batch_and_the_next_writer_leads() -> None:
    class Stopped(BaseException):
        pass

    stopping = [True]

    def commit(jobs: Sequence[int]) -> list[int]:
        if stopping[0]:
            raise Stopped()
        return list(jobs)

    group = GroupCommit(commit, alone_after=lambda e: True)
    with pytest.raises(Stopped):
        group.submit(1)
    stopping[0] = False
    assert group.submit(2) == 2
