"""Swarm services through docker-py: read state, resolve digests, start pinned, health-gated updates."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import docker
import docker.errors
from docker.types import UpdateConfig

from webhook_server.cluster import NodeStatus, Placement, ServiceState, TaskState
from webhook_server.errors import DockerError, DockerUnavailable, ImageNotFound, ServiceNotFound, UpdateOutOfSequence
from webhook_server.rules import UpdateSettings
from webhook_server.swarm.client import connect, host_of, translated
from webhook_server.swarm.events import ServiceEvents

log = logging.getLogger(__name__)


def _nanoseconds(value: timedelta) -> int:
    return int(value.total_seconds() * 1_000_000_000)


def update_config(settings: UpdateSettings) -> UpdateConfig:
    return UpdateConfig(
        parallelism=settings.parallelism,
        delay=_nanoseconds(settings.delay),
        failure_action=settings.failure_action,
        monitor=_nanoseconds(settings.monitor),
        max_failure_ratio=settings.max_failure_ratio,
        order=settings.order,
    )


class SwarmServices:
    """The adapter the executor talks to. Every method raises only the project's errors."""

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        timeout: float = 30.0,
        on_error: Callable[[DockerError], None] | None = None,
    ) -> None:
        self._docker_host = docker_host
        self._timeout = timeout
        # Told of every error that crosses in from Docker (the server counts them in its metrics).
        self._on_error = on_error
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._events = ServiceEvents(docker_host)

    def _docker(self) -> docker.DockerClient:
        # Connected on first use (and again after an outage) so the server starts while Docker is down.
        with self._lock:
            if self._client is None:
                with translated("connect to Docker", host=self.host):
                    self._client = connect(self._docker_host, timeout=self._timeout)
            return self._client

    @property
    def host(self) -> str:
        return host_of(self._docker_host)

    @contextlib.contextmanager
    def _talking(self, action: str, *, sent: bool = False) -> Iterator[None]:
        """Translate errors; after an outage, drop the client so the next call reconnects."""
        try:
            with translated(action, host=self.host, sent=sent):
                yield
        except DockerError as e:
            if isinstance(e, DockerUnavailable):
                with self._lock:
                    self._client = None
            if self._on_error is not None:
                self._on_error(e)
            raise

    def changes_seen(self, service: str) -> int:
        return self._events.seen(service)

    def wait_for_change(self, service: str, *, after: int, timeout: float) -> int:
        return self._events.wait(service, after=after, timeout=timeout)

    def ping(self) -> None:
        with self._talking("ping Docker"):
            self._docker().ping()

    def node(self) -> NodeStatus:
        """The node behind DOCKER_HOST and whether it can manage the swarm; never raises."""
        try:
            with self._talking("read Docker's swarm status"):
                info = self._docker().info()
        except DockerError as e:
            return NodeStatus(docker_host=self.host, problems=(e.message,))
        swarm = info.get("Swarm") or {}
        is_manager = bool(swarm.get("ControlAvailable"))
        state = str(swarm.get("LocalNodeState") or "")
        problems: list[str] = []
        if state != "active":
            problems.append(f"the Docker node at {self.host} is not in a swarm (state: {state or 'unknown'})")
        elif not is_manager:
            problems.append(
                f"the Docker node at {self.host} is a swarm worker; services can only be updated on a manager"
            )
        return NodeStatus(
            docker_host=self.host,
            node_id=str(swarm.get("NodeID") or ""),
            hostname=str(info.get("Name") or ""),
            is_manager=is_manager,
            swarm_state=state,
            problems=tuple(problems),
        )

    def schedulable_nodes(self) -> int:
        """How many nodes can take new tasks now (ready and active)."""
        with self._talking("list swarm nodes"):
            nodes = self._docker().api.nodes()
        return sum(
            1
            for n in nodes
            if (n.get("Status") or {}).get("State") == "ready" and (n.get("Spec") or {}).get("Availability") == "active"
        )

    def service_names(self) -> set[str]:
        with self._talking("list services"):
            return {str(s["Spec"]["Name"]) for s in self._docker().api.services()}

    def tasks(self, service: str) -> list[TaskState]:
        """The service's tasks, newest first, with the node each runs on and Swarm's reason for its state."""
        with self._talking(f"list tasks of {service}"):
            client = self._docker()
            try:
                raw = client.api.tasks(filters={"service": service})
            except docker.errors.NotFound as e:
                raise ServiceNotFound(service) from e
            names = {n["ID"]: n.get("Description", {}).get("Hostname", n["ID"]) for n in client.api.nodes()}
        raw.sort(key=lambda t: t.get("UpdatedAt", ""), reverse=True)
        return [_task(t, names) for t in raw]

    def health_failure(self, container_id: str) -> str | None:
        """The last failed health check of a container on this node ("exit 1: output"), or None when it
        has none, or runs on another node (whose Docker this process cannot ask)."""
        try:
            with self._talking(f"inspect container {container_id[:12]}"):
                attrs = self._docker().api.inspect_container(container_id)
        except DockerError:
            return None
        failed = [e for e in (attrs.get("State", {}).get("Health") or {}).get("Log") or [] if e.get("ExitCode")]
        if not failed:
            return None
        output = " ".join(str(failed[-1].get("Output") or "").split())[:200]
        return f"exit {failed[-1]['ExitCode']}" + (f": {output}" if output else "")

    def resolve_digest(self, image: str, tag: str) -> str:
        """The registry's manifest digest for image:tag; ImageNotFound if the registry has no such tag."""
        ref = f"{image}:{tag}"
        with self._talking(f"resolve {ref}"):
            try:
                return str(self._docker().images.get_registry_data(ref).id)
            except docker.errors.NotFound as e:
                raise ImageNotFound(f"{ref} is not in its registry ({e.explanation})") from e

    def inspect(self, service: str) -> ServiceState:
        with self._talking(f"inspect service {service}"):
            return _state(self._get(service))

    def update(self, *, service: str, image_ref: str, settings: UpdateSettings, expected_version: int) -> ServiceState:
        """Move ``service`` to ``image_ref`` with a rolling update; keeps the rest of the spec.

        ``expected_version`` is the version the caller decided on: if the service changed since, Swarm
        refuses with UpdateOutOfSequence and the caller re-decides.
        """
        with self._talking(f"update service {service}", sent=True):
            model = self._get(service)
            if model.version != expected_version:
                raise UpdateOutOfSequence(
                    f"update service {service}: it changed since it was read "
                    f"(version {expected_version} → {model.version})"
                )
            before = _state(model)
            model.update(image=image_ref, update_config=update_config(settings))
            log.info("service %s: update to %s started", service, image_ref)
            return before

    def _get(self, service: str) -> docker.models.services.Service:
        try:
            return self._docker().services.get(service)
        except docker.errors.NotFound as e:
            raise ServiceNotFound(service) from e


def _task(raw: dict[str, Any], node_names: dict[str, str]) -> TaskState:
    status = raw.get("Status") or {}
    node_id = str(raw.get("NodeID") or "")
    return TaskState(
        node=node_names.get(node_id, node_id),
        image=str(raw.get("Spec", {}).get("ContainerSpec", {}).get("Image", "")),
        state=str(status.get("State", "")),
        desired_state=str(raw.get("DesiredState", "")),
        message=str(status.get("Message", "")),
        error=str(status.get("Err", "")),
        container_id=str((status.get("ContainerStatus") or {}).get("ContainerID") or ""),
    )


def _state(model: docker.models.services.Service) -> ServiceState:
    attrs = model.attrs
    status = attrs.get("UpdateStatus") or {}
    return ServiceState(
        name=attrs["Spec"]["Name"],
        id=model.id,
        version=int(attrs["Version"]["Index"]),
        image=attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        update_state=status.get("State"),
        update_message=status.get("Message"),
        update_started_at=status.get("StartedAt"),
        placement=_placement(attrs["Spec"]),
    )


def _placement(spec: dict[str, Any]) -> Placement:
    mode = spec.get("Mode") or {}
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    return Placement(
        global_mode="Global" in mode,
        replicas=int((mode.get("Replicated") or {}).get("Replicas", 1)),
        max_per_node=int(((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("MaxReplicas") or 0),
        host_ports=any(p.get("PublishMode") == "host" for p in ports),
    )
