"""The real server (``webhook-server serve``, gunicorn) as a subprocess, for end-to-end tests."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.bed import free_port, wait_for

WEBHOOK_TOKEN = "hook-token-0123456789abcdef-ghijklmn"
API_TOKEN = "api-token-fedcba9876543210-zyxwvuts"


def documented_payload(repo_name: str, tag: str, **push_data: Any) -> dict[str, Any]:
    """Docker Hub's push payload, in the documented shape."""
    namespace, _, name = repo_name.partition("/")
    return {
        "callback_url": f"https://registry.hub.docker.com/u/{repo_name}/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/",
        "push_data": {"pushed_at": 1417566161, "pusher": "trustedbuilder", "tag": tag, **push_data},
        "repository": {
            "comment_count": 0,
            "date_created": 1417494799,
            "description": "",
            "is_official": False,
            "is_private": True,
            "is_trusted": True,
            "name": name,
            "namespace": namespace,
            "owner": namespace,
            "repo_name": repo_name,
            "repo_url": f"https://registry.hub.docker.com/u/{repo_name}/",
            "star_count": 0,
            "status": "Active",
        },
    }


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    env: dict[str, str]
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def hook(self, payload: Any, *, token: str = WEBHOOK_TOKEN, **kwargs: Any) -> requests.Response:
        return self.session.post(f"{self.url}/hooks/dockerhub/{token}", json=payload, timeout=30, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {API_TOKEN}", **kwargs.pop("headers", {})}
        return self.session.request(method, f"{self.url}/api{path}", headers=headers, timeout=120, **kwargs)

    def deployment(self, deployment_id: int) -> dict[str, Any]:
        response = self.api("GET", f"/deployments/{deployment_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_done(self, deployment_id: int, timeout: float = 120) -> dict[str, Any]:
        terminal = {"succeeded", "rolled_back", "failed", "skipped", "superseded"}

        def done() -> dict[str, Any] | None:
            dep = self.deployment(deployment_id)
            return dep if dep["state"] in terminal else None

        result: dict[str, Any] = wait_for(done, timeout=timeout, interval=0.25, what=f"deployment {deployment_id}")
        return result

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "webhook_server", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=check,
        )

    def worker_pids(self) -> set[int]:
        """gunicorn's workers: the master's direct children (from /proc)."""
        pids: set[int] = set()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids.update(int(p) for p in (task / "children").read_text().split())
        return pids

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop gunicorn and its workers: the whole process group it leads, by its pid.

        The test's keep-alive connections close first: a worker stopping gracefully waits for its open
        connections until the server's keep-alive timeout (seconds, for every server of every test), and a
        client that is done talks no more anyway. ``requests.get`` leaves its connection open until the
        response is collected, so the responses the test dropped are collected first."""
        self.session.close()
        gc.collect()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.session.close()


def server_env(
    root: Path, *, docker_host: str | None, rules: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOK_", "DOCKER_"))}
    env.update(
        WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        WEBHOOK_API_TOKEN=API_TOKEN,
        WEBHOOK_RULES=str(rules),
        WEBHOOK_DB=str(root / "state" / "journal.sqlite3"),
        WEBHOOK_LOG_LEVEL="DEBUG",
        # Tests poll the API many times a second from one address; the limits have tests of their own.
        WEBHOOK_RATE_LIMIT="0",
    )
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    env.update(extra or {})
    return env


def start_server(root: Path, *, env: dict[str, str], workers: int = 2, args: Sequence[str] = ()) -> Server:
    port = free_port()
    log = (root / "server.log").open("ab")
    serve = ["serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), *args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook_server", *serve],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Server(proc=proc, url=f"http://127.0.0.1:{port}", root=root, env=env)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {server.log_text()[-2000:]}")
        try:
            return requests.get(f"{server.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=30, what="the server to answer /healthz")
    except BaseException:
        server.stop()
        raise
    return server
