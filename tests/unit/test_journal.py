"""The journal's schema upgrades in place, and accepting is durable."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook_server.errors import ConfigError
from webhook_server.journal import _MIGRATIONS, SCHEMA_VERSION, Journal, PushRecord
from webhook_server.matching import Coalesced, DeployPlan

PLAN = DeployPlan(service="api", repository="acme/api", image="acme/api", tag="1.0.0")


def test_a_journal_from_before_versioning_upgrades_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(_MIGRATIONS[0])  # what every journal had before the schema had versions
        conn.execute(
            "INSERT INTO deployments (service, repository, image, tag, trigger, state, created_at, updated_at)"
            " VALUES ('api', 'acme/api', 'acme/api', '0.9.0', 'dockerhub', 'succeeded', 'x', 'x')"
        )

    journal = Journal(path)

    assert journal.get(1).tag == "0.9.0" and journal.get(1).first_failed_at is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    [dep] = journal.accept(PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.0"), [PLAN])
    assert dep.id == 2
    Journal(path)  # opening an up-to-date journal again changes nothing


def test_a_journal_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    Journal(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer than this release knows"):
        Journal(path)


def test_accepting_commits_with_full_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    levels: list[int] = []
    connect = journal._connect

    @contextlib.contextmanager
    def recording(*, durable: bool = False) -> Iterator[sqlite3.Connection]:
        with connect(durable=durable) as conn:
            levels.append(conn.execute("PRAGMA synchronous").fetchone()[0])
            yield conn

    monkeypatch.setattr(journal, "_connect", recording)
    journal.accept(PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.0"), [PLAN])
    assert levels[0] == 2  # FULL: the transaction that makes a 202 true


@pytest.mark.parametrize(
    ("trigger", "text"),
    [
        ("dockerhub", "Docker Hub push of 1.0.0"),
        ("manual", "manual deployment of 1.0.0"),
        ("rollback", "rollback to 1.0.0"),
    ],
)
def test_the_first_transition_names_the_trigger(tmp_path: Path, trigger: str, text: str) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    [dep] = journal.accept(PushRecord(trigger=trigger, repository="acme/api", tag="1.0.0"), [PLAN])  # type: ignore[arg-type]
    assert journal.transitions(dep.id)[0].message == text


def test_listeners_hear_every_final_state_once_and_cannot_break_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    heard: list[tuple[int, str]] = []
    journal.subscribe(lambda d: heard.append((d.id, d.state)))
    journal.subscribe(lambda d: 1 / 0)  # type: ignore[func-returns-value]
    push = PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.0")
    a, b, c = (journal.accept(push, [PLAN])[0] for _ in range(3))

    chosen = journal.claim(
        "api", lambda cands: Coalesced(chosen=cands[2], superseded=(cands[1],), refused=((cands[0], "older"),))
    )
    assert chosen is not None and chosen.id == c.id
    journal.update(c.id, note="still going")
    journal.update(c.id, state="succeeded", message="done")

    assert sorted(heard) == [(a.id, "skipped"), (b.id, "superseded"), (c.id, "succeeded")]


def test_notifications_are_recorded_per_deployment(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    [dep] = journal.accept(PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.0"), [PLAN])
    journal.record_notification(dep.id, target="json://127.0.0.1:…", outcome="failed", detail="HTTP 500")
    [note] = journal.notifications(dep.id)
    assert (note.target, note.outcome, note.detail) == ("json://127.0.0.1:…", "failed", "HTTP 500")
