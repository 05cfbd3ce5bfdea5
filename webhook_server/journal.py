"""The journal: every push, every deployment and each of its transitions, in one SQLite file (WAL).

It is also the queue. Any process may accept pushes; only the executor claims work. Each call opens its own
short connection, so threads and gunicorn workers never share one; writes take SQLite's write lock at once
(BEGIN IMMEDIATE) so a read-decide-write never races another writer.

Accepting is durable: its transaction commits with ``synchronous=FULL``, so a 202 means the push survives a
power cut. The executor's own bookkeeping uses NORMAL (WAL keeps the file consistent; the last transitions
may be lost on power loss and are re-derived from Swarm when the executor resumes).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from webhook_server.errors import ConfigError, DeploymentNotFound
from webhook_server.matching import Candidate, Coalesced, DeployPlan

log = logging.getLogger(__name__)

Trigger = Literal["dockerhub", "manual", "rollback"]
State = Literal["queued", "running", "succeeded", "rolled_back", "failed", "skipped", "superseded"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "rolled_back", "failed", "skipped", "superseded"})

# Each entry upgrades the schema by one version (PRAGMA user_version); a journal from any earlier release is
# brought up to date in place when it is opened. Version 1 is the original schema (IF NOT EXISTS: journals made
# before versioning have it already, at user_version 0).
_MIGRATIONS: tuple[str, ...] = (
    """
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
""",
    # When Docker first failed for this deployment: the retry limit counts from here, not from arrival.
    "ALTER TABLE deployments ADD COLUMN first_failed_at TEXT;",
    # Each attempt to tell someone about a deployment's outcome; the target is a redacted label, never a URL.
    """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    at TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS notifications_by_deployment ON notifications(deployment_id);
""",
    # The nodes that ran the deployment's tasks (hostnames, comma-separated), recorded when it ends.
    "ALTER TABLE deployments ADD COLUMN nodes TEXT;",
    # The id of the request that caused it, so logs follow a push from its accept to its outcome.
    "ALTER TABLE pushes ADD COLUMN request_id TEXT; ALTER TABLE deployments ADD COLUMN request_id TEXT;",
)


_ARRIVAL: dict[str, str] = {
    "dockerhub": "Docker Hub push of {tag}",
    "manual": "manual deployment of {tag}",
    "rollback": "rollback to {tag}",
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Transition(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str
    state: str
    message: str | None


class Notification(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: str
    target: str
    outcome: Literal["sent", "failed"]
    detail: str | None


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
    first_failed_at: str | None = None
    nodes: tuple[str, ...] = ()
    request_id: str | None = None
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None

    @field_validator("nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: object) -> object:
        if value is None:
            return ()
        return tuple(n for n in value.split(",") if n) if isinstance(value, str) else value

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
    request_id: str | None = None


SCHEMA_VERSION = len(_MIGRATIONS)


Listener = Callable[["Deployment"], None]


class Journal:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._listeners: list[Listener] = []
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every deployment this journal moves to a final state, after it is stored.

        Listeners (notifications, metrics) run on the thread that ended the deployment, usually a rollout's:
        each must hand its work off and return at once. A listener that raises is logged and ignored, so it
        can never change or delay an outcome.
        """
        self._listeners.append(listener)

    def _tell(self, deployment_ids: Iterable[int]) -> None:
        if not self._listeners:
            return
        for deployment_id in deployment_ids:
            dep = self.get(deployment_id)
            for listener in self._listeners:
                try:
                    listener(dep)
                except Exception:
                    log.exception("deployment %s: an outcome listener failed", deployment_id)

    def _migrate(self) -> None:
        with self._write() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path}: journal schema version {version} is newer than this release knows"
                    f" ({SCHEMA_VERSION}); upgrade webhook-server"
                )
            for step in _MIGRATIONS[version:]:
                for statement in (s for s in step.split(";") if s.strip()):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _connect(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        with self._connect(durable=durable) as conn:
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
        with self._write(durable=True) as conn:
            push_id = self._insert_push(conn, push, outcome="accepted", reason=None, at=now)
            ids = []
            for plan in plans:
                cur = conn.execute(
                    "INSERT INTO deployments (push_id, service, repository, image, tag, trigger, pinned_ref,"
                    " request_id, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                    (
                        push_id,
                        plan.service,
                        plan.repository,
                        plan.image,
                        plan.tag,
                        push.trigger,
                        pinned_ref,
                        push.request_id,
                        now,
                        now,
                    ),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
                self._log_transition(conn, cur.lastrowid, "queued", _ARRIVAL[push.trigger].format(tag=plan.tag), now)
        return [self.get(i) for i in ids]

    def record_ignored(self, push: PushRecord, reason: str) -> int:
        with self._write() as conn:
            return self._insert_push(conn, push, outcome="ignored", reason=reason, at=_now())

    @staticmethod
    def _insert_push(conn: sqlite3.Connection, push: PushRecord, *, outcome: str, reason: str | None, at: str) -> int:
        cur = conn.execute(
            "INSERT INTO pushes (received_at, trigger, repository, tag, pusher, client, callback_url, outcome,"
            " reason, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                push.request_id,
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

    def push_outcome(self, push_id: int) -> tuple[str | None, list[Deployment]]:
        """A push's callback URL as Docker Hub sent it, and every deployment it caused."""
        with self._connect() as conn:
            row = conn.execute("SELECT callback_url FROM pushes WHERE id = ?", (push_id,)).fetchone()
            rows = conn.execute("SELECT * FROM deployments WHERE push_id = ? ORDER BY id", (push_id,)).fetchall()
        return (row[0] if row is not None else None), [Deployment(**dict(r)) for r in rows]

    def record_notification(
        self, deployment_id: int, *, target: str, outcome: Literal["sent", "failed"], detail: str | None = None
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO notifications (deployment_id, at, target, outcome, detail) VALUES (?, ?, ?, ?, ?)",
                (deployment_id, _now(), target, outcome, detail),
            )

    def notifications(self, deployment_id: int) -> list[Notification]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT at, target, outcome, detail FROM notifications WHERE deployment_id = ? ORDER BY id",
                (deployment_id,),
            ).fetchall()
        return [Notification(**dict(r)) for r in rows]

    def services_with_queued_work(self) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT service FROM deployments WHERE state = 'queued'"
                " AND (not_before IS NULL OR not_before <= ?)",
                (_now(),),
            ).fetchall()
        return [r["service"] for r in rows]

    def running(self, *, ready_only: bool = False) -> list[Deployment]:
        """Deployments in progress; ``ready_only`` leaves out those waiting to retry following Swarm."""
        found = self.find(state="running", limit=1_000_000)
        if ready_only:
            now = _now()
            found = [d for d in found if d.not_before is None or d.not_before <= now]
        return found

    def pushes(self, *, limit: int = 50) -> list[dict[str, object]]:
        """Recent pushes as received, accepted or ignored, newest first."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM pushes ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    def count_pushes(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM pushes").fetchone()[0])

    def last_succeeded(self, service: str) -> list[Deployment]:
        """Succeeded deployments of ``service``, newest first (the history rollbacks choose from)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM deployments WHERE service = ? AND state = 'succeeded' AND image_ref IS NOT NULL"
                " ORDER BY id DESC",
                (service,),
            ).fetchall()
        return [Deployment(**dict(r)) for r in rows]

    def first_previous_image(self, service: str) -> Deployment | None:
        """The oldest deployment of ``service`` that recorded what ran before it: the image the service had
        before this tool first touched it."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM deployments WHERE service = ? AND previous_image IS NOT NULL ORDER BY id LIMIT 1",
                (service,),
            ).fetchone()
        return Deployment(**dict(row)) if row is not None else None

    # ---- executing -------------------------------------------------------------------------------
    def claim(self, service: str, decide: Callable[[Sequence[Candidate]], Coalesced]) -> Deployment | None:
        """Apply ``decide`` to the queued deployments of ``service``: mark the losers superseded, the refused
        skipped, and the chosen one running (returned). None when there is nothing to run now."""
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
            if not rows:
                return None
            decision = decide(
                [
                    Candidate(
                        id=r["id"],
                        tag=r["tag"],
                        order=r["id"],
                        pinned=r["pinned_ref"] is not None,
                        ready=not (r["not_before"] and r["not_before"] > now),
                    )
                    for r in rows
                ]
            )
            for candidate, reason in decision.refused:
                self._end(conn, candidate.id, "skipped", reason, now)
            best = decision.chosen
            if best is not None:
                for loser in decision.superseded:
                    conn.execute("UPDATE deployments SET superseded_by = ? WHERE id = ?", (best.id, loser.id))
                    self._end(conn, loser.id, "superseded", f"superseded by deployment {best.id} ({best.tag})", now)
                self._run(conn, best.id, now)
        self._tell([c.id for c, _ in decision.refused] + [c.id for c in decision.superseded])
        return self.get(best.id) if best is not None else None

    def _run(self, conn: sqlite3.Connection, deployment_id: int, now: str) -> None:
        conn.execute(
            "UPDATE deployments SET state = 'running', started_at = COALESCE(started_at, ?), updated_at = ?,"
            " not_before = NULL WHERE id = ?",
            (now, now, deployment_id),
        )
        self._log_transition(conn, deployment_id, "running", "claimed by the executor", now)

    def _end(self, conn: sqlite3.Connection, deployment_id: int, state: State, message: str, now: str) -> None:
        conn.execute(
            "UPDATE deployments SET state = ?, message = ?, updated_at = ?, finished_at = ? WHERE id = ?",
            (state, message, now, now, deployment_id),
        )
        self._log_transition(conn, deployment_id, state, message, now)

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
        allowed = {
            "digest",
            "image_ref",
            "previous_image",
            "attempts",
            "not_before",
            "update_marker",
            "first_failed_at",
            "nodes",
        }
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
        if state in TERMINAL:
            self._tell([deployment_id])
        return self.get(deployment_id)

    def retry_later(
        self, deployment_id: int, *, delay: timedelta, reason: str, state: Literal["queued", "running"] = "queued"
    ) -> Deployment:
        """Count a failed attempt and wait ``delay`` before the next: ``queued`` to start it again, ``running``
        to go on following an update that reached Swarm."""
        now = datetime.now(UTC)
        current = self.get(deployment_id)
        return self.update(
            deployment_id,
            state=state if state != current.state else None,
            message=reason,
            note=reason,
            attempts=current.attempts + 1,
            not_before=(now + delay).isoformat(timespec="milliseconds"),
            first_failed_at=current.first_failed_at or now.isoformat(timespec="milliseconds"),
        )

    @staticmethod
    def _log_transition(conn: sqlite3.Connection, deployment_id: int, state: str, message: str | None, at: str) -> None:
        conn.execute(
            "INSERT INTO transitions (deployment_id, at, state, message) VALUES (?, ?, ?, ?)",
            (deployment_id, at, state, message),
        )
