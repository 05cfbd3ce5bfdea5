"""Fixtures for the unit tests: the journal on both backends, the private PostgreSQL behind it, a rules file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import PgCluster
from tests.unit.test_views import RULES
from webhook_server.journal import Journal


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database of the session's cluster, for one test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a new journal goes: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "journal.sqlite3"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def journal(journal_location: Path | str) -> Iterator[Journal]:
    """A new journal on each backend in turn (a module that defines its own ``journal`` stays on SQLite)."""
    opened = Journal(journal_location)
    yield opened
    opened.close()


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    """The HTTP tests' rules (test_views.RULES) as a file."""
    path = tmp_path / "deploy_rules.yaml"
    path.write_text(RULES)
    return path
