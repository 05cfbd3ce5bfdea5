"""Issue: bursts, replays, crashes and outages — one correct rollout, nothing lost.

Real gunicorn with several workers, real Swarm, real registry.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from tests.bed import SwarmBed, running_bed, wait_for
from tests.docker_proxy import docker_proxy
from tests.e2e.conftest import ON_BOTH_JOURNALS, ServerFactory
from tests.e2e.test_rollout import assert_all_tasks_run, rules_for, spec_image
from tests.server import Server, documented_payload, start_server

# Bursts, crashes, outages and coalescing run on the embedded SQLite journal and on PostgreSQL (claims,
# leases and wake-ups differ); a replay, a rollback through the API and a lost Docker answer depend on Swarm
# and the journal's shared queries only, and run on SQLite.
pytestmark = [pytest.mark.swarm]

ROLLED_OUT = {"succeeded", "rolled_back", "failed"}


def deployments_of(server: Server, service: str) -> list[dict[str, Any]]:
    response = server.api("GET", f"/deployments?service={service}&limit=1000")
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["deployments"]
    return found


def settled(server: Server, service: str, expected: int) -> list[dict[str, Any]] | None:
    deps = deployments_of(server, service)
    if len(deps) == expected and all(d["state"] not in ("queued", "running") for d in deps):
        return deps
    return None


def burst(server: Server, repo: str, tags: list[str], *, threads: int = 8) -> list[int]:
    payloads = [documented_payload(repo, t) for t in tags]
    random.Random(4).shuffle(payloads)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [r.status_code for r in pool.map(server.hook, payloads)]


@ON_BOTH_JOURNALS
def test_burst_of_200_pushes_ends_on_the_newest_with_few_rollouts(
    bed: SwarmBed, unique: str, make_server: ServerFactory
):
    repo = f"acme/{unique}"
    base = bed.make_image(repo, "1.0.0")
    tags = [f"1.0.{i}" for i in range(1, 201)]
    digests = bed.publish_tags(base, tags)
    bed.create_service(unique, base, replicas=2)
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host, workers=4)

    started = time.monotonic()
    statuses = burst(server, repo, tags)
    sent_in = time.monotonic() - started

    assert sent_in < 10, f"200 pushes took {sent_in:.1f}s"
    assert sorted(set(statuses)) == [202]
    deps = wait_for(lambda: settled(server, unique, 200), timeout=120, interval=0.5, what="the burst to settle")
    assert {d["tag"] for d in deps} == set(tags)  # every accepted push is in the journal
    rollouts = [d for d in deps if d["state"] in ROLLED_OUT]
    assert 1 <= len(rollouts) <= 3, [(d["tag"], d["state"]) for d in rollouts]
    assert all(d["state"] == "succeeded" for d in rollouts)
    assert {d["state"] for d in deps} <= {"succeeded", "superseded", "skipped"}
    final = f"{bed.registry}/{repo}:1.0.200@{digests['1.0.200']}"
    assert spec_image(bed, unique) == final
    assert_all_tasks_run(bed, unique, final, replicas=2)
    print(f"burst: 200 pushes sent in {sent_in:.2f}s, {len(rollouts)} rollout(s)")


@ON_BOTH_JOURNALS
def test_two_services_burst_at_once_and_roll_out_in_parallel(bed: SwarmBed, unique: str, make_server: ServerFactory):
    repos = {f"{unique}_a": f"acme/{unique}a", f"{unique}_b": f"acme/{unique}b"}
    tags = [f"3.1.{i}" for i in range(1, 21)]
    finals = {}
    rules = ""
    for service, repo in repos.items():
        base = bed.make_image(repo, "3.0.0")
        finals[service] = f"{bed.registry}/{repo}:3.1.20@{bed.publish_tags(base, tags)['3.1.20']}"
        bed.create_service(service, base, replicas=1)
        rules += rules_for(bed, repo, service).split("services:\n", 1)[1]
    server = make_server(
        rules_for(bed, "x/x").split("services:\n")[0] + "services:\n" + rules, docker_host=bed.docker_host, workers=3
    )

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda repo: burst(server, repo, tags, threads=4), repos.values()))

    assert all(set(r) == {202} for r in results)
    spans = {}
    for service in repos:
        deps = wait_for(lambda s=service: settled(server, s, len(tags)), timeout=120, interval=0.5, what=service)
        assert spec_image(bed, service) == finals[service]
        rolled = [d for d in deps if d["state"] in ROLLED_OUT]
        spans[service] = (
            min(datetime.fromisoformat(d["started_at"]) for d in rolled),
            max(datetime.fromisoformat(d["finished_at"]) for d in rolled),
        )
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, f"rollouts did not overlap: {spans}"


def test_replayed_payload_makes_no_second_rollout(bed: SwarmBed, unique: str, make_server: ServerFactory):
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    bed.make_image(repo, "1.0.1")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host)
    payload = documented_payload(repo, "1.0.1")

    first = server.wait_done(server.hook(payload).json()["deployments"][0]["id"])
    version = bed.client.services.get(unique).attrs["Version"]["Index"]
    replay = server.wait_done(server.hook(payload).json()["deployments"][0]["id"])

    assert first["state"] == "succeeded"
    assert replay["state"] == "skipped" and "already runs" in replay["message"]
    assert bed.client.services.get(unique).attrs["Version"]["Index"] == version


@ON_BOTH_JOURNALS
def test_sigkill_mid_rollout_is_reconciled_on_restart(bed: SwarmBed, unique: str, make_server: ServerFactory):
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    v1 = bed.make_image(repo, "1.1.0")
    v2 = bed.make_image(repo, "1.2.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    slow = rules_for(bed, repo, unique).replace("monitor: 2s", "monitor: 8s")
    server = make_server(slow, docker_host=bed.docker_host)

    first = server.hook(documented_payload(repo, "1.1.0")).json()["deployments"][0]["id"]
    wait_for(
        lambda: (
            server.deployment(first).get("image_ref")
            and bed.client.services.get(unique).attrs.get("UpdateStatus", {}).get("State") == "updating"
        ),
        timeout=30,
        interval=0.1,
        what="the rollout to be under way in Swarm",
    )
    second = server.hook(documented_payload(repo, "1.2.0")).json()["deployments"][0]["id"]
    server.stop(signal.SIGKILL)

    revived = start_server(server.root, env=server.env, workers=2)
    try:
        one = revived.wait_done(first, timeout=90)
        two = revived.wait_done(second, timeout=90)
    finally:
        revived.stop()

    assert one["state"] == "succeeded", one
    assert any("following the update in Swarm" in (t["message"] or "") for t in one["transitions"])
    assert one["image_ref"] == f"{v1}@{bed.registry_digest(v1)}"
    assert two["state"] == "succeeded", two
    assert spec_image(bed, unique) == f"{v2}@{bed.registry_digest(v2)}"
    updates = [t for t in one["transitions"] if (t["message"] or "").startswith("updating ")]
    assert len(updates) == 1  # followed after the restart, not started again


def test_rollback_via_api_and_cli_after_an_automatic_rollback(bed: SwarmBed, unique: str, make_server: ServerFactory):
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    a = bed.make_image(repo, "1.1.0")
    b = bed.make_image(repo, "1.2.0")
    bed.make_image(repo, "1.3.0", kind="crash")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    server = make_server(rules_for(bed, repo, unique), docker_host=bed.docker_host)
    a_ref, b_ref = f"{a}@{bed.registry_digest(a)}", f"{b}@{bed.registry_digest(b)}"

    deployed = {}
    for tag in ("1.1.0", "1.2.0", "1.3.0"):
        deployed[tag] = server.wait_done(server.hook(documented_payload(repo, tag)).json()["deployments"][0]["id"])
    assert [deployed[t]["state"] for t in deployed] == ["succeeded", "succeeded", "rolled_back"]
    assert spec_image(bed, unique) == b_ref
    assert (
        not bed.client.services.get(unique)
        .attrs.get("PreviousSpec", {})
        .get("TaskTemplate", {})
        .get("ContainerSpec", {})
        .get("Image", "")
        .startswith(a)
    )  # Swarm itself no longer knows the way back to A

    via_api = server.api("POST", f"/services/{unique}/rollback?wait=true")
    assert via_api.status_code == 200, via_api.text
    assert via_api.json()["state"] == "succeeded" and via_api.json()["trigger"] == "rollback"
    assert spec_image(bed, unique) == a_ref

    via_cli = server.cli("rollback", unique, "--to", str(deployed["1.2.0"]["id"]), "--wait")
    assert via_cli.returncode == 0, via_cli.stderr
    assert "succeeded" in via_cli.stdout
    assert spec_image(bed, unique) == b_ref
    assert_all_tasks_run(bed, unique, b_ref, replicas=1)

    bad = server.api("POST", f"/services/{unique}/rollback", json={"to": deployed["1.3.0"]["id"]})
    assert bad.status_code == 422 and "rolled_back" in bad.json()["message"]


@pytest.fixture
def own_bed() -> Iterator[SwarmBed]:
    """A bed of its own: this test stops and starts the Docker daemon."""
    with running_bed() as bed:
        yield bed


@ON_BOTH_JOURNALS
def test_docker_outage_keeps_accepting_and_deploys_afterwards(
    own_bed: SwarmBed, unique: str, make_server: ServerFactory, journal_backend: str
):
    bed = own_bed
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    later = bed.make_image(repo, "1.0.2")
    bed.make_image(repo, "1.0.1")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    server = make_server(
        rules_for(bed, repo, unique),
        docker_host=bed.docker_host,
        env={"WEBHOOK_DOCKER_RETRY_MAX_DELAY": "1s", "WEBHOOK_DOCKER_RETRY_LIMIT": "5m"},
    )

    bed.stop_daemon()
    answered: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            answered.append(server.session.get(f"{server.url}/healthz", timeout=5).status_code)
            time.sleep(0.2)

    prober = threading.Thread(target=keep_asking)
    prober.start()
    try:
        ids = [server.hook(documented_payload(repo, t)).json()["deployments"][0]["id"] for t in ("1.0.1", "1.0.2")]
        ready = server.session.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["reasons"][0].startswith("docker: ")
        if journal_backend == "sqlite":
            wait_for(
                lambda: all(server.deployment(i)["attempts"] >= 2 for i in ids[-1:]),
                timeout=60,
                what="a few retries to fail while Docker is down",
            )
        else:
            # On a shared journal a receiver whose Docker is down does not run rollouts: the work waits,
            # queued, for a receiver whose Docker works (here, itself once Docker is back), spending no retries.
            wait_for(
                lambda: "not running rollouts while this lasts" in server.log_text(),
                timeout=30,
                what="the receiver to leave rollouts to others",
            )
            assert all(server.deployment(i)["state"] == "queued" for i in ids)
        bed.start_daemon()
        done = [server.wait_done(i, timeout=120) for i in ids]
    finally:
        stop.set()
        prober.join()

    assert sorted(d["state"] for d in done) == ["succeeded", "superseded"]
    [deployed] = [d for d in done if d["state"] == "succeeded"]
    retries = [t for t in deployed["transitions"] if t["state"] == "queued" and "unreachable" in (t["message"] or "")]
    if journal_backend == "sqlite":
        assert retries, deployed["transitions"]  # it waited out the outage in the queue, and said why
        assert deployed["attempts"] >= len(retries)
    wait_for(
        lambda: spec_image(bed, unique) == f"{later}@{bed.registry_digest(later)}", timeout=30, what="the newest tag"
    )
    assert answered and set(answered) == {200}
    assert server.session.get(f"{server.url}/readyz", timeout=10).status_code == 200


@ON_BOTH_JOURNALS
def test_coalescing_keeps_the_version_the_policy_allows(bed: SwarmBed, unique: str, make_server: ServerFactory):
    """Runs 1.0.0 under policy minor; 1.1.0 and 2.0.0 queue while a rollout is busy: 1.1.0 deploys and 2.0.0
    is refused, instead of 2.0.0 superseding 1.1.0 and then being refused itself."""
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    busy = bed.make_image(repo, "1.0.1")
    allowed = bed.make_image(repo, "1.1.0")
    bed.make_image(repo, "2.0.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    rules = rules_for(bed, repo, unique, policy="minor").replace("monitor: 2s", "monitor: 6s")
    server = make_server(rules, docker_host=bed.docker_host)

    first = server.hook(documented_payload(repo, "1.0.1")).json()["deployments"][0]["id"]
    wait_for(lambda: server.deployment(first)["state"] == "running", timeout=30, what="the first rollout to run")
    minor = server.hook(documented_payload(repo, "1.1.0")).json()["deployments"][0]["id"]
    major = server.hook(documented_payload(repo, "2.0.0")).json()["deployments"][0]["id"]
    assert server.deployment(first)["state"] == "running", "the later pushes must queue behind a busy rollout"

    done = {name: server.wait_done(i, timeout=120) for name, i in (("busy", first), ("minor", minor), ("major", major))}

    assert done["busy"]["state"] == "succeeded" and done["busy"]["image_ref"].startswith(busy)
    assert done["minor"]["state"] == "succeeded", done["minor"]
    assert done["major"]["state"] == "skipped" and "policy 'minor' forbids it" in done["major"]["message"]
    assert spec_image(bed, unique) == f"{allowed}@{bed.registry_digest(allowed)}"


@ON_BOTH_JOURNALS
def test_losing_docker_mid_rollout_gives_up_within_the_retry_limit_and_frees_the_service(
    own_bed: SwarmBed, unique: str, make_server: ServerFactory, journal_backend: str
):
    """A rollout whose Docker goes away is followed within the retry limit, then failed with the reason;
    it never stays "running" for ever, and the next push deploys once Docker is back.

    On a shared journal the receiver steps down instead (another receiver, whose Docker works, would follow
    the rollout): here, with one receiver, it follows the rollout to Swarm's outcome once Docker is back."""
    bed = own_bed
    repo = f"acme/{unique}"
    bed.make_image(repo, "1.0.0")
    bed.make_image(repo, "1.1.0")
    after = bed.make_image(repo, "1.2.0")
    bed.create_service(unique, f"{bed.registry}/{repo}:1.0.0", replicas=1)
    server = make_server(
        rules_for(bed, repo, unique).replace("monitor: 2s", "monitor: 30s"),
        docker_host=bed.docker_host,
        env={"WEBHOOK_DOCKER_RETRY_MAX_DELAY": "1s", "WEBHOOK_DOCKER_RETRY_LIMIT": "3s"},
    )
    first = server.hook(documented_payload(repo, "1.1.0")).json()["deployments"][0]["id"]
    wait_for(
        lambda: bed.client.services.get(unique).attrs.get("UpdateStatus", {}).get("State") == "updating",
        timeout=30,
        interval=0.1,
        what="the rollout to be under way in Swarm",
    )

    bed.stop_daemon()
    if journal_backend == "postgresql":
        try:
            wait_for(lambda: "stepping down" in server.log_text(), timeout=30, what="the receiver to step down")
            assert server.deployment(first)["state"] == "running"
        finally:
            bed.start_daemon()
        followed = server.wait_done(first, timeout=120)
        assert followed["state"] == "succeeded", followed
        second = server.wait_done(server.hook(documented_payload(repo, "1.2.0")).json()["deployments"][0]["id"])
        assert second["state"] == "succeeded", second
        return
    try:
        lost = server.wait_done(first, timeout=60)
    finally:
        bed.start_daemon()

    assert lost["state"] == "failed", lost
    assert lost["message"].startswith("lost contact with Docker for more than 3s during the update"), lost["message"]
    assert "is unreachable" in lost["message"]
    assert lost["attempts"] >= 1
    log = server.log_text()
    assert log.count("following the update again in") == lost["attempts"], "one log line per retry, not per poll"

    second = server.wait_done(server.hook(documented_payload(repo, "1.2.0")).json()["deployments"][0]["id"])
    assert second["state"] == "succeeded", second
    assert spec_image(bed, unique) == f"{after}@{bed.registry_digest(after)}"


@pytest.mark.parametrize("lost", ["answer", "request"])
def test_an_update_whose_answer_is_lost_on_the_wire_is_followed_to_swarms_outcome(
    bed: SwarmBed, unique: str, make_server: ServerFactory, lost: str
):
    """Docker's answer to the update never arrives (read timeout). If the update reached Swarm, the
    deployment follows it to Swarm's real outcome (here a rollback), never "skipped"; if it did not, it is
    sent again."""
    repo = f"acme/{unique}"
    good = bed.make_image(repo, "1.0.0")
    bed.make_image(repo, "1.0.1", kind="crash")
    fine = bed.make_image(repo, "1.0.2")
    good_ref = f"{good}@{bed.registry_digest(good)}"
    bed.create_service(unique, good_ref, replicas=1)
    with docker_proxy(bed.docker_host.removeprefix("unix://")) as proxy:
        server = make_server(
            rules_for(bed, repo, unique),
            docker_host=proxy.docker_host,
            env={"WEBHOOK_DOCKER_TIMEOUT": "2s", "WEBHOOK_DOCKER_RETRY_MAX_DELAY": "1s"},
        )
        if lost == "answer":
            proxy.lose_answers = 1
            dep = server.wait_done(server.hook(documented_payload(repo, "1.0.1")).json()["deployments"][0]["id"])
            assert dep["state"] == "rolled_back", dep
            assert "non-zero exit (3)" in dep["message"]
            assert proxy.updates_seen == 1, "followed, not sent again"
            assert spec_image(bed, unique) == good_ref
        else:
            proxy.drop_requests = 1
            dep = server.wait_done(server.hook(documented_payload(repo, "1.0.2")).json()["deployments"][0]["id"])
            assert dep["state"] == "succeeded", dep
            assert proxy.updates_seen == 2, "sent again once the first never reached Swarm"
            assert spec_image(bed, unique) == f"{fine}@{bed.registry_digest(fine)}"
        notes = [t["message"] or "" for t in dep["transitions"]]
        assert any("did not answer in time; finding out whether the update reached Swarm" in n for n in notes), notes
