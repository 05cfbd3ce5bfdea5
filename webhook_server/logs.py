"""Logging setup for entry points, with a filter that keeps tokens out of every line.

Modules only call ``logging.getLogger(__name__)``; ``configure`` is called by the CLI (and the gunicorn
logger class) once.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

# The hook URL carries the token: whatever follows /hooks/dockerhub/ is never written, right or wrong. A token
# may contain "/" (base64), so the whole rest of the path goes.
_HOOK_PATH = re.compile(r"(/hooks/dockerhub/)[^\s?\"']+")
REDACTED = "***"


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped (``\\n``, ``\\x1b``, ``\\u2028``).

    For anything a client chose (paths, addresses, payload fields): a newline or terminal escape in a log line
    could forge further lines or rewrite the operator's screen.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


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
