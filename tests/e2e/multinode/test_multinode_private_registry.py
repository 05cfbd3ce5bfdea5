"""Private images on workers: no node is logged in to the registry; the receiver's DOCKER_CONFIG is
the only place the credentials are, so every node that pulls does it with what the receiver forwarded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.bed import LONG_RUNNING
from tests.e2e.conftest import ServerFactory
from tests.e2e.multinode.helpers import (
    GRACE_NS,
    deploy,
    docker_config,
    recording,
    rules,
    spec_image,
    task_table,
    wait_runs_on,
)
from tests.multinode import MultiNodeBed

pytestmark = pytest.mark.swarm

USER, PASSWORD = "deployer", "correct-horse-battery"


def test_private_image_is_pulled_on_every_worker_and_after_a_drain(
    wbed: MultiNodeBed, unique: str, make_server: ServerFactory, tmp_path: Path
):
    manager, first, second, spare = wbed.nodes
    assert [n.manager for n in wbed.nodes] == [True, False, False, False]
    # Tasks only on workers, which never see the receiver's DOCKER_CONFIG; the spare takes no task until
    # the drain below, so it has never pulled the private image.
    wbed.set_availability(manager, "drain")
    wbed.set_availability(spare, "drain")
    repo = f"acme/{unique}"
    # The service starts from the public registry: its spec holds no credentials a later update could reuse.
    public = wbed.make_image(repo, "1.0.0")
    public_ref = f"{public}@{wbed.registry_digest(public)}"
    wbed.create_service(unique, public_ref, replicas=2, maxreplicas=1, stop_grace_period=GRACE_NS)

    with wbed.private_registry(USER, PASSWORD) as registry:
        image = f"{registry}/{repo}"
        wbed.push_private(f"{image}:1.1.0", USER, PASSWORD, changes=[f"CMD {json.dumps(LONG_RUNNING)}"])
        assert not any(n.client.images.list(name=image) for n in wbed.nodes)
        rules_text = rules(unique, repo, image)

        without = make_server(
            rules_text, docker_host=wbed.docker_host, env={"DOCKER_CONFIG": str(tmp_path / "no-credentials")}
        )
        refused = deploy(without, repo, "1.1.0")
        # Today the manager cannot even resolve the tag; the message is the registry's answer.
        assert refused["state"] == "failed", refused
        assert '/manifests/1.1.0": no basic auth credentials' in refused["message"], refused["message"]
        assert registry in refused["message"]
        assert spec_image(wbed, unique) == public_ref

        config = docker_config(tmp_path / "docker-config", registry, USER, PASSWORD)
        with recording(manager, wbed.root / f"api-{unique}.sock") as api:
            server = make_server(rules_text, docker_host=api.docker_host, env={"DOCKER_CONFIG": str(config)})
            done = deploy(server, repo, "1.1.0")
            updates = [r for r in api.requests() if r.method == "POST" and re.search(r"/services/\w+/update", r.path)]

        assert done["state"] == "succeeded", (done["message"], task_table(wbed, unique))
        assert done["image_ref"].startswith(f"{image}:1.1.0@sha256:")
        wait_runs_on(wbed, unique, done["image_ref"], [first, second])
        # The update carried the credentials, as `docker service update --with-registry-auth` does.
        assert len(updates) == 1
        forwarded = updates[0].registry_auth()
        assert forwarded is not None, updates[0].headers
        assert (forwarded["username"], forwarded["password"], forwarded["serveraddress"]) == (USER, PASSWORD, registry)

        # Swarm keeps the forwarded credentials with the service: a task rescheduled later, to a node
        # that never ran it, still pulls.
        assert not spare.client.images.list(name=image)
        wbed.set_availability(spare, "active")
        wbed.set_availability(first, "drain")
        wait_runs_on(wbed, unique, done["image_ref"], [second, spare])
