"""The benchmark of issue 13, in one run: boots the test bed, measures every part side by side, prints the
Markdown tables and writes the raw JSON to bench/results/. ``bench/run`` is the way to start it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import accept, legacy, report, rollouts
from bench.common import BENCH_DIR, REPO_ROOT, median
from bench.scenario import BASE_TAG, IGNORED_REPO, Target, prepare, rules_text
from tests.bed import SwarmBed, start_bed, wait_for
from tests.pg import PgCluster
from tests.server import Server, documented_payload

RESULTS = BENCH_DIR / "results"
RULE_COUNTS = (10, 1000, 10000)
BURSTS = (20, 200)
WARMUP = 1  # rollouts of each kind before the counted ones


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _command(*argv: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    return "?"


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.partition(":")[2].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?"
    )
    mem_kb = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "docker": _command("dockerd", "--version"),
        "python": platform.python_version(),
        "wrk": _command("wrk", "-v").splitlines()[0] if _command("wrk", "-v") else "?",
        "webhook": _command("webhook", "-version"),
        "commit": _command("git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"),
        "dirty": bool(_command("git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "webhook_server")),
    }


def concurrent_runs() -> list[str]:
    """Test runs on this machine now (they distort the figures); the bench's own process is not one."""
    found = _command("pgrep", "-af", "pytest|ci/run")
    return [line for line in found.splitlines() if line and line != "?" and str(os.getpid()) != line.split()[0]]


# ---- parts -------------------------------------------------------------------------------------------
def measure_rollouts(
    bed: SwarmBed, servers: dict[str, Server], targets: dict[str, Target], reps: int
) -> dict[str, Any]:
    """The floor and one push per journal, interleaved, ``reps`` times each (new tags every time), after one
    round that is not counted: each side's first rollout also pays for its first connections (Docker, the
    registry, the journal), which the others do not."""
    floor: list[dict[str, Any]] = []
    single: dict[str, list[dict[str, Any]]] = {backend: [] for backend in servers}
    for i in range(1, WARMUP + reps + 1):
        tag = f"1.0.{i}"
        counted = i > WARMUP
        floor_run = rollouts.floor_rollout(bed, targets["floor"], tag)
        log(f"floor {tag}: {floor_run['seconds']:.2f} s{'' if counted else ' (warm-up, not counted)'}")
        if counted:
            floor.append(floor_run)
        for backend, server in servers.items():
            run = rollouts.single_push(server, bed, targets[f"single_{backend}"], tag)
            log(f"single push ({backend}) {tag}: {run['seconds']:.2f} s{'' if counted else ' (warm-up)'}")
            if counted:
                single[backend].append(run)
    return {
        "floor": {
            "runs": floor,
            "median_s": median([r["seconds"] for r in floor]),
            "median_overhead_ms": median([r["overhead_ms"] for r in floor]),
        },
        "single": {
            backend: {
                "runs": runs,
                "median_s": median([r["seconds"] for r in runs]),
                "median_overhead_ms": median([r["overhead_ms"] for r in runs]),
                "median_to_update_call_ms": median([r["to_update_call_ms"] for r in runs]),
                "median_to_swarm_start_ms": median([r["to_swarm_start_ms"] for r in runs]),
            }
            for backend, runs in single.items()
        },
    }


def measure_bursts(bed: SwarmBed, server: Server, targets: dict[str, Target]) -> dict[str, Any]:
    found = {}
    for size in BURSTS:
        found[str(size)] = rollouts.project_burst(server, bed, targets[f"burst{size}"], size)
        log(f"burst of {size}: {found[str(size)]['seconds']:.2f} s, {found[str(size)]['rollouts']} rollout(s)")
    return found


def measure_accept(work: Path, servers: dict[str, Server], targets: dict[str, Target], seconds: int) -> dict[str, Any]:
    """wrk against the bare app, then ignored and accepted pushes on each journal, then wrong-token pushes
    (last: after ten wrong tokens the server locks this client out for ten minutes, as it would an attacker).
    The accepted push names the tag its service already runs, so the executor has nothing to roll out."""
    ignored = documented_payload(IGNORED_REPO, "1.0.1")
    found: dict[str, Any] = {}
    bare = accept.BareApp(work)
    try:
        found["bare"] = accept.wrk(f"{bare.url}/hooks/dockerhub/token", ignored, seconds=seconds, workdir=work)
    finally:
        bare.stop()
    log(f"bare: {found['bare']['rps']:.0f} req/s, p99 {found['bare']['p99_ms']:.1f} ms")
    runs: list[tuple[str, str, dict[str, Any]]] = []
    for backend, server in servers.items():
        prefix = "" if backend == "sqlite" else "pg_"
        hook = f"{server.url}/hooks/dockerhub/{server.env['WEBHOOK_TOKEN']}"
        accepted = documented_payload(targets[f"accept_{backend}"].repo, BASE_TAG)
        runs += [(f"{prefix}ignored", hook, ignored), (f"{prefix}accepted", hook, accepted)]
    runs.append(("wrong_token", f"{servers['sqlite'].url}/hooks/dockerhub/wrong-token-0123456789abcdefgh", ignored))
    for name, url, body in runs:
        result = found[name] = accept.wrk(url, body, seconds=seconds, workdir=work)
        log(f"{name}: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.1f} ms, HTTP {result['statuses']}")
    return found


def measure_rules(
    work: Path, bed: SwarmBed, targets: list[Target], seconds: int, ten: dict[str, Any]
) -> dict[str, Any]:
    """Parse time and boot time for 1,000 and 10,000 rules, and the ignored push's rate on each (10 rules:
    the main server's figures, passed in as ``ten``)."""
    found = {"10": ten}
    for count in RULE_COUNTS[1:]:
        path = work / f"rules-{count}.yaml"
        path.write_text(rules_text(targets, total=count))
        parse_s = accept.parse_seconds(path)
        server, boot_s = accept.boot_server(work / f"rules-{count}", rules=path, docker_host=bed.docker_host, extra={})
        try:
            url = f"{server.url}/hooks/dockerhub/{server.env['WEBHOOK_TOKEN']}"
            ignored = accept.wrk(url, documented_payload(IGNORED_REPO, "1.0.1"), seconds=seconds, workdir=work)
        finally:
            server.stop()
        found[str(count)] = {"parse_s": parse_s, "boot_s": boot_s, "ignored": ignored}
        log(f"{count} rules: parse {parse_s:.2f} s, boot {boot_s:.2f} s, ignored {ignored['rps']:.0f} req/s")
    return found


# ---- the run -----------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "reps": args.reps,
            "warmup": WARMUP,
            "wrk_seconds": args.wrk_seconds,
            "wrk": "-t2 -c16",
            "workers": 2,
        },
        "concurrent_runs_at_start": concurrent_runs(),
    }
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="wsbench-"))
        stack.callback(_keep_or_remove, work, args.keep)
        log(f"booting the bed and a private PostgreSQL (work dir {work})")
        bed = start_bed()
        stack.callback(_stop_bed, bed)
        pg = PgCluster()
        stack.callback(pg.remove)
        pg.init()
        pg.start()
        rounds = WARMUP + args.reps
        wanted = {"floor": rounds, "single_sqlite": rounds, "single_postgresql": rounds}
        wanted |= {f"burst{size}": size for size in BURSTS} | {"accept_sqlite": 0, "accept_postgresql": 0}
        wanted["legacy"] = 200
        targets = prepare(bed, wanted)
        raw["bed_seconds"] = time.monotonic() - began
        log(f"bed ready in {raw['bed_seconds']:.1f} s")

        routed = [t for name, t in targets.items() if name not in ("floor", "legacy")]
        rules10 = work / "rules-10.yaml"
        rules10.write_text(rules_text(routed, total=10))
        servers: dict[str, Server] = {}
        boot: dict[str, float] = {}
        for backend, extra in (("sqlite", {}), ("postgresql", {"WEBHOOK_DB": pg.create_database()})):
            servers[backend], boot[backend] = accept.boot_server(
                work / backend, rules=rules10, docker_host=bed.docker_host, extra=extra
            )
            stack.callback(servers[backend].stop)

        raw |= measure_rollouts(bed, servers, targets, args.reps)
        raw["burst"] = measure_bursts(bed, servers["sqlite"], targets)
        # Their tasks' healthchecks (every 500 ms) would load the CPU under wrk; the accept and legacy parts
        # keep only their own services.
        for name in ("floor", "single_sqlite", "single_postgresql", *(f"burst{size}" for size in BURSTS)):
            bed.remove_service(targets[name].service)
        raw["accept"] = measure_accept(work, servers, targets, args.wrk_seconds)
        ten = {"parse_s": accept.parse_seconds(rules10), "boot_s": boot["sqlite"], "ignored": raw["accept"]["ignored"]}
        for server in servers.values():
            server.stop()
        raw["rules"] = measure_rules(work, bed, routed, args.wrk_seconds, ten)
        log("the setup this project replaces: webhook + docker service update, 200 pushes")
        raw["legacy"] = legacy.legacy_burst(work / "legacy", bed, targets["legacy"], 200)
        log(f"webhook: {raw['legacy']['updates_failed']} of 200 failed, ended on {raw['legacy']['final_tag']}")
    raw["seconds"] = time.monotonic() - began
    return raw


def _stop_bed(bed: SwarmBed) -> None:
    survivors = bed.stop()
    if survivors:
        log(f"the bed left these behind: {', '.join(survivors)}")


def _keep_or_remove(work: Path, keep: bool) -> None:
    if keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def save(raw: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="floor and single-push rollouts each (default 3)")
    parser.add_argument("--wrk-seconds", type=int, default=5, help="length of each wrk run (default 5)")
    parser.add_argument(
        "--wait-idle", action="store_true", help="wait until no test run is active before starting (up to 1 h)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server logs) afterwards")
    parser.add_argument(
        "--combine", nargs="+", type=Path, metavar="JSON", help="print the medians of these runs' results and exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.combine:
        runs = [report.metrics_of(json.loads(path.read_text())) for path in args.combine]
        print(report.render(report.combine(runs)))
        return 0
    if args.wait_idle and concurrent_runs():
        log("waiting until no test run is active")
        wait_for(lambda: not concurrent_runs(), timeout=3600, interval=5, what="the test runs to end")
    busy = concurrent_runs()
    if busy:
        log("WARNING: test runs are active; the figures will be distorted:\n  " + "\n  ".join(busy))
    raw = run(args)
    path = save(raw)
    print(report.render(report.metrics_of(raw)))
    log(f"raw results: {path.relative_to(REPO_ROOT)}; took {raw['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
