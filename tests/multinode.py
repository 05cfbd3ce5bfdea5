"""A real multi-node swarm: N private dockerd, each in its own network namespace, joined in one swarm.

The nodes are wired to one bridge in the root namespace that has the only other address of the bed's /24;
the registries listen there, so every node pulls from them. Nothing in the bed has a route anywhere else:
the namespaces hold one veth each (no default route), the bridge forwards only between its own ports.
Every name carries a random suffix so that parallel runs never share a namespace, link or rule.

The image factory, service helpers, private registry and process teardown are the one-node bed's
(``tests.bed.Bed``); only booting the daemons and the network differs.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from tests.bed import (
    BOOT_TIMEOUT,
    Bed,
    BedUnavailable,
    busybox_rootfs_tar,
    connect_dockerd,
    launch_dockerd,
    missing_prerequisites,
    start_registry,
    stop_and_remove,
    stop_process,
    wait_for,
)

# The bed's addresses come from one /24 under this prefix, chosen per run among the /24s no interface on
# this host uses yet (so two runs at once never route into each other).
NET_PREFIX = "10.231"
BRIDGE_HOST = 1
FIRST_NODE_HOST = 11
NETWORK_BINARIES = ("ip", "iptables", "nsenter", "unshare")
# Swarm declares a silent node down after a few heartbeat periods; 1 s makes node failures show in seconds.
HEARTBEAT_NS = 1_000_000_000


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _succeeds(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0


def _free_subnet() -> str:
    used = _run("ip", "-4", "-o", "addr", "show")
    taken = {n for n in range(256) if f" {NET_PREFIX}.{n}." in used}
    free = [n for n in range(1, 255) if n not in taken]
    if not free:
        raise BedUnavailable(f"every {NET_PREFIX}.N.0/24 is in use on this host")
    return f"{NET_PREFIX}.{secrets.choice(free)}"


@dataclass
class Undo:
    """One thing the bed made: how to remove it, and how to tell it is gone."""

    what: str
    remove: Callable[[], None]
    gone: Callable[[], bool]


@dataclass(kw_only=True)
class Node:
    name: str  # its hostname, as Swarm reports it
    netns: str
    address: str
    root: Path
    manager: bool
    dockerd: subprocess.Popen[bytes]
    client: docker.DockerClient
    node_id: str = ""

    @property
    def docker_host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"


def _dockerd_in(netns: str, hostname: str, root: Path, subnet: str) -> subprocess.Popen[bytes]:
    # nsenter, not `ip netns exec`: that remounts /sys, and dockerd would not see the cgroups. A UTS
    # namespace of its own gives each node its own hostname, so Swarm's node names tell them apart.
    wrapper = ["nsenter", f"--net=/run/netns/{netns}", "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"']
    return launch_dockerd(
        root,
        wrapper=[*wrapper, hostname],
        extra_args=[f"--insecure-registry={subnet}.0/24", "--bridge=none"],
    )


@dataclass(kw_only=True)
class MultiNodeBed(Bed):
    nodes: list[Node]
    subnet: str
    bridge: str
    undo: list[Undo] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def docker_host(self) -> str:
        """The first manager's socket: where the receiver under test talks to Swarm."""
        return self.nodes[0].docker_host

    @property
    def managers(self) -> list[Node]:
        return [n for n in self.nodes if n.manager]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if not n.manager]

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    # ---- what runs where ----------------------------------------------------------------------
    def task_nodes(self, service: str) -> list[Node]:
        """The nodes with a running task of ``service``, as the manager sees it (one entry per task)."""
        return [self.node(str(t["NodeID"])) for t in self.running_tasks(service)]

    def containers_on(self, node: Node, service: str) -> list[docker.models.containers.Container]:
        """The running containers of ``service`` on ``node``, asked of that node's own dockerd."""
        return node.client.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"})

    def images_by_node(self, service: str) -> dict[str, list[str]]:
        """Per node name: the image each running container of ``service`` was created from, as
        ``Config.Image`` (the pinned reference) plus ``|`` plus the local image's repo digests."""
        found: dict[str, list[str]] = {}
        for node in self.nodes:
            for container in self.containers_on(node, service):
                digests = ",".join(sorted(container.image.attrs.get("RepoDigests") or []))
                found.setdefault(node.name, []).append(f"{container.attrs['Config']['Image']}|{digests}")
        return found

    def set_availability(self, node: Node, availability: str) -> None:
        self._update_node(node, lambda spec: spec.update(Availability=availability))

    def set_labels(self, node: Node, labels: dict[str, str]) -> None:
        self._update_node(node, lambda spec: spec.update(Labels=dict(labels)))

    def _update_node(self, node: Node, change: Callable[[dict[str, object]], None]) -> None:
        model = self.client.nodes.get(node.node_id)
        spec = dict(model.attrs["Spec"])
        change(spec)
        model.update(spec)

    def reset_nodes(self) -> None:
        """Every node active and unlabelled, as a test found the session's bed."""
        for node in self.nodes:
            spec = self.client.nodes.get(node.node_id).attrs["Spec"]
            if spec.get("Availability") != "active" or spec.get("Labels"):
                self._update_node(node, lambda s: s.update(Availability="active", Labels={}))

    # ---- a node fails and comes back ----------------------------------------------------------
    def stop_node(self, node: Node) -> None:
        """Stop the node's dockerd (it stops its containers); its swarm state stays in its data-root."""
        with contextlib.suppress(Exception):
            node.client.close()
        stop_process(node.dockerd, timeout=30)

    def start_node(self, node: Node) -> None:
        """Start the node's dockerd again in its namespace; it rejoins the swarm by itself."""
        node.dockerd = _dockerd_in(node.netns, node.name, node.root, self.subnet)
        self._procs.append(node.dockerd)
        node.client = connect_dockerd(node.root, node.dockerd, timeout=BOOT_TIMEOUT)
        wait_for(lambda: self.node_ready(node), timeout=60, interval=0.25, what=f"{node.name} to be ready again")

    def node_ready(self, node: Node) -> bool:
        try:
            return bool(self.client.nodes.get(node.node_id).attrs["Status"]["State"] == "ready")
        except docker.errors.APIError:
            return False

    # ---- teardown -----------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop every process by pid, then remove the namespaces, links, rule and dirs; return what
        survived (empty when clean)."""
        with contextlib.suppress(Exception):
            self.remove_all_services()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.client.close()
        survivors = stop_and_remove(self._procs, self.root)
        return survivors + undo_all(self.undo)

    def leftovers(self) -> list[str]:
        """What of the bed still exists (for the test that teardown is complete)."""
        return [u.what for u in self.undo if not u.gone()]


def undo_all(undo: list[Undo]) -> list[str]:
    for step in reversed(undo):
        if not step.gone():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                step.remove()
    return [step.what for step in undo if not step.gone()]


def missing_network_prerequisites() -> str | None:
    missing = [b for b in NETWORK_BINARIES if shutil.which(b) is None]
    if missing:
        return "missing: " + ", ".join(missing) + " (install iproute2 iptables util-linux)"
    if not Path("/proc/sys/net/ipv4").exists():
        return "no IPv4 networking in this kernel"
    return None


def start_multinode(managers: int = 3, workers: int = 0, *, boot_timeout: float = BOOT_TIMEOUT) -> MultiNodeBed:
    """Boot ``managers`` + ``workers`` dockerd in their own namespaces, one swarm, and a registry."""
    problem = missing_prerequisites() or missing_network_prerequisites()
    if problem:
        raise BedUnavailable(problem)
    if managers < 1:
        raise ValueError("a swarm needs a manager")
    started = time.monotonic()
    suffix = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix="wsmn-", dir="/tmp"))
    undo: list[Undo] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        bridge = f"wsbr{suffix}"
        subnet = _claim_subnet(bridge, undo)
        netns = [f"wsn{suffix}-{i}" for i in range(managers + workers)]
        addresses = [f"{subnet}.{FIRST_NODE_HOST + i}" for i in range(len(netns))]
        for i, (ns, address) in enumerate(zip(netns, addresses, strict=True)):
            _make_node_netns(ns, f"wsv{suffix}{i}", f"wsp{suffix}{i}", address, bridge, undo)

        registry_proc, registry = start_registry(root / "registry", f"{subnet}.{BRIDGE_HOST}", timeout=boot_timeout)
        procs.append(registry_proc)
        roots = [root / f"node{i}" for i in range(len(netns))]
        names = [f"mgr{i}" if i < managers else f"wkr{i - managers}" for i in range(len(netns))]
        daemons = []
        for ns, name, node_root in zip(netns, names, roots, strict=True):
            node_root.mkdir()
            daemons.append(_dockerd_in(ns, name, node_root, subnet))
            procs.append(daemons[-1])
        clients = [connect_dockerd(r, d, timeout=boot_timeout) for r, d in zip(roots, daemons, strict=True)]
        nodes = [
            Node(name=n, netns=ns, address=a, root=r, manager=i < managers, dockerd=d, client=c)
            for i, (n, ns, a, r, d, c) in enumerate(zip(names, netns, addresses, roots, daemons, clients, strict=True))
        ]
        _form_swarm(nodes)
        bed = MultiNodeBed(
            root=root,
            registry=registry,
            registry_host=f"{subnet}.{BRIDGE_HOST}",
            client=nodes[0].client,
            registry_proc=registry_proc,
            rootfs=busybox_rootfs_tar(root / "rootfs.tar"),
            nodes=nodes,
            subnet=subnet,
            bridge=bridge,
            undo=undo,
            _procs=procs,
        )
        wait_for(
            lambda: all(bed.node_ready(n) for n in nodes),
            timeout=boot_timeout,
            interval=0.25,
            what="every node to be ready",
        )
        bed.boot_seconds = time.monotonic() - started
        return bed
    except BaseException as e:
        stop_and_remove(procs, root)
        undo_all(undo)
        if isinstance(e, BedUnavailable | TimeoutError | RuntimeError):
            raise BedUnavailable(f"the multi-node bed did not boot: {e}") from e
        raise


def _claim_subnet(bridge: str, undo: list[Undo]) -> str:
    """Make the bridge on a /24 no other interface has. Two runs booting at the same moment may pick the
    same one: each checks after taking it, and the loser tries another."""
    for _ in range(5):
        subnet = _free_subnet()
        _make_bridge(bridge, f"{subnet}.{BRIDGE_HOST}", undo)
        others = [
            line for line in _run("ip", "-4", "-o", "addr", "show").splitlines()
            if f" {subnet}." in line and f" {bridge} " not in line
        ]  # fmt: skip
        if not others:
            return subnet
        undo_all(undo)
        undo.clear()
    raise BedUnavailable(f"no free {NET_PREFIX}.N.0/24 after 5 tries")


def _make_bridge(bridge: str, address: str, undo: list[Undo]) -> None:
    _run("ip", "link", "add", bridge, "type", "bridge")
    undo.append(Undo(f"bridge {bridge}", lambda: _run("ip", "link", "del", bridge), lambda: not _link_exists(bridge)))
    # IPv4 only: no link-local IPv6 address, no router solicitations, nothing but the bed's /24.
    Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").write_text("1")
    _run("ip", "addr", "add", f"{address}/24", "dev", bridge)
    _run("ip", "link", "set", bridge, "up")
    # Only from the bridge back to the bridge: the nodes reach each other, and through it nothing else.
    rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
    _run("iptables", "-I", *rule)
    undo.append(
        Undo(
            f"iptables rule {' '.join(rule)}",
            lambda: _run("iptables", "-D", *rule),
            lambda: not _succeeds("iptables", "-C", *rule),
        )
    )


def _make_node_netns(netns: str, host_veth: str, node_veth: str, address: str, bridge: str, undo: list[Undo]) -> None:
    _run("ip", "netns", "add", netns)
    undo.append(
        Undo(
            f"netns {netns}",
            lambda: _run("ip", "netns", "del", netns),
            lambda: not Path(f"/run/netns/{netns}").exists(),
        )
    )
    for conf in ("all", "default"):
        _run("nsenter", f"--net=/run/netns/{netns}", "sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")
    _run("ip", "link", "add", host_veth, "type", "veth", "peer", "name", node_veth, "netns", netns)
    # Deleting either end deletes the pair; the namespace's end also goes with the namespace.
    undo.append(
        Undo(f"veth {host_veth}", lambda: _run("ip", "link", "del", host_veth), lambda: not _link_exists(host_veth))
    )
    Path(f"/proc/sys/net/ipv6/conf/{host_veth}/disable_ipv6").write_text("1")
    _run("ip", "link", "set", host_veth, "master", bridge, "up")
    _run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", node_veth)
    _run("ip", "-n", netns, "link", "set", node_veth, "up")
    _run("ip", "-n", netns, "link", "set", "lo", "up")


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _form_swarm(nodes: Sequence[Node]) -> None:
    first = nodes[0]
    first.client.swarm.init(
        advertise_addr=first.address,
        listen_addr=f"{first.address}:2377",
        dispatcher_heartbeat_period=HEARTBEAT_NS,
    )
    tokens = first.client.swarm.attrs["JoinTokens"]
    # Managers join one by one: Raft adds one member at a time, and a second join while the first is
    # still being committed can be refused.
    for node in nodes[1:]:
        node.client.swarm.join(
            remote_addrs=[f"{first.address}:2377"],
            join_token=tokens["Manager" if node.manager else "Worker"],
            advertise_addr=node.address,
            listen_addr=f"{node.address}:2377",
        )
    for node in nodes:
        node.node_id = str(node.client.info()["Swarm"]["NodeID"])


@contextlib.contextmanager
def running_multinode(managers: int = 3, workers: int = 0) -> Iterator[MultiNodeBed]:
    bed = start_multinode(managers, workers)
    try:
        yield bed
    finally:
        survivors = bed.stop()
        if survivors:
            raise RuntimeError(f"the multi-node bed left these behind: {', '.join(survivors)}")
