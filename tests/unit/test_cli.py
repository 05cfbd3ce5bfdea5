"""The CLI as a user runs it: one clear line per mistake, exit codes, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
    assert any(line.strip().startswith("line 7: services.api.policy: Input should be") for line in lines)
    assert any(line.strip() == "line 12: services.web.replicas: unknown key" for line in lines)
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


def test_history_on_an_empty_journal(tmp_path: Path) -> None:
    result = run("history", env={"WEBHOOK_DB": str(tmp_path / "j.sqlite3")})
    assert result.returncode == 0
    assert result.stdout.strip() == "no deployments recorded"
