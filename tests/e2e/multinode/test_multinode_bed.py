"""The multi-node bed itself: it boots fast, is one swarm, reaches nothing outside its /24, and leaves
nothing behind."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.bed import BOOT_TIMEOUT, alive
from tests.multinode import MultiNodeBed, running_multinode

pytestmark = pytest.mark.swarm


def _in_netns(netns: str, *cmd: str) -> str:
    return subprocess.run(["ip", "-n", netns, "-j", *cmd], capture_output=True, text=True, check=True).stdout


def test_three_managers_boot_quickly_into_one_swarm(swarm3: MultiNodeBed) -> None:
    assert swarm3.boot_seconds < BOOT_TIMEOUT
    nodes = swarm3.client.nodes.list()
    assert sorted(n.attrs["Description"]["Hostname"] for n in nodes) == ["mgr0", "mgr1", "mgr2"]
    assert {n.attrs["Spec"]["Role"] for n in nodes} == {"manager"}
    assert {n.attrs["Status"]["Addr"] for n in nodes} == {n.address for n in swarm3.nodes}
    # Each node is a separate daemon: they agree on the swarm and differ in who they are.
    assert len({n.client.info()["Swarm"]["NodeID"] for n in swarm3.nodes}) == 3
    assert len({n.client.info()["Swarm"]["Cluster"]["ID"] for n in swarm3.nodes}) == 1


def test_nodes_have_no_route_out_of_the_bed(swarm3: MultiNodeBed) -> None:
    subnet = ipaddress.ip_network(f"{swarm3.subnet}.0/24")
    for node in swarm3.nodes:
        routes = json.loads(_in_netns(node.netns, "route", "show", "table", "all"))
        assert not [r for r in routes if r.get("dst") == "default"], f"{node.name} has a default route: {routes}"
        veth = [
            a["local"]
            for link in json.loads(_in_netns(node.netns, "-4", "addr", "show"))
            if link["ifname"].startswith("wsp")
            for a in link["addr_info"]
        ]
        assert [ipaddress.ip_address(a) in subnet for a in veth] == [True]
        assert not json.loads(_in_netns(node.netns, "-6", "addr", "show")), f"{node.name} has IPv6 addresses"
        # The only way out of the namespace is the veth into the bed's bridge.
        links = json.loads(_in_netns(node.netns, "link", "show"))
        assert [link["ifname"] for link in links if link["ifname"].startswith("ws")] == [veth_name(node.netns)]


def veth_name(netns: str) -> str:
    suffix, _, index = netns.removeprefix("wsn").partition("-")
    return f"wsp{suffix}{index}"


@pytest.mark.usefixtures("multinode_prerequisites")
def test_managers_and_workers_per_call_and_nothing_left_behind() -> None:
    """A throwaway bed of 2 managers + 1 worker: after stop, no process, mount, namespace, link, rule or
    dir of it exists."""
    started = time.monotonic()
    with running_multinode(managers=2, workers=1) as extra:
        assert time.monotonic() - started < BOOT_TIMEOUT
        roles = sorted((n.attrs["Description"]["Hostname"], n.attrs["Spec"]["Role"]) for n in extra.client.nodes.list())
        assert roles == [("mgr0", "manager"), ("mgr1", "manager"), ("wkr0", "worker")]
        image = extra.make_image("bed/leftover", "1")
        extra.create_service("leftover", image, mode="global", stop_grace_period=1_000_000_000)
        assert len(extra.running_tasks("leftover")) == 3
        pids = [p.pid for p in extra._procs]
        made = [u.what for u in extra.undo]
        bed = extra
    assert not any(alive(p) for p in pids)
    assert not bed.root.exists()
    assert bed.leftovers() == []
    assert len(made) == 2 + 2 * 3  # bridge, FORWARD rule, and a namespace and a veth per node
    assert bed.bridge not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    namespaces = subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    mounts = Path("/proc/mounts").read_text()
    for node in bed.nodes:
        assert node.netns not in namespaces and node.netns not in mounts
    assert str(bed.root) not in mounts
