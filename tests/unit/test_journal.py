"""The journal on SQLite and PostgreSQL: schema upgrades in place, durable accepts, one rollout per service
under concurrent claims, the database's errors as the project's, and leader leases."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, event

from tests.pg import PgCluster, journal_sql
from webhook_server import cli
from webhook_server import journal as journal_module
from webhook_server.errors import ConfigError, JournalError, JournalUnavailable
from webhook_server.journal import SCHEMA_VERSION, Deployment, Journal, PushRecord, journal_name
from webhook_server.matching import Candidate, Coalesced, DeployPlan
from webhook_server.operations import journal_is_new, open_journal

PLAN = DeployPlan(service="api", repository="acme/api", image="acme/api", tag="1.0.0")
PUSH = PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.0")
RELEASE_5 = Path(__file__).with_name("journal_v5.sql")
T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 10.0, what: str = "the condition") -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return result


def together(count: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``work(i)`` on ``count`` threads released at the same moment; each one's result or exception."""
    start = threading.Barrier(count)
    results: list[T | BaseException] = [RuntimeError("did not finish")] * count

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def journals(journal_location: Path | str) -> Iterator[Callable[[], Journal]]:
    """More journals on one database, as separate processes would open them (each its own connections)."""
    opened: list[Journal] = []

    def another() -> Journal:
        opened.append(Journal(journal_location))
        return opened[-1]

    yield another
    for journal in opened:
        journal.close()


# ---- schema --------------------------------------------------------------------------------------
def _release_5_file(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(RELEASE_5.read_text())
    return path


def test_a_journal_of_release_5_upgrades_in_place_with_its_data(tmp_path: Path) -> None:
    path = _release_5_file(tmp_path / "old.sqlite3")

    journal = Journal(path)

    done, waiting = journal.get(1), journal.get(2)
    assert (done.state, done.nodes, done.request_id, done.previous_image) == (
        "succeeded",
        ("node-1", "node-2"),
        "req-1",
        "reg:5000/acme/api:0.9.0",
    )
    assert (waiting.state, waiting.attempts, waiting.first_failed_at) == ("queued", 1, "2026-12-06T02:20:16.018+00:00")
    assert [t.state for t in journal.transitions(1)] == ["queued", "running", "succeeded"]
    assert journal.notifications(1)[0].outcome == "sent"
    assert journal.count_pushes() == 3
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [new] = journal.accept(PUSH, [PLAN])
    assert new.id == 3  # ids go on from where the old journal was
    assert journal.acquire_lease("executor", holder="a", ttl=5) == 1  # what the upgrade added works
    Journal(path)  # opening an up-to-date journal again changes nothing


def test_a_journal_from_before_versioning_upgrades_in_place(tmp_path: Path) -> None:
    path = _release_5_file(tmp_path / "old.sqlite3")
    with sqlite3.connect(path) as conn:  # back to the first schema, which had no version yet
        for table, column in [("deployments", "first_failed_at"), ("deployments", "nodes")] + [
            (table, "request_id") for table in ("pushes", "deployments")
        ]:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("DROP TABLE notifications")
        conn.execute("PRAGMA user_version = 0")

    journal = Journal(path)

    assert journal.get(1).tag == "1.0.0" and journal.get(1).first_failed_at is None
    assert journal.accept(PUSH, [PLAN])[0].id == 3


def _schema(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        # (name, type, not null, default, primary key); an INTEGER PRIMARY KEY is never NULL however declared
        return {
            table: (
                [(c[1], c[2], bool(c[3] or c[5]), c[4], c[5]) for c in conn.execute(f"PRAGMA table_info({table})")],
                sorted((f[2], f[3], f[4]) for f in conn.execute(f"PRAGMA foreign_key_list({table})")),
                sorted(i[1] for i in conn.execute(f"PRAGMA index_list({table})") if not i[1].startswith("sqlite_")),
            )
            for table in tables
        }


def test_an_upgraded_journal_has_the_schema_of_a_new_one(tmp_path: Path) -> None:
    upgraded = _release_5_file(tmp_path / "old.sqlite3")
    Journal(upgraded)
    Journal(tmp_path / "new.sqlite3")
    assert _schema(upgraded) == _schema(tmp_path / "new.sqlite3")


_SET_VERSION = {
    "sqlite": "PRAGMA user_version = {version}",
    "postgresql": "UPDATE schema_version SET version = {version}",
}


def test_a_journal_from_a_newer_release_is_refused(journal: Journal, journal_location: Path | str) -> None:
    journal_sql(journal, _SET_VERSION[journal.backend].format(version=SCHEMA_VERSION + 1))
    journal.close()
    with pytest.raises(ConfigError, match="newer than this release knows") as refused:
        open_journal(journal_location)
    assert refused.value.message.startswith(f"{journal.name}: journal schema version {SCHEMA_VERSION + 1}")


def test_receivers_starting_together_migrate_once(pg_url: str) -> None:
    opened = together(6, lambda _: Journal(pg_url))
    assert all(isinstance(j, Journal) for j in opened), opened
    first = opened[0]
    assert isinstance(first, Journal)
    assert first.accept(PUSH, [PLAN])[0].id == 1
    for journal in opened:
        assert isinstance(journal, Journal)
        journal.close()


def test_whether_a_journal_is_new_is_known_without_creating_it(journal_location: Path | str) -> None:
    assert journal_is_new(journal_location) and journal_is_new(journal_location)
    if isinstance(journal_location, Path):
        assert not journal_location.exists()
    open_journal(journal_location).close()
    assert not journal_is_new(journal_location)


def test_the_cli_says_when_a_postgresql_journal_is_new(pg_url: str) -> None:
    name = journal_name(pg_url)
    short = {"WEBHOOK_TOKEN": "hook-token-0123456789", "WEBHOOK_API_TOKEN": "api-token-abcdefghijk"}
    serve = CliRunner().invoke(cli.main, ["serve"], env={"WEBHOOK_DB": pg_url, **short})
    assert serve.exit_code == 2
    assert serve.stderr.strip().endswith(f"this is a new install: {name} has no journal yet")

    first, again = (CliRunner().invoke(cli.main, ["history"], env={"WEBHOOK_DB": pg_url}) for _ in range(2))
    assert (first.stdout.strip(), again.stdout.strip()) == (
        f"no deployments recorded in {name} (new journal)",
        f"no deployments recorded in {name}",
    )
    assert "@" not in first.stdout + first.stderr  # neither user nor password


# ---- accepting -----------------------------------------------------------------------------------
_DURABILITY = {"sqlite": "PRAGMA synchronous", "postgresql": "SHOW synchronous_commit"}


def test_accepting_commits_durably_other_writes_need_not(journal: Journal, journal_location: Path | str) -> None:
    if journal.backend == "postgresql":  # a server whose default would lose the last commits on a crash
        database = str(journal_location).rpartition("/")[2]
        journal_sql(journal, f"ALTER DATABASE {database} SET synchronous_commit = off")
        journal.close()
    seen: list[object] = []

    def record(conn: Connection) -> None:
        seen.append(conn.exec_driver_sql(_DURABILITY[journal.backend]).scalar())

    event.listen(journal._engine, "commit", record)
    [dep] = journal.accept(PUSH, [PLAN])
    journal.record_notification(dep.id, target="json://…", outcome="sent")

    # FULL (2) / on: the transaction that makes a 202 true; NORMAL (1) / the server's default otherwise.
    assert seen == ([2, 1] if journal.backend == "sqlite" else ["on", "off"])


def test_an_unreachable_database_is_unavailable_not_lost(pg_cluster: PgCluster, pg_url: str) -> None:
    journal = Journal(pg_url)
    journal.ping()
    pg_cluster.stop(immediate=True)
    try:
        with pytest.raises(JournalUnavailable) as refused:
            journal.accept(PUSH, [PLAN])
        with pytest.raises(JournalUnavailable):
            journal.ping()
    finally:
        pg_cluster.start()
    assert refused.value.http_status == 503 and refused.value.message.startswith(f"journal {journal.name}: ")
    assert pg_cluster.password not in refused.value.message
    # Back again without reopening anything: the pool drops the connections the restart broke.
    assert journal.accept(PUSH, [PLAN])[0].id == 1
    assert journal.count_pushes() == 1
    journal.close()


@pytest.mark.parametrize(
    ("trigger", "text"),
    [
        ("dockerhub", "Docker Hub push of 1.0.0"),
        ("manual", "manual deployment of 1.0.0"),
        ("rollback", "rollback to 1.0.0"),
    ],
)
def test_the_first_transition_names_the_trigger(journal: Journal, trigger: str, text: str) -> None:
    [dep] = journal.accept(PushRecord(trigger=trigger, repository="acme/api", tag="1.0.0"), [PLAN])  # type: ignore[arg-type]
    assert journal.transitions(dep.id)[0].message == text


def test_listeners_hear_every_final_state_once_and_cannot_break_it(journal: Journal) -> None:
    heard: list[tuple[int, str]] = []
    journal.subscribe(lambda d: heard.append((d.id, d.state)))
    journal.subscribe(lambda d: 1 / 0)  # type: ignore[func-returns-value]
    a, b, c = (journal.accept(PUSH, [PLAN])[0] for _ in range(3))

    chosen = journal.claim(
        "api", lambda cands: Coalesced(chosen=cands[2], superseded=(cands[1],), refused=((cands[0], "older"),))
    )
    assert chosen is not None and chosen.id == c.id
    journal.update(c.id, note="still going")
    journal.update(c.id, state="succeeded", message="done")

    assert sorted(heard) == [(a.id, "skipped"), (b.id, "superseded"), (c.id, "succeeded")]


def test_notifications_are_recorded_per_deployment(journal: Journal) -> None:
    [dep] = journal.accept(PUSH, [PLAN])
    journal.record_notification(dep.id, target="json://127.0.0.1:…", outcome="failed", detail="HTTP 500")
    [note] = journal.notifications(dep.id)
    assert (note.target, note.outcome, note.detail) == ("json://127.0.0.1:…", "failed", "HTTP 500")


def test_times_keep_their_text_and_retry_after_compares_them(journal: Journal) -> None:
    later, sooner = (journal.accept(PUSH, [PLAN])[0] for _ in range(2))
    journal.retry_later(later.id, delay=timedelta(hours=1), reason="Docker is unreachable")
    journal.retry_later(sooner.id, delay=timedelta(seconds=-1), reason="Docker is unreachable")

    waiting = journal.get(later.id)
    assert waiting.not_before is not None and waiting.not_before.endswith("+00:00") and len(waiting.not_before) == 29
    assert journal.services_with_queued_work() == ["api"]  # sooner is ready
    journal.update(sooner.id, state="succeeded")
    assert journal.services_with_queued_work() == []  # later waits an hour


# ---- claiming ------------------------------------------------------------------------------------
def _slow_newest(candidates: Sequence[Candidate]) -> Coalesced:
    time.sleep(0.1)  # widens the window in which another claimer could decide on the same rows
    return Coalesced(chosen=candidates[-1], superseded=tuple(candidates[:-1]), refused=())


def test_concurrent_claims_run_one_deployment_per_service(journal: Journal, journals: Callable[[], Journal]) -> None:
    executors = [journals() for _ in range(4)]
    queued = [journal.accept(PUSH, [PLAN])[0].id for _ in range(3)]

    claimed = together(len(executors), lambda i: executors[i].claim("api", _slow_newest))

    assert not [c for c in claimed if isinstance(c, BaseException)], claimed
    [winner] = [c for c in claimed if isinstance(c, Deployment)]
    assert winner.id == queued[-1]
    assert [d.id for d in journal.running()] == [queued[-1]]
    assert [journal.get(i).state for i in queued[:-1]] == ["superseded", "superseded"]
    # Work queued meanwhile waits for the running one: nobody claims it.
    journal.accept(PUSH, [PLAN])
    assert together(2, lambda i: executors[i].claim("api", _slow_newest)) == [None, None]


# ---- errors --------------------------------------------------------------------------------------
def test_a_refused_password_is_one_line_without_the_password(pg_cluster: PgCluster) -> None:
    url = pg_cluster.url(password="not-the-password-123")
    with pytest.raises(ConfigError) as refused:
        open_journal(url)
    message = refused.value.message
    assert message.startswith(f"cannot open the journal postgresql://127.0.0.1:{pg_cluster.port}/postgres: ")
    assert "password authentication failed" in message and message.endswith("(WEBHOOK_DB names it)")
    assert "not-the-password-123" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://u:secret-pw@127.0.0.1:{closed}/db", "Connection refused"),
        ("postgresql://u:secret-pw@127.0.0.1:notaport/db", "not a valid postgresql://"),
    ],
)
def test_an_unusable_url_is_one_line_without_the_password(url: str, reason: str) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = url.format(closed=closed.getsockname()[1])
        with pytest.raises(ConfigError) as refused:
            open_journal(url)
    assert refused.value.message.startswith("cannot open the journal postgresql://")
    assert reason in refused.value.message and "secret-pw" not in refused.value.message


def test_a_postgresql_journal_is_shared_and_has_no_file(pg_url: str) -> None:
    journal = Journal(pg_url)
    assert journal.shared and journal.file is None
    with pytest.raises(JournalError, match="has no file"):
        _ = journal.path
    journal.close()


# ---- leases --------------------------------------------------------------------------------------
def test_a_lease_has_one_holder_and_its_epoch_changes_with_the_holder(journal: Journal) -> None:
    assert journal.lease("executor") is None
    assert journal.acquire_lease("executor", holder="a", ttl=30) == 1
    assert journal.acquire_lease("executor", holder="b", ttl=30) is None
    assert journal.acquire_lease("executor", holder="a", ttl=30) == 1  # the holder asking again extends it
    assert journal.renew_lease("executor", holder="a", epoch=1, ttl=30)
    assert not journal.renew_lease("executor", holder="b", epoch=1, ttl=30)
    held = journal.lease("executor")
    assert held is not None and (held.holder, held.epoch) == ("a", 1)
    assert timedelta(seconds=25) < held.remaining <= timedelta(seconds=30)
    assert journal.acquire_lease("other", holder="b", ttl=30) == 1  # names are independent

    assert not journal.release_lease("executor", holder="b", epoch=1)  # not b's to release
    assert journal.release_lease("executor", holder="a", epoch=1)
    assert journal.lease("executor") is None
    assert journal.acquire_lease("executor", holder="b", ttl=30) == 2
    assert not journal.renew_lease("executor", holder="a", epoch=1, ttl=30)


def test_an_expired_lease_is_taken_over_and_the_stale_holder_cannot_renew(journal: Journal) -> None:
    assert journal.acquire_lease("executor", holder="a", ttl=0.3) == 1
    wait_for(lambda: journal.lease("executor") is None, what="the lease to expire by the database's clock")

    assert journal.acquire_lease("executor", holder="b", ttl=30) == 2
    assert not journal.renew_lease("executor", holder="a", epoch=1, ttl=30)
    assert not journal.release_lease("executor", holder="a", epoch=1)
    held = journal.lease("executor")
    assert held is not None and (held.holder, held.epoch) == ("b", 2)


def test_a_holder_whose_lease_lapsed_gets_a_new_epoch(journal: Journal) -> None:
    assert journal.acquire_lease("executor", holder="a", ttl=0.3) == 1
    wait_for(lambda: journal.lease("executor") is None, what="the lease to expire")
    assert not journal.renew_lease("executor", holder="a", epoch=1, ttl=30)  # lapsed: it must ask again
    assert journal.acquire_lease("executor", holder="a", ttl=30) == 2


def test_concurrent_acquirers_never_both_get_the_lease(journals: Callable[[], Journal]) -> None:
    contenders = [journals() for _ in range(6)]
    for attempt in range(3):  # a new lease, then one released, then one expired: one winner each time
        got = together(len(contenders), lambda i: contenders[i].acquire_lease("executor", holder=f"h{i}", ttl=0.5))
        assert not [g for g in got if isinstance(g, BaseException)], got
        winners = [(i, g) for i, g in enumerate(got) if g is not None]
        assert len(winners) == 1 and winners[0][1] == attempt + 1, got
        i, epoch = winners[0]
        if attempt == 0:
            assert contenders[i].release_lease("executor", holder=f"h{i}", epoch=epoch)  # type: ignore[arg-type]
        else:
            wait_for(lambda: contenders[0].lease("executor") is None, what="the lease to expire")


def test_a_lease_lasts_a_positive_time(journal: Journal) -> None:
    with pytest.raises(ValueError, match="positive"):
        journal.acquire_lease("executor", holder="a", ttl=0)


def test_a_write_waits_for_sqlites_write_lock_then_fails_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    done: list[object] = []
    writer = threading.Thread(target=lambda: done.append(journal.accept(PUSH, [PLAN])))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and not done  # waiting, not failed
    holder.execute("COMMIT")
    writer.join(10)
    assert len(done) == 1

    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(journal_module, "SQLITE_LOCK_SECONDS", 0.2)
    with pytest.raises(JournalUnavailable, match="locked"):
        journal.accept(PUSH, [PLAN])
    holder.execute("ROLLBACK")
    holder.close()
