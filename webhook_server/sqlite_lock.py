"""Waiting for SQLite's write lock without stopping the process.

SQLite's own busy handler sleeps inside the C library: under gevent (the server's workers) that sleep stops
every request of the worker, not only the one that waits, and a second worker holding the lock for a few
milliseconds turns into seconds of stalls. Here the waiting is Python's ``time.sleep``, which gevent turns
into a pause of this request alone (elsewhere it is an ordinary sleep).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MAX_PAUSE = 0.05


def _locked(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def when_unlocked(attempt: Callable[[], T], *, timeout: float) -> T:
    """``attempt()``, tried again while SQLite answers that the database is locked, up to ``timeout`` s.

    The connection must not wait itself (``PRAGMA busy_timeout=0``): each try fails at once when locked.
    """
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as e:
            if not _locked(e) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)
