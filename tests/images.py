"""The receiver's image, built for real from the shipped Dockerfile once per test session.

The base is Debian bookworm from debootstrap (Python 3.11, and nginx-light so that the same rootfs also
gives the tests an nginx image), docker-imported into the one-node bed, since nothing can be pulled from
Docker Hub here; the build installs the package from PyPI with the host's CA bundle. Other beds (the
multi-node swarm) get the built image through ``copy_image``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from tests.bed import SwarmBed, debootstrap
from tests.nginx_bed import parse_nginx_v

REPO = Path(__file__).resolve().parents[1]
CONTEXT_FILES = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "deploy_rules.yaml",
    "deploy/entrypoint.sh",
)


class BuildFailed(Exception):
    pass


@dataclass(frozen=True)
class Images:
    receiver: str  # the Dockerfile's image, in the one-node bed's registry
    nginx: str  # bookworm's nginx-light
    nginx_version: str
    openssl_version: str


def build_images(bed: SwarmBed, root: Path) -> Images:
    """Raises RootfsUnavailable when the base cannot be made, BuildFailed when docker build fails."""
    rootfs = debootstrap(root / "rootfs", suite="bookworm", include="python3,python3-venv,ca-certificates,nginx-light")
    nginx_v = subprocess.run(["chroot", str(rootfs), "nginx", "-V"], capture_output=True, text=True, check=True)
    build = parse_nginx_v(nginx_v.stderr)
    tarball = root / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    shutil.rmtree(rootfs)
    base = bed.import_rootfs(tarball, f"{bed.registry}/base/python3:bookworm")
    nginx = bed.import_rootfs(
        tarball, f"{bed.registry}/base/nginx:bookworm", changes=['CMD ["nginx", "-g", "daemon off;"]']
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
    tag = f"{bed.registry}/acme/webhook-server:test"
    try:
        bed.client.images.build(path=str(context), tag=tag, buildargs=args, network_mode="host", rm=True, forcerm=True)
    except docker.errors.BuildError as e:
        output = "".join(str(line.get("stream", line.get("error", ""))) for line in e.build_log)
        raise BuildFailed(f"docker build failed: {e.msg}\n{output[-3000:]}") from None
    bed.push(tag.rpartition(":")[0], "test")
    return Images(
        receiver=tag,
        nginx=nginx,
        nginx_version=".".join(map(str, build.nginx)),
        openssl_version=".".join(map(str, build.openssl)),
    )


def copy_image(source: docker.DockerClient, image: str, target: docker.DockerClient, tag: str) -> str:
    """``image`` from one daemon into another, tagged ``tag`` there (docker save | docker load)."""
    loaded = target.images.load(b"".join(source.images.get(image).save(named=True)))
    loaded[0].tag(tag)
    return tag
