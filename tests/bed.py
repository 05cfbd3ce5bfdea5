"""The real test bed: a private dockerd in swarm mode, a real registry, and images made offline.

Everything lives under one temp dir and is stopped by pid. Nothing is pulled from the internet: images are
``docker import``ed from a tiny rootfs made of busybox-static and pushed to the local registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import docker
import docker.errors
import pytest
import requests
from docker.types import Healthcheck, ServiceMode, UpdateConfig

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "true", "false", "cat", "echo", "httpd", "wget", "ls", "kill", "env")
BOOT_TIMEOUT = 60.0
REQUIRED_BINARIES = ("dockerd", "docker-registry", "htpasswd")

# Image behaviours. Each shell traps TERM so a task stops at once instead of waiting out the grace period.
LONG_RUNNING = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
CRASHING = ["/bin/sh", "-c", "sleep 1; exit 3"]
# A check's timeout is generous: on a loaded machine (two test workers on two cores) starting /bin/true in
# the container took more than 1 s, and Swarm rolled a healthy image back ("Health check exceeded timeout").
# The unhealthy image still fails its first check at once, by its exit code.
HEALTHY = Healthcheck(test=["CMD", "/bin/true"], interval=500_000_000, timeout=10_000_000_000, retries=3)
UNHEALTHY = Healthcheck(test=["CMD", "/bin/false"], interval=500_000_000, timeout=10_000_000_000, retries=1)


class BedUnavailable(RuntimeError):
    """The bed cannot start on this machine (not root, binaries missing, daemon did not come up)."""


def bed_required() -> bool:
    """Under CI (or REQUIRE_SWARM=1) a bed that cannot start is a failure, never a skip."""
    return bool(os.environ.get("CI")) or os.environ.get("REQUIRE_SWARM") == "1"


def unavailable(message: str) -> NoReturn:
    """Skip a test whose real part is missing here; under CI or REQUIRE_SWARM=1, fail it instead."""
    if bed_required():
        pytest.fail(f"required here (CI / REQUIRE_SWARM=1): {message}")
    pytest.skip(message)


def docker_cli() -> str:
    """Debian's docker.io client (what scripts/test installs), else whatever docker is on PATH."""
    found = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    if found is None:
        unavailable("no docker CLI (apt-get install docker.io)")
    return found


def missing_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "the Docker test bed needs root (dockerd)"
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if not BUSYBOX.exists():
        missing.append(str(BUSYBOX) + " (busybox-static)")
    if missing:
        return "missing: " + ", ".join(missing) + " (install docker.io docker-registry busybox-static apache2-utils)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    """A UDP port free on every address, in the range Swarm accepts for its data path (1024-49151)."""
    rng = random.Random(f"{os.getpid()}-{time.monotonic_ns()}")
    for _ in range(200):
        port = rng.randrange(20000, 40000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise BedUnavailable("no free UDP port for the swarm's data path")


def wait_for(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc), so teardown can check that none survive."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                text = (task / "children").read_text().split()
                kids = [int(k) for k in text]
                found.extend(kids)
                queue.extend(kids)
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` runs (zombies awaiting their parent's wait count as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def busybox_rootfs_tar(dest: Path) -> Path:
    """A tarball of busybox-static plus applet symlinks: enough rootfs for shells, sleep and httpd."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "etc", "www"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
    dest.write_bytes(buf.getvalue())
    return dest


@dataclass(kw_only=True)
class Bed:
    """What every bed has: a registry, an image factory and service helpers on one manager's client.

    The one-node bed and the multi-node bed (tests/multinode.py) differ only in how the daemons start and
    where the registries listen (``registry_host``).
    """

    root: Path
    registry: str
    client: docker.DockerClient
    registry_proc: subprocess.Popen[bytes]
    rootfs: Path
    registry_host: str = "127.0.0.1"
    services: set[str] = field(default_factory=set)
    boot_seconds: float = 0.0

    # ---- images -------------------------------------------------------------------------------
    def import_rootfs(self, tar_path: Path, ref: str, *, changes: Sequence[str] = ()) -> str:
        """``docker import`` a rootfs tarball as ``ref`` (REGISTRY/name:tag) and push it."""
        repository, _, tag = ref.rpartition(":")
        self.client.api.import_image(src=str(tar_path), repository=repository, tag=tag, changes=list(changes))
        self.push(repository, tag)
        return ref

    def push(self, repository: str, tag: str) -> None:
        for line in self.client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise RuntimeError(f"push {repository}:{tag} failed: {line['error']}")

    def make_image(
        self,
        name: str,
        tag: str,
        *,
        kind: str = "long",
        cmd: Sequence[str] | None = None,
        healthcheck: Healthcheck | str | None = "default",
    ) -> str:
        """Make and push ``REGISTRY/name:tag``. ``kind``: long (healthy), crash (exits 3), unhealthy."""
        if cmd is None:
            cmd = CRASHING if kind == "crash" else LONG_RUNNING
        if healthcheck == "default":
            healthcheck = UNHEALTHY if kind == "unhealthy" else HEALTHY
        changes = [f"CMD {json.dumps(list(cmd))}", f"ENV IMAGE_TAG={tag}", f"LABEL bed.kind={kind}"]
        if isinstance(healthcheck, Healthcheck):
            test = json.dumps(healthcheck["Test"][1:])
            changes.append(
                f"HEALTHCHECK --interval={healthcheck['Interval'] // 1_000_000}ms "
                f"--timeout={healthcheck['Timeout'] // 1_000_000}ms --retries={healthcheck['Retries']} "
                f"CMD {test}"
            )
        return self.import_rootfs(self.rootfs, f"{self.registry}/{name}:{tag}", changes=changes)

    def registry_digest(self, ref: str) -> str:
        """The registry's manifest digest for ``ref``, asked over HTTP (independently of docker-py)."""
        name, _, tag = ref.removeprefix(self.registry + "/").rpartition(":")
        req = urllib.request.Request(
            f"http://{self.registry}/v2/{name}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(resp.headers["Docker-Content-Digest"])

    # ---- services -----------------------------------------------------------------------------
    def create_service(
        self,
        name: str,
        image: str,
        *,
        replicas: int = 2,
        mode: str = "replicated",
        update_config: UpdateConfig | None = None,
        wait: bool = True,
        **kwargs: object,
    ) -> docker.models.services.Service:
        service_mode = ServiceMode("global") if mode == "global" else ServiceMode("replicated", replicas)
        service = self.client.services.create(
            image, name=name, mode=service_mode, update_config=update_config, **kwargs
        )
        self.services.add(name)
        if wait:
            expected = self.schedulable_nodes() if mode == "global" else replicas
            wait_for(
                lambda: len(self.running_tasks(name)) == expected,
                timeout=60,
                what=f"{expected} running task(s) of {name}",
            )
        return service

    def schedulable_nodes(self) -> int:
        """Nodes that take tasks now (a global service runs one task on each)."""
        nodes = self.client.nodes.list()
        return sum(
            1 for n in nodes if n.attrs["Status"]["State"] == "ready" and n.attrs["Spec"]["Availability"] == "active"
        )

    def running_tasks(self, name: str) -> list[dict[str, object]]:
        service = self.client.services.get(name)
        return [t for t in service.tasks({"desired-state": "running"}) if t["Status"]["State"] == "running"]

    def remove_service(self, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.services.get(name).remove()
        self.services.discard(name)

    def remove_all_services(self) -> None:
        for name in list(self.services):
            self.remove_service(name)

    # ---- a private registry ------------------------------------------------------------------
    @contextlib.contextmanager
    def private_registry(self, user: str, password: str) -> Iterator[str]:
        """A second registry that needs ``user``/``password`` (htpasswd, bcrypt); yields HOST:PORT."""
        root = Path(tempfile.mkdtemp(prefix="private-", dir=self.root))
        subprocess.run(["htpasswd", "-Bbc", str(root / "htpasswd"), user, password], check=True, capture_output=True)
        proc, address = start_registry(root, self.registry_host, auth=root / "htpasswd")
        try:
            yield address
        finally:
            stop_process(proc)

    def push_private(self, ref: str, user: str, password: str, *, changes: Sequence[str] = ()) -> str:
        repository, _, tag = ref.rpartition(":")
        self.client.api.import_image(src=str(self.rootfs), repository=repository, tag=tag, changes=list(changes))
        auth = {"username": user, "password": password}
        for line in self.client.images.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in line:
                raise RuntimeError(f"push {ref} failed: {line['error']}")
        # Forget the image locally so that a deployment really has to pull it with credentials.
        self.client.images.remove(ref, force=True)
        return ref

    # ---- many tags fast -----------------------------------------------------------------------
    def publish_tags(self, ref: str, tags: Sequence[str]) -> dict[str, str]:
        """Publish ``tags`` of ref's repository, each a distinct image (its config names the tag), through
        the registry's HTTP API: the layer is shared, so each tag costs one small blob and one manifest.
        Returns tag -> manifest digest."""
        name = ref.removeprefix(self.registry + "/").rpartition(":")[0]
        base = f"http://{self.registry}/v2/{name}"
        manifest_type = "application/vnd.docker.distribution.manifest.v2+json"
        session = requests.Session()
        manifest = session.get(
            f"{base}/manifests/{ref.rpartition(':')[2]}", headers={"Accept": manifest_type}, timeout=10
        )
        manifest.raise_for_status()
        template = manifest.json()
        config = session.get(f"{base}/blobs/{template['config']['digest']}", timeout=10).json()
        digests = {}
        for tag in tags:
            config["config"]["Env"] = [e for e in config["config"].get("Env") or [] if not e.startswith("IMAGE_TAG=")]
            config["config"]["Env"].append(f"IMAGE_TAG={tag}")
            blob = json.dumps(config).encode()
            blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            upload = session.post(f"{base}/blobs/uploads/", timeout=10)
            upload.raise_for_status()
            location = upload.headers["Location"]
            location = location if location.startswith("http") else f"http://{self.registry}{location}"
            sep = "&" if "?" in location else "?"
            session.put(
                f"{location}{sep}digest={blob_digest}",
                data=blob,
                timeout=10,
                headers={"Content-Type": "application/octet-stream"},
            ).raise_for_status()
            body = dict(template, config=dict(template["config"], digest=blob_digest, size=len(blob)))
            data = json.dumps(body).encode()
            put = session.put(f"{base}/manifests/{tag}", data=data, headers={"Content-Type": manifest_type}, timeout=10)
            put.raise_for_status()
            digests[tag] = put.headers["Docker-Content-Digest"]
        session.close()
        return digests


@dataclass(kw_only=True)
class SwarmBed(Bed):
    """One dockerd in swarm mode on 127.0.0.1, its socket and dirs under ``root``."""

    docker_host: str
    dockerd: subprocess.Popen[bytes]

    # ---- daemon outages -----------------------------------------------------------------------
    def stop_daemon(self) -> None:
        """Stop dockerd (as an outage would); the swarm state stays in its data-root."""
        with contextlib.suppress(Exception):
            self.client.close()
        stop_process(self.dockerd, timeout=30)

    def start_daemon(self) -> None:
        """Start dockerd again on the same dirs and socket; the single-node swarm comes back by itself."""
        self.dockerd = launch_dockerd(self.root)
        self.client = connect_dockerd(self.root, self.dockerd, timeout=BOOT_TIMEOUT)
        wait_for(
            lambda: self.client.info()["Swarm"]["LocalNodeState"] == "active",
            timeout=60,
            what="the swarm to be active again",
        )

    # ---- teardown -----------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop everything by pid and remove the temp dir; return what survived (empty when clean)."""
        with contextlib.suppress(Exception):
            self.remove_all_services()
        with contextlib.suppress(Exception):
            self.client.close()
        return stop_and_remove([self.registry_proc, self.dockerd], self.root)


def stop_and_remove(procs: Sequence[subprocess.Popen[bytes]], root: Path) -> list[str]:
    """Stop ``procs`` and every descendant by pid, unmount and remove ``root``.

    Returns what survived (empty when clean). Descendants are listed before anything stops because
    containerd and its shims are re-parented away from dockerd as it exits.
    """
    tree = [pid for proc in procs for pid in (proc.pid, *_children(proc.pid))]
    # All at once: each dockerd stops its containers first, and several daemons should not queue for that.
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        stop_process(proc, timeout=30)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not any(alive(p) for p in tree), timeout=15, what="bed processes to exit")
    for pid in tree:
        # Only our own descendants, by pid: a shim that outlived its daemon must not outlive the bed.
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not any(alive(p) for p in tree), timeout=10, what="killed bed processes to exit")
    survivors = [f"pid {p}" for p in tree if alive(p)]
    unmount_below(root)
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        survivors.append(f"dir {root}")
    survivors.extend(f"mount {m}" for m in mounts_below(root))
    return survivors


def mounts_below(root: Path) -> list[str]:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [m for m in mounts if m == str(root) or m.startswith(f"{root}/")]


def unmount_below(root: Path) -> None:
    """dockerd can leave netns and shm mounts under its exec-root when stopped hard."""
    for mount in sorted(mounts_below(root), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def start_bed(*, boot_timeout: float = BOOT_TIMEOUT) -> SwarmBed:
    """Boot dockerd (vfs, swarm on 127.0.0.1) and a registry under a fresh temp dir."""
    problem = missing_prerequisites()
    if problem:
        raise BedUnavailable(problem)
    # Short path: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="wsbed-", dir="/tmp"))
    started: list[subprocess.Popen[bytes]] = []
    try:
        dockerd = launch_dockerd(root)
        started.append(dockerd)
        client = connect_dockerd(root, dockerd, timeout=boot_timeout)
        # Every one-node bed shares this host's network namespace with the others (a run's beds, its
        # workers' beds): each overlay network's VXLAN device is made there, and two with the same VNI on
        # the same UDP port cannot both exist ("error creating vxlan interface: file exists"). So each
        # swarm carries its overlays on a port of its own.
        client.swarm.init(
            advertise_addr="127.0.0.1", listen_addr=f"127.0.0.1:{free_port()}", data_path_port=free_udp_port()
        )
        registry_proc, registry = start_registry(root / "registry", "127.0.0.1", timeout=boot_timeout)
        started.append(registry_proc)
        return SwarmBed(
            root=root,
            docker_host=f"unix://{root / 'docker.sock'}",
            registry=registry,
            client=client,
            dockerd=dockerd,
            registry_proc=registry_proc,
            rootfs=busybox_rootfs_tar(root / "rootfs.tar"),
        )
    except BaseException as e:
        stop_and_remove(started, root)
        if isinstance(e, BedUnavailable | TimeoutError):
            raise BedUnavailable(str(e)) from e
        raise


def launch_dockerd(
    root: Path, *, wrapper: Sequence[str] = (), extra_args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """dockerd with everything under ``root``; ``wrapper`` execs it elsewhere (e.g. in a namespace)."""
    for sub in ("data", "exec"):
        (root / sub).mkdir(exist_ok=True)
    log = (root / "dockerd.log").open("ab")
    return subprocess.Popen(
        [
            *wrapper,
            "dockerd",
            "--storage-driver=vfs",
            f"--data-root={root / 'data'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={root / 'docker.pid'}",
            f"--host=unix://{root / 'docker.sock'}",
            "--iptables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def connect_dockerd(root: Path, dockerd: subprocess.Popen[bytes], *, timeout: float) -> docker.DockerClient:
    """A client for the dockerd under ``root`` once it answers, blind to this host's registry logins."""

    def connected() -> docker.DockerClient | None:
        if dockerd.poll() is not None:
            raise BedUnavailable(f"dockerd exited with {dockerd.returncode}: {_tail(root / 'dockerd.log')}")
        try:
            # version="auto" asks the daemon at once, so this doubles as the readiness probe.
            return docker.DockerClient(base_url=f"unix://{root / 'docker.sock'}", version="auto", timeout=60)
        except docker.errors.DockerException:
            return None

    client: docker.DockerClient = wait_for(connected, timeout=timeout, what="dockerd to answer")
    # docker-py reads ~/.docker/config.json; a bed must prove what credentials reach it, so it starts with none.
    client.api.reload_config(str(root / "no-docker-config.json"))
    return client


def start_registry(
    root: Path, host: str, *, auth: Path | None = None, timeout: float = BOOT_TIMEOUT
) -> tuple[subprocess.Popen[bytes], str]:
    """A ``docker-registry`` storing under ``root`` and listening on ``host``; returns it and HOST:PORT."""
    root.mkdir(exist_ok=True)
    address = f"{host}:{free_port(host)}"
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '{address}'}}\n" + (f"auth: {{htpasswd: {{realm: bed, path: {auth}}}}}\n" if auth else "")
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=(root / "registry.log").open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _registry_answers(address), timeout=timeout, what=f"the registry on {address}")
    except BaseException:
        stop_process(proc)
        raise
    return proc, address


def _registry_answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError as e:
        return e.code == 401  # up, and asking for credentials
    except OSError:
        return False


def _tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
ROOTFS_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt",
               "var/lib/apt/lists")  # fmt: skip


class RootfsUnavailable(RuntimeError):
    pass


def debian_mirror() -> str:
    """The mirror apt uses here (debootstrap needs one), from deb822 sources."""
    with contextlib.suppress(OSError):
        for line in DEBIAN_SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def debootstrap(dest: Path, *, suite: str, include: str) -> Path:
    """A minbase Debian rootfs with ``include`` (comma-separated packages), trimmed of docs and apt lists."""
    if os.geteuid() != 0:
        raise RootfsUnavailable("debootstrap and chroot need root")
    if shutil.which("debootstrap") is None:
        raise RootfsUnavailable("missing debootstrap (apt-get install debootstrap)")
    cmd = ["debootstrap", "--variant=minbase", f"--include={include}", suite, str(dest), debian_mirror()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise RootfsUnavailable(f"debootstrap {suite} failed ({proc.returncode}): {tail}")
    for sub in ROOTFS_TRIM:
        shutil.rmtree(dest / sub, ignore_errors=True)
    return dest


@contextlib.contextmanager
def running_bed() -> Iterator[SwarmBed]:
    bed = start_bed()
    try:
        yield bed
    finally:
        survivors = bed.stop()
        if survivors:
            raise RuntimeError(f"the test bed left these behind: {', '.join(survivors)}")
