"""The project's one exception hierarchy.

Every error a user can cause or meet derives from :class:`WebhookError`; the HTTP layer maps them to status
codes in one place (``views.register_error_handlers``) and the CLI prints them as one line.
"""

from __future__ import annotations


class WebhookError(Exception):
    """Base of all errors this project raises on purpose."""

    http_status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def public_message(self) -> str:
        """What an HTTP client is told; the log keeps ``message``."""
        return self.message


class ConfigError(WebhookError):
    """Settings or a config file are wrong; the message says where."""

    code = "config_error"


class RulesError(ConfigError):
    """deploy_rules.yaml is invalid. ``problems`` holds one located line per error."""

    code = "rules_invalid"

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} error(s)\n{lines}")


class BadRequest(WebhookError):
    http_status = 400
    code = "bad_request"


class Unauthorized(WebhookError):
    http_status = 401
    code = "unauthorized"


class TooManyRequests(WebhookError):
    """A client over its request rate or failed-token limit; ``retry_after`` seconds until it may again."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(WebhookError):
    http_status = 404
    code = "not_found"


class RuleNotFound(NotFound):
    """No rule in deploy_rules.yaml names this service."""

    code = "no_rule"


class DeploymentNotFound(NotFound):
    code = "no_deployment"


class NotAllowed(WebhookError):
    """The request is well-formed but the rules forbid it (tag filter, policy, no history to roll back to)."""

    http_status = 422
    code = "not_allowed"


class DockerError(WebhookError):
    """Base of errors from the Docker adapter."""

    http_status = 502
    code = "docker_error"


class DockerUnavailable(DockerError):
    """The daemon cannot be reached; work is retried later."""

    http_status = 503
    code = "docker_unavailable"


class ServiceNotFound(DockerError):
    http_status = 404
    code = "service_not_found"

    def __init__(self, service: str) -> None:
        super().__init__(f"service {service!r} does not exist in the swarm")
        self.service = service


class ImageNotFound(DockerError):
    """The tag cannot be resolved to a digest in its registry."""

    http_status = 422
    code = "image_not_found"


class UpdateOutOfSequence(DockerError):
    """Swarm refused the update because the service changed since we read it."""

    http_status = 409
    code = "update_out_of_sequence"


class UpdateUncertain(DockerError):
    """An update was sent but Docker's answer never came: it may or may not have reached Swarm."""

    http_status = 504
    code = "update_uncertain"


class JournalError(WebhookError):
    """The journal (the SQLite file or PostgreSQL) failed an operation; the message names it, never its
    password, and says what the database said."""

    code = "journal_error"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"journal {name}: {reason}")
        self.name = name
        self.reason = reason

    @property
    def public_message(self) -> str:
        # The database's own words name its host and port: the internet is told only that it failed.
        return "the journal failed; nothing was recorded, try again" if self.http_status >= 500 else self.message


class JournalUnavailable(JournalError):
    """The journal cannot be reached or used now (database down or restarting, connection lost, locked too
    long). What raised it was not confirmed stored (a 202 must not be given); the caller may try again."""

    http_status = 503
    code = "journal_unavailable"

    @property
    def public_message(self) -> str:
        return "the journal is unavailable; nothing was recorded, try again"
