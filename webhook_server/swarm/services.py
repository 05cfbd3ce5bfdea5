"""Swarm services through docker-py: read state, resolve digests, start pinned, health-gated updates."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import docker
import docker.errors
from docker.types import UpdateConfig

from webhook_server.errors import DockerUnavailable, ImageNotFound, ServiceNotFound, UpdateOutOfSequence
from webhook_server.refs import ImageRef
from webhook_server.rules import UpdateSettings
from webhook_server.swarm.client import connect, translated

log = logging.getLogger(__name__)


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

    def __init__(self, docker_host: str | None = None, *, timeout: float = 30.0) -> None:
        self._docker_host = docker_host
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def _docker(self) -> docker.DockerClient:
        # Connected on first use (and again after an outage) so the server starts while Docker is down.
        with self._lock:
            if self._client is None:
                with translated("connect to Docker"):
                    self._client = connect(self._docker_host, timeout=self._timeout)
            return self._client

    @contextlib.contextmanager
    def _talking(self, action: str) -> Iterator[None]:
        """Translate errors; after an outage, drop the client so the next call reconnects."""
        try:
            with translated(action):
                yield
        except DockerUnavailable:
            with self._lock:
                self._client = None
            raise

    def ping(self) -> None:
        with self._talking("ping Docker"):
            self._docker().ping()

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
        with self._talking(f"update service {service}"):
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
    )
