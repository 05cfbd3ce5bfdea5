"""The Flask application factory. Dependencies come in as arguments; shared services live in
``app.extensions["webhook_server"]``."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from werkzeug.middleware.proxy_fix import ProxyFix

from webhook_server.executor import Executor, ExecutorLock, Swarm, lock_path, run_when_elected
from webhook_server.journal import Journal
from webhook_server.rules import RulesSource
from webhook_server.settings import Settings

log = logging.getLogger(__name__)
EXTENSION = "webhook_server"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Services:
    settings: Settings
    rules: RulesSource
    journal: Journal
    swarm: Swarm
    executor: Executor
    stop: threading.Event = field(default_factory=threading.Event)


def services() -> Services:
    """The running app's services (inside a request or app context)."""
    found: Services = current_app.extensions[EXTENSION]
    return found


class TrustedProxyFix:
    """Apply X-Forwarded-* only to requests that come from a configured proxy address.

    werkzeug's ProxyFix trusts a hop count, not addresses; anyone could forge the headers if it ran for
    every request.
    """

    def __init__(self, app: Any, networks: Iterable[Network]) -> None:
        self._plain = app
        self._fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1)
        self._networks = tuple(networks)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            peer = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            return self._plain(environ, start_response)
        if any(peer in net for net in self._networks):
            return self._fixed(environ, start_response)
        return self._plain(environ, start_response)


def create_app(
    settings: Settings,
    *,
    rules: RulesSource | None = None,
    journal: Journal | None = None,
    swarm: Swarm | None = None,
    run_executor: bool = False,
) -> Flask:
    """Build the app. With ``run_executor`` this process competes for the executor lock and, when it
    holds it, runs rollouts in a background thread."""
    if swarm is None:
        from webhook_server.swarm import SwarmServices

        swarm = SwarmServices()
    rules = rules or RulesSource(settings.rules_path)
    journal = journal or Journal(settings.db_path)
    executor = Executor.from_settings(settings, journal=journal, swarm=swarm, rules=rules)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ctx = Services(settings=settings, rules=rules, journal=journal, swarm=swarm, executor=executor)
    app.extensions[EXTENSION] = ctx
    if settings.trusted_proxies:
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]

    from webhook_server import views

    views.register(app)

    if run_executor:
        thread = threading.Thread(
            target=run_when_elected,
            args=(executor, ExecutorLock(lock_path(journal)), ctx.stop),
            name="executor",
            daemon=True,
        )
        thread.start()
    return app
