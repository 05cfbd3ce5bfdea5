"""scripts/demo, run as a person runs it: its own swarm, registry and server, three pushes and their outcomes,
and nothing of it left afterwards, also after a Ctrl-C in the middle of a rollout.

What it leaves is checked by what it prints (every pid it started, its temp dir) and by what anyone can see in
/proc: no process runs from, in, or with an argument naming that dir, and nothing is mounted below it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed import alive, bed_required, missing_prerequisites, mounts_below, wait_for

pytestmark = pytest.mark.swarm

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo"
RUN_TIMEOUT = 240.0
PIDS = re.compile(r"\bpids? (\d+(?: \d+)*)")
TEMP_DIR = re.compile(r"^  temp dir (/\S+)$", re.MULTILINE)


class Demo:
    """scripts/demo started in a session of its own, as a shell starts a foreground job, its output (stdout
    and stderr together) collected line by line."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(DEMO)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.ctrl_c()  # let it clean up before the test fails
            self.proc.wait(timeout=120)
            pytest.fail(f"scripts/demo still ran after {timeout:.0f}s:\n{self.output}")
        self.reader.join(timeout=10)
        return code

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


@pytest.fixture
def demo() -> Iterator[Demo]:
    problem = missing_prerequisites()
    if problem and bed_required():
        pytest.fail(f"scripts/demo must run here (CI / REQUIRE_SWARM=1) but cannot: {problem}")
    if problem:
        pytest.skip(f"scripts/demo cannot run here: {problem}")
    running = Demo()
    yield running
    if running.proc.poll() is None:
        running.ctrl_c()
        running.proc.wait(timeout=120)


def unavailable(demo: Demo, code: int) -> None:
    """The demo's engine could not boot on this machine: a skip locally, a failure under CI."""
    if code == 2 and "cannot start its Docker Engine" in demo.output:
        if bed_required():
            pytest.fail(f"scripts/demo must run here (CI / REQUIRE_SWARM=1):\n{demo.output}")
        pytest.skip(f"scripts/demo cannot boot its Docker Engine here:\n{demo.output}")


def processes_using(root: Path) -> list[str]:
    """Processes whose arguments name ``root``, or whose working dir or root dir lies below it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            places = [os.readlink(proc / "cwd"), os.readlink(proc / "root")]
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if str(root) in args or any(p == str(root) or p.startswith(f"{root}/") for p in places):
            found.append(f"pid {proc.name}: {args.strip()[:200]}")
    return found


def left_behind(output: str) -> list[str]:
    """What of the demo still exists: by the pids and the temp dir it printed, and by /proc."""
    pids = {int(p) for found in PIDS.findall(output) for p in found.split()}
    roots = [Path(d) for d in TEMP_DIR.findall(output)]
    assert pids and roots, f"the demo must say which pids and temp dir it made:\n{output}"
    left = [f"pid {p}" for p in sorted(pids) if alive(p)]
    for root in roots:
        left += [f"dir {root}"] if root.exists() else []
        left += [f"mount {m}" for m in mounts_below(root)]
        left += processes_using(root)
    return left


def test_demo_shows_a_rollout_a_refusal_and_a_rollback_and_leaves_nothing(demo: Demo) -> None:
    code = demo.wait()
    unavailable(demo, code)
    print(f"\nscripts/demo took {demo.seconds:.0f}s")

    assert code == 0, demo.output
    assert re.findall(r"^  result: (\w+)$", demo.output, re.MULTILINE) == ["succeeded", "skipped", "rolled_back"]
    assert "policy 'minor' forbids it" in demo.output
    assert "task: non-zero exit (3)" in demo.output  # Swarm's reason, as the deployment records it
    assert "/hooks/dockerhub/" in demo.output and "curl -X POST" in demo.output  # the URL and a push by hand
    assert "$ webhook-server history" in demo.output
    helped = subprocess.run([str(REPO / ".venv" / "bin" / "webhook-server"), "--help"], capture_output=True, text=True)
    has_status = re.search(r"^  status ", helped.stdout, re.MULTILINE) is not None
    assert ("$ webhook-server status" in demo.output) == has_status  # shown when this version has it
    assert "nothing left behind" in demo.output
    assert demo.seconds < 120, f"the demo should take about a minute, took {demo.seconds:.0f}s"
    assert left_behind(demo.output) == []


def test_ctrl_c_during_a_rollout_stops_and_removes_everything(demo: Demo) -> None:
    def rolling_out() -> bool:
        if demo.proc.poll() is not None:
            unavailable(demo, demo.proc.returncode)
            pytest.fail(f"scripts/demo ended before its first rollout:\n{demo.output}")
        return "swarm: updating: update in progress" in demo.output

    wait_for(rolling_out, timeout=RUN_TIMEOUT, interval=0.05, what="the demo's first rollout")
    demo.ctrl_c()
    code = demo.wait(timeout=120)

    assert code == 128 + signal.SIGINT, demo.output
    assert "Interrupted (SIGINT): cleaning up." in demo.output
    assert "result:" not in demo.output  # it stopped in the middle, not after finishing
    assert "nothing left behind" in demo.output
    assert left_behind(demo.output) == []


def test_demo_says_in_one_line_what_it_needs(tmp_path: Path) -> None:
    """No dockerd on PATH (or not root): one line, exit status 2, nothing started."""
    env = dict(os.environ, PATH=str(tmp_path))
    done = subprocess.run([sys.executable, str(DEMO)], env=env, capture_output=True, text=True, timeout=30)

    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    if os.geteuid() == 0:
        assert "missing dockerd, docker-registry (apt-get install docker.io docker-registry busybox-static)" in line
    else:
        assert "needs root" in line


def test_demo_without_a_venv_says_how_to_make_one(tmp_path: Path) -> None:
    copy = tmp_path / "checkout" / "scripts" / "demo"
    copy.parent.mkdir(parents=True)
    shutil.copy2(DEMO, copy)

    done = subprocess.run([sys.executable, str(copy)], capture_output=True, text=True, timeout=30)

    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    if missing_prerequisites() is None:
        assert f"{tmp_path / 'checkout' / '.venv'}, which is missing" in line
        assert "./scripts/test" in line and "python3 -m venv .venv && .venv/bin/pip install -e ." in line
