"""What ``webhook-server reload-proxy`` does, decided without Docker.

``signal`` mode (certificates bind-mounted from the host): run ``nginx -t`` in every nginx task container on
this node; only if all pass, SIGHUP them (nginx re-reads its config and certificates, old workers finish
their requests: no connection is dropped). Tasks on other nodes cannot be reached by exec or signal from
here, so the service gets a rolling ``--force`` update instead; Swarm's own update config (health checks,
rollback) guards those.

With a **node job** (``--job-image``: this project's image), tasks on other nodes are reloaded the same way
instead: a one-off Swarm job on each of those nodes runs ``reload-proxy --this-node-only`` against that
node's Docker socket. Every node checks first (``--check-only``), and only if every check passed anywhere
does any nginx get SIGHUP: no task restarts, no connection drops, whatever the published ports.

``secrets`` mode (multi-node swarms without bind mounts): each certificate file becomes a new Swarm secret
named after its content, and the service is updated start-first to use them. A certificate that does not
match its key is refused before anything changes.

The Docker side is a :class:`NginxSwarm` (``webhook_server.swarm.proxy`` in production, a fake in tests).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from webhook_server.errors import WebhookError
from webhook_server.proxy.config import ProxyConfig

log = logging.getLogger(__name__)

Mode = Literal["signal", "secrets"]
CERT_FILES = ("fullchain.pem", "privkey.pem")
# Swarm object names: at most 64 characters of these.
_SECRET_NAME = re.compile(r"[^A-Za-z0-9_.-]")
SECRET_NAME_MAX = 64


class ReloadError(WebhookError):
    """reload-proxy refused or failed; the message says what, and whether anything was reloaded."""

    # The proxy's state refuses the reload (no running task, a command that does not tell its config, a
    # reload that failed part-way): the request was fine, nginx is not.
    http_status = 409
    code = "reload_failed"


class ProxyConfigInvalid(ReloadError):
    """``nginx -t`` failed in a task: nothing was reloaded."""

    # The config or certificates nginx would load are invalid; the message holds nginx's error.
    http_status = 422
    code = "proxy_config_invalid"


@dataclass(frozen=True)
class NginxTask:
    task_id: str
    node_id: str
    container_id: str | None


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    output: str


@dataclass(frozen=True)
class NodeJob:
    """How to reach nginx on other nodes: ``image`` holds webhook-server; ``socket`` is where each node's Docker
    socket is on that node (it may use Swarm's templates, e.g. ``/run/docker-{{.Node.Hostname}}.sock``)."""

    image: str
    socket: str = "/var/run/docker.sock"


@dataclass(frozen=True)
class JobResult:
    node: str  # the node's hostname
    ok: bool
    output: str


class NginxSwarm(Protocol):
    def local_node_id(self) -> str: ...

    def run_on_nodes(self, *, job: NodeJob, args: Sequence[str], nodes: Sequence[str]) -> list[JobResult]:
        """Run ``args`` (a webhook-server command line) once on each node in ``nodes`` (ids), in parallel, with
        that node's Docker socket; each node's exit status and output, in the order of ``nodes``."""
        ...

    def running_tasks(self, service: str) -> list[NginxTask]: ...

    def container_command(self, container_id: str) -> list[str]:
        """The container's Entrypoint followed by its Cmd, as Swarm set them from the image and the service."""
        ...

    def run_in_container(self, container_id: str, argv: Sequence[str]) -> CheckResult: ...

    def reload(self, container_id: str) -> None: ...

    def force_update(self, service: str) -> None: ...

    def ensure_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str: ...

    def use_secrets(self, service: str, secrets: Mapping[str, tuple[str, str]]) -> None: ...


# The names the official image's entrypoint recognises as nginx itself.
NGINX_EXECUTABLES = ("nginx", "nginx-debug")
# nginx's options that decide which config it reads and how: the test must use the same ones.
CONFIG_OPTIONS = "cpge"


def nginx_test_command(argv: Sequence[str]) -> list[str] | None:
    """``nginx -t`` for the config a container's nginx runs, or None when its command does not tell.

    ``argv`` is the container's Entrypoint and Cmd. nginx may follow a wrapper (the official image's
    ``/docker-entrypoint.sh``, tini): the check takes that nginx's -c/-p/-g/-e, so a container started as
    ``nginx -c /srv/proxy/nginx.conf -g "daemon off;"`` is checked against /srv/proxy/nginx.conf and not the
    image's default, which would pass while the config nginx re-reads on SIGHUP is broken.
    """
    for index, word in enumerate(argv):
        # The first nginx whose arguments parse: a wrapper's own argument may be "nginx" too (su-exec nginx nginx).
        if word.rsplit("/", 1)[-1] in NGINX_EXECUTABLES:
            options = _config_options(argv[index + 1 :])
            if options is not None:
                return [word, *options, "-t"]
    return None


def _config_options(args: Sequence[str]) -> list[str] | None:
    """The config options among nginx's arguments, read as nginx reads them (``-c FILE``, ``-cFILE``, ``-qc
    FILE``); None for anything nginx would not run as a server with."""
    options: list[str] = []
    words = iter(args)
    for word in words:
        if not word.startswith("-") or word == "-":
            return None
        flags = word[1:]
        for position, flag in enumerate(flags):
            if flag in CONFIG_OPTIONS:
                value = flags[position + 1 :] or next(words, None)
                if value is None:
                    return None
                options += [f"-{flag}", value]
                break
    return options


@dataclass(frozen=True)
class ReloadPlan:
    local: tuple[NginxTask, ...]
    remote: tuple[NginxTask, ...]

    @property
    def force_update(self) -> bool:
        return bool(self.remote)


def plan_reload(tasks: Sequence[NginxTask], *, local_node_id: str) -> ReloadPlan:
    """Signal the tasks whose container runs on this node; any other running task needs a forced update."""
    if not tasks:
        raise ReloadError("no running nginx task to reload")
    local = tuple(t for t in tasks if t.node_id == local_node_id and t.container_id)
    remote = tuple(t for t in tasks if t not in local)
    return ReloadPlan(local=local, remote=remote)


@dataclass
class ReloadReport:
    checked: list[str] = field(default_factory=list)
    signalled: list[str] = field(default_factory=list)
    force_updated: bool = False
    secrets: dict[str, str] = field(default_factory=dict)
    other_nodes: list[str] = field(default_factory=list)  # hostnames whose nginx a node job reloaded
    nodes: dict[str, str] = field(default_factory=dict)  # task id -> the id of the node it runs on

    def as_json(self, service: str, *, mode: str) -> dict[str, object]:
        """What POST /api/proxy/reload answers: which tasks on which nodes were checked and reloaded."""
        return {
            "service": service,
            "mode": mode,
            "summary": self.summary(service),
            "checked": [{"task": t, "node": self.nodes.get(t)} for t in self.checked],
            "reloaded": [{"task": t, "node": self.nodes.get(t)} for t in self.signalled],
            "other_nodes": self.other_nodes,
            "force_updated": self.force_updated,
            "secrets": self.secrets,
        }

    def summary(self, service: str) -> str:
        parts = []
        if self.checked:
            parts.append(f"nginx -t passed in {len(self.checked)} task(s)")
        if self.signalled:
            parts.append(f"reloaded {len(self.signalled)} task(s) on this node with SIGHUP")
        if self.other_nodes:
            parts.append(f"checked and reloaded by a job on {', '.join(self.other_nodes)}")
        if self.secrets:
            parts.append(f"service updated (start-first) to {len(self.secrets)} new secret(s)")
        if self.force_updated:
            parts.append("tasks on other nodes: forced a rolling update")
        if not parts:
            parts.append("no running nginx task on this node")
        return f"{service}: " + "; ".join(parts)


def job_args(service: str, *, check_only: bool) -> list[str]:
    return ["webhook-server", "reload-proxy", "--service", service, "--this-node-only"] + (
        ["--check-only"] if check_only else []
    )


def _on_other_nodes(
    swarm: NginxSwarm, service: str, plan: ReloadPlan, *, job: NodeJob, local_node_id: str, check_only: bool
) -> list[JobResult]:
    nodes = sorted({t.node_id for t in plan.remote if t.node_id and t.node_id != local_node_id})
    if not nodes:
        return []
    results = swarm.run_on_nodes(job=job, args=job_args(service, check_only=check_only), nodes=nodes)
    failed = [r for r in results if not r.ok]
    if failed:
        what = "nginx -t failed" if check_only else "the reload failed"
        detail = "\n".join(f"{r.node}: {r.output.strip()}" for r in failed)
        names = ", ".join(r.node for r in failed)
        if check_only:
            raise ProxyConfigInvalid(f"{what} on {names} ({service}); nothing was reloaded:\n{detail}")
        done = [r.node for r in results if r.ok]
        raise ReloadError(f"{what} on {names} ({service}); reloaded on this node and {done or 'no other'}:\n{detail}")
    return results


def reload_by_signal(swarm: NginxSwarm, service: str, *, job: NodeJob | None = None) -> ReloadReport:
    local_node_id = swarm.local_node_id()
    plan = plan_reload(swarm.running_tasks(service), local_node_id=local_node_id)
    if job is not None:
        # Tasks here whose container is not known yet are starting: they read the new files as they start.
        plan = ReloadPlan(local=plan.local, remote=tuple(t for t in plan.remote if t.node_id != local_node_id))
    report = ReloadReport(nodes={t.task_id: t.node_id for t in plan.local})
    report.checked = _check_local(swarm, service, plan)
    if job is not None:
        _on_other_nodes(swarm, service, plan, job=job, local_node_id=local_node_id, check_only=True)
    _signal_local(swarm, service, plan, report)
    if job is not None:
        done = _on_other_nodes(swarm, service, plan, job=job, local_node_id=local_node_id, check_only=False)
        report.other_nodes = sorted(r.node for r in done)
    elif plan.force_update:
        # Not validated here (exec reaches only this node's containers): Swarm's update config and health
        # checks guard it, and a new task that fails to start is rolled back.
        log.info("%d task(s) of %s run on other nodes: forcing a rolling update", len(plan.remote), service)
        swarm.force_update(service)
        report.force_updated = True
    return report


def reload_this_node(swarm: NginxSwarm, service: str, *, check_only: bool) -> ReloadReport:
    """What a node job runs: check (and unless ``check_only``, reload) the tasks on this node only."""
    local_node_id = swarm.local_node_id()
    tasks = [t for t in swarm.running_tasks(service) if t.node_id == local_node_id and t.container_id]
    plan = ReloadPlan(local=tuple(tasks), remote=())
    report = ReloadReport(checked=_check_local(swarm, service, plan), nodes={t.task_id: t.node_id for t in tasks})
    if not check_only:
        _signal_local(swarm, service, plan, report)
    return report


def _check_local(swarm: NginxSwarm, service: str, plan: ReloadPlan) -> list[str]:
    checked: list[str] = []
    for task in plan.local:
        assert task.container_id is not None
        command = swarm.container_command(task.container_id)
        test = nginx_test_command(command)
        if test is None:
            raise ReloadError(
                f"cannot tell which config nginx runs in task {task.task_id} of {service}, so nothing was "
                f"reloaded: its command does not start nginx ({shlex.join(command)}). Make nginx the service's "
                "command (nginx -c FILE -g 'daemon off;'), after an entrypoint that ends in exec \"$@\" if any"
            )
        result = swarm.run_in_container(task.container_id, test)
        if not result.ok:
            raise ProxyConfigInvalid(
                f"nginx -t failed in task {task.task_id} of {service}; nothing was reloaded:\n{result.output.strip()}"
            )
        checked.append(task.task_id)
    return checked


def _signal_local(swarm: NginxSwarm, service: str, plan: ReloadPlan, report: ReloadReport) -> None:
    for task in plan.local:
        assert task.container_id is not None
        swarm.reload(task.container_id)
        report.signalled.append(task.task_id)
        log.info("sent SIGHUP to nginx in task %s of %s", task.task_id, service)


# ---- secrets mode ------------------------------------------------------------------------------------


def secret_name(service: str, lineage: str, file_name: str, data: bytes) -> str:
    """``SERVICE.LINEAGE.FILE.HASH``: one name per content, so a renewal always makes a new secret."""
    digest = hashlib.sha256(data).hexdigest()[:12]
    stem = file_name.removesuffix(".pem")
    name = _SECRET_NAME.sub("_", f"{service}.{lineage}.{stem}.{digest}")
    if len(name) > SECRET_NAME_MAX:
        # Keep the distinguishing tail (file and content hash); hash what had to go.
        head = hashlib.sha256(f"{service}.{lineage}".encode()).hexdigest()[:12]
        name = f"{head}.{stem}.{digest}"
    return name


def read_lineages(cert_dir: Path, lineages: Sequence[str]) -> dict[str, dict[str, bytes]]:
    """The certificate files of each lineage, checked to belong together (certificate matches key)."""
    files: dict[str, dict[str, bytes]] = {}
    for lineage in lineages:
        directory = cert_dir / lineage
        try:
            files[lineage] = {name: (directory / name).read_bytes() for name in CERT_FILES}
        except OSError as e:
            raise ReloadError(f"cannot read {directory}: {e.strerror}; nothing was changed") from None
        _check_pair(lineage, files[lineage])
    return files


def _check_pair(lineage: str, files: Mapping[str, bytes]) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "fullchain.pem", Path(tmp) / "privkey.pem"
        cert.write_bytes(files["fullchain.pem"])
        key.write_bytes(files["privkey.pem"])
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            raise ReloadError(
                f"lineage {lineage}: certificate and key do not belong together ({e.reason}); nothing was changed"
            ) from None


def reload_by_secrets(swarm: NginxSwarm, service: str, *, config: ProxyConfig, cert_dir: Path) -> ReloadReport:
    """New versioned secrets for every lineage the config names, mounted where nginx.conf reads them."""
    files = read_lineages(cert_dir, config.lineages())
    report = ReloadReport()
    targets: dict[str, tuple[str, str]] = {}
    for lineage, contents in files.items():
        for file_name, data in contents.items():
            target = f"{config.paths.certificates}/{lineage}/{file_name}"
            name = secret_name(service, lineage, file_name, data)
            labels = {"webhook-server.proxy.service": service, "webhook-server.proxy.target": target}
            secret_id = swarm.ensure_secret(name, data, labels)
            targets[target] = (secret_id, name)
            report.secrets[target] = name
    swarm.use_secrets(service, targets)
    log.info("%s now uses secrets %s", service, ", ".join(sorted(report.secrets.values())))
    return report


def reload_proxy(
    swarm: NginxSwarm,
    service: str,
    *,
    mode: Mode = "signal",
    config: ProxyConfig | None = None,
    cert_dir: Path | None = None,
    job: NodeJob | None = None,
) -> ReloadReport:
    if mode == "signal":
        return reload_by_signal(swarm, service, job=job)
    if config is None or cert_dir is None:
        raise ReloadError("secrets mode needs the proxy: section (--rules) and the certificates (--cert-dir)")
    return reload_by_secrets(swarm, service, config=config, cert_dir=cert_dir)
