"""The early digest: the registry is asked for the push a claim will choose while the claim goes on, once."""

from __future__ import annotations

import pytest

from tests.fakes import FakeSwarm
from tests.unit.test_executor import IMAGE, enqueue, make_executor
from webhook_server.journal import Journal, PushRecord
from webhook_server.matching import DeployPlan


@pytest.fixture
def swarm() -> FakeSwarm:
    fake = FakeSwarm()
    fake.add_service("api", f"{IMAGE}:1.0.0@sha256:{'0' * 64}")
    return fake


def resolves(swarm: FakeSwarm) -> list[tuple[object, ...]]:
    return [call for call in swarm.calls if call[0] == "resolve_digest"]


def test_a_push_is_resolved_once_and_deployed_by_its_digest(journal: Journal, swarm: FakeSwarm) -> None:
    digest = swarm.push(IMAGE, "1.1.0")
    [dep_id] = enqueue(journal, "api", "1.1.0")
    swarm.calls.clear()
    make_executor(journal, swarm).drain("api")
    assert journal.get(dep_id).state == "succeeded"
    assert journal.get(dep_id).image_ref == f"{IMAGE}:1.1.0@{digest}"
    assert resolves(swarm) == [("resolve_digest", IMAGE, "1.1.0")]


def test_among_queued_pushes_the_rules_first_choice_is_the_one_asked_for(journal: Journal, swarm: FakeSwarm) -> None:
    for tag in ("1.0.3", "1.0.9", "1.0.5"):
        swarm.push(IMAGE, tag)
    ids = enqueue(journal, "api", "1.0.3", "1.0.9", "1.0.5")  # the highest version arrived in the middle
    swarm.calls.clear()
    make_executor(journal, swarm).drain("api")
    assert [journal.get(i).state for i in ids] == ["superseded", "succeeded", "superseded"]
    assert resolves(swarm) == [("resolve_digest", IMAGE, "1.0.9")]


def test_when_the_registry_has_no_such_tag_the_claim_asks_again_and_reports_it(
    journal: Journal, swarm: FakeSwarm
) -> None:
    [dep_id] = enqueue(journal, "api", "1.1.0")  # never pushed to the registry
    swarm.calls.clear()
    make_executor(journal, swarm).drain("api")
    dep = journal.get(dep_id)
    assert dep.state == "failed"
    assert "is not in its registry" in (dep.message or "")
    assert len(resolves(swarm)) == 2  # the early question's error is not the one reported: the claim's own is


def test_a_rollback_names_its_digest_and_asks_the_registry_nothing(journal: Journal, swarm: FakeSwarm) -> None:
    target = f"{IMAGE}:0.9.0@sha256:{'9' * 64}"
    plan = DeployPlan(service="api", repository="acme/api", image=IMAGE, tag="0.9.0")
    journal.accept(PushRecord(trigger="rollback", repository="acme/api", tag="0.9.0"), [plan], pinned_ref=target)
    swarm.calls.clear()
    make_executor(journal, swarm).drain("api")
    assert resolves(swarm) == []
