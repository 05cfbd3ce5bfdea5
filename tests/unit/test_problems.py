"""pydantic errors as sentences: every error type we meet reads as a sentence; unknown keys name their neighbours."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webhook_server import problems

_STRICT = ConfigDict(extra="forbid")


class Inner(BaseModel):
    model_config = _STRICT

    monitor: int = 0
    delay: int = 0


class Outer(BaseModel):
    model_config = _STRICT

    count: Annotated[int, Field(ge=0, le=10)] = 0
    ratio: float = Field(default=0.0, gt=0.0, lt=1.0)
    name: str = Field(default="x", min_length=2, max_length=4)
    flag: bool = False
    order: Literal["start-first", "stop-first"] = "start-first"
    address: Literal["*"] | IPv4Address | IPv6Address = "*"
    items: tuple[int, ...] = Field(default=(), max_length=2)
    inner: Inner = Inner()
    by_name: dict[str, Inner] = {}
    listed: list[Inner] | None = None
    aliased: int = Field(default=0, alias="alias-name")


def _problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as exc:
        Outer.model_validate(data)
    return problems.problems(exc.value, model=Outer)


SENTENCES: list[tuple[str, dict[str, Any], tuple[tuple[str | int, ...], str]]] = [
    ("ge", {"count": -1}, (("count",), "must be at least 0")),
    ("le", {"count": 11}, (("count",), "must be at most 10")),
    ("gt", {"ratio": 0}, (("ratio",), "must be greater than 0")),
    ("lt", {"ratio": 1.5}, (("ratio",), "must be less than 1")),
    ("int-parsing", {"count": "x"}, (("count",), "must be a whole number")),
    ("int-from-float", {"count": 1.5}, (("count",), "must be a whole number")),
    ("float", {"ratio": "x"}, (("ratio",), "must be a number")),
    ("bool", {"flag": "perhaps"}, (("flag",), "must be true or false")),
    ("string-type", {"name": 5}, (("name",), "must be a string")),
    ("string-short", {"name": "a"}, (("name",), "is too short (at least 2 characters)")),
    ("string-long", {"name": "abcde"}, (("name",), "is too long (at most 4 characters)")),
    ("literal", {"order": "first"}, (("order",), "must be 'start-first' or 'stop-first'")),
    ("union", {"address": "nope"}, (("address",), "must be '*' or an IPv4 address or an IPv6 address")),
    ("tuple", {"items": 5}, (("items",), "must be a list")),
    ("too-long", {"items": [1, 2, 3]}, (("items",), "must have at most 2 item(s)")),
    ("model", {"inner": 5}, (("inner",), "must be a mapping (key: value)")),
    ("dict", {"by_name": []}, (("by_name",), "must be a mapping (key: value)")),
    ("dict-key", {"by_name": {5: {}}}, (("by_name", 5), "the key must be a string")),
    ("unknown-top", {"cont": 1}, (("cont",), "unknown key 'cont' — did you mean 'count'?")),
    (
        "unknown-nested",
        {"inner": {"monitr": 1}},
        (("inner", "monitr"), "unknown key 'monitr' — did you mean 'monitor'?"),
    ),
    (
        "unknown-in-dict",
        {"by_name": {"a": {"dealy": 1}}},
        (("by_name", "a", "dealy"), "unknown key 'dealy' — did you mean 'delay'?"),
    ),
    (
        "unknown-in-list",
        {"listed": [{}, {"Delay": 1}]},
        (("listed", 1, "Delay"), "unknown key 'Delay' — did you mean 'delay'?"),
    ),
    ("unknown-alias", {"alias-nam": 1}, (("alias-nam",), "unknown key 'alias-nam' — did you mean 'alias-name'?")),
    ("unknown-far", {"inner": {"zzz": 1}}, (("inner", "zzz"), "unknown key 'zzz' — the keys here are monitor, delay")),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in SENTENCES], ids=[i for i, _, _ in SENTENCES])
def test_sentence(data: dict[str, Any], expected: tuple[tuple[str | int, ...], str]) -> None:
    assert _problems(data) == [expected]


def test_unknown_key_without_a_model_says_only_that() -> None:
    with pytest.raises(ValidationError) as exc:
        Outer.model_validate({"cont": 1})
    assert problems.problems(exc.value) == [(("cont",), "unknown key")]


def test_the_input_is_never_echoed() -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    with pytest.raises(ValidationError) as exc:
        Outer.model_validate({"count": secret, "name": secret, "order": secret, "address": secret})
    assert all(secret not in text for _, text in problems.problems(exc.value, model=Outer))


def test_first_problem_names_the_field_or_the_default() -> None:
    with pytest.raises(ValidationError) as exc:
        Outer.model_validate({"inner": {"monitor": "x"}})
    assert problems.first_problem(exc.value) == "inner.monitor: must be a whole number"

    class Root(BaseModel):
        value: int

    with pytest.raises(ValidationError) as exc:
        Root.model_validate(5)
    assert problems.first_problem(exc.value, default_field="payload") == "payload: must be a mapping (key: value)"


KNOWN = [
    ((), ["count", "ratio", "name", "flag", "order", "address", "items", "inner", "by_name", "listed", "alias-name"]),
    (("inner",), ["monitor", "delay"]),
    (("by_name", "any"), ["monitor", "delay"]),
    (("listed", 3), ["monitor", "delay"]),
    (("count",), None),
    (("nope",), None),
]


@pytest.mark.parametrize(("loc", "keys"), KNOWN, ids=[problems.dotted(loc) or "top" for loc, _ in KNOWN])
def test_known_keys(loc: tuple[str | int, ...], keys: list[str] | None) -> None:
    assert problems.known_keys(Outer, loc) == keys
