"""Docker's service events on the real bed: what wakes a rollout's watch before its fallback poll."""

from __future__ import annotations

import pytest

from tests.bed import SwarmBed, wait_for
from webhook_server.swarm.events import ServiceEvents

pytestmark = pytest.mark.swarm


def test_swarms_update_events_reach_the_watch_of_that_service_only(bed: SwarmBed, unique: str) -> None:
    events = ServiceEvents(bed.docker_host)
    other = f"{unique}o"
    assert events.seen(unique) == 0
    old, new = bed.make_image(f"acme/{unique}", "1.0.0"), bed.make_image(f"acme/{unique}", "1.1.0")
    # Creating the service is its first event: once it is counted, the stream is live.
    bed.create_service(unique, old, replicas=1)
    wait_for(lambda: events.seen(unique) > 0, timeout=30, interval=0.05, what="the service's creation event")
    before, others = events.seen(unique), events.seen(other)

    bed.client.services.get(unique).update(image=new)
    # Without an event the wait would run its whole minute; with one it returns as Swarm moves.
    after = events.wait(unique, after=before, timeout=60)
    assert after > before
    completed = wait_for(
        lambda: (bed.client.services.get(unique).attrs.get("UpdateStatus") or {}).get("State") == "completed" or None,
        timeout=60,
        what="the update to complete",
    )
    assert completed
    # The new spec, "updating" and "completed": three events, each one a wake-up for the watch.
    wait_for(lambda: events.seen(unique) >= before + 3, timeout=30, interval=0.05, what="the completion event")
    assert events.seen(other) == others
