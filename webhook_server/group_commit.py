"""Group commit: the writes that requests of one process ask for at about the same time share one transaction.

A commit costs more than the insert it makes durable (a transaction's setup, its end, the disk's flush, and on
SQLite the write lock that the other workers wait for). Each caller still waits until its own write is
committed, so "202 accepted" keeps meaning "on disk": the batch changes how many commits there are, not when
an answer may go out.

The first caller with no batch under way leads: it commits what is queued and hands the lead to the first
caller that queued meanwhile, so no request waits for more than the batch before its own. Threads queue
while the leader waits for the database. Greenlets (the server's gevent workers) cannot: a database call
stops the whole worker, so there the leader first lets every request that can run queue its write.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class _Slot(Generic[J, R]):
    __slots__ = ("done", "error", "job", "lead", "result")

    def __init__(self, job: J) -> None:
        self.job = job
        self.done = threading.Event()
        self.lead = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[J, R]):
    def __init__(
        self, commit: Callable[[Sequence[J]], Sequence[R]], *, alone_after: Callable[[BaseException], bool]
    ) -> None:
        """``commit(jobs)`` writes every job in one transaction and returns their results in order; it raises
        when the transaction fails. When it fails with an error for which ``alone_after`` is true (one job's
        fault, not the database's), each job of the batch is tried again in a transaction of its own."""
        self._commit = commit
        self._alone_after = alone_after
        self._gather = _greenlets()
        self._lock = threading.Lock()
        self._queued: list[_Slot[J, R]] = []
        self._leading = False

    def submit(self, job: J) -> R:
        """Write ``job`` (in a batch with others queued meanwhile) and return its result once committed."""
        slot: _Slot[J, R] = _Slot(job)
        with self._lock:
            self._queued.append(slot)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        else:
            slot.done.wait()
            if slot.lead:  # handed the lead: this job heads the next batch, which this caller commits
                self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self) -> None:
        if self._gather:
            time.sleep(0)  # a switch to every other greenlet that can run: they queue their writes here
        with self._lock:
            batch, self._queued = self._queued, []
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._queued:
                    following = self._queued[0]
                    following.lead = True
                    following.done.set()
                else:
                    self._leading = False
            for slot in batch:
                slot.done.set()

    def _run(self, batch: list[_Slot[J, R]]) -> None:
        try:
            results = self._commit([slot.job for slot in batch])
        except Exception as e:
            if len(batch) == 1 or not self._alone_after(e):
                for slot in batch:
                    slot.error = e
                return
            # One job's fault must not fail the others: each is tried again in a transaction of its own.
            for slot in batch:
                self._run([slot])
            return
        except BaseException as e:  # the leader is being stopped (its process exits): so is everyone's write
            for slot in batch:
                slot.error = e
            raise
        for slot, result in zip(batch, results, strict=True):
            slot.result = result


def _greenlets() -> bool:
    """Whether this process's threads are greenlets: gevent patched it (``webhook_server.serving``)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))
