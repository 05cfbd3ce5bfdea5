"""Rollouts through the real receiver (gunicorn, HTTP) on a three-manager swarm, checked on every node by
asking that node's own dockerd what it runs."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from typing import Any

import pytest
from docker.types import RestartPolicy, RollbackConfig

from tests.e2e.conftest import ServerFactory
from tests.e2e.multinode.helpers import GRACE_NS, deploy, rules, spec_image, task_table, wait_runs_on
from tests.multinode import MultiNodeBed

pytestmark = pytest.mark.swarm


def pinned(bed: MultiNodeBed, ref: str) -> str:
    return f"{ref}@{bed.registry_digest(ref)}"


def test_one_task_per_node_all_run_the_pushed_digest(mbed: MultiNodeBed, unique: str, make_server: ServerFactory):
    repo = f"acme/{unique}"
    old = mbed.make_image(repo, "1.0.0")
    new = mbed.make_image(repo, "1.1.0")
    mbed.create_service(unique, pinned(mbed, old), replicas=3, maxreplicas=1, stop_grace_period=GRACE_NS)
    wait_runs_on(mbed, unique, pinned(mbed, old), mbed.nodes)
    server = make_server(rules(unique, repo, f"{mbed.registry}/{repo}"), docker_host=mbed.docker_host)

    dep = deploy(server, repo, "1.1.0")

    assert dep["state"] == "succeeded", dep
    assert dep["image_ref"] == pinned(mbed, new)
    wait_runs_on(mbed, unique, dep["image_ref"], mbed.nodes)
    assert dep["nodes"] == sorted(n.name for n in mbed.nodes), "the deployment records where its tasks ran"


def test_global_service_is_updated_on_every_node_and_rolled_back(
    mbed: MultiNodeBed, unique: str, make_server: ServerFactory
):
    repo = f"acme/{unique}"
    first = mbed.make_image(repo, "1.0.0")
    good = mbed.make_image(repo, "1.1.0")
    mbed.make_image(repo, "1.2.0", kind="crash")
    mbed.create_service(unique, pinned(mbed, first), mode="global", stop_grace_period=GRACE_NS)
    # The crashing image exits after 1 s: the monitor window must be longer to see it. stop-first: with
    # start-first, Swarm's rollback of a global service can hang in rollback_started (a task left `ready`
    # on one node, two running on another) — seen here in 3 runs of 5.
    server = make_server(rules(unique, repo, f"{mbed.registry}/{repo}", monitor="2s"), docker_host=mbed.docker_host)

    updated = deploy(server, repo, "1.1.0")
    assert updated["state"] == "succeeded", updated
    wait_runs_on(mbed, unique, pinned(mbed, good), mbed.nodes)

    crashed = deploy(server, repo, "1.2.0")
    assert crashed["state"] == "rolled_back", (crashed["message"], task_table(mbed, unique))
    assert "update rolled back due to failure or early termination of task" in crashed["message"]
    assert spec_image(mbed, unique) == pinned(mbed, good)
    wait_runs_on(mbed, unique, pinned(mbed, good), mbed.nodes)


def _comparable(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec without what a rollout is meant to change: the image and the update settings."""
    spec = copy.deepcopy(spec)
    del spec["TaskTemplate"]["ContainerSpec"]["Image"]
    spec.pop("UpdateConfig", None)
    return spec


def _differences(before: Any, after: Any, path: str = "Spec") -> list[str]:
    """Every path where ``after`` differs from ``before``, with both values: a readable failure."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [d for key in sorted(before.keys() | after.keys()) for d in
                _differences(before.get(key), after.get(key), f"{path}.{key}")]  # fmt: skip
    # An update writes back empty DNSConfig and Resources the create left out: the same spec to Swarm.
    return [] if before == after or (not before and not after) else [f"{path}: {before!r} -> {after!r}"]


def test_placement_and_the_rest_of_the_spec_survive_rollouts(
    mbed: MultiNodeBed, unique: str, make_server: ServerFactory
):
    web, other = mbed.nodes[:2], mbed.nodes[2]
    for node in web:
        mbed.set_labels(node, {"tier": "web"})
    repo = f"acme/{unique}"
    old = mbed.make_image(repo, "1.0.0")
    mbed.make_image(repo, "1.1.0")
    mbed.make_image(repo, "1.2.0")
    mbed.create_service(
        unique,
        old,
        replicas=2,
        stop_grace_period=GRACE_NS,
        constraints=["node.labels.tier==web"],
        maxreplicas=1,
        env=["GREETING=hello"],
        # Not the defaults, so that a rollout that rebuilt these from defaults would show.
        restart_policy=RestartPolicy(condition="on-failure", delay=1_000_000_000, max_attempts=3),
        rollback_config=RollbackConfig(parallelism=2, failure_action="continue", monitor=1_000_000_000),
        labels={"team": "web"},
        container_labels={"app": unique},
    )
    service = mbed.client.services.get(unique)
    before = service.attrs["Spec"]
    assert before["TaskTemplate"]["Placement"] == {
        **before["TaskTemplate"]["Placement"],
        "Constraints": ["node.labels.tier==web"],
        "MaxReplicas": 1,
    }
    server = make_server(rules(unique, repo, f"{mbed.registry}/{repo}"), docker_host=mbed.docker_host)

    for tag in ("1.1.0", "1.2.0"):
        dep = deploy(server, repo, tag)
        assert dep["state"] == "succeeded", dep
        after = mbed.client.services.get(unique).attrs["Spec"]
        assert _differences(_comparable(before), _comparable(after)) == []
        # Only the labelled nodes, one task each; the unlabelled node never gets one.
        wait_runs_on(mbed, unique, dep["image_ref"], web)
        assert other.name not in mbed.images_by_node(unique)


def test_a_rollout_swarm_cannot_place_fails_at_once_with_swarms_reason(
    mbed: MultiNodeBed, unique: str, make_server: ServerFactory
):
    """start-first with one task per node on every node: the new task has nowhere to start, and Swarm
    would sit in `updating` for ever."""
    repo = f"acme/{unique}"
    old = mbed.make_image(repo, "1.0.0")
    mbed.make_image(repo, "1.1.0")
    mbed.create_service(unique, pinned(mbed, old), replicas=3, maxreplicas=1, stop_grace_period=GRACE_NS)
    server = make_server(
        rules(unique, repo, f"{mbed.registry}/{repo}", order="start-first", timeout="5m"),
        docker_host=mbed.docker_host,
    )

    # The dry run sees it coming: Swarm's placement and the node count leave no room for a start-first task.
    dry = subprocess.run(
        [sys.executable, "-m", "webhook_server", "deploy", unique, "1.1.0", "--dry-run"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert (
        "warning: order start-first has no room for a new task: 3 replicas with max_replicas_per_node 1 "
        "fill all 3 node(s) that take tasks"
    ) in dry.stdout, dry.stdout

    started = time.monotonic()
    dep = deploy(server, repo, "1.1.0")

    assert dep["state"] == "failed", dep
    assert "no suitable node (max replicas per node limit exceed" in dep["message"], dep["message"]
    assert time.monotonic() - started < 60  # the reason, not the 5-minute timeout
    # The old tasks were never stopped: every node still serves the old digest.
    wait_runs_on(mbed, unique, pinned(mbed, old), mbed.nodes)
