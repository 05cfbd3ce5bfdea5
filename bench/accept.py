"""The accept path under wrk: this project's hook against a bare Flask app under the same gunicorn
settings, and the cost of many rules (parse time, boot time, ignored pushes)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, start_group, stop_group, wait_http
from tests.bed import free_port
from tests.server import Server, server_env, start_server
from webhook_server.rules import load_rules

WRK_THREADS = 2
WRK_CONNECTIONS = 16
# As ``webhook-server serve`` runs gunicorn (webhook_server/server.py): 2 gevent workers of 1000 connections.
WORKERS = 2
WORKER_CONNECTIONS = 1000

_bodies = itertools.count(1)


def wrk(url: str, body: dict[str, Any], *, seconds: int, workdir: Path) -> dict[str, Any]:
    """``wrk -t2 -c16`` POSTing ``body`` to ``url`` for ``seconds``: req/s, latency, HTTP statuses."""
    body_file = workdir / f"body-{next(_bodies)}.json"
    body_file.write_text(json.dumps(body))
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s"]
    argv += ["-s", str(BENCH_DIR / "post.lua"), url, "--", str(body_file)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    raw = json.loads(line.removeprefix("BENCH "))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "socket_errors": raw["socket_errors"],
        "statuses": raw["statuses"],
    }


class BareApp:
    """bench/bare_app.py under gunicorn with the settings ``serve`` uses; stopped by its pid."""

    def __init__(self, root: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)]
        argv += ["--worker-class", "gevent", "--worker-connections", str(WORKER_CONNECTIONS)]
        argv += ["--timeout", "60", "--graceful-timeout", "10", "bench.bare_app:app"]
        self.proc = start_group(argv, log=root / "bare.log")
        try:
            wait_http(f"{self.url}/hooks/dockerhub/x", self.proc, method="POST")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_group(self.proc)


def parse_seconds(rules: Path) -> float:
    """How long ``load_rules`` takes on this file, in this process."""
    started = time.perf_counter()
    load_rules(rules)
    return time.perf_counter() - started


def boot_server(root: Path, *, rules: Path, docker_host: str | None, extra: dict[str, str]) -> tuple[Server, float]:
    """``webhook-server serve`` (2 workers, as it defaults) and the seconds until its first /healthz 200."""
    root.mkdir(parents=True, exist_ok=True)
    env = server_env(root, docker_host=docker_host, rules=rules, extra={"WEBHOOK_LOG_LEVEL": "INFO", **extra})
    started = time.monotonic()
    server = start_server(root, env=env, workers=WORKERS)
    return server, time.monotonic() - started
