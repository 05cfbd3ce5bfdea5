"""The Flask application factory. Dependencies come in as arguments; shared services live in
``app.extensions["webhook_server"]`` (see ``context``)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from webhook_server import metrics, views
from webhook_server.callback import Callbacks
from webhook_server.certs import Certificates, CertificateWatch
from webhook_server.cluster import Swarm
from webhook_server.context import EXTENSION, SERVICE_CHECK_SECONDS, TRUSTED_PROXY_KEY, Cached, Services
from webhook_server.executor import Executor
from webhook_server.journal import Journal
from webhook_server.leadership import executor_lock, manager_problem, run_when_elected
from webhook_server.limits import Limit, Limiter, limits_path
from webhook_server.notify import Notifier
from webhook_server.operations import open_journal
from webhook_server.proxy.reload import NginxSwarm
from webhook_server.rules import RuleSet, RulesSource
from webhook_server.settings import Settings

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AUTH_FAILURE_WINDOW_SECONDS = 600


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
            environ[TRUSTED_PROXY_KEY] = True
            if not _forwarded_address_ok(environ.get("HTTP_X_FORWARDED_FOR")):
                # A trusted proxy that forwards garbage is misconfigured: keep its own address, not the text.
                log.warning("ignoring X-Forwarded-For from %s: not an address", peer)
                return self._plain(environ, start_response)
            return self._fixed(environ, start_response)
        return self._plain(environ, start_response)


def _forwarded_address_ok(header: str | None) -> bool:
    """ProxyFix takes the last X-Forwarded-For entry (the one our proxy added); it must be an address."""
    if not header:
        return True
    try:
        ipaddress.ip_address(header.split(",")[-1].strip())
    except ValueError:
        return False
    return True


def create_app(
    settings: Settings,
    *,
    rules: RulesSource | None = None,
    fallback: RuleSet | None = None,
    journal: Journal | None = None,
    swarm: Swarm | None = None,
    notifier: Notifier | None = None,
    proxy_swarm: Callable[[], AbstractContextManager[NginxSwarm]] | None = None,
    run_executor: bool = False,
) -> Flask:
    """Build the app. With ``run_executor`` this process competes for the executor lock and, when it
    holds it, runs rollouts in a background thread.

    ``fallback`` is the rules to run on if the file is broken now (a worker respawned after a bad edit):
    the server keeps serving, and /readyz says what is wrong.
    """
    if swarm is None:
        # The only place a real Swarm is built for the server: docker-py loads here, not on import.
        from webhook_server.swarm import SwarmServices

        swarm = SwarmServices(
            timeout=settings.docker_timeout.total_seconds(), on_error=lambda e: metrics.docker_error(e.code)
        )
    rules = rules or RulesSource(settings.rules_path, fallback=fallback)
    journal = journal or open_journal(settings.journal_location)
    executor = Executor.from_settings(settings, journal=journal, swarm=swarm, rules=rules)
    # Outcomes are recorded by the executor, so the process that may run it is the one that tells people.
    if notifier is None and run_executor:
        notifier = Notifier.from_settings(settings, journal=journal, rules=rules.current)
    if notifier is not None:
        notifier.subscribe()
        notifier.start()
    metrics.subscribe(journal)
    if settings.callback_enabled and run_executor:
        Callbacks(journal, hosts=settings.callback_hosts).subscribe()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ctx = Services(
        settings=settings,
        rules=rules,
        journal=journal,
        swarm=swarm,
        executor=executor,
        notifier=notifier,
        service_names=Cached(swarm.service_names, seconds=SERVICE_CHECK_SECONDS),
        limiter=Limiter(
            limits_path(settings.db_path, create=True),
            requests=Limit(settings.rate_limit, 60),
            auth_failures=Limit(settings.auth_failure_limit, AUTH_FAILURE_WINDOW_SECONDS),
        ),
        proxy_swarm=proxy_swarm or _docker_proxy(settings),
        certificates=Certificates.from_settings(settings, config=lambda: rules.current().proxy),
    )
    app.extensions[EXTENSION] = ctx
    if settings.trusted_proxies:
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]

    views.register(app)

    if run_executor and ctx.certificates is not None:
        # Every worker starts one; the lock beside the journal lets one of them check and tell.
        watch = CertificateWatch(
            ctx.certificates,
            probe=settings.proxy_probe,
            notifier=notifier,
            interval=settings.cert_check_interval.total_seconds(),
        )
        watch.start(ctx.stop)
    if run_executor:
        ctx.executor_thread = threading.Thread(
            target=run_when_elected,
            args=(executor, executor_lock(journal), ctx.stop),
            # Receivers sharing a journal hand rollouts to one whose Docker can run them.
            kwargs={"eligible": (lambda: manager_problem(swarm)) if journal.shared else (lambda: None)},
            name="executor",
            daemon=True,
        )
        ctx.executor_thread.start()
    return app


def _docker_proxy(settings: Settings) -> Callable[[], AbstractContextManager[NginxSwarm]]:
    @contextlib.contextmanager
    def opened() -> Iterator[NginxSwarm]:
        # docker-py loads here, on the first reload, not when the app is built.
        from webhook_server.swarm.proxy import SwarmProxy

        swarm = SwarmProxy(timeout=settings.docker_timeout.total_seconds())
        try:
            yield swarm
        finally:
            swarm.close()

    return opened
