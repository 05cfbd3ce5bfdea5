"""The shipped Dockerfile, built for real and run as a Swarm service that deploys another service.

The base is Debian bookworm from debootstrap (Python 3.11), docker-imported, since nothing can be pulled
from Docker Hub here. The image is built once for the module; the build installs the package from PyPI
with the host's CA bundle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
from docker.models.containers import Container
from docker.types import Mount, SecretReference

from tests.bed import RootfsUnavailable, SwarmBed, bed_required, debootstrap, free_port, wait_for
from tests.e2e.test_rollout import assert_all_tasks_run, rules_for
from tests.nginx_bed import parse_nginx_v
from tests.server import API_TOKEN, WEBHOOK_TOKEN, documented_payload

pytestmark = pytest.mark.swarm

REPO = Path(__file__).resolve().parents[2]
STACK_FILE = REPO / "deploy" / "stack.yml"
CONTEXT_FILES = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "deploy_rules.yaml",
    "deploy/entrypoint.sh",
)
APP_UID = 10001  # the Dockerfile's default APP_UID
HOOKS = "hooks.test"


@dataclass(frozen=True)
class Images:
    receiver: str
    nginx: str
    nginx_version: str
    openssl_version: str


@pytest.fixture(scope="module")
def images(swarm_bed: SwarmBed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    """The receiver built from the Dockerfile on a bookworm base, and bookworm's nginx as the stack's nginx."""
    root = tmp_path_factory.mktemp("receiver-image")
    try:
        rootfs = debootstrap(
            root / "rootfs", suite="bookworm", include="python3,python3-venv,ca-certificates,nginx-light"
        )
    except RootfsUnavailable as e:
        if bed_required():
            pytest.fail(f"cannot make the base image: {e}")
        pytest.skip(f"cannot make the base image: {e}")
    nginx_v = subprocess.run(["chroot", str(rootfs), "nginx", "-V"], capture_output=True, text=True, check=True)
    build = parse_nginx_v(nginx_v.stderr)
    tarball = root / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    shutil.rmtree(rootfs)
    base = swarm_bed.import_rootfs(tarball, f"{swarm_bed.registry}/base/python3:bookworm")
    nginx = swarm_bed.import_rootfs(
        tarball, f"{swarm_bed.registry}/base/nginx:bookworm", changes=['CMD ["nginx", "-g", "daemon off;"]']
    )
    tarball.unlink()

    context = root / "context"
    context.mkdir()
    for name in CONTEXT_FILES:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, context / name)
    shutil.copytree(REPO / "webhook_server", context / "webhook_server", ignore=shutil.ignore_patterns("__pycache__"))
    ca_bundle = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    args = {"BASE": base}
    if ca_bundle.exists():
        shutil.copy(ca_bundle, context / "build-ca.pem")
        args["PIP_CERT"] = "/app/build-ca.pem"
    tag = f"{swarm_bed.registry}/acme/webhook-server:test"
    try:
        swarm_bed.client.images.build(
            path=str(context), tag=tag, buildargs=args, network_mode="host", rm=True, forcerm=True
        )
    except docker.errors.BuildError as e:
        output = "".join(str(line.get("stream", line.get("error", ""))) for line in e.build_log)
        pytest.fail(f"docker build failed: {e.msg}\n{output[-3000:]}")
    swarm_bed.push(tag.rpartition(":")[0], "test")
    yield Images(
        receiver=tag,
        nginx=nginx,
        nginx_version=".".join(map(str, build.nginx)),
        openssl_version=".".join(map(str, build.openssl)),
    )


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
