"""Process settings, read once from the environment at an entry point.

Secrets come from ``NAME`` or from the file named by ``NAME_FILE`` (Docker secrets mount them as files).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from webhook_server.durations import Duration
from webhook_server.errors import ConfigError

MIN_TOKEN_LENGTH = 16


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_token: SecretStr | None = None
    api_token: SecretStr | None = None
    rules_path: Path = Path("deploy_rules.yaml")
    db_path: Path = Path("state/webhook.sqlite3")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # How long queued work keeps retrying while the Docker daemon is unreachable before it fails.
    docker_retry_limit: Duration = timedelta(minutes=10)
    # Retries back off exponentially from 1 s up to this delay.
    docker_retry_max_delay: Duration = timedelta(seconds=30)
    # Proxies whose X-Forwarded-* headers are believed; from anyone else they are ignored.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    @field_validator("webhook_token", "api_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} characters; use a long random string")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip())
        return value

    def secrets(self) -> list[str]:
        """Secret values, for the log filter that keeps them out of every log line."""
        return [s.get_secret_value() for s in (self.webhook_token, self.api_token) if s is not None]


_ENV = {
    "webhook_token": "WEBHOOK_TOKEN",
    "api_token": "WEBHOOK_API_TOKEN",
    "rules_path": "WEBHOOK_RULES",
    "db_path": "WEBHOOK_DB",
    "log_level": "WEBHOOK_LOG_LEVEL",
    "docker_retry_limit": "WEBHOOK_DOCKER_RETRY_LIMIT",
    "docker_retry_max_delay": "WEBHOOK_DOCKER_RETRY_MAX_DELAY",
    "trusted_proxies": "WEBHOOK_TRUSTED_PROXIES",
    "max_body_bytes": "WEBHOOK_MAX_BODY_BYTES",
}
_SECRETS = {"webhook_token", "api_token"}


def _read_secret(env: Mapping[str, str], name: str) -> str | None:
    file_name = env.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{name}_FILE={file_name}: cannot read: {e.strerror}") from e
    value = env.get(name)
    return value.strip() if value is not None else None


def load_settings(*, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build Settings from the environment; explicit overrides (e.g. CLI flags) win."""
    env = os.environ if env is None else env
    raw: dict[str, object] = {}
    for field, name in _ENV.items():
        value = _read_secret(env, name) if field in _SECRETS else env.get(name)
        if value not in (None, ""):
            raw[field] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            # Never echo the input: for tokens it is the secret itself.
            problems.append(f"{_ENV.get(field, field)}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
