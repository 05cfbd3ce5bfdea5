"""High availability on the three-manager bed: two receivers, each talking to its own manager's Docker, share
one journal on a private PostgreSQL. Both accept pushes; one runs rollouts. Its death (SIGKILL), its Docker's
death, or the database's restart loses nothing and deploys nothing twice.

Takeover is timed from the failure to the moment the other receiver holds the executor lease; the figures
are printed (``takeover: … s``) for the README.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from tests.bed import wait_for
from tests.e2e.conftest import ServerFactory
from tests.e2e.multinode.helpers import GRACE_NS, rules, spec_image, task_table
from tests.e2e.test_resilience import settled
from tests.multinode import MultiNodeBed, Node
from tests.pg import PgCluster
from tests.server import Server, documented_payload
from webhook_server.journal import Journal
from webhook_server.leadership import LEASE_NAME

pytestmark = pytest.mark.swarm

ROLLED_OUT = {"succeeded", "rolled_back", "failed"}
TAKEOVER_LIMIT = 10.0


@dataclass
class Receiver:
    server: Server
    node: Node


@dataclass
class Pair:
    """Two receivers on one PostgreSQL journal, on the second and third managers; the first of them leads."""

    receivers: list[Receiver]
    journal: Journal

    def leader(self) -> Receiver | None:
        lease = self.journal.lease(LEASE_NAME)
        if lease is None:
            return None
        pid = int(lease.holder.split(":")[1])
        return next((r for r in self.receivers if pid in r.server.worker_pids()), None)

    def wait_leader(self, *, other_than: Receiver | None = None, timeout: float = 30) -> Receiver:
        def found() -> Receiver | None:
            leader = self.leader()
            return leader if leader is not None and leader is not other_than else None

        result: Receiver = wait_for(found, timeout=timeout, interval=0.05, what="a receiver to hold the lease")
        return result

    def follower(self, leader: Receiver) -> Receiver:
        return next(r for r in self.receivers if r is not leader)


@pytest.fixture
def pair_factory(
    mbed: MultiNodeBed, pg_cluster: PgCluster, make_server: ServerFactory
) -> Iterator[Callable[[str], Pair]]:
    journals: list[Journal] = []

    def make(rules_text: str) -> Pair:
        url = pg_cluster.create_database()
        journal = Journal(url)
        journals.append(journal)
        pair = Pair(receivers=[], journal=journal)
        # On the second and third managers, the first started first so that it leads: the bed's own client
        # talks to the first manager, which no test stops.
        for node in mbed.managers[1:3]:
            server = make_server(rules_text, docker_host=node.docker_host, workers=1, env={"WEBHOOK_DB": url})
            pair.receivers.append(Receiver(server, node))
            pair.wait_leader()
        return pair

    yield make
    for journal in journals:
        journal.close()


def push(server: Server, repo: str, tag: str) -> int:
    response = server.hook(documented_payload(repo, tag))
    assert response.status_code == 202, response.text
    [summary] = response.json()["deployments"]
    return int(summary["id"])


def mid_rollout(bed: MultiNodeBed, service: str, tag: str) -> bool:
    """Some task already runs ``tag`` and some still runs another: Swarm is half-way."""
    running = {row[1] for row in task_table(bed, service) if row[3] == "running"}
    return tag in running and len(running) > 1


def failover(
    mbed: MultiNodeBed, unique: str, pair_factory: Callable[[str], Pair], fail: Callable[[Pair, Receiver], None]
) -> float:
    """Push 1.1.0 to the follower, fail the leader half-way through its rollout with 1.2.0 queued behind it;
    the follower takes over, records Swarm's real outcome of 1.1.0, then deploys 1.2.0. The takeover time."""
    repo = f"acme/{unique}"
    refs = {t: mbed.make_image(repo, t) for t in ("1.0.0", "1.1.0", "1.2.0")}
    pinned = {t: f"{r}@{mbed.registry_digest(r)}" for t, r in refs.items()}
    pair = pair_factory(rules(unique, repo, f"{mbed.registry}/{repo}", delay="2s", timeout="60s"))
    leader = pair.wait_leader()
    assert leader is pair.receivers[0]
    follower = pair.follower(leader)
    # Tasks only on the nodes that stay up (the third manager and the follower's), so the rollout can finish
    # whatever happens to the leader's node.
    mbed.create_service(
        unique,
        pinned["1.0.0"],
        replicas=2,
        maxreplicas=1,
        constraints=[f"node.hostname != {leader.node.name}"],
        stop_grace_period=GRACE_NS,
    )
    first = push(follower.server, repo, "1.1.0")
    wait_for(lambda: mid_rollout(mbed, unique, "1.1.0"), timeout=60, interval=0.1, what="the rollout half-way")
    second = push(follower.server, repo, "1.2.0")

    failed_at = time.monotonic()
    fail(pair, leader)
    new_leader = pair.wait_leader(other_than=leader, timeout=30)
    takeover = time.monotonic() - failed_at
    assert new_leader is follower

    done = follower.server.wait_done(first, timeout=120)
    assert done["state"] == "succeeded", done
    assert done["image_ref"] == f"{mbed.registry}/{repo}:1.1.0@{pinned['1.1.0'].partition('@')[2]}"
    after = follower.server.wait_done(second, timeout=120)
    assert after["state"] == "succeeded", after
    final = after["image_ref"]
    assert spec_image(mbed, unique) == final
    # Both tasks run 1.2.0 (asked of the managers' view: the leader's node may be down).
    wait_for(
        lambda: [row[1] for row in task_table(mbed, unique) if row[3] == "running"] == ["1.2.0", "1.2.0"],
        timeout=90,
        what=f"both tasks of {unique} to run 1.2.0",
    )
    # Exactly the two rollouts, each once: nothing was started twice across the change of leader.
    updates = [
        t
        for t in follower.server.deployment(first)["transitions"]
        if (t["message"] or "").startswith(f"updating {unique} ")
    ]
    assert len(updates) == 1, updates
    return takeover


def test_leader_killed_mid_rollout_the_other_receiver_finishes_it(
    mbed: MultiNodeBed, unique: str, pair_factory: Callable[[str], Pair]
) -> None:
    def kill(pair: Pair, leader: Receiver) -> None:
        leader.server.stop(signal.SIGKILL)

    takeover = failover(mbed, unique, pair_factory, kill)
    print(f"\ntakeover: {takeover:.2f} s after SIGKILL of the leader")
    assert takeover < TAKEOVER_LIMIT


def test_leaders_docker_stopped_mid_rollout_the_other_receiver_finishes_it(
    mbed: MultiNodeBed, unique: str, pair_factory: Callable[[str], Pair]
) -> None:
    def stop_docker(pair: Pair, leader: Receiver) -> None:
        mbed.stop_node(leader.node)

    takeover = failover(mbed, unique, pair_factory, stop_docker)
    print(f"\ntakeover: {takeover:.2f} s after the leader's dockerd was stopped")
    assert takeover < TAKEOVER_LIMIT


@dataclass
class Tagged:
    """A service on ``base`` with ``count`` more tags of it in the registry, and a pair of receivers."""

    repo: str
    tags: list[str]
    digests: dict[str, str]
    servers: list[Server]


def tagged(mbed: MultiNodeBed, unique: str, pair_factory: Callable[[str], Pair], *, base: str, count: int) -> Tagged:
    repo = f"acme/{unique}"
    ref = mbed.make_image(repo, base)
    prefix = base.rpartition(".")[0]
    tags = [f"{prefix}.{i}" for i in range(1, count + 1)]
    digests = mbed.publish_tags(ref, tags)
    mbed.create_service(unique, ref, replicas=2, stop_grace_period=GRACE_NS)
    pair = pair_factory(rules(unique, repo, f"{mbed.registry}/{repo}"))
    return Tagged(repo=repo, tags=tags, digests=digests, servers=[r.server for r in pair.receivers])


def test_burst_of_200_over_two_receivers_ends_on_the_newest_with_at_most_two_rollouts(
    mbed: MultiNodeBed, unique: str, pair_factory: Callable[[str], Pair]
) -> None:
    bed = tagged(mbed, unique, pair_factory, base="1.0.0", count=200)
    repo, tags, digests, servers = bed.repo, bed.tags, bed.digests, bed.servers
    shuffled = random.Random(12).sample(tags, len(tags))

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda i: servers[i % 2].hook(documented_payload(repo, shuffled[i])), range(200)))
    assert {r.status_code for r in statuses} == {202}

    deps = wait_for(lambda: settled(servers[0], unique, 200), timeout=180, interval=0.5, what="the burst to settle")
    assert sorted(d["tag"] for d in deps) == sorted(tags), "a push was lost or recorded twice"
    rollouts = [d for d in deps if d["state"] in ROLLED_OUT]
    assert 1 <= len(rollouts) <= 2, [(d["tag"], d["state"]) for d in rollouts]
    assert all(d["state"] == "succeeded" for d in rollouts)
    final = f"{mbed.registry}/{repo}:1.0.200@{digests['1.0.200']}"
    assert spec_image(mbed, unique) == final
    print(f"\nburst over two receivers: {len(rollouts)} rollout(s)")


def test_database_restart_during_a_burst_answers_503_and_loses_nothing_written(
    mbed: MultiNodeBed, unique: str, pair_factory: Callable[[str], Pair], pg_cluster: PgCluster
) -> None:
    bed = tagged(mbed, unique, pair_factory, base="2.0.0", count=120)
    repo, tags, digests, servers = bed.repo, bed.tags, bed.digests, bed.servers
    answers: dict[str, int] = {}
    down = threading.Event()

    def send() -> None:
        for i, tag in enumerate(tags):
            answers[tag] = servers[i % 2].hook(documented_payload(repo, tag)).status_code
            if i == 40:
                down.set()  # a third of the burst is in: take the database away

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert down.wait(60)
        pg_cluster.stop(immediate=True)
        for server in servers:
            ready = wait_for(
                lambda s=server: _status(s, "/readyz") == 503 or None, timeout=20, what="/readyz to say 503"
            )
            assert ready
        wait_for(lambda: any(code == 503 for code in answers.values()) or None, timeout=20, what="a 503 for a push")
    finally:
        pg_cluster.start()
        sender.join(timeout=120)

    assert set(answers.values()) <= {202, 503}, answers
    accepted = sorted((t for t, code in answers.items() if code == 202), key=lambda t: int(t.rsplit(".", 1)[1]))
    refused = [t for t, code in answers.items() if code == 503]
    assert refused and accepted
    deps = wait_for(
        lambda: settled(servers[1], unique, len(accepted)), timeout=180, interval=0.5, what="the burst to settle"
    )
    assert sorted(d["tag"] for d in deps) == sorted(accepted), "a push answered 202 is missing, or a 503 was kept"
    final = f"{mbed.registry}/{repo}:{accepted[-1]}@{digests[accepted[-1]]}"
    assert spec_image(mbed, unique) == final
    print(f"\ndatabase restart: {len(accepted)} pushes accepted, {len(refused)} answered 503, none lost")


def _status(server: Server, path: str) -> int:
    try:
        return requests.get(server.url + path, timeout=5).status_code
    except requests.RequestException:
        return 0
