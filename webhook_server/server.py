"""gunicorn, embedded: each worker builds the app with the executor enabled; the lock beside the journal
makes exactly one of them run rollouts."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from webhook_server import logs
from webhook_server.app import create_app
from webhook_server.settings import Settings


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's own logger, with our redaction on its handlers (it logs request URIs on errors)."""

    secrets: tuple[str, ...] = ()

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.addFilter(logs.RedactSecrets(self.secrets))


class _Application(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 25 opens a control socket under ~/.gunicorn, one path shared by every instance.
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        return create_app(self._settings, run_executor=True)


def run_gunicorn(settings: Settings, *, bind: str, workers: int, threads: int) -> None:
    RedactingLogger.secrets = tuple(settings.secrets())
    options = {
        "bind": [bind],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        # The app writes its own access line (after ProxyFix, token redacted); gunicorn's would hold the token.
        "accesslog": None,
        "logger_class": RedactingLogger,
        "graceful_timeout": 10,
        "timeout": 60,
        # gunicorn's debug level dumps its whole config; our own modules follow WEBHOOK_LOG_LEVEL.
        "loglevel": "info" if settings.log_level.upper() == "DEBUG" else settings.log_level.lower(),
    }
    logging.getLogger(__name__).info("serving on %s with %d worker(s)", bind, workers)
    _Application(settings, options).run()
