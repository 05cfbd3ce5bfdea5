"""The shipped Dockerfile and deploy/stack.yml, built and deployed for real on the Swarm bed.

The image is built once per session (``tests/images.py``, the ``images`` fixture).

The bed's dockerd runs without iptables, so no published port forwards anything: the service made as the
Dockerfile's comment says uses the host network on 127.0.0.1, and the stack (whose receiver publishes no
port, and whose nginx publishes in host mode) is reached from inside nginx's network namespace (nsenter),
as a client on that node's loopback would reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
from docker.models.containers import Container
from docker.types import Mount, SecretReference

from tests.bed import SwarmBed, docker_cli, free_port, wait_for
from tests.e2e.test_rollout import assert_all_tasks_run, rules_for
from tests.images import Images
from tests.nginx_bed import self_signed
from tests.server import API_TOKEN, WEBHOOK_TOKEN, documented_payload

pytestmark = pytest.mark.swarm

REPO = Path(__file__).resolve().parents[2]
STACK_FILE = REPO / "deploy" / "stack.yml"
APP_UID = 10001  # the Dockerfile's default APP_UID
HOOKS = "hooks.test"


# ---- looking into the task containers ------------------------------------------------------------


def service_containers(bed: SwarmBed, service: str) -> list[Container]:
    return list(bed.client.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"}))


def healthy_container(bed: SwarmBed, service: str) -> Container:
    def healthy() -> Container | None:
        containers = service_containers(bed, service)
        if len(containers) == 1 and containers[0].attrs["State"].get("Health", {}).get("Status") == "healthy":
            return containers[0]
        return None

    found: Container = wait_for(healthy, timeout=90, interval=0.5, what=f"{service}'s container to report healthy")
    return found


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: frozenset[int]
    cap_eff: int


def identity(pid: int) -> Identity:
    """The process's real uid, gid, supplementary groups and effective capabilities (host pid)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Identity(
        uid=int(fields["Uid"].split()[0]),
        gid=int(fields["Gid"].split()[0]),
        groups=frozenset(int(g) for g in fields["Groups"].split()),
        cap_eff=int(fields["CapEff"].strip(), 16),
    )


def server_processes(container: Container) -> dict[int, Identity]:
    """Host pid → identity of every process in the container (docker top lists host pids)."""
    top = container.top(ps_args="-o pid")
    return {int(row[0]): identity(int(row[0])) for row in top["Processes"]}


def gunicorn_pids(container: Container) -> tuple[int, set[int]]:
    """The gunicorn master (the container's PID 1) and its workers, as host pids."""
    master = int(container.attrs["State"]["Pid"])
    workers = {
        int(p) for task in Path(f"/proc/{master}/task").iterdir() for p in (task / "children").read_text().split()
    }
    return master, workers


def assert_unprivileged(container: Container, socket_gid: int) -> None:
    master, workers = gunicorn_pids(container)
    assert len(workers) == 2, f"expected gunicorn's master and 2 workers, found workers {workers}"
    processes = server_processes(container)
    assert {master, *workers} <= set(processes), processes
    for pid, who in processes.items():
        assert who.uid == APP_UID and who.gid == APP_UID, f"pid {pid} runs as {who}"
        assert socket_gid in who.groups, f"pid {pid} lacks the socket's group {socket_gid}: {who}"
        assert who.cap_eff == 0, f"pid {pid} has capabilities: {who}"


def sighup(container: Container, socket_gid: int) -> None:
    """SIGHUP the container and wait until gunicorn's master (the same one) has replaced both workers."""
    master, old_workers = gunicorn_pids(container)
    container.kill(signal="SIGHUP")
    wait_for(
        lambda: (w := gunicorn_pids(container)[1]) and len(w) == 2 and not w & old_workers,
        timeout=30,
        what="gunicorn to replace both workers after SIGHUP",
    )
    assert gunicorn_pids(container)[0] == master
    assert_unprivileged(container, socket_gid)


def exec_cli(container: Container, *args: str) -> str:
    """``docker exec CONTAINER webhook-server ARGS`` as root, the default, as an operator would run it."""
    result = container.exec_run(["webhook-server", *args])
    output = bytes(result.output).decode(errors="replace")
    assert result.exit_code == 0, output
    return output


def socket_gid(bed: SwarmBed) -> int:
    return (bed.root / "docker.sock").stat().st_gid


# ---- the Dockerfile's own example: docker service create ------------------------------------------


def test_the_image_serves_as_a_swarm_service_and_deploys(
    bed: SwarmBed, images: Images, unique: str, tmp_path: Path
) -> None:
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    new = bed.make_image(repo, "1.1.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    # Bind-mounted for the container's uid 10001: pytest's temp dirs are 0700.
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(mode=0o755)
    rules_file = rules_dir / "deploy_rules.yaml"
    rules_file.write_text(rules_for(bed, repo, unique))
    rules_file.chmod(0o644)
    secrets = [
        bed.client.secrets.create(name=f"{unique}_hook", data=WEBHOOK_TOKEN.encode()),
        bed.client.secrets.create(name=f"{unique}_api", data=API_TOKEN.encode()),
    ]
    port = free_port()
    receiver = f"{unique}_receiver"
    try:
        bed.client.services.create(
            images.receiver,
            name=receiver,
            env=[
                f"WEBHOOK_BIND=127.0.0.1:{port}",
                f"WEBHOOK_TOKEN_FILE=/run/secrets/{unique}_hook",
                f"WEBHOOK_API_TOKEN_FILE=/run/secrets/{unique}_api",
            ],
            secrets=[SecretReference(s.id, s.name) for s in secrets],
            mounts=[
                Mount("/var/run/docker.sock", str(bed.root / "docker.sock"), type="bind"),
                Mount("/etc/webhook-server", str(rules_dir), type="bind", read_only=True),
            ],
            networks=["host"],
        )
        bed.services.add(receiver)
        url = f"http://127.0.0.1:{port}"
        container = healthy_container(bed, receiver)
        assert_unprivileged(container, socket_gid(bed))

        response = requests.post(
            f"{url}/hooks/dockerhub/{WEBHOOK_TOKEN}", json=documented_payload(repo, "1.1.0"), timeout=10
        )
        assert response.status_code == 202, response.text
        dep = wait_finished(url, response.json()["deployments"][0]["id"])
        assert dep["state"] == "succeeded", dep
        assert_all_tasks_run(bed, unique, f"{new}@{bed.registry_digest(new)}", replicas=1)
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
        # The journal is where the CLI looks too, and the CLI (as root by default) leaves it the server's.
        history = exec_cli(container, "history")
        assert any(unique in line and "succeeded" in line for line in history.splitlines()), history
        owners = container.exec_run(["sh", "-c", "stat -c '%u %n' /var/lib/webhook-server/*"])
        assert {line.split()[0] for line in owners.output.decode().splitlines()} == {str(APP_UID)}, owners.output

        check_sighup_rereads_rules(bed, container, url, repo, unique, rules_file)
    finally:
        bed.remove_service(receiver)
        wait_for(lambda: not service_containers(bed, receiver), timeout=30, what="the receiver to stop")
        for secret in secrets:
            secret.remove()


def wait_finished(url: str, dep_id: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}

    def finished() -> dict[str, Any] | None:
        dep: dict[str, Any] = requests.get(f"{url}/api/deployments/{dep_id}", headers=headers, timeout=10).json()
        return dep if dep["state"] not in ("queued", "running") else None

    result: dict[str, Any] = wait_for(finished, timeout=120, interval=0.5, what="the deployment")
    return result


def check_sighup_rereads_rules(
    bed: SwarmBed, container: Container, url: str, repo: str, service: str, rules_file: Path
) -> None:
    """SIGHUP to the container (its PID 1 is gunicorn's master, through the entrypoint's execs) starts new
    workers, which read the rules file again. The edit keeps the file's mtime, so the per-request check for
    a changed file cannot be what picks it up: only the new workers can."""
    renamed = f"{repo}-renamed"
    before = rules_file.stat()
    staged = rules_file.with_suffix(".new")
    staged.write_text(rules_file.read_text().replace(f"repository: {repo}\n", f"repository: {renamed}\n"))
    staged.chmod(0o644)
    os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(staged, rules_file)
    bed.make_image(repo, "1.2.0")
    push = documented_payload(renamed, "1.2.0")

    ignored = requests.post(f"{url}/hooks/dockerhub/{WEBHOOK_TOKEN}", json=push, timeout=10)
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored", ignored.text

    sighup(container, socket_gid(bed))
    accepted = requests.post(f"{url}/hooks/dockerhub/{WEBHOOK_TOKEN}", json=push, timeout=10)
    assert accepted.status_code == 202, accepted.text
    dep = wait_finished(url, accepted.json()["deployments"][0]["id"])
    assert dep["state"] == "succeeded" and dep["service"] == service, dep


# ---- deploy/stack.yml, as shipped ----------------------------------------------------------------

# Runs under nsenter in a task's network namespace: one HTTPS request to 127.0.0.1 with the given SNI and
# Host, verified against the given CA; prints the status and body as JSON.
HTTPS_CLIENT = """
import http.client, json, socket, ssl, sys
a = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile=a["ca"])
class Conn(http.client.HTTPSConnection):
    def connect(self):
        raw = socket.create_connection(("127.0.0.1", a["port"]), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=a["host"])
conn = Conn(a["host"], a["port"], timeout=10)
body = json.dumps(a["json"]).encode() if a["json"] is not None else None
headers = dict(a["headers"], **({"Content-Type": "application/json"} if body else {}))
conn.request(a["method"], a["path"], body=body, headers=headers)
r = conn.getresponse()
print(json.dumps({"status": r.status, "body": r.read().decode(errors="replace")}))
"""


@dataclass
class StackClient:
    """HTTPS to the stack's nginx, from inside its task's network namespace."""

    container: Container
    ca: Path
    port: int = 443
    last: str = ""

    def request(
        self, method: str, path: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        pid = int(self.container.attrs["State"]["Pid"])
        args = {"ca": str(self.ca), "port": self.port, "host": HOOKS, "method": method, "path": path,
                "json": json_body, "headers": headers or {}}  # fmt: skip
        proc = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", HTTPS_CLIENT, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise ConnectionError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
        answer = json.loads(proc.stdout)
        return int(answer["status"]), str(answer["body"])

    def answers(self, path: str) -> bool:
        try:
            status, body = self.request("GET", path)
        except ConnectionError as e:
            self.last = str(e)
            return False
        self.last = f"{status} {body}"
        return status == 200


def proxy_rules(bed: SwarmBed, repo: str, service: str, images: Images) -> str:
    """The receiver's rules with the proxy: section render-nginx reads (nginx/README.md), for this stack."""
    return rules_for(bed, repo, service) + (
        "proxy:\n"
        f'  nginx_version: "{images.nginx_version}"\n'
        f'  openssl_version: "{images.openssl_version}"\n'
        "  webhook:\n"
        f"    server_name: {HOOKS}\n"
        "    upstream: {host: webhook, port: 9000}\n"
    )


def remove_stack(bed: SwarmBed, cli: str, env: dict[str, str], name: str) -> list[str]:
    """docker stack rm, then whatever it could not remove yet (a network still in use, the volume).

    Returns what is left (empty when clean)."""
    subprocess.run([cli, "stack", "rm", name], env=env, capture_output=True, text=True, timeout=60, check=False)
    label = {"label": f"com.docker.stack.namespace={name}"}
    wait_for(
        lambda: not bed.client.services.list(filters=label) and not bed.client.containers.list(all=True, filters=label),
        timeout=60,
        interval=0.5,
        what=f"stack {name}'s services and containers to go",
    )
    volume = f"{name}_journal"
    for kind in (bed.client.networks, bed.client.configs, bed.client.volumes):
        found = {item.id: item for item in kind.list(filters=label)}
        if kind is bed.client.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                item = bed.client.volumes.get(volume)
                found[item.id] = item
        for item in found.values():
            with contextlib.suppress(docker.errors.NotFound):
                item.remove()
    left = [f"network {n.name}" for n in bed.client.networks.list(filters=label)]
    left += [f"config {c.name}" for c in bed.client.configs.list(filters=label)]
    left += [f"volume {v.name}" for v in bed.client.volumes.list(filters=label)]
    with contextlib.suppress(docker.errors.NotFound):
        left.append(f"volume {bed.client.volumes.get(volume).name}")
    return left


def test_the_stack_file_deploys_receiver_and_nginx(bed: SwarmBed, images: Images, unique: str, tmp_path: Path) -> None:
    cli = docker_cli()
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    new = bed.make_image(repo, "1.1.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)

    files = tmp_path / "files"
    files.mkdir(mode=0o755)
    rules = files / "deploy_rules.yaml"
    rules.write_text(proxy_rules(bed, repo, unique, images))
    nginx_conf = files / "nginx.conf"
    render = subprocess.run(
        [sys.executable, "-m", "webhook_server", "render-nginx", "--rules", str(rules), "--out", str(nginx_conf)],
        capture_output=True,
        text=True,
    )
    assert render.returncode == 0, render.stderr
    letsencrypt, acme = files / "letsencrypt", files / "acme"
    ca, _ = self_signed(letsencrypt / "live" / HOOKS, [HOOKS])
    acme.mkdir()

    name = f"{unique}s"
    secrets = {
        "WEBHOOK_TOKEN_SECRET": bed.client.secrets.create(name=f"{name}_hook", data=WEBHOOK_TOKEN.encode()),
        "WEBHOOK_API_TOKEN_SECRET": bed.client.secrets.create(name=f"{name}_api", data=API_TOKEN.encode()),
    }
    (tmp_path / "docker-config").mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DOCKER_HOST": bed.docker_host,
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),  # not this host's logins
        "WEBHOOK_IMAGE": images.receiver,
        "NGINX_IMAGE": images.nginx,
        "WEBHOOK_RULES_FILE": str(rules),
        "WEBHOOK_RULES_VERSION": unique,
        "NGINX_CONF": str(nginx_conf),
        "NGINX_CONF_VERSION": unique,
        "LETSENCRYPT_DIR": str(letsencrypt),
        "ACME_WEBROOT": str(acme),
        "DOCKER_SOCKET": str(bed.root / "docker.sock"),
        # Host-mode ports: nothing forwards them on this bed (no iptables); free ones keep them apart.
        "HTTP_PORT": str(free_port()),
        "HTTPS_PORT": str(free_port()),
        **{var: secret.name for var, secret in secrets.items()},
    }
    try:
        deployed = subprocess.run(
            [cli, "stack", "deploy", "-c", str(STACK_FILE), name], env=env, capture_output=True, text=True, timeout=120
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr

        receiver = healthy_container(bed, f"{name}_webhook")
        assert_unprivileged(receiver, socket_gid(bed))
        nginx_container = wait_for(
            lambda: (c := service_containers(bed, f"{name}_nginx")) and c[0],
            timeout=60,
            interval=0.5,
            what="nginx's container",
        )
        client = StackClient(nginx_container, ca)
        # nginx answers /healthz from the receiver: the config, the certificate, the overlay network and
        # Docker's DNS for the service name all work.
        try:
            wait_for(lambda: client.answers("/healthz"), timeout=60, interval=0.5, what="nginx to reach the receiver")
        except TimeoutError as e:
            tail = nginx_container.logs(tail=20).decode(errors="replace")
            raise AssertionError(f"{e}; last answer: {client.last}; nginx's log:\n{tail}") from None

        status, body = client.request(
            "POST", f"/hooks/dockerhub/{WEBHOOK_TOKEN}", json_body=documented_payload(repo, "1.1.0")
        )
        assert status == 202, body
        dep_id = json.loads(body)["deployments"][0]["id"]
        headers = {"Authorization": f"Bearer {API_TOKEN}"}

        def finished() -> dict[str, Any] | None:
            status, body = client.request("GET", f"/api/deployments/{dep_id}", headers=headers)
            dep: dict[str, Any] = json.loads(body)
            return dep if status == 200 and dep["state"] not in ("queued", "running") else None

        dep = wait_for(finished, timeout=120, interval=0.5, what="the deployment")
        assert dep["state"] == "succeeded", dep
        assert_all_tasks_run(bed, unique, f"{new}@{bed.registry_digest(new)}", replicas=1)
        # The receiver believed nginx's X-Forwarded-For (PROXY_SUBNET): the push came from nginx's loopback.
        logs = receiver.logs().decode(errors="replace")
        assert f"push {repo}:1.1.0 from 127.0.0.1 accepted" in logs, logs[-2000:]
        history = exec_cli(receiver, "history", "--service", unique)
        assert any(unique in line and "succeeded" in line for line in history.splitlines()), history
        # The stack's rules are a Swarm config, which never changes in a running task (a new version is a
        # new task); SIGHUP still renews the workers, which keep serving through nginx as the same user.
        sighup(receiver, socket_gid(bed))
        assert client.request("GET", "/readyz")[0] == 200
    finally:
        left = remove_stack(bed, cli, env, name)
        for secret in secrets.values():
            with contextlib.suppress(docker.errors.NotFound):
                secret.remove()
    assert not left, f"the stack left these behind: {left}"
