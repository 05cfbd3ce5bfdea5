"""Human durations ("500ms", "5s", "2m", "1h", "1m30s") as used in rules and settings."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

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
    seconds = value.total_seconds()
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    # Text only in JSON; in Python the value stays a timedelta, so model_dump/model_copy keep the type.
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
