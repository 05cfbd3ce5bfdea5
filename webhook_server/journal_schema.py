"""The journal's one schema, for SQLite and PostgreSQL, and the migrations that bring a journal up to it.

A new journal is created at the current version straight from the tables below. An existing one is upgraded
step by step in one transaction when it is opened. Versions 1 to 5 are SQLite's history (only SQLite journals
existed then) and stay exactly as those releases ran them; every later step must run on both backends. The
version is SQLite's ``PRAGMA user_version`` (where the first releases kept it) or, on PostgreSQL, the one row
of ``schema_version``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from webhook_server.errors import ConfigError

metadata = MetaData()

# Times are ISO 8601 text in UTC to the millisecond (2024-05-01T12:00:00.123+00:00), as the first releases
# stored them: one fixed width, so text order is time order. PostgreSQL compares them byte by byte ("C"),
# whatever the database's locale, so "not_before <= now" means the same on both backends.
Time = Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")

pushes = Table(
    "pushes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", Time, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("repository", Text),
    Column("tag", Text),
    Column("pusher", Text),
    Column("client", Text),
    Column("callback_url", Text),
    Column("outcome", Text, nullable=False),
    Column("reason", Text),
    Column("request_id", Text),
    sqlite_autoincrement=True,  # ids are never reused, as the first schema had it
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("push_id", Integer, ForeignKey("pushes.id")),
    Column("service", Text, nullable=False),
    Column("repository", Text, nullable=False),
    Column("image", Text, nullable=False),
    Column("tag", Text, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("pinned_ref", Text),
    Column("digest", Text),
    Column("image_ref", Text),
    Column("previous_image", Text),
    Column("state", Text, nullable=False),
    Column("message", Text),
    Column("superseded_by", Integer, ForeignKey("deployments.id")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("not_before", Time),
    Column("update_marker", Text),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    Column("started_at", Time),
    Column("finished_at", Time),
    # When Docker first failed for this deployment: the retry limit counts from here, not from arrival.
    Column("first_failed_at", Time),
    # The nodes that ran the deployment's tasks (hostnames, comma-separated), recorded when it ends.
    Column("nodes", Text),
    # The id of the request that caused it, so logs follow a push from its accept to its outcome.
    Column("request_id", Text),
    Index("deployments_by_service_state", "service", "state"),
    sqlite_autoincrement=True,
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("deployment_id", Integer, ForeignKey("deployments.id"), nullable=False),
    Column("at", Time, nullable=False),
    Column("state", Text, nullable=False),
    Column("message", Text),
    Index("transitions_by_deployment", "deployment_id"),
    sqlite_autoincrement=True,
)

# Each attempt to tell someone about a deployment's outcome; the target is a redacted label, never a URL.
notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("deployment_id", Integer, ForeignKey("deployments.id"), nullable=False),
    Column("at", Time, nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", Text),
    Index("notifications_by_deployment", "deployment_id"),
    sqlite_autoincrement=True,
)

# Leader leases. ``expires_at`` is seconds since 1970 by the database's clock (db_clock), the one clock
# every receiver shares; ``epoch`` grows with every new tenure, so a deposed holder's writes can be fenced.
leases = Table(
    "leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text),  # NULL once released
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", Double, nullable=False),
)


class db_clock(FunctionElement[float]):  # named as SQL names its functions
    """The database's time in seconds since 1970: PostgreSQL's ``now()`` (the transaction's start), or
    SQLite's own clock for the file."""

    type = Double()
    inherit_cache = True


@compiles(db_clock, "postgresql")
def _postgresql_clock(element: db_clock, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(extract(epoch FROM now()) AS double precision)"


@compiles(db_clock, "sqlite")
def _sqlite_clock(element: db_clock, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"  # julianday counts days from 4714 BC


Step = Callable[[Connection], None]


def _sqlite_script(script: str) -> Step:
    def run(conn: Connection) -> None:
        for statement in (s for s in script.split(";") if s.strip()):
            conn.exec_driver_sql(statement)

    return run


def _create(table: Table) -> Step:
    # Creating a table from its definition above is right only while no later step changes that table;
    # the step that first changes it must freeze this one as DDL text (the upgrade test would fail first).
    def run(conn: Connection) -> None:
        table.create(conn)

    return run


# _STEPS[v] upgrades a journal from version v to v + 1.
_STEPS: tuple[Step, ...] = (
    # 0 -> 1: the original tables (IF NOT EXISTS: journals made before versioning have them, at version 0).
    _sqlite_script("""
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
"""),
    _sqlite_script("ALTER TABLE deployments ADD COLUMN first_failed_at TEXT"),
    _sqlite_script("""
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    at TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS notifications_by_deployment ON notifications(deployment_id);
"""),
    _sqlite_script("ALTER TABLE deployments ADD COLUMN nodes TEXT"),
    _sqlite_script("ALTER TABLE pushes ADD COLUMN request_id TEXT; ALTER TABLE deployments ADD COLUMN request_id TEXT"),
    # From here on, every step runs on both backends.
    _create(leases),
)

SCHEMA_VERSION = len(_STEPS)

# PostgreSQL: receivers starting together take this transaction-level advisory lock, so one migrates and the
# others then find the journal up to date. Any constant works, as long as nothing else in the database uses it.
_MIGRATION_LOCK = 0x77656268_6F6F6B31  # "webhook1"


def migrate(conn: Connection, *, name: str) -> None:
    """Bring the journal to SCHEMA_VERSION in the caller's transaction (which commits it, or none of it).

    Refuses, with a ConfigError naming the journal, one that a newer release has upgraded past this code.
    """
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        conn.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
        version = conn.execute(text("SELECT max(version) FROM schema_version")).scalar_one_or_none() or 0
    else:
        version = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{name}: journal schema version {version} is newer than this release knows ({SCHEMA_VERSION});"
            " upgrade webhook-server"
        )
    if version == SCHEMA_VERSION:
        return
    if version == 0 and not inspect(conn).has_table(deployments.name):
        metadata.create_all(conn)
    else:
        for step in _STEPS[version:]:
            step(conn)
    if postgres:
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": SCHEMA_VERSION})
    else:
        conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
