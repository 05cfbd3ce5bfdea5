"""Small helpers shared by the parts of the benchmark: clocks, medians, processes stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import requests

from tests.bed import wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"


def epoch(timestamp: str) -> float:
    """Seconds since the epoch of an ISO timestamp from the journal (ms) or Docker (ns, "Z")."""
    text = timestamp.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python parses at most 6 digits of a fraction; Docker gives 9
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text).timestamp()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def start_group(argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group (so it and its children stop by its pid)."""
    return subprocess.Popen(
        list(argv),
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_group(proc: subprocess.Popen[bytes], *, timeout: float = 20) -> None:
    """SIGTERM the group ``proc`` leads (by its pid), then SIGKILL what is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_http(url: str, proc: subprocess.Popen[bytes], *, method: str = "GET", timeout: float = 60) -> float:
    """Wait until ``url`` answers below 500; return how long that took (a process that exits fails)."""
    started = time.monotonic()

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            return requests.request(method, url, json={}, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_for(answers, timeout=timeout, interval=0.02, what=url)
    return time.monotonic() - started
