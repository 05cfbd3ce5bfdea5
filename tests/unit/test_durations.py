"""Human durations: what parses, to what, and what is refused with which message."""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from webhook_server.durations import Duration, WrittenDuration, format_duration, parse_duration

FORMS = "use forms like 500ms, 5s, 2m, 1h or 1m30s"
NOT_A_DURATION = "expected a duration such as 500ms, 5s, 2m or 1h"

VALID: list[tuple[Any, timedelta]] = [
    ("500ms", timedelta(milliseconds=500)),
    ("5s", timedelta(seconds=5)),
    ("2m", timedelta(minutes=2)),
    ("1h", timedelta(hours=1)),
    ("1m30s", timedelta(minutes=1, seconds=30)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("1.5s", timedelta(seconds=1.5)),
    ("0s", timedelta(0)),
    ("  5s  ", timedelta(seconds=5)),
    ("1h 30m", timedelta(hours=1, minutes=30)),
    (5, timedelta(seconds=5)),
    (0.25, timedelta(milliseconds=250)),
    (0, timedelta(0)),
    (timedelta(minutes=3), timedelta(minutes=3)),
]


@pytest.mark.parametrize(("value", "expected"), VALID, ids=[repr(v) for v, _ in VALID])
def test_parse_valid(value: Any, expected: timedelta) -> None:
    assert parse_duration(value) == expected


INVALID: list[tuple[Any, str]] = [
    ("5x", f"'5x' is not a duration: {FORMS}"),
    ("s5", f"'s5' is not a duration: {FORMS}"),
    ("5s5", f"'5s5' is not a duration: {FORMS}"),
    ("5.s", f"'5.s' is not a duration: {FORMS}"),
    ("5 sec", f"'5 sec' is not a duration: {FORMS}"),
    ("-5s", f"'-5s' is not a duration: {FORMS}"),
    ("1d", f"'1d' is not a duration: {FORMS}"),
    ("", NOT_A_DURATION),
    ("   ", NOT_A_DURATION),
    (None, NOT_A_DURATION),
    (True, NOT_A_DURATION),
    (False, NOT_A_DURATION),
    ([5], NOT_A_DURATION),
    (-1, "a duration cannot be negative"),
    (-0.5, "a duration cannot be negative"),
]


@pytest.mark.parametrize(("value", "message"), INVALID, ids=[repr(v) for v, _ in INVALID])
def test_parse_invalid(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration(value)
    assert str(exc.value) == message


@pytest.mark.parametrize("value", ["99999999999h", float("inf"), 10**20], ids=["huge-string", "inf", "huge-int"])
def test_parse_out_of_range_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


# (value, how the rules write it): format_duration is the parser's inverse, so every row also round-trips.
FORMATTED = [
    (timedelta(0), "0s"),
    (timedelta(milliseconds=500), "500ms"),
    (timedelta(milliseconds=1), "1ms"),
    (timedelta(microseconds=1500), "1.5ms"),
    (timedelta(microseconds=1), "0.001ms"),
    (timedelta(seconds=1), "1s"),
    (timedelta(seconds=10), "10s"),
    (timedelta(seconds=1.5), "1.5s"),
    (timedelta(seconds=0.1) * 3, "300ms"),  # arithmetic does not leak float noise into the text
    (timedelta(seconds=59), "59s"),
    (timedelta(minutes=1), "1m"),
    (timedelta(minutes=1, seconds=30), "1m30s"),
    (timedelta(minutes=2), "2m"),
    (timedelta(minutes=1, milliseconds=500), "1m0.5s"),
    (timedelta(hours=1), "1h"),
    (timedelta(hours=2), "2h"),
    (timedelta(hours=1, minutes=30), "1h30m"),
    (timedelta(hours=1, seconds=5), "1h5s"),
    (timedelta(hours=1, minutes=2, seconds=3, milliseconds=4), "1h2m3.004s"),
    (timedelta(days=2), "48h"),  # the rules have no day unit
    (timedelta(days=365), "8760h"),
    (timedelta(days=364, microseconds=1), "8736h0.000001s"),  # microseconds survive the float sum
]


@pytest.mark.parametrize(("value", "text"), FORMATTED, ids=[t for _, t in FORMATTED])
def test_format_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value  # what is written back reads the same


def test_format_negative_says_so() -> None:
    assert format_duration(timedelta(seconds=-90)) == "-1m30s"


PARSED_STR = [("5s", "5s"), ("90s", "1m30s"), ("0.5", "500ms"), (120, "2m"), (timedelta(hours=1), "1h")]


@pytest.mark.parametrize(("value", "text"), PARSED_STR, ids=[str(v) for v, _ in PARSED_STR])
def test_parsed_durations_print_as_the_rules_write_them(value: Any, text: str) -> None:
    d = _Model.model_validate({"d": value}).d
    assert (str(d), f"within {d}") == (text, f"within {text}")
    assert isinstance(d, WrittenDuration) and d == parse_duration(value)


def test_written_duration_pickles_and_compares() -> None:
    d = WrittenDuration.of(timedelta(seconds=90))
    again = pickle.loads(pickle.dumps(d))
    assert (type(again), again, str(again)) == (WrittenDuration, timedelta(seconds=90), "1m30s")
    assert str(d + timedelta(seconds=1)) == "0:01:31"  # arithmetic is plain timedelta's, as documented


class _Model(BaseModel):
    d: Duration


def test_annotated_type_validates_and_serialises() -> None:
    m = _Model.model_validate({"d": "1m30s"})
    assert m.d == timedelta(seconds=90)
    assert m.model_dump() == {"d": timedelta(seconds=90)}  # stays typed in Python (model_copy relies on it)
    assert m.model_dump_json() == '{"d":"1m30s"}'


def test_annotated_type_reports_the_parse_message() -> None:
    with pytest.raises(ValidationError) as exc:
        _Model.model_validate({"d": "soon"})
    [err] = exc.value.errors()
    assert err["loc"] == ("d",)
    assert err["msg"] == f"Value error, 'soon' is not a duration: {FORMS}"
