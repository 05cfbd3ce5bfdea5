"""The services one running app shares: what ``create_app`` builds and the views and server hooks use.

Its own module so that the factory (``app``) and the views import it, not each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from flask import Flask, current_app

from webhook_server.certs import Certificates
from webhook_server.cluster import Swarm
from webhook_server.executor import Executor
from webhook_server.journal import Journal
from webhook_server.limits import Limiter
from webhook_server.notify import Notifier
from webhook_server.proxy.reload import NginxSwarm
from webhook_server.rules import RulesSource
from webhook_server.settings import Settings

log = logging.getLogger(__name__)
EXTENSION = "webhook_server"
# Set in the WSGI environ when the request came through a trusted proxy, whose headers are believed.
TRUSTED_PROXY_KEY = "webhook_server.trusted_proxy"
# Long enough that a burst of /readyz probes costs one Docker call; short enough that a service created or
# removed shows up in the next probe or two.
SERVICE_CHECK_SECONDS = 10.0
# gunicorn's graceful timeout bounds the whole shutdown; notifications get this much of it.
NOTIFY_ON_SHUTDOWN_SECONDS = 2.0

T = TypeVar("T")


class Cached(Generic[T]):
    """A value fetched at most once per ``seconds``; a failed fetch is not cached."""

    def __init__(self, fetch: Callable[[], T], *, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at: float | None = None

    def get(self) -> T:
        with self._lock:
            now = self._clock()
            if self._at is None or now - self._at >= self._seconds or self._value is None:
                self._value = self._fetch()
                self._at = now
            return self._value


@dataclass
class Services:
    settings: Settings
    rules: RulesSource
    journal: Journal
    swarm: Swarm
    executor: Executor
    service_names: Cached[set[str]]
    limiter: Limiter
    notifier: Notifier | None = None
    # The Docker side of POST /api/proxy/reload, opened per request (docker-py loads on first use only).
    proxy_swarm: Callable[[], AbstractContextManager[NginxSwarm]] | None = None
    # The certificates nginx serves, when WEBHOOK_CERT_DIR lets this process read them.
    certificates: Certificates | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    executor_thread: threading.Thread | None = None

    def shutdown(self, *, timeout: float) -> None:
        """Ask the executor to stop and give a running watch ``timeout`` seconds to record where it is."""
        self.stop.set()
        self.executor.wake()
        thread = self.executor_thread
        if thread is not None and thread.is_alive():
            log.info("stopping the executor")
            thread.join(timeout)
            if thread.is_alive():
                log.warning("the executor did not stop within %gs", timeout)
        if self.notifier is not None:
            # What the executor's last outcomes queued gets a short chance to go out; the rest is recorded.
            self.notifier.stop(timeout=NOTIFY_ON_SHUTDOWN_SECONDS)


def services_of(app: Flask) -> Services:
    found: Services = app.extensions[EXTENSION]
    return found


def services() -> Services:
    """The running app's services (inside a request or app context)."""
    return services_of(current_app)
