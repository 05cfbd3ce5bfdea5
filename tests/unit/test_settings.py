"""Settings from an explicit environment mapping: values, *_FILE secrets, and errors that never echo secrets."""

from __future__ import annotations

import ipaddress
import traceback
from datetime import timedelta
from pathlib import Path

import pytest

from webhook_server.errors import ConfigError
from webhook_server.settings import MIN_TOKEN_LENGTH, default_db_path, load_settings

TOKEN = "hook-token-0123456789"
API_TOKEN = "api-token-abcdefghijk"


def test_defaults_from_an_empty_environment() -> None:
    s = load_settings(env={"HOME": "/home/op"}, euid=1000)
    assert (s.webhook_token, s.api_token) == (None, None)
    assert (s.rules_path, s.db_path, s.log_level) == (
        Path("deploy_rules.yaml"),
        Path("/home/op/.local/state/webhook-server/journal.sqlite3"),
        "INFO",
    )
    assert (s.docker_retry_limit, s.trusted_proxies, s.max_body_bytes) == (timedelta(minutes=10), (), 1024 * 1024)
    assert s.secrets() == []


def test_everything_from_the_environment() -> None:
    s = load_settings(
        env={
            "WEBHOOK_TOKEN": f"  {TOKEN}\n",
            "WEBHOOK_API_TOKEN": API_TOKEN,
            "WEBHOOK_RULES": "/etc/rules.yaml",
            "WEBHOOK_DB": "/var/lib/hook.db",
            "WEBHOOK_LOG_LEVEL": "DEBUG",
            "WEBHOOK_DOCKER_RETRY_LIMIT": "1m30s",
            "WEBHOOK_TRUSTED_PROXIES": "10.0.0.0/8",
            "WEBHOOK_MAX_BODY_BYTES": "2048",
            "UNRELATED": "ignored",
        }
    )
    assert s.webhook_token is not None and s.webhook_token.get_secret_value() == TOKEN  # stripped
    assert s.api_token is not None and s.api_token.get_secret_value() == API_TOKEN
    assert (s.rules_path, s.db_path, s.log_level) == (Path("/etc/rules.yaml"), Path("/var/lib/hook.db"), "DEBUG")
    assert (s.docker_retry_limit, s.max_body_bytes) == (timedelta(seconds=90), 2048)
    assert s.secrets() == [TOKEN, API_TOKEN]
    assert TOKEN not in repr(s) and TOKEN not in str(s)


def test_secrets_from_files(tmp_path: Path) -> None:
    hook_file, api_file = tmp_path / "hook", tmp_path / "api"
    hook_file.write_text(TOKEN + "\n", encoding="utf-8")
    api_file.write_text(API_TOKEN, encoding="utf-8")
    s = load_settings(env={"WEBHOOK_TOKEN_FILE": str(hook_file), "WEBHOOK_API_TOKEN_FILE": str(api_file)})
    assert s.secrets() == [TOKEN, API_TOKEN]


@pytest.mark.parametrize("variable", ["WEBHOOK_TOKEN", "WEBHOOK_API_TOKEN"])
def test_a_token_and_its_file_both_set_is_an_error_naming_both(tmp_path: Path, variable: str) -> None:
    (tmp_path / "tok").write_text(TOKEN)
    with pytest.raises(ConfigError) as exc:
        load_settings(env={variable: API_TOKEN, f"{variable}_FILE": str(tmp_path / "tok")})
    assert exc.value.message == f"both {variable} and {variable}_FILE are set; set only one of them"


def test_the_same_value_for_both_tokens_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"WEBHOOK_TOKEN": TOKEN, "WEBHOOK_API_TOKEN": TOKEN})
    assert exc.value.message.startswith("invalid settings: WEBHOOK_TOKEN and WEBHOOK_API_TOKEN are the same;")
    assert TOKEN not in exc.value.message


DB_DEFAULTS: list[tuple[str, dict[str, str], int, str]] = [
    ("systemd", {"STATE_DIRECTORY": "/var/lib/hooks", "HOME": "/root"}, 0, "/var/lib/hooks/journal.sqlite3"),
    ("systemd-several", {"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, 1000, "/var/lib/a/journal.sqlite3"),
    ("root", {"HOME": "/root", "XDG_STATE_HOME": "/x"}, 0, "/var/lib/webhook-server/journal.sqlite3"),
    ("xdg", {"HOME": "/home/op", "XDG_STATE_HOME": "/srv/st"}, 1000, "/srv/st/webhook-server/journal.sqlite3"),
    (
        "xdg-relative-is-ignored",
        {"HOME": "/home/op", "XDG_STATE_HOME": "rel"},
        1000,
        "/home/op/.local/state/webhook-server/journal.sqlite3",
    ),
    ("home", {"HOME": "/home/op"}, 1000, "/home/op/.local/state/webhook-server/journal.sqlite3"),
]


@pytest.mark.parametrize(("env", "euid", "expected"), [c[1:] for c in DB_DEFAULTS], ids=[c[0] for c in DB_DEFAULTS])
def test_the_journal_has_one_default_place_whatever_the_cwd(env: dict[str, str], euid: int, expected: str) -> None:
    assert default_db_path(env, euid=euid) == Path(expected)
    assert load_settings(env=env, euid=euid).db_path == Path(expected)


def test_webhook_db_wins_and_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={"WEBHOOK_DB": "state/j.db", "STATE_DIRECTORY": "/x"}).db_path == tmp_path / "state/j.db"


@pytest.mark.parametrize(
    "env",
    [{"WEBHOOK_TOKEN": ""}, {"WEBHOOK_TOKEN": "   "}, {"WEBHOOK_TOKEN_FILE": ""}],
    ids=["empty", "blank", "empty-file-name"],
)
def test_empty_means_unset(env: dict[str, str]) -> None:
    assert load_settings(env=env).webhook_token is None


def test_empty_secret_file_means_unset(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    assert load_settings(env={"WEBHOOK_TOKEN_FILE": str(tmp_path / "empty")}).webhook_token is None


def test_overrides_win_and_none_overrides_are_ignored() -> None:
    s = load_settings(
        env={"WEBHOOK_LOG_LEVEL": "DEBUG", "WEBHOOK_TOKEN": TOKEN}, log_level="WARNING", webhook_token=None
    )
    assert s.log_level == "WARNING"
    assert s.secrets() == [TOKEN]


SHORT = "x7Q-short-secret"[: MIN_TOKEN_LENGTH - 1]
SHORT_MESSAGE = f"must be at least {MIN_TOKEN_LENGTH} characters; use a long random string"


@pytest.mark.parametrize("variable", ["WEBHOOK_TOKEN", "WEBHOOK_API_TOKEN"])
def test_short_token_is_rejected_without_echoing_it(variable: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env={variable: SHORT})
    assert exc.value.message == f"invalid settings: {variable}: {SHORT_MESSAGE}"
    rendered = "".join(traceback.format_exception(exc.value))
    assert SHORT not in rendered


def test_short_token_from_a_file_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text(SHORT)
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"WEBHOOK_TOKEN_FILE": str(tmp_path / "tok")})
    assert exc.value.message == f"invalid settings: WEBHOOK_TOKEN: {SHORT_MESSAGE}"
    assert SHORT not in "".join(traceback.format_exception(exc.value))


def test_token_of_exactly_the_minimum_length_is_accepted() -> None:
    token = "k" * MIN_TOKEN_LENGTH
    assert load_settings(env={"WEBHOOK_TOKEN": token}).secrets() == [token]


def test_every_problem_is_reported() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env={"WEBHOOK_TOKEN": SHORT, "WEBHOOK_API_TOKEN": SHORT, "WEBHOOK_MAX_BODY_BYTES": "0"})
    assert exc.value.message == (
        f"invalid settings: WEBHOOK_TOKEN: {SHORT_MESSAGE}; WEBHOOK_API_TOKEN: {SHORT_MESSAGE}; "
        "WEBHOOK_MAX_BODY_BYTES: must be greater than 0"
    )


PROXIES: list[tuple[str, list[str]]] = [
    ("10.0.0.0/8", ["10.0.0.0/8"]),
    ("10.0.0.0/8, 192.168.1.5 ,::1", ["10.0.0.0/8", "192.168.1.5/32", "::1/128"]),
    ("172.16.5.4/12", ["172.16.0.0/12"]),  # host bits are dropped, not an error
    ("fd00::/8,", ["fd00::/8"]),
    (" , ", []),
]


@pytest.mark.parametrize(
    ("text", "networks"), PROXIES, ids=["one", "list-with-spaces", "host-bits", "trailing-comma", "blank-items"]
)
def test_trusted_proxies(text: str, networks: list[str]) -> None:
    proxies = load_settings(env={"WEBHOOK_TRUSTED_PROXIES": text}).trusted_proxies
    assert proxies == tuple(ipaddress.ip_network(n) for n in networks)


BAD: list[tuple[str, dict[str, str], str]] = [
    (
        "proxy-not-an-address",
        {"WEBHOOK_TRUSTED_PROXIES": "10.0.0.0/8,nope"},
        "WEBHOOK_TRUSTED_PROXIES: 'nope' does not appear to be an IPv4 or IPv6 network",
    ),
    (
        "proxy-bad-prefix",
        {"WEBHOOK_TRUSTED_PROXIES": "10.0.0.0/33"},
        "WEBHOOK_TRUSTED_PROXIES: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network",
    ),
    (
        "bad-duration",
        {"WEBHOOK_DOCKER_RETRY_LIMIT": "soon"},
        "WEBHOOK_DOCKER_RETRY_LIMIT: 'soon' is not a duration: use forms like 500ms, 5s, 2m, 1h or 1m30s",
    ),
    (
        "negative-duration",
        {"WEBHOOK_DOCKER_RETRY_LIMIT": "-5s"},
        "WEBHOOK_DOCKER_RETRY_LIMIT: '-5s' is not a duration: use forms like 500ms, 5s, 2m, 1h or 1m30s",
    ),
    ("body-zero", {"WEBHOOK_MAX_BODY_BYTES": "0"}, "WEBHOOK_MAX_BODY_BYTES: must be greater than 0"),
    (
        "body-not-a-number",
        {"WEBHOOK_MAX_BODY_BYTES": "1MB"},
        "WEBHOOK_MAX_BODY_BYTES: must be a whole number",
    ),
]


@pytest.mark.parametrize(("env", "problem"), [(e, p) for _, e, p in BAD], ids=[i for i, _, _ in BAD])
def test_invalid_values(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env=env)
    assert exc.value.message == f"invalid settings: {problem}"


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(env={}, colour="red")
    assert exc.value.message == "invalid settings: colour: unknown key"


@pytest.mark.parametrize(
    ("variable", "make_path", "reason"),
    [
        ("WEBHOOK_TOKEN", lambda tmp: tmp / "absent", "No such file or directory"),
        ("WEBHOOK_API_TOKEN", lambda tmp: tmp, "Is a directory"),
    ],
    ids=["missing-file", "directory"],
)
def test_unreadable_secret_file(tmp_path: Path, variable: str, make_path: object, reason: str) -> None:
    path = make_path(tmp_path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as exc:
        load_settings(env={f"{variable}_FILE": str(path)})
    assert exc.value.message == f"{variable}_FILE={path}: cannot read: {reason}"


def test_notification_urls_from_a_file_are_secrets(tmp_path: Path) -> None:
    urls = tmp_path / "notify-urls"
    urls.write_text(
        "# the team channel\njson://127.0.0.1:8080/hook-SECRET1\n  ntfy://TOKEN2@ntfy.example/deploys mailto://u:p@x?to=a@x,b@x\n"
    )
    settings = load_settings(env={"WEBHOOK_NOTIFY_URLS_FILE": str(urls), "WEBHOOK_NOTIFY_TIMEOUT": "5s"})

    assert settings.notify_url_values() == [
        "json://127.0.0.1:8080/hook-SECRET1",
        "ntfy://TOKEN2@ntfy.example/deploys",
        "mailto://u:p@x?to=a@x,b@x",
    ]
    assert set(settings.notify_url_values()) <= set(settings.secrets())
    assert "SECRET1" not in repr(settings) and "TOKEN2" not in repr(settings)
    assert settings.notify_timeout == timedelta(seconds=5)
    assert settings.notify_queue == 100 and settings.metrics_token_required is False


def test_bad_notification_settings_are_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_NOTIFY_QUEUE"):
        load_settings(env={"WEBHOOK_NOTIFY_QUEUE": "0"})
    with pytest.raises(ConfigError, match="WEBHOOK_METRICS_TOKEN_REQUIRED"):
        load_settings(env={"WEBHOOK_METRICS_TOKEN_REQUIRED": "perhaps"})


def test_a_rotation_accepts_the_previous_token_beside_the_new_one() -> None:
    settings = load_settings(
        env={
            "WEBHOOK_TOKEN": "new-hook-token-0123456789",
            "WEBHOOK_TOKEN_PREVIOUS": "old-hook-token-0123456789",
            "WEBHOOK_API_TOKEN": "new-api-token-abcdefghijk",
        }
    )
    assert settings.webhook_tokens() == ["new-hook-token-0123456789", "old-hook-token-0123456789"]
    assert settings.api_tokens() == ["new-api-token-abcdefghijk"]
    assert "old-hook-token-0123456789" in settings.secrets()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"WEBHOOK_TOKEN_PREVIOUS": "old-hook-token-0123456789"},
            "WEBHOOK_TOKEN_PREVIOUS is set without WEBHOOK_TOKEN",
        ),
        (
            {
                "WEBHOOK_TOKEN": "new-hook-token-0123456789",
                "WEBHOOK_API_TOKEN": "new-api-token-abcdefghijk",
                "WEBHOOK_API_TOKEN_PREVIOUS": "new-hook-token-0123456789",
            },
            "are the same",
        ),
        ({"WEBHOOK_TOKEN": "new-hook-token-0123456789", "WEBHOOK_TOKEN_PREVIOUS": "short"}, "at least"),
    ],
)
def test_rotation_mistakes_are_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_the_callback_is_off_by_default_and_its_hosts_are_a_list() -> None:
    assert load_settings(env={}).callback_enabled is False
    settings = load_settings(env={"WEBHOOK_CALLBACK": "true", "WEBHOOK_CALLBACK_HOSTS": "Hub.Example, other.example"})
    assert settings.callback_enabled and settings.callback_hosts == ("hub.example", "other.example")
