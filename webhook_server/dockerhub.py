"""Docker Hub's push webhook payload, parsed at the boundary.

Docker Hub documents ``push_data.{tag,pushed_at,pusher}``, ``repository.{repo_name,namespace,name,...}``
and ``callback_url``. Older deliveries carry ``pushed_at`` as a float and ``push_data.images``; unknown
fields are ignored so that new ones never break deliveries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from webhook_server import problems
from webhook_server.errors import BadRequest
from webhook_server.rules import DOCKER_TAG

_TOLERANT = ConfigDict(frozen=True, extra="ignore")


class PushData(BaseModel):
    model_config = _TOLERANT

    tag: str
    pushed_at: datetime | None = None
    pusher: str | None = None
    images: tuple[str, ...] = ()

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
    callback_url: str | None = Field(default=None, max_length=2048)

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
