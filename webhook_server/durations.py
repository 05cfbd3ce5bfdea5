"""Human durations ("500ms", "5s", "2m", "1h", "1m30s") as used in rules and settings."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
# Far beyond any sensible timeout, and well inside timedelta's range (which overflows past ~2.7e6 years).
MAX_SECONDS = 365 * 86400


def parse_duration(value: Any) -> timedelta:
    """Parse a duration; bare numbers are seconds. Raises ValueError with the accepted forms."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 5s, 2m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        seconds = float(value.strip())  # bare numbers are seconds, also from the environment
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            raise ValueError(f"{value!r} is not a duration: use forms like 500ms, 5s, 2m, 1h or 1m30s")
    else:
        raise ValueError("expected a duration such as 500ms, 5s, 2m or 1h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"{value!r} is too long a duration (at most {MAX_SECONDS // 86400} days)")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Write a duration as the rules do (``10s``, ``1m30s``, ``500ms``, ``2h``, ``0s``): the inverse of
    :func:`parse_duration`, so that what a message or ``check-rules`` shows can be pasted back into a file."""
    if value < timedelta(0):
        # Never parsed from a file, but a difference of two times can be negative; say so rather than lie.
        return "-" + format_duration(-value)
    # Integer microseconds: float seconds would print 0.1s as 0.09999999999999999s after arithmetic.
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    parts = [f"{hours}h"] if hours else []
    if minutes:
        parts.append(f"{minutes}m")
    if seconds or (micros and parts):
        parts.append(f"{seconds}{_fraction(micros)}s")
    elif micros:
        millis, rest = divmod(micros, 1000)
        parts.append(f"{millis}{_fraction(rest * 1000)}ms")
    return "".join(parts) or "0s"


def _fraction(micros: int) -> str:
    """'.5' for 500000 microseconds; '' for none."""
    return f".{micros:06d}".rstrip("0") if micros else ""


class WrittenDuration(timedelta):
    """A timedelta whose ``str()`` is written as in the rules (``10s``, not ``0:00:10``).

    Every duration read from the rules or settings is one, so a message that interpolates it
    (``f"no outcome within {rule.timeout}"``) speaks the file's language without each caller formatting it.
    Arithmetic gives back a plain timedelta, as for any timedelta subclass.
    """

    __slots__ = ()

    @classmethod
    def of(cls, value: timedelta) -> WrittenDuration:
        return value if isinstance(value, WrittenDuration) else cls(value.days, value.seconds, value.microseconds)

    def __str__(self) -> str:
        return format_duration(self)


def duration(**kwargs: float) -> WrittenDuration:
    """``timedelta(**kwargs)`` as a :class:`WrittenDuration`, for defaults in models."""
    return WrittenDuration.of(timedelta(**kwargs))


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(WrittenDuration.of),
    # Text only in JSON; in Python the value stays a timedelta, so model_dump/model_copy keep the type.
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
