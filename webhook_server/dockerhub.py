"""Docker Hub's push webhook payload, parsed at the boundary.

Docker Hub documents ``push_data.{tag,pushed_at,pusher}``, ``repository.{repo_name,namespace,name,...}``
and ``callback_url``. Older deliveries carry ``pushed_at`` as a float and ``push_data.images``; unknown
fields are ignored so that new ones never break deliveries.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from webhook_server import problems
from webhook_server.errors import BadRequest
from webhook_server.rules import DOCKER_TAG

_TOLERANT = ConfigDict(frozen=True, extra="ignore")

# Docker's reference grammar for a repository path (components of lowercase letters and digits joined by
# ".", "_", "__" or dashes, separated by "/"), optionally after a registry host; at most 255 characters.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*")
MAX_REPOSITORY = 255
MAX_TEXT = 255  # the pusher: a Docker Hub user name, stored and logged
MAX_URL = 2048
_URL = re.compile(r"https?://[!-~]+", re.IGNORECASE)  # printable ASCII, no spaces: what the document says


def _printable(value: str, *, limit: int) -> str:
    """Refuse what cannot be stored or logged as it came: control characters, lone surrogates, and text
    longer than ``limit``. The message never repeats the value."""
    if len(value) > limit:
        raise ValueError(f"is too long (at most {limit} characters)")
    if not value.isprintable():
        raise ValueError("must not contain control or unpaired surrogate characters")
    return value


def _repository(value: str) -> str:
    _printable(value, limit=MAX_REPOSITORY)
    if not REPOSITORY.fullmatch(value.lower()):
        raise ValueError("not a Docker repository name (such as acme/api)")
    return value


class PushData(BaseModel):
    model_config = _TOLERANT

    tag: str
    pushed_at: datetime | None = None
    pusher: str | None = None
    images: tuple[str, ...] = ()

    @field_validator("pusher")
    @classmethod
    def _pusher(cls, value: str | None) -> str | None:
        return None if value is None else _printable(value, limit=MAX_TEXT)

    @field_validator("tag")
    @classmethod
    def _docker_tag(cls, value: str) -> str:
        if not DOCKER_TAG.fullmatch(value):
            raise ValueError("not a valid Docker tag")
        return value

    @field_validator("pushed_at", mode="before")
    @classmethod
    def _epoch(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(value, tz=UTC)
            except (OverflowError, OSError, ValueError):
                raise ValueError("not a timestamp in range") from None
        return value


class Repository(BaseModel):
    model_config = _TOLERANT

    repo_name: str | None = None
    namespace: str | None = None
    name: str | None = None

    @field_validator("repo_name", "namespace", "name")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        return _repository(value) if value else None

    @property
    def full_name(self) -> str | None:
        if self.repo_name:
            return self.repo_name.lower()
        if self.namespace and self.name:
            return f"{self.namespace}/{self.name}".lower()
        return None


class HubPush(BaseModel):
    model_config = _TOLERANT

    push_data: PushData
    repository: Repository
    callback_url: str | None = None

    @field_validator("callback_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _printable(value, limit=MAX_URL)
        if not _URL.fullmatch(value):
            raise ValueError("not an http(s) URL")
        return value

    @property
    def repo(self) -> str:
        name = self.repository.full_name
        assert name is not None  # guaranteed by parse_push
        return name


def parse_push(body: Any) -> HubPush:
    """Validate a decoded JSON body; a missing or wrong field becomes a 400 that names it."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (Docker Hub's push payload)")
    try:
        push = HubPush.model_validate(body)
    except ValidationError as e:
        raise BadRequest(problems.first_problem(e)) from None
    if push.repository.full_name is None:
        raise BadRequest("repository.repo_name: is required (or repository.namespace and repository.name)")
    return push
