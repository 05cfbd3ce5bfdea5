"""The journal: every push, every deployment and each of its transitions, in one SQLite file (WAL, the
default) or in PostgreSQL (shared by several receivers), through one set of queries (SQLAlchemy Core).

It is also the queue. Any process may accept pushes; only the executor claims work. A read-decide-write
locks what it decides on: SQLite takes its write lock at once (BEGIN IMMEDIATE); PostgreSQL locks the rows
(SELECT ... FOR UPDATE), so two claimers of one service take turns and the second sees what the first did.
On SQLite each call opens its own short connection, so threads and gunicorn workers never share one; on
PostgreSQL each process keeps a small pool.

Accepting is durable: a 202 means the push is committed (SQLite: synchronous=FULL, so it survives a power
cut; PostgreSQL: synchronous_commit on for that transaction whatever the server's default). The executor's
own bookkeeping on SQLite uses NORMAL (WAL keeps the file consistent; the last transitions may be lost on
power loss and are re-derived from Swarm when the executor resumes). Pushes that a process's requests write
at about the same time share one transaction (group_commit.py); each request still answers only once its
own push is committed.

A database that cannot be reached raises JournalUnavailable, any other database error JournalError: no
driver exception leaves this module. Leases (acquire_lease ...) elect one executor among receivers by the
database's clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Insert,
    bindparam,
    case,
    create_engine,
    event,
    exc,
    func,
    inspect,
    make_url,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool, QueuePool

from webhook_server import journal_wakeup as wakeup
from webhook_server.errors import DeploymentNotFound, JournalError, JournalUnavailable
from webhook_server.group_commit import GroupCommit
from webhook_server.journal_schema import SCHEMA_VERSION, db_clock, migrate
from webhook_server.journal_schema import deployments as D
from webhook_server.journal_schema import leases as L
from webhook_server.journal_schema import notifications as N
from webhook_server.journal_schema import pushes as P
from webhook_server.journal_schema import transitions as T
from webhook_server.matching import Candidate, Coalesced, DeployPlan
from webhook_server.settings import POSTGRESQL_SCHEMES
from webhook_server.sqlite_lock import when_unlocked

__all__ = [
    "SCHEMA_VERSION",
    "TERMINAL",
    "Deployment",
    "Journal",
    "Lease",
    "PushRecord",
    "is_postgresql",
    "journal_exists",
    "journal_name",
]

log = logging.getLogger(__name__)

Trigger = Literal["dockerhub", "manual", "rollback"]
State = Literal["queued", "running", "succeeded", "rolled_back", "failed", "skipped", "superseded"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "rolled_back", "failed", "skipped", "superseded"})

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
class _Write:
    """A request's write: what it stores (given the batch's connection), and what its commit must do."""

    store: Callable[[Connection], Any]
    durable: bool  # committed to disk before the caller hears of it (an accepted push)
    queues_work: bool  # wakes the executors once committed


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


class Lease(BaseModel):
    """Who holds a lease now, in which tenure (epoch), and for how much longer by the database's clock."""

    model_config = ConfigDict(frozen=True)

    holder: str
    epoch: int
    remaining: timedelta


Listener = Callable[["Deployment"], None]
# A deployment a claim ends: (id, final state, message, the deployment that superseded it).
Ended = tuple[int, State, str, int | None]

# libpq settings a PostgreSQL journal gets unless its URL sets them. A dead or unreachable server fails a
# call within seconds (never a request hanging for the kernel's minutes), and the server ends the
# transaction of a client that vanished holding row locks, so the others' claims do not wait on it forever.
_POSTGRESQL_DEFAULTS: Mapping[str, str] = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "2",
    "tcp_user_timeout": "10000",  # ms
    "options": "-c idle_in_transaction_session_timeout=10s -c lock_timeout=10s",
}

# The inserts of every push, built once: a statement made per call costs more to build and to key for
# SQLAlchemy's compiled cache than the insert itself (about a third of an accepted push).
_INSERT_PUSH = P.insert()
_INSERT_DEPLOYMENT = D.insert().returning(*D.c)
_INSERT_TRANSITION = T.insert()
_END = (
    D.update()
    .where(D.c.id == bindparam("id_"))
    .values(
        state=bindparam("state_"),
        message=bindparam("message_"),
        superseded_by=func.coalesce(bindparam("by_", type_=D.c.superseded_by.type), D.c.superseded_by),
        updated_at=bindparam("at_"),
        finished_at=bindparam("at_"),
    )
)

# A forked child (a gunicorn worker) must not use its parent's pooled connections; it opens its own.
_pooled: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_pools() -> None:
    for engine in list(_pooled):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pools)


def is_postgresql(location: Path | str) -> bool:
    """Whether ``location`` names a PostgreSQL journal (a URL) rather than an SQLite file."""
    return isinstance(location, str) and location.startswith(POSTGRESQL_SCHEMES)


def journal_name(location: Path | str) -> str:
    """The journal as messages name it: its file, or its PostgreSQL URL without user or password."""
    if not is_postgresql(location):
        return str(location)
    try:
        url = make_url(str(location))
        return URL.create("postgresql", host=url.host, port=url.port, database=url.database).render_as_string()
    except (exc.ArgumentError, ValueError):
        return "postgresql://(an invalid URL)"


@contextlib.contextmanager
def _translated(name: str) -> Iterator[None]:
    """Turn the driver's errors into the project's: the database's own words, without SQL or parameters."""
    try:
        yield
    except exc.DBAPIError as e:
        reason = " ".join(str(e.orig).split()) or type(e.orig).__name__
        if isinstance(e, exc.OperationalError | exc.InterfaceError) or e.connection_invalidated:
            raise JournalUnavailable(name, reason) from e
        raise JournalError(name, reason) from e
    except exc.TimeoutError as e:  # every pooled connection busy for too long
        raise JournalUnavailable(name, "no database connection free") from e
    except sqlite3.OperationalError as e:  # from our own wait for SQLite's write lock (sqlite_lock.py)
        raise JournalUnavailable(name, str(e)) from e


# How long a write waits for SQLite's write lock (another writer's transaction) before it fails.
SQLITE_LOCK_SECONDS = 30.0


def _sqlite_lock_seconds() -> float:
    return SQLITE_LOCK_SECONDS  # looked up at each wait, so a test can shorten it


def _engine(location: Path | str) -> Engine:
    if not is_postgresql(location):
        if str(location) == ":memory:":
            # Each connection to ":memory:" is a database of its own: one connection per call.
            engine = create_engine("sqlite+pysqlite://", poolclass=NullPool)
        else:
            # A few kept connections, each used by one thread at a time: closing the last connection to a
            # WAL file checkpoints it, which a connection per call paid on every request (2 ms of 2.5).
            engine = create_engine(
                URL.create("sqlite+pysqlite", database=str(location)),
                poolclass=QueuePool,
                pool_size=5,
                max_overflow=10,
                connect_args={"timeout": SQLITE_LOCK_SECONDS, "check_same_thread": False},
            )
            _pooled.add(engine)
        event.listen(engine, "connect", _sqlite_connected)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        url = make_url(str(location)).set(drivername="postgresql+psycopg")
    except (exc.ArgumentError, ValueError):
        # Never the URL itself in the message: it holds the password.
        raise JournalError(
            journal_name(location), "not a valid postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL"
        ) from None
    defaults = {k: v for k, v in _POSTGRESQL_DEFAULTS.items() if k not in url.query}
    engine = create_engine(
        url, pool_size=5, max_overflow=10, pool_timeout=10, pool_pre_ping=True, connect_args=defaults
    )
    _pooled.add(engine)
    return engine


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own transaction handling off: _sqlite_begin says BEGIN, as the journal needs it.
    dbapi_connection.isolation_level = None
    # Outside any transaction, where SQLite allows it; on a file already in WAL mode this changes nothing.
    # A new file's switch to WAL can fail at once while another process does the same: tried again.
    when_unlocked(lambda: dbapi_connection.execute("PRAGMA journal_mode=WAL"), timeout=SQLITE_LOCK_SECONDS)


def _sqlite_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    # Straight to the driver, and only when it changes: through SQLAlchemy, these statements cost as much as
    # the insert of a push.
    synchronous = "FULL" if options.get("journal_durable") else "NORMAL"
    if conn.connection.info.get("synchronous") != synchronous:
        dbapi.execute(f"PRAGMA synchronous={synchronous}")
        conn.connection.info["synchronous"] = synchronous
    # Writes take the write lock at once, so a read-decide-write never races another writer. The wait for it
    # is ours, not SQLite's (sqlite_lock.py); once held, nothing else in the transaction waits for writers.
    if not options.get("journal_write"):
        dbapi.execute("BEGIN")
        return
    dbapi.execute("PRAGMA busy_timeout=0")
    try:
        when_unlocked(lambda: dbapi.execute("BEGIN IMMEDIATE"), timeout=_sqlite_lock_seconds())
    finally:
        dbapi.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_SECONDS * 1000)}")


def journal_exists(location: Path | str) -> bool:
    """Whether a journal is already at ``location``; creates nothing (a new install is told it is one)."""
    if not is_postgresql(location):
        return Path(location).exists()
    engine = _engine(location)
    try:
        with _translated(journal_name(location)), engine.connect() as conn:
            return inspect(conn).has_table(D.name)
    finally:
        engine.dispose()


class Journal:
    def __init__(self, location: Path | str) -> None:
        """Open (and create or upgrade) the journal at ``location``: an SQLite file, or a postgresql:// URL."""
        self.name = journal_name(location)
        self.backend: Literal["sqlite", "postgresql"] = "postgresql" if is_postgresql(location) else "sqlite"
        self.file: Path | None = None if self.backend == "postgresql" else Path(location)
        self._listeners: list[Listener] = []
        # Requests' pushes, accepted or ignored, are written in batches: one transaction (and one wait for the
        # disk) for all that arrive together. A write that failed for its own data is tried again alone.
        self._writes: GroupCommit[_Write, Any] = GroupCommit(
            self._commit_writes, alone_after=lambda e: not isinstance(e, JournalUnavailable)
        )
        if self.file is not None and str(self.file) != ":memory:":
            self.file.parent.mkdir(parents=True, exist_ok=True)
        self._engine = _engine(location)
        try:
            with self._write() as conn:
                migrate(conn, name=self.name)
        except BaseException:
            self._engine.dispose()  # a journal that cannot open keeps no connection
            raise

    @property
    def shared(self) -> bool:
        """Whether receivers on other hosts may share this journal (PostgreSQL), so leases elect the executor."""
        return self.backend == "postgresql"

    @property
    def path(self) -> Path:
        """The SQLite file, for what lives beside it (the executor's lock): a PostgreSQL journal has none."""
        if self.file is None:
            raise JournalError(self.name, "a PostgreSQL journal has no file")
        return self.file

    def close(self) -> None:
        """Close pooled connections (PostgreSQL); the journal opens new ones if used again."""
        self._engine.dispose()

    def listen_for_work(self, on_work: Callable[[], None], stop: threading.Event) -> None:
        """Call ``on_work`` whenever any process queues work, until ``stop`` (run it on a thread of its own)."""
        if self.file is not None:
            wakeup.listen_sqlite(self.file, on_work, stop)
            return
        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        params = {k: v for k, v in _POSTGRESQL_DEFAULTS.items() if k not in self._engine.url.query}
        wakeup.listen_postgresql(url, on_work, stop, params=params)

    def ping(self) -> None:
        """Return when the database answers now; JournalUnavailable otherwise (for readiness checks)."""
        with self._read() as conn:
            conn.execute(select(1))

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every deployment this journal moves to a final state, after it is stored.

        Listeners (notifications, metrics) run on the thread that ended the deployment, usually a rollout's:
        each must hand its work off and return at once. A listener that raises is logged and ignored, so it
        can never change or delay an outcome.
        """
        self._listeners.append(listener)

    def _tell(self, deployment_ids: Iterable[int]) -> None:
        ids = list(deployment_ids)
        if not self._listeners or not ids:
            return
        # One query for all of them: a claim may end hundreds at once after a burst.
        found = {d.id: d for d in self._deployments(select(D).where(D.c.id.in_(ids)))}
        for deployment_id in ids:
            for listener in self._listeners:
                try:
                    listener(found[deployment_id])
                except Exception:
                    log.exception("deployment %s: an outcome listener failed", deployment_id)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with _translated(self.name), self._engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[Connection]:
        """One transaction that commits when the block ends (or rolls back if it raises)."""
        with _translated(self.name), self._engine.connect() as conn:
            conn.execution_options(journal_write=True, journal_durable=durable)
            with conn.begin():
                if durable and self.backend == "postgresql":
                    conn.execute(text("SET LOCAL synchronous_commit = on"))
                yield conn

    # ---- accepting -------------------------------------------------------------------------------
    def accept(
        self, push: PushRecord, plans: Sequence[DeployPlan], *, pinned_ref: str | None = None
    ) -> list[Deployment]:
        """Store the push and one queued deployment per plan, durably, before anyone is told "accepted"."""
        now = _now()

        def store(conn: Connection) -> list[Deployment]:
            push_id = self._insert_push(conn, push, outcome="accepted", reason=None, at=now)
            rows = [
                conn.execute(
                    _INSERT_DEPLOYMENT,
                    {
                        "push_id": push_id,
                        "service": plan.service,
                        "repository": plan.repository,
                        "image": plan.image,
                        "tag": plan.tag,
                        "trigger": push.trigger,
                        "pinned_ref": pinned_ref,
                        "request_id": push.request_id,
                        "state": "queued",
                        "created_at": now,
                        "updated_at": now,
                    },
                ).one()
                for plan in plans
            ]
            for row, plan in zip(rows, plans, strict=True):
                self._log_transition(conn, row.id, "queued", _ARRIVAL[push.trigger].format(tag=plan.tag), now)
            # The rows as stored (RETURNING), defaults included: no second query to read them back.
            return [Deployment(**row._mapping) for row in rows]

        stored: list[Deployment] = self._writes.submit(_Write(store, durable=True, queues_work=True))
        return stored

    def record_ignored(self, push: PushRecord, reason: str) -> int:
        def store(conn: Connection) -> int:
            return self._insert_push(conn, push, outcome="ignored", reason=reason, at=_now())

        push_id: int = self._writes.submit(_Write(store, durable=False, queues_work=False))
        return push_id

    def _commit_writes(self, writes: Sequence[_Write]) -> list[Any]:
        """The requests' writes of one batch (group_commit.py) in one transaction, durable if any must be."""
        queues_work = any(w.queues_work for w in writes)
        with self._write(durable=any(w.durable for w in writes)) as conn:
            results = [w.store(conn) for w in writes]
            if queues_work and self.backend == "postgresql":
                conn.execute(select(func.pg_notify(wakeup.CHANNEL, "")))  # delivered when this commits
        if queues_work and self.file is not None:
            wakeup.announce_sqlite(self.file)
        return results

    @staticmethod
    def _insert_push(conn: Connection, push: PushRecord, *, outcome: str, reason: str | None, at: str) -> int:
        key = conn.execute(
            _INSERT_PUSH,
            {
                "received_at": at,
                "trigger": push.trigger,
                "repository": push.repository,
                "tag": push.tag,
                "pusher": push.pusher,
                "client": push.client,
                "callback_url": push.callback_url,
                "outcome": outcome,
                "reason": reason,
                "request_id": push.request_id,
            },
        ).inserted_primary_key
        assert key is not None
        return int(key[0])

    # ---- reading ---------------------------------------------------------------------------------
    def get(self, deployment_id: int) -> Deployment:
        with self._read() as conn:
            row = conn.execute(select(D).where(D.c.id == deployment_id)).one_or_none()
        if row is None:
            raise DeploymentNotFound(f"no deployment with id {deployment_id}")
        return Deployment(**row._mapping)

    def wait_done(self, deployment_id: int, *, timeout: float | None = None, interval: float = 0.25) -> Deployment:
        """Poll until the deployment reaches a final state (or ``timeout`` passes); return it as it is then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            dep = self.get(deployment_id)
            if dep.done or (deadline is not None and time.monotonic() > deadline):
                return dep
            time.sleep(interval)

    def find(self, *, service: str | None = None, state: str | None = None, limit: int = 50) -> list[Deployment]:
        query = select(D).order_by(D.c.id.desc()).limit(limit)
        if service:
            query = query.where(D.c.service == service)
        if state:
            query = query.where(D.c.state == state)
        return self._deployments(query)

    def _deployments(self, query: Any) -> list[Deployment]:
        with self._read() as conn:
            return [Deployment(**r._mapping) for r in conn.execute(query)]

    def transitions(self, deployment_id: int) -> list[Transition]:
        query = select(T.c.at, T.c.state, T.c.message).where(T.c.deployment_id == deployment_id).order_by(T.c.id)
        with self._read() as conn:
            return [Transition(**r._mapping) for r in conn.execute(query)]

    def push_outcome(self, push_id: int) -> tuple[str | None, list[Deployment]]:
        """A push's callback URL as Docker Hub sent it, and every deployment it caused."""
        with self._read() as conn:
            url = conn.execute(select(P.c.callback_url).where(P.c.id == push_id)).scalar_one_or_none()
            rows = conn.execute(select(D).where(D.c.push_id == push_id).order_by(D.c.id)).all()
        return url, [Deployment(**r._mapping) for r in rows]

    def record_notification(
        self, deployment_id: int, *, target: str, outcome: Literal["sent", "failed"], detail: str | None = None
    ) -> None:
        with self._write() as conn:
            conn.execute(
                N.insert().values(deployment_id=deployment_id, at=_now(), target=target, outcome=outcome, detail=detail)
            )

    def notifications(self, deployment_id: int) -> list[Notification]:
        query = (
            select(N.c.at, N.c.target, N.c.outcome, N.c.detail)
            .where(N.c.deployment_id == deployment_id)
            .order_by(N.c.id)
        )
        with self._read() as conn:
            return [Notification(**r._mapping) for r in conn.execute(query)]

    def services_with_queued_work(self) -> list[str]:
        query = (
            select(D.c.service)
            .distinct()
            .where(D.c.state == "queued", or_(D.c.not_before.is_(None), D.c.not_before <= _now()))
        )
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def running(self, *, ready_only: bool = False) -> list[Deployment]:
        """Deployments in progress; ``ready_only`` leaves out those waiting to retry following Swarm."""
        found = self.find(state="running", limit=1_000_000)
        if ready_only:
            now = _now()
            found = [d for d in found if d.not_before is None or d.not_before <= now]
        return found

    def pushes(self, *, limit: int = 50) -> list[dict[str, object]]:
        """Recent pushes as received, accepted or ignored, newest first."""
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(select(P).order_by(P.c.id.desc()).limit(limit))]

    def count_pushes(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(P)).scalar_one())

    def last_succeeded(self, service: str) -> list[Deployment]:
        """Succeeded deployments of ``service``, newest first (the history rollbacks choose from)."""
        return self._deployments(
            select(D)
            .where(D.c.service == service, D.c.state == "succeeded", D.c.image_ref.is_not(None))
            .order_by(D.c.id.desc())
        )

    def first_previous_image(self, service: str) -> Deployment | None:
        """The oldest deployment of ``service`` that recorded what ran before it: the image the service had
        before this tool first touched it."""
        found = self._deployments(
            select(D).where(D.c.service == service, D.c.previous_image.is_not(None)).order_by(D.c.id).limit(1)
        )
        return found[0] if found else None

    # ---- executing -------------------------------------------------------------------------------
    def claim(self, service: str, decide: Callable[[Sequence[Candidate]], Coalesced]) -> Deployment | None:
        """Apply ``decide`` to the queued deployments of ``service``: mark the losers superseded, the refused
        skipped, and the chosen one running (returned). None when there is nothing to run now."""
        now = _now()
        with self._write() as conn:
            # At most one rollout per service, whoever asks: the journal is the arbiter, not a process. The
            # service's queued and running rows stay locked until this decision commits (PostgreSQL; SQLite
            # holds its write lock), so a concurrent claim waits, then finds the one this made running.
            rows = conn.execute(
                select(D.c.id, D.c.tag, D.c.not_before, D.c.pinned_ref, D.c.state)
                .where(D.c.service == service, D.c.state.in_(("queued", "running")))
                .order_by(D.c.id)
                .with_for_update()
            ).all()
            if not rows or any(r.state == "running" for r in rows):
                return None
            decision = decide(
                [
                    Candidate(
                        id=r.id,
                        tag=r.tag,
                        order=r.id,
                        pinned=r.pinned_ref is not None,
                        ready=not (r.not_before and r.not_before > now),
                    )
                    for r in rows
                ]
            )
            ended: list[Ended] = [(c.id, "skipped", why, None) for c, why in decision.refused]
            best = decision.chosen
            if best is not None:
                beaten = f"superseded by deployment {best.id} ({best.tag})"
                ended += [(c.id, "superseded", beaten, best.id) for c in decision.superseded]
            self._end_all(conn, ended, now)
            if best is not None:
                self._run(conn, best.id, now)
        self._tell([c.id for c, _ in decision.refused] + [c.id for c in decision.superseded])
        return self.get(best.id) if best is not None else None

    def _run(self, conn: Connection, deployment_id: int, now: str) -> None:
        conn.execute(
            D.update()
            .where(D.c.id == deployment_id)
            .values(state="running", started_at=func.coalesce(D.c.started_at, now), updated_at=now, not_before=None)
        )
        self._log_transition(conn, deployment_id, "running", "claimed by the executor", now)

    @staticmethod
    def _end_all(conn: Connection, ended: Sequence[Ended], now: str) -> None:
        """End deployments in one statement of each kind: (id, final state, message, superseded by)."""
        if not ended:
            return
        conn.execute(
            _END,
            [{"id_": i, "state_": state, "message_": text, "by_": by, "at_": now} for i, state, text, by in ended],
        )
        conn.execute(
            _INSERT_TRANSITION,
            [{"deployment_id": i, "at": now, "state": state, "message": message} for i, state, message, _ in ended],
        )

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
        values: dict[str, object] = {"updated_at": now, **fields}
        if state is not None:
            values["state"] = state
            if state in TERMINAL:
                values["finished_at"] = now
        if message is not None:
            values["message"] = message
        with self._write() as conn:
            conn.execute(D.update().where(D.c.id == deployment_id).values(values))
            if state is not None or note is not None:
                current = state or conn.execute(select(D.c.state).where(D.c.id == deployment_id)).scalar_one()
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
    def _log_transition(conn: Connection, deployment_id: int, state: str, message: str | None, at: str) -> None:
        conn.execute(_INSERT_TRANSITION, {"deployment_id": deployment_id, "at": at, "state": state, "message": message})

    # ---- leases ----------------------------------------------------------------------------------
    # One holder at a time per name, by the database's clock (hosts' clocks never matter). Every new tenure
    # (a new holder, or the same after its lease lapsed or was released) gets a larger epoch: a holder that
    # was deposed without noticing can be told apart from the current one by its epoch.
    def acquire_lease(self, name: str, *, holder: str, ttl: float) -> int | None:
        """Take lease ``name`` for ``ttl`` seconds when it is free or expired, or extend it when ``holder`` has it:
        the tenure's epoch. None while another holder has it."""
        seconds = _positive(ttl)
        with self._write() as conn:
            # The row exists before it is decided on, so concurrent acquirers lock one row and take turns.
            conn.execute(self._insert_if_missing(L).values(name=name, holder=None, epoch=0, expires_at=0.0))
            still_held = (L.c.holder == holder) & (L.c.expires_at > db_clock())
            epoch: int | None = conn.execute(
                L.update()
                .where(L.c.name == name, or_(L.c.holder.is_(None), L.c.holder == holder, L.c.expires_at <= db_clock()))
                .values(
                    holder=holder,
                    epoch=case((still_held, L.c.epoch), else_=L.c.epoch + 1),
                    expires_at=db_clock() + seconds,
                )
                .returning(L.c.epoch)
            ).scalar_one_or_none()
        return epoch

    def renew_lease(self, name: str, *, holder: str, epoch: int, ttl: float) -> bool:
        """Extend the lease to ``ttl`` seconds from now; False when ``holder`` no longer has it in ``epoch`` (it
        expired, even if nobody took it since: the holder must acquire it again and gets a new epoch)."""
        seconds = _positive(ttl)
        with self._write() as conn:
            renewed = conn.execute(
                L.update()
                .where(L.c.name == name, L.c.holder == holder, L.c.epoch == epoch, L.c.expires_at > db_clock())
                .values(expires_at=db_clock() + seconds)
            )
            return renewed.rowcount == 1

    def release_lease(self, name: str, *, holder: str, epoch: int) -> bool:
        """Give the lease up at once so another can take it; False when ``holder`` did not have it in
        ``epoch`` (then it changes nothing)."""
        with self._write() as conn:
            released = conn.execute(
                L.update()
                .where(L.c.name == name, L.c.holder == holder, L.c.epoch == epoch)
                .values(holder=None, expires_at=db_clock())
            )
            return released.rowcount == 1

    def lease(self, name: str) -> Lease | None:
        """Who holds lease ``name`` now; None when nobody does (never taken, released or expired)."""
        remaining = (L.c.expires_at - db_clock()).label("remaining")
        with self._read() as conn:
            row = conn.execute(select(L.c.holder, L.c.epoch, remaining).where(L.c.name == name)).one_or_none()
        if row is None or row.holder is None or row.remaining <= 0:
            return None
        return Lease(holder=row.holder, epoch=row.epoch, remaining=timedelta(seconds=row.remaining))

    def _insert_if_missing(self, table: Any) -> Insert:
        if self.backend == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()


def _positive(ttl: float) -> float:
    if ttl <= 0:
        raise ValueError(f"a lease lasts a positive time, not {ttl} s")
    return float(ttl)
