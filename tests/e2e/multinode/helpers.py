"""Rules, pushes and per-node checks shared by the multi-node proofs."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bed import wait_for
from tests.multinode import MultiNodeBed, Node
from tests.server import Server, documented_payload

# busybox `sleep` as PID 1 ignores SIGTERM; without a short grace every task swap would wait 10 s.
GRACE_NS = 1_000_000_000


def rules(
    service: str,
    repo: str,
    image: str,
    *,
    order: str = "stop-first",
    monitor: str = "1s",
    delay: str = "0s",
    timeout: str = "60s",
) -> str:
    """One semver rule; stop-first by default, because one-task-per-node placement leaves start-first no
    node to start the new task on."""
    return (
        "defaults:\n"
        f"  update: {{parallelism: 1, delay: {delay}, order: {order}, failure_action: rollback, monitor: {monitor}}}\n"
        f"  timeout: {timeout}\n"
        "services:\n"
        f"  {service}: {{repository: {repo}, image: '{image}', tags: semver}}\n"
    )


def deploy(server: Server, repo: str, tag: str, *, timeout: float = 120) -> dict[str, Any]:
    """A Docker Hub push through the webhook, followed to the deployment's terminal state."""
    response = server.hook(documented_payload(repo, tag))
    assert response.status_code == 202, response.text
    [summary] = response.json()["deployments"]
    return server.wait_done(summary["id"], timeout=timeout)


def repo_digest(image_ref: str) -> str:
    """``REGISTRY/name:tag@sha256:…`` → ``REGISTRY/name@sha256:…``, as a node lists it in RepoDigests."""
    name_tag, _, digest = image_ref.partition("@")
    return f"{name_tag.rpartition(':')[0]}@{digest}"


def wait_runs_on(
    bed: MultiNodeBed, service: str, image_ref: str, nodes: Sequence[Node], *, timeout: float = 60
) -> None:
    """Each of ``nodes`` — and no other — runs exactly one container of ``service``, created from
    ``image_ref`` and backed by a local image whose repo digest is that digest, asked of each node's own
    dockerd (not the manager's view)."""
    wanted = {n.name: [f"{image_ref}|{repo_digest(image_ref)}"] for n in nodes}

    def converged() -> bool:
        return bed.images_by_node(service) == wanted

    try:
        wait_for(converged, timeout=timeout, interval=0.25, what=f"{service} to run {image_ref} on {sorted(wanted)}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; found {bed.images_by_node(service)}") from e


def spec_image(bed: MultiNodeBed, service: str) -> str:
    return str(bed.client.services.get(service).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])


def docker_config(dest: Path, registry: str, user: str, password: str) -> Path:
    """A DOCKER_CONFIG dir that logs in to ``registry`` (what `docker login` writes, without a helper)."""
    dest.mkdir()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (dest / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return dest


_REQUEST_HEAD = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n((?:[^\r\n]+\r\n)*)\r\n")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]

    def registry_auth(self) -> dict[str, Any] | None:
        """The decoded X-Registry-Auth header (docker-py sends URL-safe base64 JSON), if any."""
        value = self.headers.get("x-registry-auth")
        if not value:
            return None
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return decoded


@dataclass
class DockerApiRecorder:
    """A unix-socket relay in front of a dockerd that keeps every byte its clients sent, so a test can see
    which headers the receiver really put on its requests."""

    target: Path
    path: Path
    _sent: list[bytearray] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> None:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen(16)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            streams = [bytes(b) for b in self._sent]
        found = []
        for stream in streams:
            for m in _REQUEST_HEAD.finditer(stream):
                headers = {}
                for line in m.group(3).decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                found.append(RecordedRequest(m.group(1).decode(), m.group(2).decode("latin-1"), headers))
        return found

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            record = bytearray()
            with self._lock:
                self._sent.append(record)
            threading.Thread(target=self._pump, args=(client, upstream, record), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if record is not None:
                    with self._lock:
                        record.extend(data)
                dst.sendall(data)
        # One side closed: close both, so the other pump and both peers see it.
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def recording(node: Node, path: Path) -> Iterator[DockerApiRecorder]:
    recorder = DockerApiRecorder(target=node.root / "docker.sock", path=path)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.close()


def task_table(bed: MultiNodeBed, service: str) -> list[tuple[str, str, str, str, str]]:
    """Every task of ``service`` as (node, image tag, desired state, state, error): for failure messages."""
    rows = []
    for t in bed.client.services.get(service).tasks():
        node = bed.node(str(t["NodeID"])).name if t.get("NodeID") else "-"
        image = str(t["Spec"]["ContainerSpec"]["Image"]).split("@")[0].rpartition(":")[2]
        rows.append((node, image, t["DesiredState"], t["Status"]["State"], t["Status"].get("Err", "")))
    return sorted(rows)
