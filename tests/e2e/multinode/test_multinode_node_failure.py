"""A node's dockerd stops while a rollout replaces tasks: the deployment still ends, and the swarm
converges once the node is back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bed import wait_for
from tests.e2e.conftest import ServerFactory
from tests.e2e.multinode.helpers import GRACE_NS, rules, task_table, wait_runs_on
from tests.multinode import MultiNodeBed
from tests.server import documented_payload

pytestmark = pytest.mark.swarm

TERMINAL = {"succeeded", "rolled_back", "failed"}


def test_node_stopped_mid_rollout_ends_the_deployment_and_the_service_converges_after(
    mbed: MultiNodeBed, unique: str, make_server: ServerFactory
):
    repo = f"acme/{unique}"
    old = mbed.make_image(repo, "1.0.0")
    new = mbed.make_image(repo, "1.1.0")
    old_ref, new_ref = (f"{r}@{mbed.registry_digest(r)}" for r in (old, new))
    mbed.create_service(unique, old_ref, replicas=3, maxreplicas=1, stop_grace_period=GRACE_NS)
    # A delay between tasks holds the rollout half-way long enough to stop a node there.
    server = make_server(
        rules(unique, repo, f"{mbed.registry}/{repo}", delay="2s", timeout="40s"), docker_host=mbed.docker_host
    )

    [summary] = server.hook(documented_payload(repo, "1.1.0")).json()["deployments"]

    def a_node_still_on_the_old_image() -> Any:
        # Mid-rollout: some task already replaced, and one not yet on a node other than the receiver's.
        rows = {(name, tag) for name, tag, _, state, _ in task_table(mbed, unique) if state == "running"}
        if not any(tag == "1.1.0" for _, tag in rows):
            return None
        return next((n for n in mbed.nodes[1:] if (n.name, "1.0.0") in rows), None)

    victim = wait_for(a_node_still_on_the_old_image, timeout=60, interval=0.1, what="the rollout to be half-way")
    mbed.stop_node(victim)
    dep = server.wait_done(summary["id"], timeout=90)
    print(f"\nnode {victim.name} stopped mid-rollout: {dep['state']}: {dep['message']}")
    print(task_table(mbed, unique))

    assert dep["state"] in TERMINAL, dep
    assert dep["message"], dep
    mbed.start_node(victim)

    # Swarm carries on with the update once the node is back (finishing it, or rolling it back), whatever
    # the receiver concluded; the service then runs its spec's image on every node, one task each.
    def swarm_done() -> tuple[str, str] | None:
        service = mbed.client.services.get(unique).attrs
        state = (service.get("UpdateStatus") or {}).get("State")
        done = state in ("completed", "rollback_completed", "paused", "rollback_paused")
        return (state, str(service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])) if done else None

    state, final = wait_for(swarm_done, timeout=90, interval=0.25, what="Swarm to finish the update")
    print(f"after {victim.name} returned, Swarm's update ended {state} on {final.split('@')[0].rpartition(':')[2]}")
    assert final in (old_ref, new_ref)
    wait_runs_on(mbed, unique, final, mbed.nodes, timeout=90)
