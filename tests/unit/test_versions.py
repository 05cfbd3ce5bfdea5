"""Semantic versions in tags, version ranges, and the update policies."""

from __future__ import annotations

import pytest
import semver

from webhook_server.versions import Policy, VersionRange, parse_tag_version, policy_refusal

V = semver.Version.parse

TAGS: list[tuple[str, semver.Version | None]] = [
    ("1.2.3", V("1.2.3")),
    ("v1.2.3", V("1.2.3")),
    ("V1.2.3", V("1.2.3")),
    ("0.0.0", V("0.0.0")),
    ("10.20.30", V("10.20.30")),
    ("1.2.3-rc.1", V("1.2.3-rc.1")),
    ("v2.0.0-beta", V("2.0.0-beta")),
    ("1.2.3-alpha.1.x-y", V("1.2.3-alpha.1.x-y")),
    ("latest", None),
    ("stable", None),
    ("1.2", None),
    ("1", None),
    ("v1", None),
    ("1.2.3.4", None),
    ("01.2.3", None),
    ("1.02.3", None),
    ("vv1.2.3", None),
    ("x1.2.3", None),
    ("v", None),
    ("", None),
    ("release-1.2.3", None),
    ("1.2.3-", None),
]


@pytest.mark.parametrize(("tag", "expected"), TAGS, ids=[t or "empty" for t, _ in TAGS])
def test_parse_tag_version(tag: str, expected: semver.Version | None) -> None:
    version = parse_tag_version(tag)
    if expected is None:
        assert version is None
    else:
        assert version is not None
        assert (version, version.prerelease) == (expected, expected.prerelease)


def test_prerelease_sorts_below_its_release() -> None:
    rc, release = parse_tag_version("1.2.3-rc.1"), parse_tag_version("v1.2.3")
    assert rc is not None and release is not None
    assert rc < release


RANGES: list[tuple[str, list[tuple[str, semver.Version]]]] = [
    (">=1.2,<2", [(">=", V("1.2.0")), ("<", V("2.0.0"))]),
    (">=1.2.3", [(">=", V("1.2.3"))]),
    ("<=1", [("<=", V("1.0.0"))]),
    (">0.1", [(">", V("0.1.0"))]),
    ("==1.4.0", [("==", V("1.4.0"))]),
    ("=1.4", [("=", V("1.4.0"))]),
    ("!=1.3.1", [("!=", V("1.3.1"))]),
    ("1.2", [("==", V("1.2.0"))]),
    ("v1.2", [("==", V("1.2.0"))]),
    (">= 1.2 , < 2", [(">=", V("1.2.0")), ("<", V("2.0.0"))]),
    (">=v1.0.0-rc.1", [(">=", V("1.0.0-rc.1"))]),
]


@pytest.mark.parametrize(("text", "comparators"), RANGES, ids=[t for t, _ in RANGES])
def test_range_parse(text: str, comparators: list[tuple[str, semver.Version]]) -> None:
    parsed = VersionRange.parse(text)
    assert parsed.text == text
    assert [(op, str(v)) for op, v in parsed.comparators] == [(op, str(v)) for op, v in comparators]


BAD_RANGES = [
    ("~1.2", "~1.2"),
    ("^1", "^1"),
    ("=>1", "=>1"),
    ("1.2.3.4", "1.2.3.4"),
    ("latest", "latest"),
    (">=x", ">=x"),
]


@pytest.mark.parametrize(("text", "part"), BAD_RANGES, ids=[t or "empty" for t, _ in BAD_RANGES])
def test_range_parse_invalid(text: str, part: str) -> None:
    with pytest.raises(ValueError) as exc:
        VersionRange.parse(text)
    assert str(exc.value) == (f"{part!r} is not a version comparator: use forms like >=1.2, <2, ==1.4.0, !=1.3.1")


OTHER_BAD_RANGES = [
    ("", "no range after 'semver:': write 'semver' for any version, or a range such as >=1.2,<2"),
    ("  ", "no range after 'semver:': write 'semver' for any version, or a range such as >=1.2,<2"),
    (">=1.2,", "'>=1.2,' has an empty comparator: separate comparators with single commas"),
    (">=1.2,,<2", "'>=1.2,,<2' has an empty comparator: separate comparators with single commas"),
    (">=1.2 <2", "'>=1.2 <2': separate comparators with commas (>=1.2,<2)"),
    (">=2,<1", "'>=2,<1' matches no version"),
    (">1,<1", "'>1,<1' matches no version"),
    (">=1,<1", "'>=1,<1' matches no version"),
    (">1,<=1", "'>1,<=1' matches no version"),
    ("==1.2,!=1.2", "'==1.2,!=1.2' matches no version"),
    ("==1.2,==1.3", "'==1.2,==1.3' matches no version"),
    ("==1.2,<1.2", "'==1.2,<1.2' matches no version"),
]


@pytest.mark.parametrize(("text", "message"), OTHER_BAD_RANGES, ids=[t or "empty" for t, _ in OTHER_BAD_RANGES])
def test_range_parse_says_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        VersionRange.parse(text)
    assert str(exc.value) == message


@pytest.mark.parametrize("text", [">=1,<=1", "==1.2,>=1", ">=1.2,!=1.3,<2", "=1.2.3", ">=1.0.0-rc.1,<1.0.0"])
def test_narrow_ranges_that_admit_a_version_are_accepted(text: str) -> None:
    VersionRange.parse(text)


CONTAINS = [
    (">=1.2,<2", "1.2.0", True),
    (">=1.2,<2", "1.9.99", True),
    (">=1.2,<2", "1.1.9", False),
    (">=1.2,<2", "2.0.0", False),
    (">=1.2,<2", "1.2.0-rc.1", False),
    ("1.2", "1.2.0", True),
    ("1.2", "1.2.1", False),  # partial versions mean .0, not 1.2.x
    ("!=1.3.1", "1.3.1", False),
    ("!=1.3.1", "1.3.2", True),
    (">1", "1.0.0", False),
    (">1", "1.0.1", True),
    ("<=1.0", "1.0.0", True),
    ("<=1.0", "1.0.1", False),
]


@pytest.mark.parametrize(("text", "version", "expected"), CONTAINS, ids=[f"{v}-in-{t}" for t, v, _ in CONTAINS])
def test_range_contains(text: str, version: str, expected: bool) -> None:
    assert VersionRange.parse(text).contains(V(version)) is expected


# ---- policies ---------------------------------------------------------------------------------
RUNNING = "1.2.3"
PRE = "{c} is a pre-release; policy {p!r} deploys releases only"
OLDER = "{c} is older than the running {r}; semver rules never downgrade"
MAJOR = "{c} changes the major version of the running {r}; policy 'minor' forbids it"
PATCH = "{c} changes more than the patch of the running {r}; policy 'patch' forbids it"

# case: (candidate, running, {policy: refusal template or None})
POLICY_CASES: dict[str, tuple[str, str | None, dict[Policy, str | None]]] = {
    "patch-bump": ("1.2.4", RUNNING, {"all": None, "major": None, "minor": None, "patch": None}),
    "minor-bump": ("1.3.0", RUNNING, {"all": None, "major": None, "minor": None, "patch": PATCH}),
    "major-bump": ("2.0.0", RUNNING, {"all": None, "major": None, "minor": MAJOR, "patch": PATCH}),
    "same-version": (RUNNING, RUNNING, {"all": None, "major": None, "minor": None, "patch": None}),
    "downgrade-patch": ("1.2.2", RUNNING, {"all": OLDER, "major": OLDER, "minor": OLDER, "patch": OLDER}),
    "downgrade-major": ("0.9.0", RUNNING, {"all": OLDER, "major": OLDER, "minor": OLDER, "patch": OLDER}),
    "pre-release": ("1.2.4-rc.1", RUNNING, {"all": None, "major": PRE, "minor": PRE, "patch": PRE}),
    "pre-release-of-running": ("1.2.3-rc.1", RUNNING, {"all": OLDER, "major": PRE, "minor": PRE, "patch": PRE}),
    "pre-release-next-major": ("2.0.0-rc.1", RUNNING, {"all": None, "major": PRE, "minor": PRE, "patch": PRE}),
    "no-running": ("9.0.0", None, {"all": None, "major": None, "minor": None, "patch": None}),
    "no-running-pre-release": ("9.0.0-rc.1", None, {"all": None, "major": PRE, "minor": PRE, "patch": PRE}),
    "running-pre-release-to-release": (
        "1.2.3",
        "1.2.3-rc.1",
        {"all": None, "major": None, "minor": None, "patch": None},
    ),
}
POLICIES: tuple[Policy, ...] = ("all", "major", "minor", "patch")
POLICY_TABLE = [
    pytest.param(policy, candidate, running, expected, id=f"{policy}-{case}")
    for case, (candidate, running, by_policy) in POLICY_CASES.items()
    for policy, expected in by_policy.items()
]


def test_policy_table_covers_every_policy() -> None:
    assert all(tuple(by_policy) == POLICIES for _, _, by_policy in POLICY_CASES.values())


@pytest.mark.parametrize(("policy", "candidate", "running", "template"), POLICY_TABLE)
def test_policy_refusal(policy: Policy, candidate: str, running: str | None, template: str | None) -> None:
    refusal = policy_refusal(policy, V(candidate), V(running) if running else None)
    expected = None if template is None else template.format(c=candidate, r=running, p=policy)
    assert refusal == expected
