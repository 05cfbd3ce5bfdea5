"""The CLI as a user runs it: one clear line per mistake, exit codes, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes import FakeSwarm
from webhook_server import cli
from webhook_server.journal import Deployment
from webhook_server.operations import open_journal

REPO = Path(__file__).resolve().parents[2]
RULES = str(REPO / "deploy_rules.yaml")
TOKENS = {
    "WEBHOOK_TOKEN": "hook-token-0123456789-0123456789ab",
    "WEBHOOK_API_TOKEN": "api-token-abcdefghijk-abcdefghijkl",
}


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOK_", "DOCKER_"))}
    return subprocess.run(
        [sys.executable, "-m", "webhook_server", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_rules_accepts_the_shipped_example() -> None:
    result = run("check-rules", str(REPO / "deploy_rules.yaml"))
    assert result.returncode == 0, result.stderr
    assert "OK, 3 service rule(s)" in result.stdout


def test_check_rules_locates_every_error(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text(
        "defaults:\n"
        "  timeout: soon\n"
        "services:\n"
        "  api:\n"
        "    repository: acme/api\n"
        "    tags: semver\n"
        "    policy: sideways\n"
        "  web:\n"
        "    repository: acme/web\n"
        "    tags: latest\n"
        "    policy: minor\n"
        "    replicas: 3\n"
    )
    result = run("check-rules", str(broken))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"webhook-server: {broken}: 4 error(s)"
    assert any(line.strip().startswith("line 2: defaults.timeout: 'soon' is not a duration") for line in lines)
    assert any(line.strip().startswith("line 7: services.api.policy: must be") for line in lines)
    assert any(line.strip().startswith("line 12: services.web.replicas: unknown key") for line in lines)
    assert any(line.strip().startswith("line 11: services.web.policy: policy applies to semver") for line in lines)


def test_check_rules_on_a_missing_file(tmp_path: Path) -> None:
    result = run("check-rules", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"webhook-server: {tmp_path / 'nope.yaml'}: 1 error(s)",
        "  cannot read: No such file or directory",
    ]


def test_serve_without_tokens_says_what_to_set(tmp_path: Path) -> None:
    result = run("serve", env={"WEBHOOK_RULES": str(REPO / "deploy_rules.yaml")})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "webhook-server: set WEBHOOK_TOKEN and WEBHOOK_API_TOKEN (or WEBHOOK_TOKEN_FILE) to long random strings"
    )


def test_short_token_is_refused_without_echoing_it() -> None:
    result = run("serve", env={"WEBHOOK_TOKEN": "short-secret", "WEBHOOK_API_TOKEN": "x" * 20})
    assert result.returncode == 2
    assert "WEBHOOK_TOKEN: must be at least 16 characters" in result.stderr
    assert "short-secret" not in result.stderr


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The only stderr line of a refused command, without its prefix; asserts exit 2 and no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith("webhook-server: ")
    return line.removeprefix("webhook-server: ")


def test_history_on_an_empty_journal_says_which_file(tmp_path: Path) -> None:
    db = tmp_path / "j.sqlite3"
    first = run("history", env={"WEBHOOK_DB": str(db)})
    again = run("history", env={"WEBHOOK_DB": str(db)})
    assert (first.returncode, again.returncode) == (0, 0)
    assert first.stdout.strip() == f"no deployments recorded in {db} (new journal)"
    assert again.stdout.strip() == f"no deployments recorded in {db}"


def test_without_webhook_db_every_directory_reads_the_same_journal(tmp_path: Path) -> None:
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"STATE_DIRECTORY": str(state)}
    here = run("history", env=env, cwd=REPO)
    there = run("history", env=env, cwd=elsewhere)
    assert here.stdout.strip() == f"no deployments recorded in {state / 'journal.sqlite3'} (new journal)"
    assert there.stdout.strip() == f"no deployments recorded in {state / 'journal.sqlite3'}"


def _not_a_database(tmp: Path) -> tuple[Path, str]:
    (tmp / "notes.txt").write_text("these are notes, not SQLite\n" * 40)
    return tmp / "notes.txt", "file is not a database"


def _directory(tmp: Path) -> tuple[Path, str]:
    return tmp, "it is a directory"


def _uncreatable(tmp: Path) -> tuple[Path, str]:
    (tmp / "plain-file").write_text("")
    return tmp / "plain-file" / "state" / "j.sqlite3", f"Not a directory ({tmp / 'plain-file' / 'state'})"


BAD_DBS = [_not_a_database, _directory, _uncreatable]


@pytest.mark.parametrize("make", BAD_DBS, ids=["not-a-database", "directory", "uncreatable"])
@pytest.mark.parametrize("command", [("history",), ("serve",), ("deploy", "a3_api", "1.2.3")])
def test_a_bad_webhook_db_is_one_line(
    tmp_path: Path, make: Callable[[Path], tuple[Path, str]], command: tuple[str, ...]
) -> None:
    db, reason = make(tmp_path)
    env = {**TOKENS, "WEBHOOK_RULES": RULES, "WEBHOOK_DB": str(db), "WEBHOOK_BIND": "127.0.0.1:1"}
    result = run(*command, env=env)
    assert one_line_error(result) == f"cannot open the journal {db}: {reason} (WEBHOOK_DB names the file)"


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0", ":9000", "127.0.0.1:", "127.0.0.1:99999", "::1:9000"])
def test_serve_needs_host_and_port(tmp_path: Path, bind: str) -> None:
    env = {**TOKENS, "WEBHOOK_RULES": RULES, "WEBHOOK_DB": str(tmp_path / "j.sqlite3")}
    by_flag = run("serve", "--bind", bind, env=env)
    by_env = run("serve", env={**env, "WEBHOOK_BIND": bind})
    expected = f"--bind/WEBHOOK_BIND {bind!r}: give HOST:PORT, e.g. 127.0.0.1:9000 or [::1]:9000"
    assert one_line_error(by_flag) == one_line_error(by_env) == expected


def test_serve_on_a_port_in_use_is_one_line_before_gunicorn_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**TOKENS, "WEBHOOK_RULES": RULES, "WEBHOOK_DB": str(tmp_path / "j.sqlite3")}
        result = run("serve", "--bind", f"127.0.0.1:{port}", env=env)
    assert one_line_error(result) == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "serving on" not in result.stdout + result.stderr


def test_serve_refuses_a_broken_rules_file_with_located_lines(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("services:\n  api: {repository: acme/api, tags: semver, policy: sideways}\n")
    env = {**TOKENS, "WEBHOOK_RULES": str(rules), "WEBHOOK_DB": str(tmp_path / "j.sqlite3")}
    result = run("serve", "--bind", "127.0.0.1:1", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"webhook-server: {rules}: 1 error(s)"
    assert "line 2: services.api.policy" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {
                "WEBHOOK_TOKEN": TOKENS["WEBHOOK_TOKEN"],
                "WEBHOOK_TOKEN_FILE": "/dev/null",
                "WEBHOOK_API_TOKEN": "x" * 20,
            },
            "both WEBHOOK_TOKEN and WEBHOOK_TOKEN_FILE are set; set only one of them",
        ),
        (
            {**TOKENS, "WEBHOOK_API_TOKEN_FILE": "/dev/null"},
            "both WEBHOOK_API_TOKEN and WEBHOOK_API_TOKEN_FILE are set; set only one of them",
        ),
    ],
    ids=["webhook", "api"],
)
def test_a_token_and_its_file_both_set(env: dict[str, str], expected: str) -> None:
    assert one_line_error(run("serve", env=env)) == expected


def test_the_same_token_for_webhook_and_api_is_refused() -> None:
    token = TOKENS["WEBHOOK_TOKEN"]
    message = one_line_error(run("serve", env={"WEBHOOK_TOKEN": token, "WEBHOOK_API_TOKEN": token}))
    assert message.startswith("invalid settings: WEBHOOK_TOKEN and WEBHOOK_API_TOKEN are the same;")
    assert token not in message


# ---- history ---------------------------------------------------------------------------------------------
def _deployment(**fields: Any) -> Deployment:
    base: dict[str, Any] = {
        "id": 7,
        "push_id": 1,
        "service": "a3_api",
        "repository": "acme/api",
        "image": "acme/api",
        "tag": "1.4.2",
        "trigger": "dockerhub",
        "pinned_ref": None,
        "digest": None,
        "image_ref": None,
        "previous_image": None,
        "state": "succeeded",
        "message": "swarm: completed: update completed",
        "superseded_by": None,
        "attempts": 0,
        "not_before": None,
        "update_marker": None,
        "created_at": "2026-11-23T19:22:01.123+00:00",
        "updated_at": "2026-11-23T19:22:20.000+00:00",
        "started_at": "2026-11-23T19:22:02.000+00:00",
        "finished_at": "2026-11-23T19:22:12.400+00:00",
    }
    return Deployment.model_validate({**base, **fields})


def test_history_shows_trigger_duration_and_zone_within_120_columns() -> None:
    rows = [
        _deployment(),
        _deployment(id=8, trigger="manual", state="running", finished_at=None, message=None),
        _deployment(id=9, trigger="rollback", started_at=None, state="queued", finished_at=None),
        _deployment(
            id=12345,
            service="a-very-long-service-name-from-a-stack_worker",
            tag="2024.11.23-build.456789-abcdef",
            state="rolled_back",
            message="update rolled back due to failure or early termination of task abc: " + "x" * 200,
        ),
    ]
    lines = cli.history_table(rows, now=datetime(2026, 11, 23, 19, 23, 2, tzinfo=UTC))

    assert all(len(line) <= cli.HISTORY_WIDTH for line in lines)
    assert lines[0].split() == ["ID", "CREATED", "SERVICE", "TAG", "TRIGGER", "STATE", "TOOK", "MESSAGE"]
    assert lines[1].split()[:8] == ["7", "2026-11-23", "19:22:01Z", "a3_api", "1.4.2", "dockerhub", "succeeded", "10s"]
    assert lines[2].split()[5:8] == ["manual", "running", "1m"]  # still running: so far
    assert lines[3].split()[5:8] == ["rollback", "queued", "-"]
    assert lines[4].endswith("…") and "a-very-long-ser…" in lines[4]


# ---- deploy --dry-run ------------------------------------------------------------------------------------
@pytest.fixture
def fake_swarm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeSwarm:
    swarm = FakeSwarm()
    swarm.add_service("a3_api", "acme/simple-api:1.2.3@sha256:" + "1" * 64)
    monkeypatch.setattr(cli, "_swarm", lambda settings: swarm)
    for name in [n for n in os.environ if n.startswith(("WEBHOOK_", "DOCKER_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WEBHOOK_RULES", RULES)
    monkeypatch.setenv("WEBHOOK_DB", str(tmp_path / "j.sqlite3"))
    return swarm


def test_dry_run_exits_1_when_it_would_skip(fake_swarm: FakeSwarm) -> None:
    fake_swarm.registry["acme/simple-api:1.2.3"] = "sha256:" + "1" * 64
    result = CliRunner().invoke(cli.main, ["deploy", "a3_api", "1.2.3", "--dry-run"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == f"would skip: already runs sha256:{'1' * 64}"


def test_dry_run_exits_0_when_it_would_update(fake_swarm: FakeSwarm) -> None:
    digest = fake_swarm.push("acme/simple-api", "1.2.4")
    result = CliRunner().invoke(cli.main, ["deploy", "a3_api", "1.2.4", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"would update to acme/simple-api:1.2.4@{digest}"
    assert fake_swarm.updates() == []


def test_an_unreachable_ssh_docker_host_is_one_line_naming_it(tmp_path: Path) -> None:
    host = "ssh://nobody@127.0.0.1:1"
    env = {"DOCKER_HOST": host, "WEBHOOK_RULES": RULES, "WEBHOOK_DB": str(tmp_path / "j.sqlite3")}
    assert host in one_line_error(run("deploy", "a3_api", "1.2.3", "--dry-run", env=env))


def test_deploy_says_which_journal_it_starts_and_calls_itself_manual(fake_swarm: FakeSwarm, tmp_path: Path) -> None:
    fake_swarm.push("acme/simple-api", "1.2.4")
    result = CliRunner().invoke(cli.main, ["deploy", "a3_api", "1.2.4"])

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == f"webhook-server: new journal at {tmp_path / 'j.sqlite3'}"
    assert result.stdout.splitlines()[-1].startswith("deployment 1: succeeded")
    [row] = cli.history_table(open_journal(tmp_path / "j.sqlite3").find(), now=datetime.now(UTC))[1:]
    assert row.split()[5:7] == ["manual", "succeeded"]


def test_serve_refuses_a_notification_url_apprise_cannot_use_without_echoing_it(tmp_path: Path) -> None:
    env = {
        **TOKENS,
        "WEBHOOK_RULES": RULES,
        "WEBHOOK_DB": str(tmp_path / "j.sqlite3"),
        "WEBHOOK_BIND": "127.0.0.1:1",
        "WEBHOOK_NOTIFY_URLS": "json://127.0.0.1:8080/ok nosuchservice://SECRET-PART",
    }
    message = one_line_error(run("serve", env=env))
    assert message == "WEBHOOK_NOTIFY_URLS: entry 2: nosuchservice:// is not a notification service apprise knows"


# ---- status, show and --json ---------------------------------------------------------------------------
def test_deploy_json_then_show_history_and_status_agree(fake_swarm: FakeSwarm, tmp_path: Path) -> None:
    import json

    digest = fake_swarm.push("acme/simple-api", "1.2.4")
    deployed = CliRunner().invoke(cli.main, ["deploy", "a3_api", "1.2.4", "--json"])
    assert deployed.exit_code == 0, deployed.output
    outcome = json.loads(deployed.stdout)
    assert (outcome["id"], outcome["state"], outcome["trigger"]) == (1, "succeeded", "manual")
    assert outcome["image_ref"] == f"acme/simple-api:1.2.4@{digest}"
    assert outcome["transitions"][0]["state"] == "queued" and outcome["notifications"] == []

    shown = CliRunner().invoke(cli.main, ["show", "1", "--json"])
    assert json.loads(shown.stdout) == outcome
    text = CliRunner().invoke(cli.main, ["show", "1"]).stdout.splitlines()
    assert text[0] == "deployment 1: a3_api ← acme/simple-api:1.2.4"
    assert text[1].startswith("  state      succeeded") and "notifications: none" in text

    [listed] = json.loads(CliRunner().invoke(cli.main, ["history", "--json"]).stdout)
    assert {k: listed[k] for k in ("id", "state", "tag")} == {"id": 1, "state": "succeeded", "tag": "1.2.4"}

    status = json.loads(CliRunner().invoke(cli.main, ["status", "--json"]).stdout)
    by_name = {s["service"]: s for s in status["services"]}
    assert by_name["a3_api"]["image"] == f"acme/simple-api:1.2.4@{digest}"
    assert by_name["a3_api"]["last"]["id"] == 1 and by_name["a3_api"]["in_progress"] is None
    lines = CliRunner().invoke(cli.main, ["status"]).stdout.splitlines()
    assert lines[0] == "Docker at fake://: node fake (manager, swarm active)"
    assert lines[lines.index(f"a3_api: acme/simple-api:1.2.4@{digest[:19]}") + 1].startswith(
        "  last         #1 1.2.4 succeeded at "
    )


def test_show_of_an_unknown_deployment_is_one_line(fake_swarm: FakeSwarm) -> None:
    result = CliRunner().invoke(cli.main, ["show", "99"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("webhook-server: ")


def test_a_rollout_is_followed_line_by_line_when_not_in_a_terminal(fake_swarm: FakeSwarm) -> None:
    fake_swarm.push("acme/simple-api", "1.2.4")
    result = CliRunner().invoke(cli.main, ["deploy", "a3_api", "1.2.4"])
    lines = result.stdout.splitlines()
    assert lines[0].startswith("deployment 1: a3_api ← ") and lines[0].endswith(" queued")
    states = [line.split()[2] for line in lines[1:-1] if line.startswith("  20")]
    assert states[0] == "queued" and states[-1] == "succeeded" and "running" in states
    assert lines[-1].startswith("deployment 1: succeeded")


def test_a_new_install_needs_32_character_tokens_but_an_existing_one_keeps_16(tmp_path: Path) -> None:
    short = {"WEBHOOK_TOKEN": "hook-token-0123456789", "WEBHOOK_API_TOKEN": "api-token-abcdefghijk"}
    db = tmp_path / "j.sqlite3"
    env = {**short, "WEBHOOK_RULES": RULES, "WEBHOOK_DB": str(db), "WEBHOOK_BIND": "127.0.0.1:1"}
    assert one_line_error(run("serve", env=env)) == (
        "WEBHOOK_TOKEN and WEBHOOK_API_TOKEN: a new install needs tokens of at least 32 characters "
        f"(openssl rand -base64 32); this is a new install: {db} does not exist yet"
    )
    assert not db.exists()
    open_journal(db)  # an install from before: its tokens are not refused for their length
    with socket.create_server(("127.0.0.1", 0)) as taken:  # so that serve stops at the next check
        env["WEBHOOK_BIND"] = f"127.0.0.1:{taken.getsockname()[1]}"
        assert one_line_error(run("serve", env=env)).startswith("cannot listen on 127.0.0.1:")


def test_check_rules_says_which_certificate_serves_each_name(tmp_path: Path) -> None:
    example = (REPO / "nginx" / "deploy_rules.example.yaml").read_text()
    wildcard = example.replace(
        "  sites:\n    - server_names: [example.com, www.example.com]",
        '  certificates:\n    example.com: [example.com, "*.example.com"]\n'
        '  sites:\n    - server_names: [example.com, "*.example.com"]',
    )
    assert wildcard != example
    rules = tmp_path / "rules.yaml"
    rules.write_text(wildcard)
    result = run("check-rules", str(rules))
    assert result.returncode == 0, result.stderr
    # The wildcard covers the receiver's own name too: one lineage serves all three.
    served = "serves hooks.example.com, example.com, *.example.com"
    assert f"  certificate example.com (holds example.com, *.example.com): {served}" in result.stdout.splitlines()
    # A name no lineage covers is refused, with its line.
    rules.write_text(wildcard.replace('[example.com, "*.example.com"]\n  sites', "[example.com]\n  sites"))
    refused = run("check-rules", str(rules))
    assert refused.returncode == 2 and "no certificate lineage covers" in refused.stderr, refused.stderr
