"""New work in the journal, told to the executor at once instead of at its next poll.

Any process (another gunicorn worker, the CLI, a receiver on another manager) may accept a push; only the
elected executor claims it. On SQLite (one host) the accepting process sends a datagram to an abstract unix
socket named after the journal file, which the executor's process listens on. On PostgreSQL the accepting
transaction sends ``NOTIFY`` (delivered when it commits) to the executor's ``LISTEN``, across hosts.

Either way it is only a hint: a lost one costs a poll interval, never work, since the work is in the journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

log = logging.getLogger(__name__)

CHANNEL = "webhook_work"
# While the listener cannot listen (the database is down), it tries again this often; polling covers it.
RETRY_SECONDS = 2.0
# How long one wait for a datagram or a notification lasts before the stop flag is looked at again.
LISTEN_SLICE = 0.5


def sqlite_address(file: Path) -> str:
    """An abstract socket name (no file to clean up, no path length limit) for this journal file."""
    digest = hashlib.sha256(str(file.absolute()).encode()).hexdigest()[:24]
    return f"\0webhook-server-{digest}"


def announce_sqlite(file: Path) -> None:
    """Tell the executor, if one listens on this host, that work was queued; never fails."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(b"!", sqlite_address(file))


def listen_sqlite(file: Path, on_work: Callable[[], None], stop: threading.Event) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(sqlite_address(file))
        except OSError as e:
            # Another process on this host listens (an executor that has not stopped yet): poll instead.
            log.info("not listening for new work (%s); polling the journal", e.strerror)
            return
        sock.settimeout(LISTEN_SLICE)
        on_work()  # anything queued before it listened
        while not stop.is_set():
            try:
                sock.recv(16)
            except TimeoutError:
                continue
            except OSError:
                return
            on_work()


def listen_postgresql(
    conninfo: str, on_work: Callable[[], None], stop: threading.Event, *, params: Mapping[str, str]
) -> None:
    conninfo = make_conninfo(conninfo, **params)
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("LISTEN webhook_work")  # CHANNEL
                on_work()  # anything queued while it was not listening
                while not stop.is_set():
                    for _ in conn.notifies(timeout=LISTEN_SLICE, stop_after=1):
                        on_work()
        except psycopg.Error as e:
            log.debug("not listening for new work: %s; polling the journal", e)
            stop.wait(RETRY_SECONDS)
