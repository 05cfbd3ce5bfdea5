"""Per-client limits, shared by every gunicorn worker: requests per minute, and failed token attempts.

Counters are fixed windows in a small SQLite file beside the journal (its own file: losing them in a crash
costs nothing, so they are written without waiting for the disk, and never slow the journal's writes). A
client is the address the request came from, after the trusted-proxy setting.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from webhook_server.sqlite_lock import when_unlocked

Kind = Literal["request", "auth"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    client TEXT NOT NULL,
    kind TEXT NOT NULL,
    window INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (client, kind, window)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Limit:
    count: int  # at most this many per window; 0 turns the limit off
    seconds: int  # the window's length


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # seconds until the window ends, when not allowed


class Limiter:
    def __init__(
        self, path: Path, *, requests: Limit, auth_failures: Limit, clock: Callable[[], float] = time.time
    ) -> None:
        self._path = path
        self._limits: dict[Kind, Limit] = {"request": requests, "auth": auth_failures}
        self._clock = clock
        self._pruned = 0.0
        # One connection per process, used under a lock: each statement is one short autocommit write, and
        # under gevent every request is a greenlet of its own (a per-thread connection would be one per
        # request). A gunicorn worker forked from a process that used it opens its own.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        with self._connect():
            pass  # created now, so a mistake shows at start

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                # Setting up may wait inside SQLite (workers booting together race for it, before they serve);
                # afterwards no waiting inside SQLite: a locked write is tried again by when_unlocked.
                conn = sqlite3.connect(self._path, timeout=LOCK_SECONDS, isolation_level=None, check_same_thread=False)
                # Switching a new file to WAL can fail at once while another process does the same (SQLite does
                # not wait for that one): tried again like any locked write.
                when_unlocked(lambda: conn.execute("PRAGMA journal_mode=WAL"), timeout=LOCK_SECONDS)
                conn.execute("PRAGMA synchronous=OFF")
                when_unlocked(lambda: conn.executescript(_SCHEMA), timeout=LOCK_SECONDS)
                conn.execute("PRAGMA busy_timeout=0")
                self._conn, self._pid = conn, os.getpid()
            yield self._conn

    def _window(self, kind: Kind) -> tuple[int, int]:
        """(the current window's number, seconds until it ends)."""
        seconds = self._limits[kind].seconds
        now = self._clock()
        window = int(now // seconds)
        return window, max(1, int((window + 1) * seconds - now + 0.999))

    def hit(self, client: str, kind: Kind) -> Verdict:
        """Count one event for ``client``; refused once the window's count passes the limit."""
        limit = self._limits[kind]
        if limit.count <= 0:
            return Verdict(True)
        window, left = self._window(kind)
        with self._connect() as conn:
            row = when_unlocked(
                lambda: conn.execute(
                    "INSERT INTO hits (client, kind, window, count) VALUES (?, ?, ?, 1)"
                    " ON CONFLICT (client, kind, window) DO UPDATE SET count = count + 1 RETURNING count",
                    (client, kind, window),
                ).fetchone(),
                timeout=LOCK_SECONDS,
            )
            when_unlocked(lambda: self._prune(conn), timeout=LOCK_SECONDS)
        return Verdict(True) if row[0] <= limit.count else Verdict(False, left)

    def check(self, client: str, kind: Kind) -> Verdict:
        """Whether ``client`` is over the limit now, without counting (failed attempts are counted after)."""
        limit = self._limits[kind]
        if limit.count <= 0:
            return Verdict(True)
        window, left = self._window(kind)
        with self._connect() as conn:
            row = conn.execute(
                "SELECT count FROM hits WHERE client = ? AND kind = ? AND window = ?", (client, kind, window)
            ).fetchone()
        return Verdict(False, left) if row is not None and row[0] >= limit.count else Verdict(True)

    def _prune(self, conn: sqlite3.Connection) -> None:
        # Old windows are dead weight; clearing them once a minute keeps the file small.
        now = self._clock()
        if now - self._pruned < 60:
            return
        self._pruned = now
        for kind in self._limits:
            conn.execute("DELETE FROM hits WHERE kind = ? AND window < ?", (kind, self._window(kind)[0] - 1))


LOCK_SECONDS = 5.0


def limits_path(journal_path: Path, *, create: bool = False) -> Path:
    """Beside the local journal file; with the journal on PostgreSQL that directory is the receiver's own
    state, which nothing else creates."""
    if create:
        journal_path.parent.mkdir(parents=True, exist_ok=True)
    return journal_path.with_name(journal_path.name + ".limits")
