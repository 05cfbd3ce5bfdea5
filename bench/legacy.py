"""The setup this project replaces: Debian's ``webhook`` (adnanh/webhook) running bench/deploy.sh, which calls
``docker service update --image REPO:TAG SERVICE``, for every push. The same burst of shuffled pushes."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from bench.common import BENCH_DIR, start_group, stop_group, wait_http
from bench.rollouts import send_burst, spec_image, update_status
from bench.scenario import Target, tags
from tests.bed import SwarmBed, free_port, wait_for

TOKEN = "legacy-token-0123456789abcdef"
SETTLE_TIMEOUT = 300


def hooks_file(path: Path) -> Path:
    """One hook, as such setups write it: the token in the URL, the payload's repository and tag as
    arguments of the deploy script."""
    hook = {
        "id": "deploy",
        "execute-command": str(BENCH_DIR / "deploy.sh"),
        "command-working-directory": str(path.parent),
        "pass-arguments-to-command": [
            {"source": "payload", "name": "repository.repo_name"},
            {"source": "payload", "name": "push_data.tag"},
        ],
        "trigger-rule": {"match": {"type": "value", "value": TOKEN, "parameter": {"source": "url", "name": "token"}}},
    }
    path.write_text(json.dumps([hook], indent=2))
    return path


def deploy_env(root: Path, bed: SwarmBed, target: Target) -> dict[str, str]:
    docker_config = root / "docker-config"
    docker_config.mkdir(exist_ok=True)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
        "DOCKER_HOST": bed.docker_host,
        "DOCKER_CONFIG": str(docker_config),  # none of this host's registry logins
        "DEPLOY_SERVICE": target.service,
        "DEPLOY_REGISTRY": bed.registry,
        "DEPLOY_LOG": str(root / "deploys.log"),
    }


def deploy_lines(root: Path) -> list[str]:
    log = root / "deploys.log"
    return log.read_text().splitlines() if log.exists() else []


def legacy_burst(root: Path, bed: SwarmBed, target: Target, count: int) -> dict[str, Any]:
    """``count`` shuffled pushes through webhook: how many of its updates failed and why, the tag Swarm
    ended on, and the time until every deploy script has returned and Swarm is no longer updating."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = ["webhook", "-hooks", str(hooks_file(root / "hooks.json")), "-ip", "127.0.0.1", "-port", str(port)]
    proc = start_group(argv, log=root / "webhook.log", env=deploy_env(root, bed, target))
    session = requests.Session()
    try:
        wait_http(f"http://127.0.0.1:{port}/hooks/none", proc)
        url = f"http://127.0.0.1:{port}/hooks/deploy?token={TOKEN}"
        burst_tags = tags(count)
        posted = time.time()
        statuses = send_burst(
            lambda payload: session.post(url, json=payload, timeout=30).status_code, target.repo, burst_tags
        )
        sent = time.time() - posted
        wait_for(lambda: len(deploy_lines(root)) >= count, timeout=SETTLE_TIMEOUT, interval=0.1, what="every deploy")
        wait_for(
            lambda: update_status(bed, target.service).get("State") != "updating",
            timeout=SETTLE_TIMEOUT,
            interval=0.1,
            what="Swarm to finish updating",
        )
        seconds = time.time() - posted
    finally:
        session.close()
        stop_group(proc)
    lines = deploy_lines(root)
    failures = [line.partition(": ")[2] for line in lines if line.startswith("failed ")]
    final = spec_image(bed, target.service)
    return {
        "pushes": count,
        "statuses": sorted(set(statuses)),
        "sent_seconds": sent,
        "seconds": seconds,
        "updates_ok": sum(1 for line in lines if line.startswith("ok ")),
        "updates_failed": len(failures),
        "failure_reasons": dict(Counter(_reason(f) for f in failures).most_common(5)),
        "final_tag": final.rpartition("@")[0].rpartition(":")[2],
        "newest_reached": final.startswith(f"{target.image}:{burst_tags[-1]}@"),
        "update_state": update_status(bed, target.service).get("State"),
    }


def _reason(error: str) -> str:
    """docker's last line of error, without what varies (service ids, versions)."""
    return "update out of sequence" if "update out of sequence" in error else error[:100]
