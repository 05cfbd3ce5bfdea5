"""pydantic's validation errors as sentences a person can act on: one formatter for every boundary
(rules file, settings, webhook payloads, API bodies, proxy config)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails


def location(err: ErrorDetails) -> tuple[str | int, ...]:
    """The error's path in the input, without the validator names pydantic inserts ("function-before[...]")."""
    return tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "]" in p))


def dotted(loc: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in loc)


def sentence(err: ErrorDetails) -> str:
    """The message without pydantic's internal wording."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if kind == "string_pattern_mismatch":
        return "has characters or a form that is not allowed here"
    if kind == "string_too_long":
        return f"is too long (at most {ctx.get('max_length')} characters)"
    if kind == "string_too_short":
        return f"is too short (at least {ctx.get('min_length')} characters)"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if msg.startswith("Input should be "):
        msg = "must be " + msg.removeprefix("Input should be ")
    return msg


def problems(e: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    """Each error as (location, sentence); never echoes the input (it may be a secret)."""
    return [(location(err), sentence(err)) for err in e.errors(include_input=False, include_url=False)]


def first_problem(e: ValidationError, *, default_field: str = "body") -> str:
    """'field: sentence' for the first error, for one-line answers (HTTP 400, CLI errors)."""
    loc, text = problems(e)[0]
    return f"{dotted(loc) or default_field}: {text}"
