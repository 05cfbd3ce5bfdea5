"""The shipped Dockerfile, built for real and run as a Swarm service that deploys another service.

The base is Debian bookworm from debootstrap (Python 3.11), docker-imported, since nothing can be pulled
from Docker Hub here. The build installs the package from PyPI with the host's CA bundle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
import requests
from docker.types import Mount, SecretReference

from tests.bed import RootfsUnavailable, SwarmBed, bed_required, debootstrap, free_port, wait_for
from tests.e2e.test_rollout import assert_all_tasks_run, rules_for
from tests.server import API_TOKEN, WEBHOOK_TOKEN, documented_payload

pytestmark = pytest.mark.swarm

REPO = Path(__file__).resolve().parents[2]
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "deploy_rules.yaml")


@pytest.fixture(scope="module")
def receiver_image(swarm_bed: SwarmBed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("receiver-image")
    try:
        rootfs = debootstrap(root / "rootfs", suite="bookworm", include="python3,python3-venv,ca-certificates")
    except RootfsUnavailable as e:
        if bed_required():
            pytest.fail(f"cannot make the base image: {e}")
        pytest.skip(f"cannot make the base image: {e}")
    tarball = root / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    shutil.rmtree(rootfs)
    base = swarm_bed.import_rootfs(tarball, f"{swarm_bed.registry}/base/python3:bookworm")
    tarball.unlink()

    context = root / "context"
    context.mkdir()
    for name in CONTEXT_FILES:
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
    yield tag


def test_the_image_serves_as_a_swarm_service_and_deploys(
    bed: SwarmBed, receiver_image: str, unique: str, tmp_path: Path
) -> None:
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    new = bed.make_image(repo, "1.1.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "deploy_rules.yaml").write_text(rules_for(bed, repo, unique))
    secrets = [
        bed.client.secrets.create(name=f"{unique}_hook", data=WEBHOOK_TOKEN.encode()),
        bed.client.secrets.create(name=f"{unique}_api", data=API_TOKEN.encode()),
    ]
    port = free_port()
    receiver = f"{unique}_receiver"
    try:
        bed.client.services.create(
            receiver_image,
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

        def healthy() -> bool:
            containers = bed.client.containers.list(filters={"label": f"com.docker.swarm.service.name={receiver}"})
            return bool(containers) and containers[0].attrs["State"].get("Health", {}).get("Status") == "healthy"

        wait_for(healthy, timeout=90, interval=0.5, what="the receiver's container to report healthy")
        response = requests.post(
            f"{url}/hooks/dockerhub/{WEBHOOK_TOKEN}", json=documented_payload(repo, "1.1.0"), timeout=10
        )
        assert response.status_code == 202, response.text
        dep_id = response.json()["deployments"][0]["id"]
        headers = {"Authorization": f"Bearer {API_TOKEN}"}

        def finished() -> dict[str, object] | None:
            dep: dict[str, object] = requests.get(f"{url}/api/deployments/{dep_id}", headers=headers, timeout=10).json()
            return dep if dep["state"] not in ("queued", "running") else None

        dep = wait_for(finished, timeout=120, interval=0.5, what="the deployment")
        assert dep["state"] == "succeeded", dep
        assert_all_tasks_run(bed, unique, f"{new}@{bed.registry_digest(new)}", replicas=1)
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    finally:
        bed.remove_service(receiver)
        wait_for(
            lambda: not bed.client.containers.list(filters={"label": f"com.docker.swarm.service.name={receiver}"}),
            timeout=30,
            what="the receiver to stop",
        )
        for secret in secrets:
            secret.remove()
