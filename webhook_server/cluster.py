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
class ServiceState:
    """What Swarm says about a service, reduced to what rollouts need."""

    name: str
    id: str
    version: int
    image: str
    update_state: str | None = None
    update_message: str | None = None
    update_started_at: str | None = None

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
    def service_names(self) -> set[str]: ...
    def inspect(self, service: str) -> ServiceState: ...
    def tasks(self, service: str) -> list[TaskState]: ...
    def health_failure(self, container_id: str) -> str | None: ...
    def resolve_digest(self, image: str, tag: str) -> str: ...
    def update(
        self, *, service: str, image_ref: str, settings: UpdateSettings, expected_version: int
    ) -> ServiceState: ...
