"""docker-py for ``reload-proxy``: the nginx service's tasks, ``nginx -t`` by exec, SIGHUP, forced updates and
versioned certificate secrets. Implements ``webhook_server.proxy.reload.NginxSwarm``; raises only the
project's errors.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import docker
import docker.errors
from docker.types import Healthcheck, Mount, RestartPolicy, SecretReference, ServiceMode, UpdateConfig

from webhook_server.errors import DockerError, ServiceNotFound
from webhook_server.proxy.reload import CheckResult, JobResult, NginxTask, NodeJob
from webhook_server.swarm.client import connect, host_of, translated

log = logging.getLogger(__name__)

SECRET_MODE = 0o400  # read by nginx's master (root) only, like certbot's privkey.pem
# Where a node job sees its node's Docker socket.
NODE_SOCKET = "/var/run/docker.sock"
JOB_END_STATES = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned"})
JOB_TIMEOUT_SECONDS = 120
JOB_POLL_SECONDS = 0.5


class SwarmProxy:
    def __init__(self, docker_host: str | None = None, *, timeout: float = 30.0) -> None:
        self._host = host_of(docker_host)
        # docker-py asks the daemon for its API version here: the first place an unreachable Docker shows.
        with translated("connecting to Docker", host=self._host):
            self._client = connect(docker_host, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def _service(self, service: str) -> Any:
        with translated(f"looking up service {service}", host=self._host):
            try:
                return self._client.services.get(service)
            except docker.errors.NotFound as e:
                raise ServiceNotFound(service) from e

    def local_node_id(self) -> str:
        with translated("reading this node's swarm state", host=self._host):
            node_id = str(self._client.info().get("Swarm", {}).get("NodeID") or "")
        if not node_id:
            raise DockerError(f"the Docker daemon at {self._host} is not part of a swarm")
        return node_id

    def run_on_nodes(self, *, job: NodeJob, args: Sequence[str], nodes: Sequence[str]) -> list[JobResult]:
        """One replicated job per node (constraint node.id==NODE), all at once; waits for each to end, reads
        its output, and removes it."""
        names = self._node_names()
        suffix = uuid.uuid4().hex[:8]
        made: list[tuple[str, Any]] = []
        try:
            for node in nodes:
                made.append((node, self._start_job(job, args, node=node, name=f"reload-proxy-{suffix}-{node[:12]}")))
            deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
            return [self._job_result(svc, node=names.get(node, node), deadline=deadline) for node, svc in made]
        finally:
            for _, svc in made:
                with contextlib.suppress(docker.errors.APIError):
                    svc.remove()

    def _node_names(self) -> dict[str, str]:
        with translated("listing swarm nodes", host=self._host):
            return {n["ID"]: n.get("Description", {}).get("Hostname", n["ID"]) for n in self._client.api.nodes()}

    def _start_job(self, job: NodeJob, args: Sequence[str], *, node: str, name: str) -> Any:
        with translated(f"starting a reload job on node {node[:12]}", host=self._host, sent=True):
            return self._client.services.create(
                job.image,
                command=list(args),
                name=name,
                mode=ServiceMode("replicated-job", replicas=1),
                constraints=[f"node.id=={node}"],
                mounts=[Mount(target=NODE_SOCKET, source=job.socket, type="bind")],
                env=[f"DOCKER_HOST=unix://{NODE_SOCKET}"],
                restart_policy=RestartPolicy(condition="none"),
                # The image's health check is for the server; a job that probed it would be killed as unhealthy.
                healthcheck=Healthcheck(test=["NONE"]),
                labels={"webhook-server.reload-proxy": "job"},
            )

    def _job_result(self, svc: Any, *, node: str, deadline: float) -> JobResult:
        while True:
            with translated(f"following the reload job on {node}", host=self._host):
                tasks = svc.tasks()
            done = [t for t in tasks if t["Status"]["State"] in JOB_END_STATES]
            if done:
                break
            if time.monotonic() > deadline:
                states = ", ".join(t["Status"]["State"] for t in tasks) or "no task yet"
                raise DockerError(f"the reload job on {node} did not finish in {JOB_TIMEOUT_SECONDS}s ({states})")
            time.sleep(JOB_POLL_SECONDS)
        status = done[0]["Status"]
        with translated(f"reading the reload job's output on {node}", host=self._host):
            output = b"".join(svc.logs(stdout=True, stderr=True)).decode(errors="replace")
        ok = status["State"] == "complete"
        if not ok and status.get("Err"):
            output = f"{output.rstrip()}\n({status['Err']})".lstrip()
        return JobResult(node=node, ok=ok, output=output)

    def running_tasks(self, service: str) -> list[NginxTask]:
        svc = self._service(service)
        with translated(f"listing the tasks of {service}", host=self._host):
            tasks = svc.tasks(filters={"desired-state": "running"})
        return [
            NginxTask(
                task_id=str(t["ID"]),
                node_id=str(t.get("NodeID", "")),
                container_id=(t["Status"].get("ContainerStatus") or {}).get("ContainerID"),
            )
            for t in tasks
            if t["Status"]["State"] == "running"
        ]

    def container_command(self, container_id: str) -> list[str]:
        with translated(f"reading the command of container {container_id[:12]}", host=self._host):
            config = self._client.containers.get(container_id).attrs.get("Config") or {}
        return [str(word) for word in (*(config.get("Entrypoint") or []), *(config.get("Cmd") or []))]

    def run_in_container(self, container_id: str, argv: Sequence[str]) -> CheckResult:
        with translated(f"running {shlex.join(argv)} in container {container_id[:12]}", host=self._host):
            exit_code, output = self._client.containers.get(container_id).exec_run(list(argv), stdout=True, stderr=True)
        return CheckResult(ok=exit_code == 0, output=output.decode(errors="replace"))

    def reload(self, container_id: str) -> None:
        # nginx is the container's PID 1 (its command, or exec'd by the entrypoint): the signal reaches its master.
        with translated(f"sending SIGHUP to container {container_id[:12]}", host=self._host, sent=True):
            self._client.containers.get(container_id).kill(signal="SIGHUP")

    def force_update(self, service: str) -> None:
        svc = self._service(service)
        with translated(f"forcing a rolling update of {service}", host=self._host, sent=True):
            svc.force_update()

    def ensure_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        """The secret ``name`` (names carry a content hash, so an existing one holds the same data)."""
        with translated(f"creating secret {name}", host=self._host, sent=True):
            existing = self._client.secrets.list(filters={"name": name})
            for secret in existing:
                if secret.name == name:
                    return str(secret.id)
            created = self._client.secrets.create(name=name, data=data, labels=dict(labels))
            return str(created.id)

    def use_secrets(self, service: str, secrets: Mapping[str, tuple[str, str]]) -> None:
        """Point the service's secret mounts at ``secrets`` (target path → (id, name)); update start-first."""
        svc = self._service(service)
        spec = svc.attrs["Spec"]
        current = spec["TaskTemplate"]["ContainerSpec"].get("Secrets") or []
        refs = [
            SecretReference(
                secret_id=ref["SecretID"],
                secret_name=ref["SecretName"],
                filename=ref["File"]["Name"],
                uid=ref["File"].get("UID", "0"),
                gid=ref["File"].get("GID", "0"),
                mode=ref["File"].get("Mode", SECRET_MODE),
            )
            for ref in current
            if ref.get("File", {}).get("Name") not in secrets
        ]
        for target, (secret_id, name) in sorted(secrets.items()):
            refs.append(SecretReference(secret_id=secret_id, secret_name=name, filename=target, mode=SECRET_MODE))
        update = spec.get("UpdateConfig") or {}
        # start-first: a new task serves before an old one stops (needs ingress or a VIP, not host ports).
        config = UpdateConfig(
            parallelism=update.get("Parallelism", 1),
            delay=update.get("Delay"),
            failure_action=update.get("FailureAction", "rollback"),
            monitor=update.get("Monitor"),
            max_failure_ratio=update.get("MaxFailureRatio"),
            order="start-first",
        )
        with translated(f"updating {service} to new certificate secrets", host=self._host, sent=True):
            svc.update(secrets=refs, update_config=config)
