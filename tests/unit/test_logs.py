"""The redacting log filter: secrets and the hook path's token never reach a log line."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from webhook_server.logs import REDACTED, RedactSecrets, printable, redact

SECRET = "hook-token-0123456789"
API = "api-token-abcdefghijk"


REDACT_CASES: list[tuple[str, str]] = [
    (f"token {SECRET} and {API}", f"token {REDACTED} and {REDACTED}"),
    (f"twice {SECRET}{SECRET}", f"twice {REDACTED}{REDACTED}"),
    ("POST /hooks/dockerhub/wrong-token HTTP/1.1", f"POST /hooks/dockerhub/{REDACTED} HTTP/1.1"),
    ("/hooks/dockerhub/abc?x=1", f"/hooks/dockerhub/{REDACTED}?x=1"),
    # A token may contain "/" (base64): nothing after the prefix survives, not even a part of it.
    ("/hooks/dockerhub/abc/extra", f"/hooks/dockerhub/{REDACTED}"),
    ("POST /hooks/dockerhub/q3N/8vKx+Zb1m= HTTP/1.1", f"POST /hooks/dockerhub/{REDACTED} HTTP/1.1"),
    ("url '/hooks/dockerhub/abc'", f"url '/hooks/dockerhub/{REDACTED}'"),
    ('url "/hooks/dockerhub/abc"', f'url "/hooks/dockerhub/{REDACTED}"'),
    (
        "https://h/hooks/dockerhub/a1 and /hooks/dockerhub/b2",
        f"https://h/hooks/dockerhub/{REDACTED} and /hooks/dockerhub/{REDACTED}",
    ),
    (f"/hooks/dockerhub/{SECRET}", f"/hooks/dockerhub/{REDACTED}"),
    ("/hooks/dockerhub/", "/hooks/dockerhub/"),
    ("/api/deployments/12", "/api/deployments/12"),
    ("nothing secret here", "nothing secret here"),
]


@pytest.mark.parametrize(("text", "expected"), REDACT_CASES, ids=[str(i) for i in range(len(REDACT_CASES))])
def test_redact(text: str, expected: str) -> None:
    assert redact(text, [SECRET, API]) == expected


PRINTABLE_CASES: list[tuple[str, str]] = [
    ("plain text, ünïcode and spaces", "plain text, ünïcode and spaces"),
    ("a\nforged line", "a\\x0aforged line"),
    ("\r\t\x00", "\\x0d\\x09\\x00"),
    ("\x1b[2Jwiped", "\\x1b[2Jwiped"),
    ("\x85next line", "\\x85next line"),
    ("line\u2028separator", "line\\u2028separator"),
    ("\U000e0001tag", "\\U000e0001tag"),
]


@pytest.mark.parametrize(("text", "expected"), PRINTABLE_CASES, ids=[str(i) for i in range(len(PRINTABLE_CASES))])
def test_printable_escapes_what_could_forge_or_hide_log_lines(text: str, expected: str) -> None:
    assert printable(text) == expected
    assert printable(text).isprintable()


def test_empty_secret_is_ignored() -> None:
    assert redact("abc", [""]) == "abc"
    assert RedactSecrets(["", SECRET])._secrets == [SECRET]


def _record(msg: object, args: tuple[object, ...] = (), exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"boom with {SECRET} at /hooks/dockerhub/guessed")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]


FILTER_CASES: list[tuple[str, object, tuple[object, ...], str]] = [
    ("secret-in-msg", f"using {SECRET}", (), f"using {REDACTED}"),
    ("secret-in-args", "got %s from %r", (SECRET, {"k": API}), f"got {REDACTED} from {{'k': '{REDACTED}'}}"),
    ("hook-path-in-args", "%s %s", ("POST", "/hooks/dockerhub/guess"), f"POST /hooks/dockerhub/{REDACTED}"),
    ("mapping-args", "%(who)s", ({"who": SECRET},), REDACTED),
    ("percent-after-redaction", "%s", (f"100% {SECRET}",), f"100% {REDACTED}"),
    ("non-string-msg", ValueError(SECRET), (), REDACTED),
]


@pytest.mark.parametrize(("msg", "args", "expected"), [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_filter_cleans_message_and_args(msg: object, args: tuple[object, ...], expected: str) -> None:
    record = _record(msg, args)
    assert RedactSecrets([SECRET, API]).filter(record) is True
    assert record.getMessage() == expected
    assert record.args == ()


def test_filter_leaves_clean_records_untouched() -> None:
    record = _record("deployment %d done", (7,))
    assert RedactSecrets([SECRET]).filter(record) is True
    assert (record.msg, record.args, record.getMessage()) == ("deployment %d done", (7,), "deployment 7 done")


def test_filter_cleans_exception_text() -> None:
    record = _record("failed", exc=True)
    RedactSecrets([SECRET]).filter(record)
    assert record.exc_text is not None
    assert record.exc_text.endswith(f"RuntimeError: boom with {REDACTED} at /hooks/dockerhub/{REDACTED}")
    assert SECRET not in logging.Formatter().format(record)


def test_filter_cleans_exception_text_formatted_earlier() -> None:
    record = _record("failed", exc=True)
    record.exc_text = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    assert SECRET in record.exc_text
    RedactSecrets([SECRET]).filter(record)
    assert SECRET not in record.exc_text
    assert "guessed" not in record.exc_text


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactSecrets([SECRET]))
    log = logging.getLogger("tests.unit.test_logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, stream
    log.removeHandler(handler)
    log.propagate = True


def test_through_a_handler(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.info("hook %s called with %s", "/hooks/dockerhub/abc", SECRET)
    try:
        raise KeyError(SECRET)
    except KeyError:
        log.exception("lookup failed for %s", SECRET)
    out = stream.getvalue()
    assert SECRET not in out
    assert "/hooks/dockerhub/abc" not in out
    assert out.startswith(
        f"INFO hook /hooks/dockerhub/{REDACTED} called with {REDACTED}\nERROR lookup failed for {REDACTED}\n"
    )
    assert out.endswith(f"KeyError: '{REDACTED}'\n")


def _one_logger(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    from webhook_server.logs import prepare

    stream = io.StringIO()
    log = logging.getLogger(f"test.logs.{fmt}")
    log.handlers[:] = [prepare(logging.StreamHandler(stream), fmt=fmt, secrets=[SECRET])]  # type: ignore[arg-type]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, stream


def test_json_lines_carry_the_context_and_keep_secrets_out() -> None:
    import json

    from webhook_server.logs import context

    log, stream = _one_logger("json")
    with context(request_id="req-1"):
        log.info("accepted %s", "acme/api:1.2.3")
        with context(deployment=7):
            try:
                raise RuntimeError(f"boom {SECRET}")
            except RuntimeError:
                log.exception("failed")
    log.info("outside")

    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: first[k] for k in ("level", "logger", "message", "request_id")} == {
        "level": "INFO",
        "logger": "test.logs.json",
        "message": "accepted acme/api:1.2.3",
        "request_id": "req-1",
    }
    assert "time" in first and "deployment" not in first
    assert (second["request_id"], second["deployment"], second["level"]) == ("req-1", 7, "ERROR")
    assert "RuntimeError: boom" in second["exc_info"] and SECRET not in stream.getvalue()
    assert "request_id" not in third


def test_text_lines_end_with_the_context() -> None:
    from webhook_server.logs import context

    log, stream = _one_logger("text")
    with context(request_id="abc", deployment=3):
        log.warning("rolled back")
    log.info("plain")
    tagged, plain = stream.getvalue().splitlines()
    assert tagged.endswith("WARNING test.logs.text: rolled back [request_id=abc deployment=3]")
    assert plain.endswith("INFO test.logs.text: plain")
