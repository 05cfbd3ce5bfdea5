"""What every service in the rules runs now, what happened to it last, what waits, and what is rolling out.

One function for ``GET /api/services`` and ``webhook-server status``. Docker is asked once per service; a
service Docker cannot describe is still listed, with the reason, so the view never fails as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from webhook_server.cluster import NodeStatus, ServiceState, Swarm, TaskState
from webhook_server.errors import DockerError
from webhook_server.journal import Deployment, Journal
from webhook_server.leadership import LEASE_NAME
from webhook_server.rules import RuleSet

# Enough of a service's recent history to find its last finished deployment behind superseded ones.
_RECENT = 50


class Brief(BaseModel):
    """A deployment in one line: which, what, and how it stands."""

    model_config = ConfigDict(frozen=True)

    id: int
    tag: str
    state: str
    trigger: str
    at: str  # when it finished, or when it was queued
    message: str | None = None


class Progress(BaseModel):
    model_config = ConfigDict(frozen=True)

    deployment: Brief
    image_ref: str | None
    swarm_state: str | None  # Swarm's UpdateStatus.State: updating, rollback_started, …
    tasks_updated: int  # running tasks on the new image
    tasks_total: int  # the tasks the service should run


class ServiceStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    image: str | None  # image:tag@digest as the service's spec holds it
    problem: str | None = None  # why Docker could not say
    last: Brief | None = None  # the newest finished deployment (not counting superseded ones)
    queued: tuple[Brief, ...] = ()
    in_progress: Progress | None = None


def brief(dep: Deployment) -> Brief:
    return Brief(
        id=dep.id,
        tag=dep.tag,
        state=dep.state,
        trigger=dep.trigger,
        at=dep.finished_at or dep.created_at,
        message=dep.message,
    )


def progress(dep: Deployment, state: ServiceState | None, tasks: Sequence[TaskState]) -> Progress:
    """How far a running deployment is: its tasks running the new image out of those the service wants."""
    wanted = [t for t in tasks if t.desired_state == "running"]
    if state is not None and not state.placement.global_mode:
        total = state.placement.replicas
    else:
        total = len({t.node for t in wanted}) or len(wanted)
    updated = sum(1 for t in wanted if dep.image_ref and t.image == dep.image_ref and t.state == "running")
    return Progress(
        deployment=brief(dep),
        image_ref=dep.image_ref,
        swarm_state=state.update_state if state else None,
        tasks_updated=min(updated, total) if total else updated,
        tasks_total=total,
    )


def service_status(*, journal: Journal, swarm: Swarm, service: str) -> ServiceStatus:
    recent = journal.find(service=service, limit=_RECENT)
    finished = [d for d in recent if d.done and d.state != "superseded"]
    queued = sorted((d for d in recent if d.state == "queued"), key=lambda d: d.id)
    running = next((d for d in recent if d.state == "running"), None)
    state: ServiceState | None = None
    problem: str | None = None
    tasks: list[TaskState] = []
    try:
        state = swarm.inspect(service)
        if running is not None:
            tasks = swarm.tasks(service)
    except DockerError as e:
        problem = e.message
    return ServiceStatus(
        service=service,
        image=state.image if state else None,
        problem=problem,
        last=brief(finished[0]) if finished else None,
        queued=tuple(brief(d) for d in queued),
        in_progress=progress(running, state, tasks) if running is not None else None,
    )


def cluster_status(*, journal: Journal, swarm: Swarm, rules: RuleSet) -> list[ServiceStatus]:
    """Every service the rules name, in name order."""
    return [service_status(journal=journal, swarm=swarm, service=name) for name in sorted(rules.rules)]


def deployment_detail(journal: Journal, dep: Deployment, *, transitions: bool = True) -> dict[str, Any]:
    """A deployment as the API and ``--json`` print it, with its transitions and notifications."""
    data = dep.model_dump(exclude={"pinned_ref", "not_before", "update_marker"})
    if transitions:
        data["transitions"] = [t.model_dump() for t in journal.transitions(dep.id)]
        data["notifications"] = [n.model_dump() for n in journal.notifications(dep.id)]
    return data


def executor_detail(journal: Journal) -> dict[str, Any] | None:
    """Which receiver runs rollouts, when receivers share the journal (PostgreSQL): the lease's holder
    (host:pid:tenure) and how long it lasts unless renewed, or no holder while none has it. None on SQLite,
    where one host's receiver runs them (the lock file beside the journal)."""
    if not journal.shared:
        return None
    lease = journal.lease(LEASE_NAME)
    if lease is None:
        return {"holder": None, "epoch": None, "expires_in_seconds": None}
    return {
        "holder": lease.holder,
        "epoch": lease.epoch,
        "expires_in_seconds": round(lease.remaining.total_seconds(), 1),
    }


def overview(node: NodeStatus, executor: dict[str, Any] | None, found: Sequence[ServiceStatus]) -> dict[str, Any]:
    """The body of ``GET /api/services``, which ``status --json`` prints too: the node, who runs rollouts
    (a shared journal only) and every service."""
    shared = {} if executor is None else {"executor": executor}
    return {"node": node_detail(node), **shared, "services": [s.model_dump() for s in found]}


def node_detail(node: NodeStatus) -> dict[str, Any]:
    """The Docker node this receiver talks to, as /readyz, /api/services and ``status`` show it."""
    return {
        "docker_host": node.docker_host,
        "hostname": node.hostname,
        "node_id": node.node_id,
        "is_manager": node.is_manager,
        "swarm_state": node.swarm_state,
        "problems": list(node.problems),
    }
