"""When a start-first update can never start (no room for a task beside the old one): data in, reason out."""

from __future__ import annotations

import pytest

from webhook_server.cluster import Placement, start_first_blocked

CASES: list[tuple[str, Placement, int, str | None]] = [
    ("no-limit", Placement(replicas=3), 3, None),
    ("room-on-a-node", Placement(replicas=2, max_per_node=1), 3, None),
    ("every-node-full", Placement(replicas=3, max_per_node=1), 3, "fill all 3 node(s)"),
    ("more-than-fit", Placement(replicas=5, max_per_node=2), 2, "5 replicas with max_replicas_per_node 2"),
    ("two-per-node-room", Placement(replicas=5, max_per_node=2), 3, None),
    ("global", Placement(global_mode=True), 3, None),
    ("global-host-ports", Placement(global_mode=True, host_ports=True), 3, "host mode"),
    ("host-ports-spare-node", Placement(replicas=2, host_ports=True), 3, None),
    ("host-ports-every-node", Placement(replicas=3, host_ports=True), 3, "host mode"),
    ("no-node-at-all", Placement(replicas=1, max_per_node=1), 0, "fill all 0 node(s)"),
]


@pytest.mark.parametrize(("placement", "nodes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_start_first_blocked(placement: Placement, nodes: int, expected: str | None) -> None:
    reason = start_first_blocked(placement, nodes=nodes)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason
