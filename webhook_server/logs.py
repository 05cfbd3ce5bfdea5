"""Logging setup for entry points, with a filter that keeps tokens out of every line.

Modules only call ``logging.getLogger(__name__)``; ``configure`` is called by the CLI (and the gunicorn
logger class) once.

Lines are readable text or one JSON object each (python-json-logger). Whatever a line is written for, a
request or a deployment, it carries that context: :func:`context` sets the request id (and deployment id)
for the code it wraps, on this thread, and :class:`AddContext` puts them on every record, so one grep for a
push's request id follows it from the accept to the rollout's outcome.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
_CONTEXT: contextvars.ContextVar[dict[str, str | int]] = contextvars.ContextVar("webhook_server_log_context")

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
            # Formatters would otherwise format exc_info afresh, unredacted; they all fall back to exc_text.
            record.exc_info = None
        return True


# ---- context ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def context(*, request_id: str | None = None, deployment: int | None = None) -> Iterator[None]:
    """Every line logged inside carries ``request_id`` and ``deployment`` (those given; others kept)."""
    added: dict[str, str | int] = {}
    if request_id:
        added["request_id"] = request_id
    if deployment is not None:
        added["deployment"] = deployment
    token = _CONTEXT.set({**_CONTEXT.get({}), **added})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current(name: str) -> str | int | None:
    return _CONTEXT.get({}).get(name)


class AddContext(logging.Filter):
    """Copy the current context onto the record (as attributes the formatters write)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get({}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# ---- formats -------------------------------------------------------------------------------------------
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTEXT_KEYS = ("request_id", "deployment")


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: message [request_id=… deployment=…]``."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = " ".join(f"{k}={getattr(record, k)}" for k in _CONTEXT_KEYS if getattr(record, k, None) is not None)
        if not tags:
            return text
        first, newline, rest = text.partition("\n")  # after the message, not after a traceback
        return f"{first} [{tags}]{newline}{rest}"


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message, the context, and any exception."""
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def formatter(fmt: LogFormat) -> logging.Formatter:
    return json_formatter() if fmt == "json" else TextFormatter()


def prepare(handler: logging.Handler, *, fmt: LogFormat, secrets: Iterable[str] = ()) -> logging.Handler:
    """Give ``handler`` the format, the redaction and the context: for ours and for gunicorn's."""
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RedactSecrets(secrets))
    handler.addFilter(AddContext())
    return handler


def configure(level: str = "INFO", secrets: Iterable[str] = (), *, fmt: LogFormat = "text") -> logging.Handler:
    """Log to stderr through the redacting filter; returns the handler (tests capture through it)."""
    handler = prepare(logging.StreamHandler(sys.stderr), fmt=fmt, secrets=secrets)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
