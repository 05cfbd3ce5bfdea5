"""Matching pushes and manual requests to rules; policies against what runs; choosing among queued work."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest
import yaml

from webhook_server.errors import NotAllowed, RuleNotFound
from webhook_server.matching import (
    Candidate,
    Coalesced,
    DeployPlan,
    Ignored,
    coalesce,
    plan_manual,
    plan_push,
    policy_refusal_for,
    running_version,
)
from webhook_server.rules import Rule, RuleSet, parse_rules

SERVICES: dict[str, dict[str, Any]] = {
    "api": {"repository": "acme/api", "tags": "semver", "policy": "minor"},
    "worker": {"repository": "acme/api", "tags": "semver:>=1.2,<2", "policy": "patch"},
    "web": {"repository": "acme/web", "image": "reg:5000/acme/web", "tags": "glob:release-*"},
    "edge": {"repository": "acme/edge", "tags": "semver", "policy": "all"},
    "plain": {"repository": "acme/edge-plain", "tags": "semver"},  # no policy: major
    "nightly": {"repository": "acme/nightly", "tags": "latest"},
}


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return parse_rules(yaml.safe_dump({"services": SERVICES}, sort_keys=False))


def plan(service: str, image: str, tag: str, repository: str = "acme/api") -> DeployPlan:
    return DeployPlan(service=service, repository=repository, image=image, tag=tag)


# ---- plan_push --------------------------------------------------------------------------------
PUSHES: list[tuple[str, str, str, list[DeployPlan] | Ignored]] = [
    ("no-rule", "acme/other", "1.2.3", Ignored("no rule deploys repository 'acme/other'")),
    (
        "fan-out",
        "acme/api",
        "1.4.0",
        [plan("api", "acme/api", "1.4.0"), plan("worker", "acme/api", "1.4.0")],
    ),
    (
        "fan-out-repo-case-folded",
        "Acme/API",
        "v1.2.0",
        [plan("api", "acme/api", "v1.2.0"), plan("worker", "acme/api", "v1.2.0")],
    ),
    ("partial-range-refuses", "acme/api", "2.0.0", [plan("api", "acme/api", "2.0.0")]),
    (
        "all-refuse-reasons-joined",
        "acme/api",
        "latest",
        Ignored("api: tag 'latest' is not a semantic version; worker: tag 'latest' is not a semantic version"),
    ),
    (
        "pre-release-refused-by-policy",
        "acme/api",
        "1.5.0-rc.1",
        Ignored(
            "api: 1.5.0-rc.1 is a pre-release; policy 'minor' deploys releases only; "
            "worker: 1.5.0-rc.1 is a pre-release; policy 'patch' deploys releases only"
        ),
    ),
    (
        "partial-below-range",
        "acme/api",
        "0.9.0",
        [plan("api", "acme/api", "0.9.0")],  # no running version known yet: only the filter and pre-releases
    ),
    ("policy-all-takes-pre-release", "acme/edge", "2.0.0-rc.1", [plan("edge", "acme/edge", "2.0.0-rc.1", "acme/edge")]),
    (
        "default-policy-is-major-releases-only",
        "acme/edge-plain",
        "2.0.0-rc.1",
        Ignored("plain: 2.0.0-rc.1 is a pre-release; policy 'major' deploys releases only"),
    ),
    ("other-registry-image", "acme/web", "release-7", [plan("web", "reg:5000/acme/web", "release-7", "acme/web")]),
    ("glob-refuses", "acme/web", "7", Ignored("web: tag '7' does not match glob 'release-*'")),
    ("exact", "acme/nightly", "latest", [plan("nightly", "acme/nightly", "latest", "acme/nightly")]),
    ("exact-refuses", "acme/nightly", "1.0.0", Ignored("nightly: tag '1.0.0' is not 'latest'")),
]


@pytest.mark.parametrize(("repository", "tag", "expected"), [p[1:] for p in PUSHES], ids=[p[0] for p in PUSHES])
def test_plan_push(rules: RuleSet, repository: str, tag: str, expected: list[DeployPlan] | Ignored) -> None:
    assert plan_push(repository=repository, tag=tag, rules=rules) == expected


def test_plan_push_keeps_refusals_of_all_services_in_order(rules: RuleSet) -> None:
    # api's policy refuses the pre-release, worker's range refuses 2.x: each its own reason, in rule order.
    assert plan_push(repository="acme/api", tag="2.1.0-rc.1", rules=rules) == Ignored(
        "api: 2.1.0-rc.1 is a pre-release; policy 'minor' deploys releases only; "
        "worker: version 2.1.0-rc.1 is outside '>=1.2,<2'"
    )


# ---- plan_manual ------------------------------------------------------------------------------
def test_plan_manual_ok(rules: RuleSet) -> None:
    assert plan_manual(service="web", tag="release-1", rules=rules) == plan(
        "web", "reg:5000/acme/web", "release-1", "acme/web"
    )


def test_plan_manual_unknown_service(rules: RuleSet) -> None:
    with pytest.raises(RuleNotFound) as exc:
        plan_manual(service="ghost", tag="1.0.0", rules=rules)
    assert exc.value.message == "no rule in the rules file names service 'ghost'"
    assert exc.value.http_status == 404


@pytest.mark.parametrize(
    ("service", "tag", "message"),
    [
        ("worker", "2.1.0", "worker: version 2.1.0 is outside '>=1.2,<2'"),
        ("api", "latest", "api: tag 'latest' is not a semantic version"),
        ("api", "1.3.0-beta", "api: 1.3.0-beta is a pre-release; policy 'minor' deploys releases only"),
        ("nightly", "stable", "nightly: tag 'stable' is not 'latest'"),
    ],
    ids=["range", "not-semver", "pre-release", "exact"],
)
def test_plan_manual_refused(rules: RuleSet, service: str, tag: str, message: str) -> None:
    with pytest.raises(NotAllowed) as exc:
        plan_manual(service=service, tag=tag, rules=rules)
    assert exc.value.message == message
    assert exc.value.http_status == 422


# ---- against what runs now --------------------------------------------------------------------
DIGEST = "sha256:" + "0" * 64
OLDER = "{c} is older than the running {r}; semver rules never downgrade"

RUNNING: list[tuple[str, str, str, str | None, str | None]] = [
    # id, service, tag, running image, refusal
    ("no-running-image", "api", "0.1.0", None, None),
    ("empty-running-image", "api", "0.1.0", "", None),
    ("upgrade-within-major", "api", "1.3.0", f"acme/api:1.2.3@{DIGEST}", None),
    ("same-version", "api", "1.2.3", f"acme/api:1.2.3@{DIGEST}", None),
    ("downgrade", "api", "1.2.2", f"acme/api:1.2.3@{DIGEST}", OLDER.format(c="1.2.2", r="1.2.3")),
    ("v-prefixed-running", "api", "1.2.2", f"acme/api:v1.2.3@{DIGEST}", OLDER.format(c="1.2.2", r="1.2.3")),
    (
        "new-major",
        "api",
        "2.0.0",
        f"acme/api:1.2.3@{DIGEST}",
        "2.0.0 changes the major version of the running 1.2.3; policy 'minor' forbids it",
    ),
    (
        "patch-policy-minor-bump",
        "worker",
        "1.3.0",
        "acme/api:1.2.3",
        "1.3.0 changes more than the patch of the running 1.2.3; policy 'patch' forbids it",
    ),
    ("registry-port-image", "web", "release-1", f"reg:5000/acme/web:release-0@{DIGEST}", None),  # not semver
    (
        "default-policy-never-downgrades",
        "plain",
        "0.9.0",
        f"acme/edge-plain:1.0.0@{DIGEST}",
        OLDER.format(c="0.9.0", r="1.0.0"),
    ),
    ("other-image-no-baseline", "api", "0.1.0", f"acme/legacy-api:9.9.9@{DIGEST}", None),
    ("non-semver-running-tag-no-baseline", "api", "0.1.0", f"acme/api:latest@{DIGEST}", None),
    ("digest-only-no-baseline", "api", "0.1.0", f"acme/api@{DIGEST}", None),
    ("candidate-not-semver", "api", "latest", f"acme/api:1.2.3@{DIGEST}", "tag 'latest' is not a semantic version"),
    ("non-semver-rule-never-refuses", "nightly", "latest", "acme/nightly:zzz", None),
]


@pytest.mark.parametrize(
    ("service", "tag", "running", "refusal"), [r[1:] for r in RUNNING], ids=[r[0] for r in RUNNING]
)
def test_policy_refusal_for(rules: RuleSet, service: str, tag: str, running: str | None, refusal: str | None) -> None:
    rule = rules.rules[service]
    assert policy_refusal_for(rule, tag, running) == refusal


def _semver_rule(image: str) -> Rule:
    ruleset = parse_rules(
        yaml.safe_dump({"services": {"s": {"repository": "acme/api", "image": image, "tags": "semver"}}})
    )
    return ruleset.rules["s"]


@pytest.mark.parametrize(
    ("image", "running", "expected"),
    [
        ("reg:5000/acme/api", f"reg:5000/acme/api:1.2.3@{DIGEST}", "1.2.3"),
        ("reg:5000/acme/api", f"reg:5000/acme/api@{DIGEST}", None),
        ("reg:5000/acme/api", "reg:5000/acme/api", None),
        ("reg:5000/acme/api", f"reg:6000/acme/api:1.2.3@{DIGEST}", None),
        ("acme/api", f"reg:5000/acme/api:1.2.3@{DIGEST}", None),
        ("acme/api", "acme/api:1.2.3-rc.2", "1.2.3-rc.2"),
    ],
    ids=["port-tag-digest", "port-digest-only", "port-bare", "other-port", "other-registry", "pre-release"],
)
def test_running_version(image: str, running: str, expected: str | None) -> None:
    version = running_version(_semver_rule(image), running)
    assert (str(version) if version is not None else None) == expected


def test_policy_refusal_for_registry_image_with_port() -> None:
    rule = _semver_rule("reg:5000/acme/api")
    assert policy_refusal_for(rule, "1.2.2", f"reg:5000/acme/api:1.2.3@{DIGEST}") == OLDER.format(c="1.2.2", r="1.2.3")


# ---- coalesce ---------------------------------------------------------------------------------
Row = tuple[int, str, int]  # id, tag, order
PICKS: list[tuple[str, str, list[Row], int]] = [
    # id, service, candidates, winning id (nothing runs yet, so only the tag filter and pre-releases refuse)
    ("single", "api", [(1, "1.0.0", 1)], 1),
    ("semver-highest-wins-over-later", "api", [(1, "1.10.0", 1), (2, "1.9.0", 2)], 1),
    ("semver-highest-arrived-last", "api", [(1, "1.2.0", 1), (2, "1.3.0", 2)], 2),
    ("release-beats-its-pre-release", "edge", [(1, "2.0.0", 1), (2, "2.0.0-rc.9", 2)], 1),
    ("tie-latest-arrival", "api", [(1, "v1.2.3", 5), (2, "1.2.3", 7), (3, "1.2.0", 9)], 2),
    ("tie-latest-arrival-order-not-position", "api", [(1, "1.2.3", 7), (2, "v1.2.3", 5)], 1),
    ("non-semver-candidates-refused", "api", [(1, "1.0.0", 1), (2, "latest", 2)], 1),
    ("non-semver-rule-latest-arrival", "web", [(1, "release-9", 2), (2, "release-10", 4), (3, "release-1", 3)], 2),
    ("non-semver-rule-ignores-versions", "nightly", [(1, "9.0.0", 1), (2, "1.0.0", 2)], 2),
]


def _candidates(rows: list[Row], *, waiting: Collection[int] = (), pinned: Collection[int] = ()) -> list[Candidate]:
    return [Candidate(id=i, tag=t, order=o, ready=i not in waiting, pinned=i in pinned) for i, t, o in rows]


@pytest.mark.parametrize(("service", "candidates", "winner"), [p[1:] for p in PICKS], ids=[p[0] for p in PICKS])
def test_coalesce_latest_wins(rules: RuleSet, service: str, candidates: list[Row], winner: int) -> None:
    result = coalesce(rules.rules[service], _candidates(candidates), running_image=None, known=True)
    assert result.chosen is not None and result.chosen.id == winner
    decided = {result.chosen.id} | {c.id for c in result.superseded} | {c.id for c, _ in result.refused}
    assert decided == {i for i, _, _ in candidates}, "every candidate is decided exactly once"


RUNS_1_0 = f"acme/api:1.0.0@{DIGEST}"
# id, service, running image, candidates, waiting (retry delay), pinned, chosen, superseded, refused
POLICY_CASES: list[tuple[str, str, str | None, list[Row], set[int], set[int], int | None, set[int], set[int]]] = [
    # The best version the policy refuses must not supersede one it allows (1.1.0 under minor from 1.0.0).
    ("minor-keeps-allowed", "api", RUNS_1_0, [(1, "1.1.0", 1), (2, "2.0.0", 2)], set(), set(), 1, set(), {2}),
    (
        "minor-best-allowed",
        "api",
        RUNS_1_0,
        [(1, "1.1.0", 1), (2, "1.3.0", 2), (3, "2.0.0", 3)],
        set(),
        set(),
        2,
        {1},
        {3},
    ),
    ("all-refused", "api", RUNS_1_0, [(1, "0.9.0", 1), (2, "2.0.0", 2)], set(), set(), None, set(), {1, 2}),
    (
        "older-refused",
        "plain",
        RUNS_1_0.replace("api", "edge-plain"),
        [(1, "0.9.0", 1), (2, "1.0.1", 2)],
        set(),
        set(),
        2,
        set(),
        {1},
    ),
    # A candidate waiting out a retry delay keeps its turn: nothing else jumps ahead of it early.
    ("best-waiting", "api", RUNS_1_0, [(1, "1.2.0", 1), (2, "1.1.0", 2)], {1}, set(), None, set(), set()),
    ("newer-ready-beats-waiting", "api", RUNS_1_0, [(1, "1.1.0", 1), (2, "1.2.0", 2)], {1}, set(), 2, {1}, set()),
    # Rollbacks run alone, oldest first, and supersede no push.
    (
        "pinned-first",
        "api",
        RUNS_1_0,
        [(1, "1.2.0", 1), (2, "0.9.0", 2), (3, "0.8.0", 3)],
        set(),
        {2, 3},
        2,
        set(),
        set(),
    ),
    ("pinned-waiting", "api", RUNS_1_0, [(1, "1.2.0", 1), (2, "0.9.0", 2)], {2}, {2}, None, set(), set()),
]


@pytest.mark.parametrize(
    ("service", "running", "rows", "waiting", "pinned", "chosen", "superseded", "refused"),
    [c[1:] for c in POLICY_CASES],
    ids=[c[0] for c in POLICY_CASES],
)
def test_coalesce_against_what_runs(
    rules: RuleSet,
    service: str,
    running: str | None,
    rows: list[Row],
    waiting: set[int],
    pinned: set[int],
    chosen: int | None,
    superseded: set[int],
    refused: set[int],
) -> None:
    result = coalesce(
        rules.rules[service], _candidates(rows, waiting=waiting, pinned=pinned), running_image=running, known=True
    )
    assert (result.chosen.id if result.chosen else None) == chosen
    assert {c.id for c in result.superseded} == superseded
    assert {c.id for c, _ in result.refused} == refused
    assert all(reason for _, reason in result.refused)


def test_coalesce_unknown_running_decides_nothing_but_the_newest(rules: RuleSet) -> None:
    rows = [(1, "1.1.0", 1), (2, "2.0.0", 2), (3, "1.5.0", 3)]
    result = coalesce(rules.rules["api"], _candidates(rows, waiting={3}), running_image=None, known=False)
    assert result.chosen is not None and result.chosen.id == 2
    assert result.superseded == () and result.refused == ()


def test_coalesce_nothing_queued(rules: RuleSet) -> None:
    assert coalesce(rules.rules["api"], [], running_image=RUNS_1_0, known=True) == Coalesced()
