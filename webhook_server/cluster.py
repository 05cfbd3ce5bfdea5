"""What the rest of the project knows about the cluster, without importing docker-py.

The Docker adapter (``webhook_server.swarm``) returns these types and satisfies :class:`Swarm`; the executor,
the views and the CLI depend only on this module, so loading the app does not load ``docker``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from webhook_server.refs import ImageRef
from webhook_server.rules import UpdateSettings


@dataclass(frozen=True)
class TaskState:
    """One task of a service as Swarm reports it: where it runs and why it is in its state."""

    node: str
    image: str
    state: str
    desired_state: str
    message: str = ""
    error: str = ""
    container_id: str = ""


@dataclass(frozen=True)
class Placement:
    """How Swarm may place a service's tasks, as far as it decides whether a start-first update can start."""

    global_mode: bool = False
    replicas: int = 1
    max_per_node: int = 0  # 0: no limit
    host_ports: bool = False  # published in host mode: one task per node can bind them


def start_first_blocked(placement: Placement, *, nodes: int) -> str | None:
    """Why a start-first update of a service placed like this would stay pending for ever, or None.

    Start-first needs room for one more task beside the old ones. ``nodes`` is how many nodes can take tasks
    at all (ready, active); constraints can only make it fewer, so a warning here is certain.
    """
    if placement.host_ports and (placement.global_mode or placement.replicas >= nodes):
        return (
            "order start-first cannot start a new task beside the old one on a node: the service publishes "
            "ports in host mode; use order: stop-first"
        )
    if placement.global_mode or not placement.max_per_node:
        return None
    if placement.replicas >= placement.max_per_node * nodes:
        return (
            f"order start-first has no room for a new task: {placement.replicas} replicas with "
            f"max_replicas_per_node {placement.max_per_node} fill all {nodes} node(s) that take tasks; "
            "use order: stop-first, or add a node"
        )
    return None


@dataclass(frozen=True)
class ServiceState:
    """What Swarm says about a service, reduced to what rollouts need."""

    name: str
    id: str
    version: int
    image: str
    update_state: str | None = None
    update_message: str | None = None
    update_started_at: str | None = None
    placement: Placement = field(default_factory=Placement)

    @property
    def digest(self) -> str | None:
        return ImageRef.parse(self.image).digest

    def runs(self, target: str) -> bool:
        """Whether the service already runs ``target`` (the same reference, or the same digest)."""
        digest = ImageRef.parse(target).digest
        return self.image == target or (digest is not None and self.digest == digest)


@dataclass(frozen=True)
class NodeStatus:
    """The Docker node this process talks to, as it sees itself."""

    docker_host: str
    node_id: str = ""
    hostname: str = ""
    is_manager: bool = False
    swarm_state: str = ""  # Swarm.LocalNodeState: active, inactive, pending, error, locked
    problems: tuple[str, ...] = field(default=())


class Swarm(Protocol):
    """What the project needs from Docker (the adapter in ``webhook_server.swarm``, or a test fake)."""

    def ping(self) -> None: ...
    def node(self) -> NodeStatus: ...
    # Events seen for ``service`` so far, and a wait for the next (a rollout's watch wakes on them; polling at
    # ``timeout`` is the fallback).
    def changes_seen(self, service: str) -> int: ...
    def wait_for_change(self, service: str, *, after: int, timeout: float) -> int: ...
    def schedulable_nodes(self) -> int: ...
    def service_names(self) -> set[str]: ...
    def inspect(self, service: str) -> ServiceState: ...
    def tasks(self, service: str) -> list[TaskState]: ...
    def health_failure(self, container_id: str) -> str | None: ...
    def resolve_digest(self, image: str, tag: str) -> str: ...
    def update(
        self, *, service: str, image_ref: str, settings: UpdateSettings, expected_version: int
    ) -> ServiceState: ...
