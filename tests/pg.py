"""A private PostgreSQL cluster for tests: Debian's ``initdb`` and ``pg_ctl`` in a temp dir, on a free port of
127.0.0.1, as the unprivileged ``postgres`` user when the tests run as root (PostgreSQL refuses root).

One cluster serves a whole session; each test gets a fresh database (``create_database``). It is stopped by
the pid in its ``postmaster.pid``, never by name; ``stop`` and ``start`` also let a test take the database
away in the middle of something (``immediate=True`` is a crash: no shutdown checkpoint).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy import text

from tests.bed import unavailable
from webhook_server.journal import Journal

USER = "webhook"  # the cluster's superuser; a password, so the tests see what a real URL looks like
UNPRIVILEGED = "postgres"  # Debian's postgresql package creates it


class PostgresUnavailable(Exception):
    pass


def _bindir() -> Path:
    """The newest installed server's programs."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    if not found:
        raise PostgresUnavailable("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql package")
    return max(found, key=lambda p: int(p.parent.name))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped, as under a container's PID 1, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


class PgCluster:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="webhook-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.password = secrets.token_urlsafe(16)
        self._as: list[str] = []
        self._names = itertools.count(1)
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(UNPRIVILEGED)
            except KeyError:
                raise PostgresUnavailable(f"running as root and there is no {UNPRIVILEGED!r} user") from None
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", UNPRIVILEGED, "--"]

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        return f"postgresql://{USER}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str, timeout: float = 60) -> None:
        result = subprocess.run([*self._as, *command], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{Path(command[0]).name} failed: {result.stdout}{result.stderr}".strip())

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            shutil.chown(pwfile, UNPRIVILEGED)
        self._run(
            str(self.bindir / "initdb"),
            f"--pgdata={self.data}",
            f"--username={USER}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        pwfile.unlink()

    def start(self) -> None:
        # fsync off: a test cluster's data need not survive the machine, only the server (a crash of the
        # server still loses no committed transaction: the OS has the writes).
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "--wait",
            "--timeout=60",
            f"--pgdata={self.data}",
            f"--log={self.root / 'server.log'}",
            f"--options={options}",
        )

    def pid(self) -> int | None:
        """The postmaster's pid, from its postmaster.pid; None when it is not running."""
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            return pid if _alive(pid) else None
        return None

    def stop(self, *, immediate: bool = False, timeout: float = 30) -> None:
        """Stop the postmaster by its pid: a fast shutdown (clients cut, a checkpoint), or an immediate one."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT if immediate else signal.SIGINT)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"PostgreSQL (pid {pid}) did not stop within {timeout} s; killed")
            time.sleep(0.05)

    def restart(self, *, immediate: bool = False) -> None:
        self.stop(immediate=immediate)
        self.start()

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        """A new empty database's URL (the cluster's superuser owns it)."""
        name = f"t{next(self._names)}"
        with self.connect() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop it, ending whatever sessions still use it."""
        name = url.rpartition("/")[2]
        with self.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")[-4000:]
        return ""

    def remove(self) -> None:
        """Stop it (if it runs) and delete its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_cluster() -> Iterator[PgCluster]:
    """A started cluster, stopped by pid and removed when the block ends, however it ends.

    Without Debian's PostgreSQL it skips, or fails under CI / REQUIRE_SWARM=1; a cluster that is installed
    but does not start is an error either way (its message carries the server's log).
    """
    try:
        cluster = PgCluster()
    except PostgresUnavailable as e:
        unavailable(f"PostgreSQL unavailable: {e}")
    try:
        cluster.init()
        try:
            cluster.start()
        except PostgresUnavailable as e:
            raise PostgresUnavailable(f"{e}\n{cluster.log()}") from None
        yield cluster
    finally:
        cluster.remove()


def journal_sql(journal: Journal, statement: str, **params: object) -> None:
    """Run one SQL statement on ``journal``, whichever its backend: for tests that set what the journal's
    API never sets (a deployment's arrival time, a schema version from the future)."""
    with journal._write() as conn:
        conn.execute(text(statement), params)
