"""The journal: every push, every deployment and each of its transitions, in one SQLite file (WAL).

It is also the queue. Any process may accept pushes; only the executor claims work. Each call opens its own
short connection, so threads and gunicorn workers never share one; writes take SQLite's write lock at once
(BEGIN IMMEDIATE) so a read-decide-write never races another writer.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from webhook_server.errors import DeploymentNotFound
from webhook_server.matching import Candidate, DeployPlan

log = logging.getLogger(__name__)

Trigger = Literal["dockerhub", "manual", "rollback"]
State = Literal["queued", "running", "succeeded", "rolled_back", "failed", "skipped", "superseded"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "rolled_back", "failed", "skipped", "superseded"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    trigger TEXT NOT NULL,
    repository TEXT,
    tag TEXT,
    pusher TEXT,
    client TEXT,
    callback_url TEXT,
    outcome TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    push_id INTEGER REFERENCES pushes(id),
    service TEXT NOT NULL,
    repository TEXT NOT NULL,
    image TEXT NOT NULL,
    tag TEXT NOT NULL,
    trigger TEXT NOT NULL,
    pinned_ref TEXT,
    digest TEXT,
    image_ref TEXT,
    previous_image TEXT,
    state TEXT NOT NULL,
    message TEXT,
    superseded_by INTEGER REFERENCES deployments(id),
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before TEXT,
    update_marker TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS deployments_by_service_state ON deployments(service, state);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT
);
CREATE INDEX IF NOT EXISTS transitions_by_deployment ON transitions(deployment_id);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Transition(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str
    state: str
    message: str | None


class Deployment(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    push_id: int | None
    service: str
    repository: str
    image: str
    tag: str
    trigger: Trigger
    pinned_ref: str | None
    digest: str | None
    image_ref: str | None
    previous_image: str | None
    state: State
    message: str | None
    superseded_by: int | None
    attempts: int
    not_before: str | None
    update_marker: str | None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class PushRecord:
    """Who asked for what, as received; stored with the deployments it caused (or why none)."""

    trigger: Trigger
    repository: str | None
    tag: str | None
    pusher: str | None = None
    client: str | None = None
    callback_url: str | None = None


class Journal:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ---- accepting -------------------------------------------------------------------------------
    def accept(
        self, push: PushRecord, plans: Sequence[DeployPlan], *, pinned_ref: str | None = None
    ) -> list[Deployment]:
        """Store the push and one queued deployment per plan, durably, before anyone is told "accepted"."""
        now = _now()
        with self._write() as conn:
            push_id = self._insert_push(conn, push, outcome="accepted", reason=None, at=now)
            ids = []
            for plan in plans:
                cur = conn.execute(
                    "INSERT INTO deployments (push_id, service, repository, image, tag, trigger, pinned_ref,"
                    " state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                    (
                        push_id,
                        plan.service,
                        plan.repository,
                        plan.image,
                        plan.tag,
                        push.trigger,
                        pinned_ref,
                        now,
                        now,
                    ),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
                self._log_transition(conn, cur.lastrowid, "queued", f"{push.trigger} push of {plan.tag}", now)
        return [self.get(i) for i in ids]

    def record_ignored(self, push: PushRecord, reason: str) -> int:
        with self._write() as conn:
            return self._insert_push(conn, push, outcome="ignored", reason=reason, at=_now())

    @staticmethod
    def _insert_push(conn: sqlite3.Connection, push: PushRecord, *, outcome: str, reason: str | None, at: str) -> int:
        cur = conn.execute(
            "INSERT INTO pushes (received_at, trigger, repository, tag, pusher, client, callback_url, outcome,"
            " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                at,
                push.trigger,
                push.repository,
                push.tag,
                push.pusher,
                push.client,
                push.callback_url,
                outcome,
                reason,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    # ---- reading ---------------------------------------------------------------------------------
    def get(self, deployment_id: int) -> Deployment:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
        if row is None:
            raise DeploymentNotFound(f"no deployment with id {deployment_id}")
        return Deployment(**dict(row))

    def wait_done(self, deployment_id: int, *, timeout: float | None = None, interval: float = 0.25) -> Deployment:
        """Poll until the deployment reaches a final state (or ``timeout`` passes); return it as it is then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            dep = self.get(deployment_id)
            if dep.done or (deadline is not None and time.monotonic() > deadline):
                return dep
            time.sleep(interval)

    def find(self, *, service: str | None = None, state: str | None = None, limit: int = 50) -> list[Deployment]:
        query, args = "SELECT * FROM deployments WHERE 1=1", []
        if service:
            query += " AND service = ?"
            args.append(service)
        if state:
            query += " AND state = ?"
            args.append(state)
        query += " ORDER BY id DESC LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(query, (*args, limit)).fetchall()
        return [Deployment(**dict(r)) for r in rows]

    def transitions(self, deployment_id: int) -> list[Transition]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT at, state, message FROM transitions WHERE deployment_id = ? ORDER BY id",
                (deployment_id,),
            ).fetchall()
        return [Transition(**dict(r)) for r in rows]

    def services_with_queued_work(self) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT service FROM deployments WHERE state = 'queued'"
                " AND (not_before IS NULL OR not_before <= ?)",
                (_now(),),
            ).fetchall()
        return [r["service"] for r in rows]

    def running(self) -> list[Deployment]:
        return self.find(state="running", limit=1_000_000)

    def pushes(self, *, limit: int = 50) -> list[dict[str, object]]:
        """Recent pushes as received, accepted or ignored, newest first."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM pushes ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    def count_pushes(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM pushes").fetchone()[0])

    def last_succeeded(self, service: str, *, before_id: int | None = None) -> list[Deployment]:
        """Succeeded deployments of ``service``, newest first (the history rollbacks choose from)."""
        query = "SELECT * FROM deployments WHERE service = ? AND state = 'succeeded' AND image_ref IS NOT NULL"
        args: list[object] = [service]
        if before_id is not None:
            query += " AND id < ?"
            args.append(before_id)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY id DESC", args).fetchall()
        return [Deployment(**dict(r)) for r in rows]

    # ---- executing -------------------------------------------------------------------------------
    def claim(self, service: str, choose: Callable[[Sequence[Candidate]], Candidate]) -> Deployment | None:
        """Take the best queued deployment of ``service``; mark the other queued ones superseded by it.

        Deployments still waiting out a retry delay are not claimable yet but are superseded all the same
        when a better candidate runs: latest wins.
        """
        now = _now()
        with self._write() as conn:
            # At most one rollout per service, whoever asks: the journal is the arbiter, not a process.
            if conn.execute("SELECT 1 FROM deployments WHERE service = ? AND state = 'running'", (service,)).fetchone():
                return None
            rows = conn.execute(
                "SELECT id, tag, not_before, pinned_ref FROM deployments WHERE service = ? AND state = 'queued'"
                " ORDER BY id",
                (service,),
            ).fetchall()
            if not rows or all(r["not_before"] and r["not_before"] > now for r in rows):
                return None
            # A rollback names one exact image: it runs on its own, in order, and competes with no push.
            pinned = [r for r in rows if r["pinned_ref"]]
            rows = [r for r in rows if not r["pinned_ref"]]
            if pinned:
                first = pinned[0]
                if first["not_before"] and first["not_before"] > now:
                    return None
                best = Candidate(id=first["id"], tag=first["tag"], order=first["id"])
                rows = []
            else:
                best = choose([Candidate(id=r["id"], tag=r["tag"], order=r["id"]) for r in rows])
            for row in rows:
                if row["id"] != best.id:
                    conn.execute(
                        "UPDATE deployments SET state = 'superseded', superseded_by = ?, updated_at = ?,"
                        " finished_at = ?, message = ? WHERE id = ?",
                        (best.id, now, now, f"superseded by deployment {best.id} ({best.tag})", row["id"]),
                    )
                    self._log_transition(conn, row["id"], "superseded", f"by deployment {best.id}", now)
            conn.execute(
                "UPDATE deployments SET state = 'running', started_at = COALESCE(started_at, ?), updated_at = ?,"
                " not_before = NULL WHERE id = ?",
                (now, now, best.id),
            )
            self._log_transition(conn, best.id, "running", "claimed by the executor", now)
        return self.get(best.id)

    def update(
        self,
        deployment_id: int,
        *,
        state: State | None = None,
        message: str | None = None,
        note: str | None = None,
        **fields: str | int | None,
    ) -> Deployment:
        """Change a deployment; a new state (or a note) is also recorded as a transition."""
        allowed = {"digest", "image_ref", "previous_image", "attempts", "not_before", "update_marker"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)}")
        now = _now()
        sets: list[str] = ["updated_at = ?"]
        args: list[object] = [now]
        if state is not None:
            sets.append("state = ?")
            args.append(state)
            if state in TERMINAL:
                sets.append("finished_at = ?")
                args.append(now)
        if message is not None:
            sets.append("message = ?")
            args.append(message)
        for key, value in fields.items():
            sets.append(f"{key} = ?")
            args.append(value)
        with self._write() as conn:
            conn.execute(f"UPDATE deployments SET {', '.join(sets)} WHERE id = ?", (*args, deployment_id))
            if state is not None or note is not None:
                current = (
                    state or conn.execute("SELECT state FROM deployments WHERE id = ?", (deployment_id,)).fetchone()[0]
                )
                self._log_transition(conn, deployment_id, current, note or message, now)
        return self.get(deployment_id)

    def requeue(self, deployment_id: int, *, delay: timedelta, reason: str) -> Deployment:
        not_before = (datetime.now(UTC) + delay).isoformat(timespec="milliseconds")
        current = self.get(deployment_id)
        return self.update(
            deployment_id,
            state="queued",
            message=reason,
            attempts=current.attempts + 1,
            not_before=not_before,
        )

    @staticmethod
    def _log_transition(conn: sqlite3.Connection, deployment_id: int, state: str, message: str | None, at: str) -> None:
        conn.execute(
            "INSERT INTO transitions (deployment_id, at, state, message) VALUES (?, ?, ?, ?)",
            (deployment_id, at, state, message),
        )
