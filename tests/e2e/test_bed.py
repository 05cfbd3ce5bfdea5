"""The test bed itself: a pinned, health-gated update converges, and a crashing image rolls back."""

from __future__ import annotations

import time

import pytest
from docker.types import UpdateConfig

from tests.bed import BOOT_TIMEOUT, SwarmBed, alive, running_bed, wait_for

pytestmark = pytest.mark.swarm

FAST_UPDATE = UpdateConfig(
    parallelism=1, delay=0, failure_action="rollback", monitor=2_000_000_000, order="start-first"
)


def _update_state(bed: SwarmBed, name: str) -> str | None:
    status = bed.client.services.get(name).attrs.get("UpdateStatus") or {}
    return status.get("State")


def _pinned_update(bed: SwarmBed, name: str, ref: str) -> str:
    """Resolve ``ref`` in the registry via docker-py and update ``name`` to ref@digest."""
    digest = bed.client.images.get_registry_data(ref).id
    assert digest == bed.registry_digest(ref)  # docker-py agrees with the registry itself
    bed.client.services.get(name).update(image=f"{ref}@{digest}", update_config=FAST_UPDATE)
    return str(digest)


def test_boots_quickly(swarm_bed: SwarmBed) -> None:
    assert swarm_bed.boot_seconds < BOOT_TIMEOUT  # type: ignore[attr-defined]
    assert swarm_bed.client.info()["Swarm"]["LocalNodeState"] == "active"


def test_pinned_update_completes_on_every_task(bed: SwarmBed, unique: str) -> None:
    old = bed.make_image(f"bed/{unique}", "1.0.0")
    new = bed.make_image(f"bed/{unique}", "1.1.0")
    bed.create_service(unique, old, replicas=2, update_config=FAST_UPDATE)

    digest = _pinned_update(bed, unique, new)
    wait_for(
        lambda: _update_state(bed, unique) == "completed",
        timeout=60,
        interval=0.25,
        what="the update to complete",
    )

    tasks = bed.running_tasks(unique)
    assert len(tasks) == 2
    for task in tasks:
        assert task["Spec"]["ContainerSpec"]["Image"] == f"{new}@{digest}"  # type: ignore[index]


def test_crashing_image_rolls_back_to_previous_digest(bed: SwarmBed, unique: str) -> None:
    good = bed.make_image(f"bed/{unique}", "1.0.0")
    bad = bed.make_image(f"bed/{unique}", "1.1.0", kind="crash")
    good_digest = bed.client.images.get_registry_data(good).id
    bed.create_service(unique, f"{good}@{good_digest}", replicas=2, update_config=FAST_UPDATE)

    _pinned_update(bed, unique, bad)
    wait_for(
        lambda: _update_state(bed, unique) == "rollback_completed",
        timeout=90,
        interval=0.25,
        what="the rollback to complete",
    )

    spec_image = bed.client.services.get(unique).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert spec_image == f"{good}@{good_digest}"
    wait_for(lambda: len(bed.running_tasks(unique)) == 2, timeout=30, what="2 running tasks")
    for task in bed.running_tasks(unique):
        assert task["Spec"]["ContainerSpec"]["Image"] == f"{good}@{good_digest}"  # type: ignore[index]


def test_global_service_runs_one_task_per_node(bed: SwarmBed, unique: str) -> None:
    image = bed.make_image(f"bed/{unique}", "1.0.0")
    service = bed.create_service(unique, image, mode="global")
    assert "Global" in service.attrs["Spec"]["Mode"]
    assert len(bed.running_tasks(unique)) == len(bed.client.nodes.list())
    bed.remove_service(unique)
    assert unique not in {s.name for s in bed.client.services.list()}


def test_a_bed_leaves_no_process_or_dir_behind() -> None:
    """A second, throwaway bed: after stop, its daemons and temp dir are gone."""
    started = time.monotonic()
    with running_bed() as extra:
        assert time.monotonic() - started < BOOT_TIMEOUT
        image = extra.make_image("bed/leftover", "1")
        extra.create_service("leftover", image, replicas=1)
        pids = [extra.dockerd.pid, extra.registry_proc.pid]
        root = extra.root
    assert not any(alive(p) for p in pids)
    assert not root.exists()
