"""Notifications: the message, which outcomes go where, and failures that never touch a deployment.

apprise's outgoing HTTP is intercepted with ``responses``: a notifier that answers 500, times out, refuses
the connection or hangs. The URLs carry a secret that must appear in no log line and no journal row.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import responses

from webhook_server import notify
from webhook_server.errors import ConfigError
from webhook_server.journal import Deployment, Journal, Notification, PushRecord
from webhook_server.matching import Coalesced, DeployPlan
from webhook_server.notify import Notifier, check_urls, label, message_for, parse_url_list, url_problem
from webhook_server.rules import RuleSet, parse_rules

SECRET = "s3cr3t-T0KEN-value"
HOOK = f"http://127.0.0.1:8080/hooks/{SECRET}"
URL = f"json://127.0.0.1:8080/hooks/{SECRET}"
OTHER_HOOK = f"http://127.0.0.1:8081/{SECRET}-other"
OTHER_URL = f"json://127.0.0.1:8081/{SECRET}-other"
OLD = "registry.local:5000/acme/api:1.0.0@sha256:" + "a" * 64
NEW = "registry.local:5000/acme/api:1.0.1@sha256:" + "b" * 64


def rules_text(*, notify_on: str | None = None, notify: str | None = None) -> str:
    extra = (f"    notify_on: {notify_on}\n" if notify_on else "") + (f"    notify: {notify}\n" if notify else "")
    return f"services:\n  api:\n    repository: acme/api\n    tags: semver\n{extra}"


def rules_of(text: str) -> Callable[[], RuleSet]:
    ruleset = parse_rules(text)
    return lambda: ruleset


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.sqlite3")


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def make_notifier(journal: Journal) -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(urls: tuple[str, ...] = (URL,), text: str | None = None, **kwargs: float) -> Notifier:
        notifier = Notifier(journal, urls=urls, rules=rules_of(text or rules_text()), **kwargs)  # type: ignore[arg-type]
        notifier.subscribe()
        notifier.start()
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.stop(timeout=1)


def finish(journal: Journal, state: str = "rolled_back", message: str = "task exited (3)") -> Deployment:
    """A deployment of acme/api 1.0.1 over 1.0.0 that ran and ended in ``state``."""
    push = PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.1")
    [dep] = journal.accept(push, [DeployPlan(service="api", repository="acme/api", image="acme/api", tag="1.0.1")])
    claimed = journal.claim("api", lambda queued: Coalesced(chosen=queued[-1]))
    assert claimed is not None and claimed.id == dep.id
    journal.update(dep.id, image_ref=NEW, previous_image=OLD, digest=NEW.partition("@")[2])
    return journal.update(dep.id, state=state, message=message)  # type: ignore[arg-type]


def wait_notifications(journal: Journal, dep_id: int, count: int = 1, timeout: float = 10) -> list[Notification]:
    deadline = time.monotonic() + timeout
    while True:
        found = journal.notifications(dep_id)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{count} notification(s) of deployment {dep_id}; have {found}"
        time.sleep(0.02)


def journal_text(journal: Journal) -> str:
    with sqlite3.connect(journal.path) as conn:
        return "\n".join(repr(row) for row in conn.execute("SELECT * FROM notifications"))


# ---- the message ------------------------------------------------------------------------------------
def test_the_message_says_service_from_to_state_reason_duration_trigger_and_id(journal: Journal) -> None:
    dep = finish(journal, message="update rolled back; task on node1: failed: task: non-zero exit (3)")

    title, body = message_for(dep)

    assert title == "api: rolled_back (1.0.1)"
    lines = body.splitlines()
    assert lines[0] == (
        f"api rolled_back: registry.local:5000/acme/api:1.0.0 (sha256:{'a' * 12})"
        f" → registry.local:5000/acme/api:1.0.1 (sha256:{'b' * 12})"
    )
    assert lines[1] == "image: acme/api"
    assert lines[2] == "reason: update rolled back; task on node1: failed: task: non-zero exit (3)"
    assert lines[3] == f"took 0s · trigger dockerhub · deployment {dep.id}"


def test_the_message_of_a_deployment_that_never_reached_swarm(journal: Journal) -> None:
    push = PushRecord(trigger="manual", repository="acme/api", tag="9.9.9")
    [dep] = journal.accept(push, [DeployPlan(service="api", repository="acme/api", image="acme/api", tag="9.9.9")])
    dep = journal.update(dep.id, state="failed", message="tag 9.9.9 is not in the registry")

    body = message_for(dep)[1]

    assert body.splitlines()[0] == "api failed: unknown → 9.9.9"
    assert "reason: tag 9.9.9 is not in the registry" in body
    assert body.splitlines()[-1] == f"after 0s · trigger manual · deployment {dep.id}"


def test_same_image_name_is_not_repeated(journal: Journal) -> None:
    push = PushRecord(trigger="dockerhub", repository="acme/api", tag="1.0.1")
    [dep] = journal.accept(push, [DeployPlan(service="api", repository="acme/api", image="acme/api", tag="1.0.1")])
    journal.claim("api", lambda queued: Coalesced(chosen=queued[-1]))
    journal.update(dep.id, image_ref="acme/api:1.0.1@sha256:" + "c" * 64, previous_image="acme/api:1.0.0")
    dep = journal.update(dep.id, state="succeeded", message="swarm: completed")

    assert message_for(dep)[1].splitlines()[0] == f"api succeeded: 1.0.0 → 1.0.1 (sha256:{'c' * 12})"


# ---- URLs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (URL, "json://127.0.0.1:8080/…"),
        (f"jsons://user:{SECRET}@hooks.example.com/x", "jsons://hooks.example.com/…"),
        (f"form://[::1]:9000/{SECRET}", "form://[::1]:9000/…"),
        (f"discord://1234567/{SECRET}", "Discord (discord://…)"),
        (f"slack://T1JJ3T3L2/A1BRTD4JD/{SECRET}", "Slack (slack://…)"),
    ],
)
def test_labels_never_hold_a_secret(url: str, expected: str) -> None:
    assert label(url) == expected
    assert SECRET not in label(url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (URL, None),
        (f"discord://1234567/{SECRET}", None),
        (f"nosuchservice://{SECRET}", "nosuchservice:// is not a notification service apprise knows"),
        (SECRET, "is not a notification URL (SERVICE://…, such as json://host/path or slack://…)"),
        ("discord://", "is not a valid Discord URL (discord://…): a part is missing or malformed"),
        ("", "is empty"),
        (42, "must be a string: a notification URL such as json://host/path or slack://TOKEN_A/TOKEN_B/TOKEN_C"),
    ],
)
def test_url_problems_never_repeat_the_url(url: object, problem: str | None) -> None:
    assert url_problem(url) == problem


def test_check_urls_names_the_source_and_position_only() -> None:
    with pytest.raises(ConfigError) as e:
        check_urls([URL, f"nosuchservice://{SECRET}", f"discord://{SECRET}"], source="WEBHOOK_NOTIFY_URLS")
    assert e.value.message == (
        "WEBHOOK_NOTIFY_URLS: entry 2: nosuchservice:// is not a notification service apprise knows;"
        " entry 3: is not a valid Discord URL (discord://…): a part is missing or malformed"
    )
    assert SECRET not in e.value.message


def test_url_lists_split_on_white_space_and_skip_comments() -> None:
    text = f"# the team\n{URL}  mailto://u:p@example.com?to=a@example.com,b@example.com\n\n  # off: {OTHER_URL}\n"
    assert parse_url_list(text) == [URL, "mailto://u:p@example.com?to=a@example.com,b@example.com"]


def test_a_bad_global_url_refuses_to_build_a_notifier(journal: Journal) -> None:
    with pytest.raises(ConfigError, match="notification URLs: entry 1: ") as e:
        Notifier(journal, urls=[f"nosuchservice://{SECRET}"])
    assert SECRET not in e.value.message


# ---- sending ----------------------------------------------------------------------------------------
def test_an_outcome_is_posted_and_recorded_sent(
    journal: Journal, mocked: responses.RequestsMock, make_notifier: Callable[..., Notifier]
) -> None:
    mocked.post(HOOK, status=200)
    make_notifier()

    dep = finish(journal, message="update rolled back; task on node1: failed: non-zero exit (3)")

    [sent] = wait_notifications(journal, dep.id)
    assert (sent.target, sent.outcome, sent.detail) == ("json://127.0.0.1:8080/…", "sent", None)
    [call] = mocked.calls
    payload = json.loads(call.request.body or b"")
    assert payload["title"] == "api: rolled_back (1.0.1)"
    assert payload["message"] == message_for(journal.get(dep.id))[1]
    assert "non-zero exit (3)" in payload["message"]
    assert payload["type"] == "failure"
    assert call.request.headers["User-Agent"] == "webhook-server"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"status": 500}, "error=500"),
        ({"body": requests.exceptions.ReadTimeout(f"Read timed out: {HOOK}")}, "A Connection error occurred"),
        ({"body": requests.exceptions.ConnectionError(f"Connection refused: {HOOK}")}, "A Connection error occurred"),
    ],
    ids=["500", "timeout", "refused"],
)
def test_a_failing_notifier_is_recorded_failed_and_changes_nothing(
    journal: Journal,
    mocked: responses.RequestsMock,
    make_notifier: Callable[..., Notifier],
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, object],
    expected: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    mocked.post(HOOK, **answer)
    make_notifier()

    dep = finish(journal)

    [failed] = wait_notifications(journal, dep.id)
    assert failed.outcome == "failed" and failed.target == "json://127.0.0.1:8080/…"
    assert failed.detail is not None and expected in failed.detail
    after = journal.get(dep.id)
    assert (after.state, after.message, after.finished_at) == (dep.state, dep.message, dep.finished_at)
    assert SECRET not in journal_text(journal)
    assert SECRET not in caplog.text
    assert "notifying json://127.0.0.1:8080/… failed" in caplog.text


def test_a_hanging_notifier_is_abandoned_and_never_holds_the_rollout_thread(
    journal: Journal, mocked: responses.RequestsMock, make_notifier: Callable[..., Notifier]
) -> None:
    release = threading.Event()

    def hang(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        release.wait(30)
        return 200, {}, ""

    mocked.add_callback(responses.POST, HOOK, callback=hang)
    make_notifier(attempt_timeout=0.5)
    try:
        started = time.monotonic()
        dep = finish(journal)
        ended_in = time.monotonic() - started

        [failed] = wait_notifications(journal, dep.id)
    finally:
        release.set()
    assert ended_in < 0.4, "the rollout thread waited for the notifier"
    assert failed.outcome == "failed"
    assert failed.detail is not None and failed.detail == "no answer within 500ms; gave up"


def test_a_hang_delays_the_next_notification_only_by_the_attempt_limit(
    journal: Journal, mocked: responses.RequestsMock, make_notifier: Callable[..., Notifier]
) -> None:
    release = threading.Event()

    def hang(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        release.wait(30)
        return 200, {}, ""

    mocked.add_callback(responses.POST, HOOK, callback=hang)
    mocked.post(OTHER_HOOK, status=200)
    make_notifier(urls=(URL, OTHER_URL), attempt_timeout=0.5)
    try:
        dep = finish(journal)
        first, second = wait_notifications(journal, dep.id, count=2)
    finally:
        release.set()
    assert (first.outcome, second.outcome) == ("failed", "sent")
    assert second.target == "json://127.0.0.1:8081/…"


def test_a_full_queue_drops_with_a_failed_record_instead_of_blocking(
    journal: Journal,
    mocked: responses.RequestsMock,
    make_notifier: Callable[..., Notifier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    entered = threading.Event()

    def hang(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        entered.set()
        release.wait(30)
        return 200, {}, ""

    mocked.add_callback(responses.POST, HOOK, callback=hang)
    make_notifier(queue_size=1, attempt_timeout=20)
    try:
        busy = finish(journal)  # holds the sender
        assert entered.wait(10)
        queued = finish(journal)  # fills the queue
        started = time.monotonic()
        dropped = finish(journal)
        assert time.monotonic() - started < 0.4
        [record] = journal.notifications(dropped.id)
    finally:
        release.set()
    assert (record.outcome, record.target) == ("failed", "json://127.0.0.1:8080/…")
    assert record.detail == "dropped: 1 notifications were already waiting"
    assert "dropped: 1 notifications were already waiting" in caplog.text
    assert wait_notifications(journal, busy.id)[0].outcome == "sent"
    assert wait_notifications(journal, queued.id)[0].outcome == "sent"


def test_stop_records_what_it_could_not_send(
    journal: Journal, mocked: responses.RequestsMock, make_notifier: Callable[..., Notifier]
) -> None:
    release = threading.Event()
    entered = threading.Event()

    def hang(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        entered.set()
        release.wait(30)
        return 200, {}, ""

    mocked.add_callback(responses.POST, HOOK, callback=hang)
    notifier = make_notifier(attempt_timeout=20)
    try:
        busy = finish(journal)
        assert entered.wait(10)
        waiting = finish(journal)
        started = time.monotonic()
        notifier.stop(timeout=0.3)
        assert time.monotonic() - started < 2
    finally:
        release.set()
    [left] = journal.notifications(waiting.id)
    assert (left.outcome, left.detail) == ("failed", "not sent: the server stopped first")
    [cut] = wait_notifications(journal, busy.id)
    assert cut.outcome == "failed"
    after_stop = finish(journal)
    [refused] = journal.notifications(after_stop.id)
    assert refused.detail == "not sent: the notifier is not running"


# ---- who is told about what ---------------------------------------------------------------------------
def test_by_default_only_rollbacks_and_failures_are_sent(
    journal: Journal, mocked: responses.RequestsMock, make_notifier: Callable[..., Notifier]
) -> None:
    mocked.post(HOOK, status=200)
    notifier = make_notifier()

    ok = finish(journal, "succeeded", "swarm: completed")
    failed = finish(journal, "failed", "Swarm paused the update")
    skipped = finish(journal, "skipped", "already runs it")

    wait_notifications(journal, failed.id)
    notifier.stop(timeout=5)
    assert journal.notifications(ok.id) == []
    assert journal.notifications(skipped.id) == []
    assert len(mocked.calls) == 1


def test_a_rule_adds_its_own_urls_and_chooses_the_outcomes(
    journal: Journal, mocked: responses.RequestsMock, make_notifier: Callable[..., Notifier]
) -> None:
    mocked.post(HOOK, status=200)
    mocked.post(OTHER_HOOK, status=200)
    # The global URL listed again in the rule is one target, not two.
    make_notifier(text=rules_text(notify_on="[succeeded]", notify=f'["{OTHER_URL}", "{URL}"]'))

    rolled_back = finish(journal)
    ok = finish(journal, "succeeded", "swarm: completed")

    sent = wait_notifications(journal, ok.id, count=2)
    assert [(n.target, n.outcome) for n in sent] == [
        ("json://127.0.0.1:8080/…", "sent"),
        ("json://127.0.0.1:8081/…", "sent"),
    ]
    assert journal.notifications(rolled_back.id) == []
    assert len(mocked.calls) == 2


def test_a_service_without_a_rule_uses_the_defaults(
    journal: Journal, mocked: responses.RequestsMock, make_notifier: Callable[..., Notifier]
) -> None:
    mocked.post(HOOK, status=200)
    make_notifier(text="services:\n  other:\n    repository: acme/other\n    tags: latest\n")

    dep = finish(journal)

    assert wait_notifications(journal, dep.id)[0].outcome == "sent"


def test_no_targets_means_no_records(journal: Journal, make_notifier: Callable[..., Notifier]) -> None:
    make_notifier(urls=())
    dep = finish(journal)
    assert journal.notifications(dep.id) == []


def test_a_broken_notifier_never_reaches_the_rollout(
    journal: Journal, make_notifier: Callable[..., Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = make_notifier()

    def broken(dep: Deployment) -> tuple[str, ...]:
        raise RuntimeError("bug")

    monkeypatch.setattr(notifier, "targets_for", broken)
    dep = finish(journal)

    assert journal.get(dep.id).state == "rolled_back"


def test_apprise_never_writes_to_the_application_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("apprise").setLevel(logging.DEBUG)
    try:
        assert url_problem(f"discord://{SECRET}") is not None
        assert url_problem(f"{SECRET}") is not None
    finally:
        logging.getLogger("apprise").setLevel(logging.WARNING)
    assert SECRET not in caplog.text
    assert notify._APPRISE_LOG.propagate is False
