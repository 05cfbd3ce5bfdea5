"""A small in-memory Swarm for fast unit tests of the executor and the views.

It plays Swarm's UpdateStatus sequence: after ``update``, the next inspect shows ``updating``, the one after
``completed`` — or, for images listed in ``crashing``, ``rollback_started`` then ``rollback_completed`` with
the service back on its previous image.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field

from webhook_server.cluster import NodeStatus, ServiceState, TaskState
from webhook_server.errors import (
    DockerUnavailable,
    ImageNotFound,
    ServiceNotFound,
    UpdateOutOfSequence,
    UpdateUncertain,
)
from webhook_server.rules import UpdateSettings

_clock = itertools.count(1)


@dataclass
class FakeSwarm:
    services: dict[str, ServiceState] = field(default_factory=dict)
    registry: dict[str, str] = field(default_factory=dict)  # "image:tag" -> digest
    crashing: set[str] = field(default_factory=set)  # image refs whose rollout Swarm rolls back
    down: bool = False
    conflicts: int = 0  # how many next updates fail with "update out of sequence"
    lost_answers: int = 0  # how many next updates reach Swarm but time out on the wire
    dropped_requests: int = 0  # how many next updates time out on the wire without reaching Swarm
    update_error: Exception | None = None  # raised by the next update
    stuck: set[str] = field(default_factory=set)  # image refs whose update stays "updating"
    manager: bool = True
    task_list: dict[str, list[TaskState]] = field(default_factory=dict)
    node_count: int = 1
    health_failures: dict[str, str] = field(default_factory=dict)  # container id -> last failed check
    calls: list[tuple[str, ...]] = field(default_factory=list)
    _pending: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    def add_service(self, name: str, image: str) -> None:
        self.services[name] = ServiceState(name=name, id=f"id-{name}", version=1, image=image)

    def push(self, image: str, tag: str) -> str:
        digest = f"sha256:{abs(hash((image, tag, next(_clock)))):064x}"[:71]
        self.registry[f"{image}:{tag}"] = digest
        return digest

    def _check_up(self) -> None:
        if self.down:
            raise DockerUnavailable("Docker is unreachable: fake outage")

    def changes_seen(self, service: str) -> int:
        return 0

    def wait_for_change(self, service: str, *, after: int, timeout: float) -> int:
        time.sleep(timeout)  # no event stream: the watch polls
        return 0

    def ping(self) -> None:
        self.calls.append(("ping",))
        self._check_up()

    def node(self) -> NodeStatus:
        self.calls.append(("node",))
        if self.down:
            return NodeStatus(docker_host="fake://", problems=("Docker at fake:// is unreachable",))
        problems = () if self.manager else ("the Docker node at fake:// is a swarm worker",)
        return NodeStatus(
            docker_host="fake://",
            node_id="n1",
            hostname="fake",
            is_manager=self.manager,
            swarm_state="active",
            problems=problems,
        )

    def service_names(self) -> set[str]:
        self.calls.append(("service_names",))
        self._check_up()
        return set(self.services)

    def schedulable_nodes(self) -> int:
        self.calls.append(("schedulable_nodes",))
        self._check_up()
        return self.node_count

    def tasks(self, service: str) -> list[TaskState]:
        self.calls.append(("tasks", service))
        self._check_up()
        if service not in self.services:
            raise ServiceNotFound(service)
        return list(self.task_list.get(service, []))

    def health_failure(self, container_id: str) -> str | None:
        self.calls.append(("health_failure", container_id))
        return self.health_failures.get(container_id)

    def resolve_digest(self, image: str, tag: str) -> str:
        self.calls.append(("resolve_digest", image, tag))
        self._check_up()
        try:
            return self.registry[f"{image}:{tag}"]
        except KeyError:
            raise ImageNotFound(f"{image}:{tag} is not in its registry (manifest unknown)") from None

    def inspect(self, service: str) -> ServiceState:
        self.calls.append(("inspect", service))
        self._check_up()
        if service not in self.services:
            raise ServiceNotFound(service)
        steps = self._pending.get(service)
        if steps:
            state, message, image = steps.pop(0)
            self.services[service] = dataclasses.replace(
                self.services[service], update_state=state, update_message=message, image=image
            )
        return self.services[service]

    def update(self, *, service: str, image_ref: str, settings: UpdateSettings, expected_version: int) -> ServiceState:
        self.calls.append(("update", service, image_ref))
        self._check_up()
        before = self.services[service]
        if self.update_error is not None:
            error, self.update_error = self.update_error, None
            raise error
        if self.dropped_requests:
            self.dropped_requests -= 1
            raise UpdateUncertain(f"update service {service}: Docker at fake:// did not answer in time")
        if self.conflicts:
            self.conflicts -= 1
            self.services[service] = dataclasses.replace(before, version=before.version + 1)
            raise UpdateOutOfSequence(f"update service {service}: update out of sequence")
        if before.version != expected_version:
            raise UpdateOutOfSequence(f"update service {service}: update out of sequence")
        started = f"t{next(_clock)}"
        self.services[service] = dataclasses.replace(
            before,
            version=before.version + 1,
            image=image_ref,
            update_state="updating",
            update_message="update in progress",
            update_started_at=started,
        )
        if image_ref in self.stuck:
            self._pending[service] = []
        elif image_ref in self.crashing:
            cause = "update rolled back due to failure or early termination of task abc"
            self._pending[service] = [
                ("updating", "update in progress", image_ref),
                ("rollback_started", cause, before.image),
                ("rollback_completed", "rollback completed", before.image),
            ]
        else:
            self._pending[service] = [
                ("updating", "update in progress", image_ref),
                ("completed", "update completed", image_ref),
            ]
        if self.lost_answers:
            self.lost_answers -= 1
            raise UpdateUncertain(f"update service {service}: Docker at fake:// did not answer in time")
        return before

    def updates(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] == "update"]
