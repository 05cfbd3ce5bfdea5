"""gunicorn, embedded: each worker builds the app with the executor enabled; the lock beside the journal
makes exactly one of them run rollouts.

The master checks what it can before gunicorn starts (the address, the port, the rules, the journal) so a
mistake is one line, and hands its rules to the workers as the fallback for a file broken since.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from gevent import monkey
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from webhook_server import logs, metrics
from webhook_server.app import create_app
from webhook_server.context import services_of
from webhook_server.errors import ConfigError
from webhook_server.journal import journal_name
from webhook_server.rules import RuleSet
from webhook_server.settings import Settings

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT = 10
# A worker that is asked to stop gives a running watch this long to record where it is, inside gunicorn's
# graceful timeout (after which the master kills it).
EXECUTOR_STOP_SECONDS = GRACEFUL_TIMEOUT - 3

_BIND = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class Bind:
    host: str  # as given; an IPv6 address without its brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(text: str) -> Bind:
    """``HOST:PORT`` (``[::1]:9000`` for IPv6). gunicorn would take a bare host and listen on 8000."""
    match = _BIND.fullmatch(text.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(f"--bind/WEBHOOK_BIND {text!r}: give HOST:PORT, e.g. 127.0.0.1:9000 or [::1]:9000")
    return Bind(host=match["host"].strip("[]"), port=int(match["port"]))


def check_free(bind: Bind) -> None:
    """Fail now, in one line, if the address cannot be listened on (gunicorn would log and retry)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            bind.host, bind.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise ConfigError(f"cannot listen on {bind}: {e.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        # gunicorn sets SO_REUSEADDR too: a port held only by TIME_WAIT connections is free for it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise ConfigError(f"cannot listen on {bind}: {e.strerror}") from None


def patched() -> bool:
    """Whether gevent patched the standard library before this process imported what its workers inherit."""
    return bool(monkey.is_module_patched("socket"))


def exec_patched(argv: Sequence[str]) -> NoReturn:
    """Become a fresh ``webhook-server`` (same pid) that patches before any other import.

    gunicorn's gevent workers patch when they start, but the modules they inherit from the master are loaded
    by then and keep references to the unpatched originals (urllib3 to ``ssl``): an HTTPS notification would
    block the whole worker. The checks run again in the new process; they are cheap.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "webhook_server.serving", *argv])


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's hook, in the worker: stop the executor so a running watch records where it is."""
    app = getattr(worker, "wsgi", None)
    if app is None:  # the worker failed before it loaded the app
        return
    services_of(app).shutdown(timeout=EXECUTOR_STOP_SECONDS)


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's own logger, with our redaction on its handlers (it logs request URIs on errors)."""

    secrets: tuple[str, ...] = ()
    fmt: logs.LogFormat = "text"

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                logs.prepare(handler, fmt=self.fmt, secrets=self.secrets)


class _Application(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, rules: RuleSet, options: dict[str, Any]) -> None:
        self._settings = settings
        self._rules = rules
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 25 opens a control socket under ~/.gunicorn, one path shared by every instance.
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        return create_app(self._settings, fallback=self._rules, run_executor=True)


def run_gunicorn(settings: Settings, *, rules: RuleSet, bind: Bind, workers: int, connections: int) -> None:
    """Serve until stopped. ``rules`` is what the master loaded: a worker started later runs on it if the
    file is broken by then."""
    RedactingLogger.secrets = tuple(settings.secrets())
    RedactingLogger.fmt = settings.log_format
    options = {
        "bind": [str(bind)],
        "workers": workers,
        # One greenlet per connection: a client that sends nothing, or its headers a byte at a time, holds a
        # greenlet and its socket, never one of a few threads (gthread stalls behind a few dozen of them).
        "worker_class": "gevent",
        "worker_connections": connections,
        # The app writes its own access line (after ProxyFix, token redacted); gunicorn's would hold the token.
        "accesslog": None,
        "logger_class": RedactingLogger,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "worker_exit": worker_exit,
        "child_exit": lambda _server, worker: metrics.worker_exited(worker.pid),
        "on_exit": lambda _server: metrics.remove_multiprocess_dir(),
        "timeout": 60,
        # gunicorn's debug level dumps its whole config; our own modules follow WEBHOOK_LOG_LEVEL.
        "loglevel": "info" if settings.log_level.upper() == "DEBUG" else settings.log_level.lower(),
    }
    # Before any worker forks: every worker counts into one directory, and /metrics in any of them sums it.
    metrics.setup_multiprocess()
    log.info("serving on %s with %d worker(s); journal %s", bind, workers, journal_name(settings.journal_location))
    _Application(settings, rules, options).run()
