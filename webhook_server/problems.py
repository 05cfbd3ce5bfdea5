"""pydantic's validation errors as sentences a person can act on: one formatter for every boundary
(rules file, settings, webhook payloads, API bodies, proxy config).

Sentences never echo the input: at some boundaries (settings, API bodies) it is a secret.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

Location = tuple[str | int, ...]

_DATETIME = "must be a date and time (ISO 8601, such as 2024-05-01T12:00:00Z) or a Unix timestamp"
# pydantic's error type -> the sentence, for types whose own message is pydantic's wording.
_FIXED = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "set_type": "must be a list",
    "frozen_set_type": "must be a list",
    "string_pattern_mismatch": "has characters or a form that is not allowed here",
    "datetime_type": _DATETIME,
    "datetime_parsing": _DATETIME,
    "datetime_from_date_parsing": _DATETIME,
    "datetime_object_invalid": _DATETIME,
    "ip_any_address": "must be an IPv4 or IPv6 address",
    "ip_v4_address": "must be an IPv4 address",
    "ip_v6_address": "must be an IPv6 address",
    "ip_any_network": "must be an IPv4 or IPv6 network",
    "ip_any_interface": "must be an IPv4 or IPv6 address or network",
}
# Error types whose ctx holds a bound: (ctx key, sentence with {} for the bound).
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
    "string_too_long": ("max_length", "is too long (at most {} characters)"),
    "string_too_short": ("min_length", "is too short (at least {} characters)"),
    "too_long": ("max_length", "must have at most {} item(s)"),
    "too_short": ("min_length", "must have at least {} item(s)"),
}


def _is_validator_name(part: str | int) -> bool:
    # pydantic adds validator and union-member names to locations ("function-before[...]", "literal['*']",
    # "[key]"); they are not keys anyone wrote.
    return isinstance(part, str) and "[" in part and "]" in part


def location(err: ErrorDetails) -> Location:
    """The error's path in the input, without the validator names pydantic inserts ("function-before[...]")."""
    return tuple(p for p in err["loc"] if not _is_validator_name(p))


def dotted(loc: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in loc)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sentence(err: ErrorDetails, *, model: type[BaseModel] | None = None) -> str:
    """The message without pydantic's internal wording.

    With ``model`` (the model that was validated), an unknown key names the nearest known key at its place.
    """
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_key(location(err), model)
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if kind in _BOUNDS:
        key, text = _BOUNDS[kind]
        return text.format(_number(ctx.get(key)))
    if kind == "literal_error" and "expected" in ctx:
        return f"must be {ctx['expected']}"
    fixed = _FIXED.get(kind)
    if fixed is not None:
        text = fixed
    else:
        text = str(err["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            text = text.removeprefix(prefix)
        if text.startswith("Input should be "):
            text = "must be " + text.removeprefix("Input should be ")
    if "[key]" in err["loc"] and text.startswith("must be "):
        # The key itself is wrong, not the value under it.
        return f"the key {text}"
    return text


def _unknown_key(loc: Location, model: type[BaseModel] | None) -> str:
    key = str(loc[-1]) if loc else ""
    known = known_keys(model, loc[:-1]) if model is not None else None
    if not known:
        return "unknown key"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or difflib.get_close_matches(
        key.lower(), [k.lower() for k in known], n=1, cutoff=0.6
    )
    if close:
        nearest = next(k for k in known if k.lower() == close[0].lower())
        return f"unknown key {key!r} — did you mean {nearest!r}?"
    return f"unknown key {key!r} — the keys here are {', '.join(known)}"


def known_keys(model: type[BaseModel], loc: Location) -> list[str] | None:
    """The keys the model accepts at ``loc`` (a mapping's place in the input), or None if it is not a model."""
    found = _model_at(model, loc)
    if found is None:
        return None
    return [field.alias or name for name, field in found.model_fields.items()]


def _model_at(annotation: Any, loc: Location) -> type[BaseModel] | None:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _model_at(args[0], loc)
    if origin is Union or origin is types.UnionType:
        for arg in args:
            found = _model_at(arg, loc)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not loc:
            return annotation
        for name, field in annotation.model_fields.items():
            if loc[0] in (name, field.alias):
                return _model_at(field.annotation, loc[1:])
        return None
    if not loc or not args:
        return None
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return _model_at(args[-1], loc[1:])
    if isinstance(origin, type) and issubclass(origin, Sequence | set | frozenset):
        return _model_at(args[0], loc[1:])
    return None


def problems(e: ValidationError, *, model: type[BaseModel] | None = None) -> list[tuple[Location, str]]:
    """Each error as (location, sentence); never echoes the input (it may be a secret).

    A value that no member of a union accepts gives one error per member at the same place; they become one
    sentence ("must be '*' or an IPv4 or IPv6 address").
    """
    found: dict[Location, list[str]] = {}
    for err in e.errors(include_input=False, include_url=False):
        texts = found.setdefault(location(err), [])
        text = sentence(err, model=model)
        if text not in texts:
            texts.append(text)
    return [(loc, _either(texts)) for loc, texts in found.items()]


def _either(texts: list[str]) -> str:
    if len(texts) > 1 and all(t.startswith("must be ") for t in texts):
        return "must be " + " or ".join(t.removeprefix("must be ") for t in texts)
    return "; ".join(texts)


def first_problem(e: ValidationError, *, default_field: str = "body") -> str:
    """'field: sentence' for the first error, for one-line answers (HTTP 400, CLI errors)."""
    loc, text = problems(e)[0]
    return f"{dotted(loc) or default_field}: {text}"
