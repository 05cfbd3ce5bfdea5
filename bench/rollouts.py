"""Rollouts: the floor (docker-py straight to Swarm), one push through this project, and bursts of pushes.

Times of this project come from the journal's own timestamps (and Swarm's), not from how often the bench
polls: a push's time is from just before its POST to the journal's ``finished_at``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import epoch
from bench.scenario import Target, tags
from tests.bed import SwarmBed, wait_for
from tests.server import Server, documented_payload

TERMINAL = {"succeeded", "rolled_back", "failed", "skipped", "superseded"}
ROLLED_OUT = {"succeeded", "rolled_back", "failed"}
BURST_THREADS = 8


def update_status(bed: SwarmBed, service: str) -> dict[str, Any]:
    status: dict[str, Any] = bed.client.api.inspect_service(service).get("UpdateStatus") or {}
    return status


def swarm_duration(status: dict[str, Any]) -> float:
    """Swarm's own time for an update: from its StartedAt to its CompletedAt."""
    return epoch(status["CompletedAt"]) - epoch(status["StartedAt"])


def spec_image(bed: SwarmBed, service: str) -> str:
    return str(bed.client.api.inspect_service(service)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])


# ---- the floor ---------------------------------------------------------------------------------------
def floor_rollout(bed: SwarmBed, target: Target, tag: str) -> dict[str, Any]:
    """docker-py ``Service.update`` to the pinned digest of ``tag``, polled every 20 ms to ``completed``."""
    marker = update_status(bed, target.service).get("StartedAt")
    service = bed.client.services.get(target.service)
    called = time.time()
    service.update(image=target.ref(tag))

    def completed() -> dict[str, Any] | None:
        status = update_status(bed, target.service)
        if status.get("StartedAt") == marker:
            return None
        if status.get("State") not in (None, "updating", "completed"):
            raise RuntimeError(f"the floor's update of {target.service} did not complete: {status}")
        return status if status.get("State") == "completed" else None

    status = wait_for(completed, timeout=120, interval=0.02, what=f"{target.service} to complete")
    seconds = time.time() - called
    swarm_seconds = swarm_duration(status)
    return {
        "tag": tag,
        "seconds": seconds,
        "call_to_swarm_start_ms": (epoch(status["StartedAt"]) - called) * 1000,
        "swarm_seconds": swarm_seconds,
        "overhead_ms": (seconds - swarm_seconds) * 1000,
    }


# ---- one push --------------------------------------------------------------------------------------
def single_push(server: Server, bed: SwarmBed, target: Target, tag: str) -> dict[str, Any]:
    """One push: POST → 202 → journal ``succeeded``; where the time went, from the journal's transitions."""
    posted = time.time()
    response = server.hook(documented_payload(target.repo, tag))
    accepted = time.time()
    if response.status_code != 202:
        raise RuntimeError(f"push of {target.repo}:{tag} answered {response.status_code}: {response.text}")
    dep = server.wait_done(response.json()["deployments"][0]["id"], timeout=120)
    if dep["state"] != "succeeded":
        raise RuntimeError(f"push of {target.repo}:{tag} ended {dep['state']}: {dep['message']}")
    transitions = dep["transitions"]
    update_call = next(epoch(t["at"]) for t in transitions if (t["message"] or "").startswith("updating "))
    status = update_status(bed, target.service)
    swarm_start = epoch(status["StartedAt"])
    seconds = epoch(dep["finished_at"]) - posted
    return {
        "tag": tag,
        "seconds": seconds,
        "swarm_seconds": swarm_duration(status),
        # What this project adds around Swarm's own update (the floor's overhead is its call and poll).
        "overhead_ms": (seconds - swarm_duration(status)) * 1000,
        "accept_ms": (accepted - posted) * 1000,
        "to_update_call_ms": (update_call - accepted) * 1000,
        "to_swarm_start_ms": (swarm_start - accepted) * 1000,
        "swarm_start_to_succeeded_s": epoch(dep["finished_at"]) - swarm_start,
        # Each transition as seconds after the POST: where the time goes.
        "transitions": [
            {"after_s": round(epoch(t["at"]) - posted, 3), "state": t["state"], "message": (t["message"] or "")[:80]}
            for t in transitions
        ],
    }


# ---- bursts ----------------------------------------------------------------------------------------
def send_burst(post: Callable[[dict[str, Any]], int], repo: str, burst_tags: list[str]) -> list[int]:
    """POST a push for each tag, shuffled (the same order every run), from BURST_THREADS threads."""
    payloads = [documented_payload(repo, tag) for tag in burst_tags]
    random.Random(4).shuffle(payloads)
    with ThreadPoolExecutor(max_workers=BURST_THREADS) as pool:
        return list(pool.map(post, payloads))


def deployments_of(server: Server, service: str) -> list[dict[str, Any]]:
    response = server.api("GET", f"/deployments?service={service}&limit=1000")
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["deployments"]
    return found


def project_burst(server: Server, bed: SwarmBed, target: Target, count: int) -> dict[str, Any]:
    """``count`` shuffled pushes for one service: the time until the journal has settled them all, how many
    rollouts that took, and whether the service ends on the newest tag."""
    burst_tags = tags(count)
    posted = time.time()
    statuses = send_burst(lambda payload: server.hook(payload).status_code, target.repo, burst_tags)
    sent = time.time() - posted

    def settled() -> list[dict[str, Any]] | None:
        deps = deployments_of(server, target.service)
        return deps if len(deps) == count and all(d["state"] in TERMINAL for d in deps) else None

    deps = wait_for(settled, timeout=240, interval=0.25, what=f"the burst of {count} to settle")
    rollouts = [d for d in deps if d["state"] in ROLLED_OUT]
    newest = target.ref(burst_tags[-1])
    return {
        "pushes": count,
        "statuses": sorted(set(statuses)),
        "sent_seconds": sent,
        "seconds": max(epoch(d["finished_at"] or d["updated_at"]) for d in deps) - posted,
        "rollouts": len(rollouts),
        "rolled_out_tags": [d["tag"] for d in sorted(rollouts, key=lambda d: d["id"])],
        "states": {s: sum(1 for d in deps if d["state"] == s) for s in sorted({d["state"] for d in deps})},
        "every_push_journaled": {d["tag"] for d in deps} == set(burst_tags),
        "newest_reached": spec_image(bed, target.service) == newest,
        "final_image": spec_image(bed, target.service),
    }
