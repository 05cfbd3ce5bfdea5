"""Work queued by any process wakes the executor at once: a datagram on SQLite, NOTIFY on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook_server.journal import Journal, PushRecord
from webhook_server.matching import DeployPlan

PLAN = DeployPlan(service="api", repository="acme/api", image="acme/api", tag="1.0.0")
PUSH = PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.0")


@pytest.fixture
def listening(journal: Journal) -> Iterator[threading.Event]:
    """The executor's side: set whenever work is announced (after the listener's first call)."""
    ready, woken, stop = threading.Event(), threading.Event(), threading.Event()

    def on_work() -> None:
        (woken if ready.is_set() else ready).set()

    thread = threading.Thread(target=journal.listen_for_work, args=(on_work, stop), daemon=True)
    thread.start()
    assert ready.wait(10), "the listener never listened"  # it calls once as it starts to listen
    yield woken
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_an_accept_in_another_process_wakes_the_listener(
    journal: Journal, journal_location: Path | str, listening: threading.Event
) -> None:
    other = Journal(journal_location)  # another worker or receiver, with connections of its own
    try:
        other.accept(PUSH, [PLAN])
        assert listening.wait(10)
    finally:
        other.close()


def test_nothing_wakes_the_listener_without_work(journal: Journal, listening: threading.Event) -> None:
    journal.record_ignored(PUSH, "no rule")
    assert not listening.wait(0.5)


def test_announcing_without_a_listener_is_harmless(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    [dep] = journal.accept(PUSH, [PLAN])
    assert dep.state == "queued"
