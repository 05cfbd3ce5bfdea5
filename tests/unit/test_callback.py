"""Docker Hub's callback_url: called once per push after its last deployment ends, only where allowed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import responses

from webhook_server.callback import Callbacks, refusal
from webhook_server.journal import Journal, PushRecord
from webhook_server.matching import DeployPlan

HUB = "https://registry.hub.docker.com/u/acme/api/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/"

REFUSALS: list[tuple[str, str, str | None]] = [
    ("hub", HUB, None),
    ("loopback", "https://127.0.0.1/hook", "an address, not a host name"),
    ("metadata", "https://169.254.169.254/latest/meta-data", "an address, not a host name"),
    ("ipv6", "https://[::1]/hook", "an address, not a host name"),
    ("http", "http://registry.hub.docker.com/u/x", "not https"),
    ("other-host", "https://evil.example/hook", "evil.example is not an allowed callback host"),
    ("lookalike", "https://registry.hub.docker.com.evil.example/x", "is not an allowed callback host"),
    ("credentials", "https://u:p@registry.hub.docker.com/x", "carries credentials"),
    ("port", "https://registry.hub.docker.com:8443/x", "not the https port"),
    ("garbage", "https://[bad/x", "not a URL"),
]


@pytest.mark.parametrize(("url", "reason"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_refusal(url: str, reason: str | None) -> None:
    found = refusal(url, ("registry.hub.docker.com",))
    assert found == reason if reason is None else (found is not None and reason in found)


def push(journal: Journal, url: str | None, *services: str) -> list[int]:
    plans = [DeployPlan(service=s, repository="acme/api", image="acme/api", tag="1.2.3") for s in services]
    record = PushRecord(trigger="dockerhub", repository="acme/api", tag="1.2.3", callback_url=url)
    return [d.id for d in journal.accept(record, plans)]


def wait_notes(journal: Journal, dep_id: int) -> list[object]:
    deadline = time.monotonic() + 10
    while not (found := journal.notifications(dep_id)):
        assert time.monotonic() < deadline, "nothing recorded"
        time.sleep(0.02)
    return list(found)


@responses.activate
def test_called_once_after_the_last_deployment_of_the_push_with_its_outcome(tmp_path: Path) -> None:
    responses.post(HUB, json={})
    journal = Journal(tmp_path / "j.sqlite3")
    Callbacks(journal).subscribe()
    api, worker = push(journal, HUB, "api", "worker")
    journal.update(api, state="running")
    journal.update(api, state="succeeded")
    assert len(responses.calls) == 0  # the worker's rollout has not ended yet
    journal.update(worker, state="running")
    journal.update(worker, state="rolled_back", message="task: non-zero exit (3)")

    [note] = wait_notes(journal, worker)
    assert [c.request.url for c in responses.calls] == [HUB]
    body = json.loads(responses.calls[0].request.body or b"{}")
    assert body == {"state": "failure", "description": "api succeeded; worker rolled_back", "context": "webhook-server"}
    assert (note.outcome, note.target) == ("sent", "Docker Hub callback (https://registry.hub.docker.com/…)")  # type: ignore[attr-defined]
    assert "2141b5" not in note.target  # type: ignore[attr-defined]


@responses.activate
@pytest.mark.parametrize(
    ("url", "answer", "detail"),
    [
        ("https://127.0.0.1/hook", None, "an address, not a host name"),
        ("http://registry.hub.docker.com/u/x", None, "not https"),
        (HUB, 302, "answered 302"),
        (HUB, 500, "answered 500"),
    ],
    ids=["loopback", "http", "redirect-not-followed", "error"],
)
def test_refused_or_failed_calls_are_recorded_and_change_nothing(
    tmp_path: Path, url: str, answer: int | None, detail: str
) -> None:
    if answer is not None:
        responses.post(url, status=answer, headers={"Location": "https://169.254.169.254/"} if answer == 302 else {})
    journal = Journal(tmp_path / "j.sqlite3")
    Callbacks(journal).subscribe()
    [dep] = push(journal, url, "api")
    journal.update(dep, state="running")
    journal.update(dep, state="succeeded")

    [note] = wait_notes(journal, dep)
    assert (note.outcome, note.detail) == ("failed", detail)  # type: ignore[attr-defined]
    assert [c.request.url for c in responses.calls] == ([url] if answer is not None else [])
    assert journal.get(dep).state == "succeeded"


def test_a_push_without_a_callback_calls_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    Callbacks(journal).subscribe()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        [dep] = push(journal, None, "api")
        journal.update(dep, state="skipped", message="already runs")
        assert len(mock.calls) == 0
    assert journal.notifications(dep) == []
