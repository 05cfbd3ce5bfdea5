"""The shipped files under nginx/: the deploy hook's contract, the renewal schedules and the example config.

certbot itself runs the hook in tests/e2e/nginx/test_nginx_certbot.py; here it runs directly, fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from webhook_server.proxy.render import render_nginx_conf
from webhook_server.rules import load_rules

NGINX_DIR = Path(__file__).parents[2] / "nginx"
HOOK = NGINX_DIR / "certbot" / "deploy-hook.sh"
STUB = """#!/bin/sh
printf '%s\\n' "$*" > "{calls}"
env > "{calls}.env"
exit {status}
"""


def run_hook(
    tmp_path: Path, *, status: int, env_file: str | None = None
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the hook with a stub webhook-server that records its arguments (and its environment, beside)."""
    calls = tmp_path / "calls"
    stub = tmp_path / "webhook-server"
    stub.write_text(STUB.format(calls=calls, status=status))
    stub.chmod(0o755)
    settings = tmp_path / "reload-proxy.env"  # absent unless env_file is given
    if env_file is not None:
        settings.write_text(env_file)
    env = {
        "PATH": os.environ["PATH"],
        "WEBHOOK_SERVER": str(stub),
        "WEBHOOK_RELOAD_ENV": str(settings),
        "RENEWED_LINEAGE": "/etc/letsencrypt/live/example.com",
        "RENEWED_DOMAINS": "example.com www.example.com",
    }
    result = subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, timeout=30)
    return result, calls.read_text().strip() if calls.exists() else ""


def test_hook_is_executable_posix_sh() -> None:
    assert os.access(HOOK, os.X_OK)
    assert HOOK.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(HOOK)], capture_output=True).returncode == 0


def test_hook_calls_reload_proxy_with_the_configured_arguments(tmp_path: Path) -> None:
    result, calls = run_hook(tmp_path, status=0, env_file='RELOAD_PROXY_ARGS="--service a3_nginx --mode signal"\n')
    assert result.returncode == 0, result.stderr
    assert calls == "reload-proxy --service a3_nginx --mode signal"
    assert "renewed example.com www.example.com (/etc/letsencrypt/live/example.com)" in result.stderr
    assert "nginx now serves the renewed certificate" in result.stderr


def test_hook_exports_the_settings_to_reload_proxy(tmp_path: Path) -> None:
    """reload-proxy reads DOCKER_HOST and WEBHOOK_RULES from its environment: plain assignments in the
    settings file (as the README writes them) must reach it, not stay variables of the hook's shell."""
    settings = "DOCKER_HOST=tcp://10.0.0.5:2376\nWEBHOOK_RULES=/etc/webhook-server/deploy_rules.yaml\n"
    result, _ = run_hook(tmp_path, status=0, env_file=settings)
    assert result.returncode == 0, result.stderr
    seen = dict(line.split("=", 1) for line in (tmp_path / "calls.env").read_text().splitlines() if "=" in line)
    assert seen["DOCKER_HOST"] == "tcp://10.0.0.5:2376"
    assert seen["WEBHOOK_RULES"] == "/etc/webhook-server/deploy_rules.yaml"


def test_hook_fails_loudly_when_reload_proxy_fails(tmp_path: Path) -> None:
    result, calls = run_hook(tmp_path, status=4)
    assert calls == "reload-proxy"
    assert result.returncode == 4
    assert (
        "ERROR: reload-proxy failed (exit 4); nginx still serves the OLD certificate for example.com www.example.com"
        in result.stderr
    )


def test_hook_without_a_settings_file(tmp_path: Path) -> None:
    result, calls = run_hook(tmp_path, status=0)
    assert result.returncode == 0, result.stderr
    assert calls == "reload-proxy"


def test_cron_runs_renew_twice_a_day_with_a_random_delay() -> None:
    text = (NGINX_DIR / "certbot" / "certbot-renew.cron").read_text()
    jobs = [line for line in text.splitlines() if line and not line.startswith("#") and "=" not in line]
    assert len(jobs) == 1
    minute, hour, dom, month, dow, user, command = jobs[0].split(maxsplit=6)
    assert minute.isdigit() and len(hour.split(",")) == 2 and (dom, month, dow) == ("*", "*", "*")
    assert user == "root"
    assert "shuf -i 0-3600" in command and "certbot renew" in command
    assert "%" not in jobs[0]  # cron turns % into a newline
    assert "45 days" in text and "day 120" in text  # the reason is written down


def test_systemd_timer_runs_twice_a_day_with_a_random_delay() -> None:
    timer = (NGINX_DIR / "systemd" / "certbot-renew.timer").read_text()
    service = (NGINX_DIR / "systemd" / "certbot-renew.service").read_text()
    calendar = re.search(r"^OnCalendar=(.+)$", timer, re.MULTILINE)
    assert calendar and calendar.group(1) == "*-*-* 03,15:17:00"
    assert re.search(r"^RandomizedDelaySec=\S+$", timer, re.MULTILINE)
    assert "Persistent=true" in timer and "45 days" in timer
    assert re.search(r"^ExecStart=\S*certbot renew ", service, re.MULTILINE)
    if shutil.which("systemd-analyze") is None:
        return
    out = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=4", calendar.group(1)], capture_output=True, text=True
    )
    times = re.findall(r"(\d\d:\d\d:\d\d) UTC", out.stdout) or re.findall(r"(\d\d:\d\d:\d\d)", out.stdout)
    assert set(times) == {"03:17:00", "15:17:00"}, out.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    for unit in ("certbot-renew.service", "certbot-renew.timer"):
        shutil.copy(NGINX_DIR / "systemd" / unit, tmp_path / unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "certbot-renew.timer")], capture_output=True, text=True
    )
    if "certbot" in result.stderr and "not executable" in result.stderr.lower():
        pytest.skip("certbot is not installed at the path the unit names")
    assert result.returncode == 0, result.stderr


def test_example_config_renders() -> None:
    rules = load_rules(NGINX_DIR / "deploy_rules.example.yaml")
    assert rules.proxy is not None
    conf = render_nginx_conf(rules.proxy)
    assert "server_name hooks.example.com;" in conf and "http2 on;" in conf


# ---- curl mode: the reload over the receiver's API ------------------------------------------------------
class _Receiver:
    """POST /api/proxy/reload as the receiver answers it: 200 with the report, or 422 with nginx's error."""

    def __init__(self, status: int, body: Mapping[str, object]) -> None:
        self.seen: list[tuple[str, str, str]] = []  # (method, path, Authorization)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/proxy/reload"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_answers() -> Iterator[Callable[[int, Mapping[str, object]], _Receiver]]:
    made: list[_Receiver] = []

    def make(status: int, body: Mapping[str, object]) -> _Receiver:
        made.append(_Receiver(status, body))
        return made[-1]

    yield make
    for r in made:
        r.stop()


def run_curl_hook(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """The hook with only the curl settings, on a PATH without webhook-server: certbot in a container."""
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    token = tmp_path / "api-token"
    token.write_text("api-token-from-a-docker-secret-0123456789\n")
    settings = tmp_path / "reload-proxy.env"
    settings.write_text(f"WEBHOOK_RELOAD_URL={url}\nWEBHOOK_API_TOKEN_FILE={token}\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "WEBHOOK_RELOAD_ENV": str(settings),
        "RENEWED_LINEAGE": "/etc/letsencrypt/live/example.com",
        "RENEWED_DOMAINS": "example.com *.example.com",
    }
    return subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, timeout=30)


def test_curl_mode_posts_the_api_with_the_token_and_logs_the_answer(
    tmp_path: Path, receiver_answers: Callable[[int, Mapping[str, object]], _Receiver]
) -> None:
    receiver = receiver_answers(200, {"reloaded": [{"task": "t1", "node": "n1"}]})
    result = run_curl_hook(tmp_path, receiver.url)
    assert result.returncode == 0, result.stderr
    assert receiver.seen == [("POST", "/api/proxy/reload", "Bearer api-token-from-a-docker-secret-0123456789")]
    assert 'nginx now serves the renewed certificate for example.com *.example.com: {"reloaded"' in result.stderr


def test_curl_mode_fails_loudly_with_nginxs_error(
    tmp_path: Path, receiver_answers: Callable[[int, Mapping[str, object]], _Receiver]
) -> None:
    error = {"error": "proxy_config_invalid", "message": "nginx -t failed in task t1; nothing was reloaded"}
    receiver = receiver_answers(422, error)
    result = run_curl_hook(tmp_path, receiver.url)
    assert result.returncode == 22  # curl's exit status for an HTTP error
    assert f"ERROR: POST {receiver.url} failed (curl exit 22)" in result.stderr
    assert "nginx -t failed in task t1; nothing was reloaded" in result.stderr
    assert "nginx still serves the OLD certificate for example.com *.example.com" in result.stderr


def test_curl_mode_without_a_readable_token_file(tmp_path: Path) -> None:
    settings = tmp_path / "reload-proxy.env"
    settings.write_text("WEBHOOK_RELOAD_URL=http://127.0.0.1:9/api/proxy/reload\n")
    env = {"PATH": "/usr/bin:/bin", "WEBHOOK_RELOAD_ENV": str(settings)}
    result = subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "WEBHOOK_API_TOKEN_FILE (unset) cannot be read" in result.stderr
