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
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from webhook_server import problems
from webhook_server.durations import Duration
from webhook_server.errors import ConfigError

MIN_TOKEN_LENGTH = 16
# A new install (no journal yet) starts with tokens at least this long; existing ones keep working at 16.
NEW_INSTALL_TOKEN_LENGTH = 32
JOURNAL_NAME = "journal.sqlite3"
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
ROOT_STATE_DIR = Path("/var/lib/webhook-server")


def default_db_path(env: Mapping[str, str], *, euid: int) -> Path:
    """Where the journal lives unless WEBHOOK_DB says otherwise: one place per user, whatever the cwd.

    systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``) first, then ``/var/lib/webhook-server`` for root,
    else the XDG state directory (``$XDG_STATE_HOME``, by default ``~/.local/state``)/webhook-server.
    """
    state_directory = env.get("STATE_DIRECTORY", "")
    if state_directory:
        # systemd lists one directory per StateDirectory= entry, colon-separated; ours is the first.
        return Path(state_directory.split(":")[0]) / JOURNAL_NAME
    if euid == 0:
        return ROOT_STATE_DIR / JOURNAL_NAME
    xdg = env.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    else:
        base = (Path(env["HOME"]) if env.get("HOME") else Path.home()) / ".local" / "state"
    return base / "webhook-server" / JOURNAL_NAME


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_token: SecretStr | None = None
    api_token: SecretStr | None = None
    # During a rotation the old token stays valid beside the new one, until every sender has the new one.
    webhook_token_previous: SecretStr | None = None
    api_token_previous: SecretStr | None = None
    rules_path: Path = Path("deploy_rules.yaml")
    # No default here: load_settings supplies default_db_path, which depends on the user and environment.
    # Always a local file: the SQLite journal, or beside it the per-node state (limits) when the journal is
    # on PostgreSQL.
    db_path: Path
    # WEBHOOK_DB=postgresql://...: the journal is shared by every receiver through PostgreSQL.
    db_url: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text for people at a terminal; json (one object per line) for log collectors; the image uses json.
    log_format: Literal["text", "json"] = "text"
    # How long queued work keeps retrying while the Docker daemon is unreachable before it fails.
    docker_retry_limit: Duration = timedelta(minutes=10)
    # Retries back off exponentially from 1 s up to this delay.
    docker_retry_max_delay: Duration = timedelta(seconds=30)
    # How long one Docker API call may go unanswered; an update past it is followed, not assumed lost.
    docker_timeout: Duration = timedelta(seconds=30)
    # Proxies whose X-Forwarded-* headers are believed; from anyone else they are ignored.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Per client address, across every worker; 0 turns a limit off. Health probes do not count.
    rate_limit: int = Field(default=300, ge=0)  # requests a minute
    auth_failure_limit: int = Field(default=10, ge=0)  # wrong tokens in ten minutes
    # Where every service's outcomes are sent (apprise URLs); rules add their own with notify:.
    notify_urls: tuple[SecretStr, ...] = ()
    # Outcomes waiting to be sent; past this, new ones are dropped (and recorded) rather than block a rollout.
    notify_queue: int = Field(default=100, gt=0)
    # How long one notification attempt may take before it is given up and recorded failed.
    notify_timeout: Duration = timedelta(seconds=30)
    # Whether GET /metrics needs the API token (the rendered nginx config never exposes it either way).
    metrics_token_required: bool = False
    # Docker Hub's callback_url: called once a push's rollouts end, only on these hosts, only when turned on.
    callback_enabled: bool = False
    callback_hosts: tuple[str, ...] = ("registry.hub.docker.com",)
    # POST /api/proxy/reload does what ``reload-proxy`` does, with these (the CLI reads the same variables).
    proxy_service: str = Field(default="nginx", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    proxy_mode: Literal["signal", "secrets"] = "signal"
    proxy_job_image: str | None = None
    proxy_node_socket: str = "/var/run/docker.sock"
    # Where this process reads certbot's lineages (``live/``): the expiry watch, and the secrets mode's files.
    # Unset: no expiry watch (the server may not see the certificates at all).
    cert_dir: Path | None = None
    # A certificate closer than this to its end is reported (notification, /readyz warning).
    cert_warn_days: int = Field(default=14, ge=1, le=365)
    cert_check_interval: Duration = timedelta(hours=1)
    # HOST:PORT of nginx's TLS port as this process reaches it (``nginx:443``): the served certificate is
    # compared with the one on disk. Unset: not compared.
    proxy_probe: str | None = Field(default=None, pattern=r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")

    @field_validator("webhook_token", "api_token", "webhook_token_previous", "api_token_previous")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_TOKEN_LENGTH} characters; use a long random string")
        return value

    @field_validator("db_url")
    @classmethod
    def _postgresql(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(POSTGRESQL_SCHEMES):
            raise ValueError("give a postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL")
        return value

    @property
    def journal_location(self) -> Path | str:
        """Where the journal is: the PostgreSQL URL when one is set, else the SQLite file."""
        return self.db_url.get_secret_value() if self.db_url is not None else self.db_path

    @field_validator("db_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Messages and the executor lock name the file; a relative name would depend on the cwd of the reader.
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Settings:
        if set(self.webhook_tokens()) & set(self.api_tokens()):
            raise ValueError(
                "WEBHOOK_TOKEN and WEBHOOK_API_TOKEN are the same; the webhook token travels in URLs that "
                "Docker Hub and proxies may log, so the API token must be a different secret"
            )
        if self.webhook_token_previous is not None and self.webhook_token is None:
            raise ValueError("WEBHOOK_TOKEN_PREVIOUS is set without WEBHOOK_TOKEN (the new token)")
        if self.api_token_previous is not None and self.api_token is None:
            raise ValueError("WEBHOOK_API_TOKEN_PREVIOUS is set without WEBHOOK_API_TOKEN (the new token)")
        return self

    def webhook_tokens(self) -> list[str]:
        """Every webhook token accepted now: the current one and, during a rotation, the previous one."""
        return [t.get_secret_value() for t in (self.webhook_token, self.webhook_token_previous) if t is not None]

    def api_tokens(self) -> list[str]:
        return [t.get_secret_value() for t in (self.api_token, self.api_token_previous) if t is not None]

    @field_validator("callback_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @field_validator("notify_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        return tuple(parse_url_list(value)) if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip())
        return value

    def secrets(self) -> list[str]:
        """Secret values, for the log filter that keeps them out of every log line."""
        found = [*self.webhook_tokens(), *self.api_tokens(), *self.notify_url_values()]
        if self.db_url is not None:
            url = self.db_url.get_secret_value()
            found.append(url)
            if urlsplit(url).password:
                found.append(str(urlsplit(url).password))
        return found

    def notify_url_values(self) -> list[str]:
        return [url.get_secret_value() for url in self.notify_urls]


_ENV = {
    "webhook_token": "WEBHOOK_TOKEN",
    "api_token": "WEBHOOK_API_TOKEN",
    "webhook_token_previous": "WEBHOOK_TOKEN_PREVIOUS",
    "api_token_previous": "WEBHOOK_API_TOKEN_PREVIOUS",
    "rules_path": "WEBHOOK_RULES",
    "db_path": "WEBHOOK_DB",
    "db_url": "WEBHOOK_DB",
    "log_level": "WEBHOOK_LOG_LEVEL",
    "log_format": "WEBHOOK_LOG_FORMAT",
    "docker_retry_limit": "WEBHOOK_DOCKER_RETRY_LIMIT",
    "docker_retry_max_delay": "WEBHOOK_DOCKER_RETRY_MAX_DELAY",
    "docker_timeout": "WEBHOOK_DOCKER_TIMEOUT",
    "trusted_proxies": "WEBHOOK_TRUSTED_PROXIES",
    "max_body_bytes": "WEBHOOK_MAX_BODY_BYTES",
    "rate_limit": "WEBHOOK_RATE_LIMIT",
    "auth_failure_limit": "WEBHOOK_AUTH_FAILURE_LIMIT",
    "notify_urls": "WEBHOOK_NOTIFY_URLS",
    "notify_queue": "WEBHOOK_NOTIFY_QUEUE",
    "notify_timeout": "WEBHOOK_NOTIFY_TIMEOUT",
    "metrics_token_required": "WEBHOOK_METRICS_TOKEN_REQUIRED",
    "callback_enabled": "WEBHOOK_CALLBACK",
    "callback_hosts": "WEBHOOK_CALLBACK_HOSTS",
    "proxy_service": "WEBHOOK_PROXY_SERVICE",
    "proxy_mode": "WEBHOOK_PROXY_MODE",
    "proxy_job_image": "WEBHOOK_PROXY_JOB_IMAGE",
    "proxy_node_socket": "WEBHOOK_PROXY_NODE_SOCKET",
    "cert_dir": "WEBHOOK_CERT_DIR",
    "cert_warn_days": "WEBHOOK_CERT_WARN_DAYS",
    "cert_check_interval": "WEBHOOK_CERT_CHECK_INTERVAL",
    "proxy_probe": "WEBHOOK_PROXY_PROBE",
}
_SECRETS = {"webhook_token", "api_token", "webhook_token_previous", "api_token_previous", "notify_urls"}


def parse_url_list(text: str) -> list[str]:
    """URLs as a setting or its file holds them: separated by white space or new lines (not commas, which
    apprise URLs use for lists of recipients); a line starting with ``#`` is a comment."""
    return [url for line in text.splitlines() if not line.lstrip().startswith("#") for url in line.split()]


def _read_secret(env: Mapping[str, str], name: str) -> str | None:
    file_name = env.get(f"{name}_FILE")
    if file_name and (env.get(name) or "").strip():
        raise ConfigError(f"both {name} and {name}_FILE are set; set only one of them")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{name}_FILE={file_name}: cannot read: {e.strerror}") from e
    value = env.get(name)
    return value.strip() if value is not None else None


def load_settings(*, env: Mapping[str, str] | None = None, euid: int | None = None, **overrides: object) -> Settings:
    """Build Settings from the environment; explicit overrides (e.g. CLI flags) win."""
    env = os.environ if env is None else env
    raw: dict[str, object] = {"db_path": default_db_path(env, euid=os.geteuid() if euid is None else euid)}
    for field, name in _ENV.items():
        if field in ("db_path", "db_url"):
            continue
        value = _read_secret(env, name) if field in _SECRETS else env.get(name)
        if value not in (None, ""):
            raw[field] = value
    # WEBHOOK_DB (or WEBHOOK_DB_FILE, as it may hold a password) is a file or a PostgreSQL URL.
    db = _read_secret(env, "WEBHOOK_DB")
    if db and db.startswith(POSTGRESQL_SCHEMES):
        raw["db_url"] = db
    elif db:
        raw["db_path"] = db
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        # problems.problems never echoes the input: for tokens it is the secret itself.
        found = [f"{_ENV.get(str(loc[0]), str(loc[0]))}: {text}" if loc else text for loc, text in problems.problems(e)]
        raise ConfigError("invalid settings: " + "; ".join(found)) from None
