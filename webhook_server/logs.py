"""Logging setup for entry points, with a filter that keeps tokens out of every line.

Modules only call ``logging.getLogger(__name__)``; ``configure`` is called by the CLI (and the gunicorn
logger class) once.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

# The hook URL carries the token: whatever follows /hooks/dockerhub/ is never written, right or wrong.
_HOOK_PATH = re.compile(r"(/hooks/dockerhub/)[^/\s?\"']+")
REDACTED = "***"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _HOOK_PATH.sub(r"\1" + REDACTED, text)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = redact(message, self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        return True


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "INFO", secrets: Iterable[str] = ()) -> logging.Handler:
    """Log to stderr through the redacting filter; returns the handler (tests capture through it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
