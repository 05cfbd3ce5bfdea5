"""deploy_rules.yaml: the shipped file, defaults and overrides, tag filters, located errors, reloading."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook_server import rules as rules_module
from webhook_server.errors import RulesError
from webhook_server.rules import (
    RuleSet,
    RulesFile,
    RulesSource,
    TagFilter,
    UpdateSettings,
    load_rules,
    parse_rules,
)

SHIPPED = Path(__file__).resolve().parents[2] / "deploy_rules.yaml"
FORMS = "use forms like 500ms, 5s, 2m, 1h or 1m30s"
SERVICE_KEYS = "repository, image, tags, policy, update, timeout, notify, notify_on"
UPDATE_KEYS = "parallelism, delay, order, failure_action, monitor, max_failure_ratio"


def rules_of(services: dict[str, Any], **top: Any) -> RuleSet:
    return parse_rules(yaml.safe_dump({**top, "services": services}, sort_keys=False))


def one_rule_tags(spec: str) -> TagFilter:
    return rules_of({"svc": {"repository": "acme/api", "tags": spec}}).rules["svc"].tags


def problems_of(text: str) -> list[str]:
    with pytest.raises(RulesError) as exc:
        parse_rules(textwrap.dedent(text), source="rules.yaml")
    assert exc.value.path == "rules.yaml"
    return exc.value.problems


# ---- the shipped file -------------------------------------------------------------------------
def test_shipped_file_loads() -> None:
    rules = load_rules(SHIPPED)
    assert list(rules.rules) == ["a3_api", "a3_worker", "a3_web"]
    api, worker, web = rules.rules["a3_api"], rules.rules["a3_worker"], rules.rules["a3_web"]

    assert (api.repository, api.image, str(api.tags), api.policy) == (
        "acme/simple-api",
        "acme/simple-api",
        "semver",
        "minor",
    )
    assert (api.update.parallelism, api.update.delay, api.update.order, api.update.failure_action) == (
        1,
        timedelta(seconds=5),
        "start-first",
        "rollback",
    )
    assert api.timeout == timedelta(minutes=5)

    assert (worker.repository, worker.image, str(worker.tags), worker.policy) == (
        "acme/simple-api",
        "acme/simple-api",
        "semver:>=1.2,<2",
        "patch",
    )
    assert worker.update == UpdateSettings(monitor=timedelta(seconds=15))

    assert (web.repository, web.image, str(web.tags), web.policy, web.effective_policy) == (
        "acme/web",
        "registry.example.com/acme/web",
        "glob:release-*",
        None,
        "major",
    )
    assert web.timeout == timedelta(minutes=10)
    assert rules.proxy is None


def test_shipped_monitor_override_is_a_duration() -> None:
    monitor = load_rules(SHIPPED).rules["a3_api"].update.monitor
    assert isinstance(monitor, timedelta)
    assert monitor == timedelta(seconds=30)


def test_for_repository_fans_out_and_ignores_case() -> None:
    rules = load_rules(SHIPPED)
    assert [r.service for r in rules.for_repository("acme/simple-api")] == ["a3_api", "a3_worker"]
    assert [r.service for r in rules.for_repository("ACME/Web")] == ["a3_web"]
    assert rules.for_repository("acme/other") == []
    assert rules.get("a3_web") is rules.rules["a3_web"]
    assert rules.get("nope") is None


# ---- defaults and overrides -------------------------------------------------------------------
def test_builtin_defaults_without_a_defaults_section() -> None:
    rule = rules_of({"api": {"repository": "acme/api", "tags": "latest"}}).rules["api"]
    assert rule.update == UpdateSettings(
        parallelism=1,
        delay=timedelta(seconds=5),
        order="start-first",
        failure_action="rollback",
        monitor=timedelta(seconds=15),
        max_failure_ratio=0.0,
    )
    assert rule.timeout == timedelta(minutes=5)
    assert (rule.image, rule.policy, rule.is_semver) == ("acme/api", None, False)


def test_defaults_merge_with_non_duration_overrides() -> None:
    rules = rules_of(
        {
            "plain": {"repository": "acme/api", "tags": "latest"},
            "tuned": {
                "repository": "acme/api",
                "tags": "latest",
                "update": {"parallelism": 0, "failure_action": "pause", "max_failure_ratio": 0.5},
                "timeout": "30s",
            },
        },
        defaults={"update": {"parallelism": 3, "order": "stop-first", "delay": "2s"}, "timeout": "1h"},
    )
    plain, tuned = rules.rules["plain"], rules.rules["tuned"]
    assert plain.update == UpdateSettings(parallelism=3, order="stop-first", delay=timedelta(seconds=2))
    assert plain.timeout == timedelta(hours=1)
    # parallelism 0 is an override (falsy, not absent); the rest comes from the defaults.
    assert (tuned.update.parallelism, tuned.update.order, tuned.update.delay) == (0, "stop-first", timedelta(seconds=2))
    assert (tuned.update.failure_action, tuned.update.max_failure_ratio) == ("pause", 0.5)
    assert tuned.timeout == timedelta(seconds=30)


@pytest.mark.parametrize("key", ["delay", "monitor"])
def test_duration_override_stays_a_timedelta(key: str) -> None:
    rule = rules_of({"api": {"repository": "acme/api", "tags": "latest", "update": {key: "1m30s"}}}).rules["api"]
    assert getattr(rule.update, key) == timedelta(seconds=90)


def test_image_may_name_another_registry() -> None:
    rule = rules_of(
        {"api": {"repository": "acme/api", "image": "reg.example.com:5000/acme/api-x", "tags": "latest"}}
    ).rules["api"]
    assert (rule.repository, rule.image) == ("acme/api", "reg.example.com:5000/acme/api-x")


# ---- tag filters ------------------------------------------------------------------------------
TAG_CASES: list[tuple[str, str, str | None]] = [
    ("latest", "latest", None),
    ("latest", "Latest", "tag 'Latest' is not 'latest'"),
    ("latest", "latest-1", "tag 'latest-1' is not 'latest'"),
    ("glob:release-*", "release-1", None),
    ("glob:release-*", "release-", None),
    ("glob:release-*", "Release-1", "tag 'Release-1' does not match glob 'release-*'"),
    ("glob:release-*", "prerelease-1", "tag 'prerelease-1' does not match glob 'release-*'"),
    ("glob:v?.*", "v1.2", None),
    ("glob:v?.*", "v12.2", "tag 'v12.2' does not match glob 'v?.*'"),
    (r"regex:^v\d+$", "v12", None),
    (r"regex:^v\d+$", "v1.2", r"tag 'v1.2' does not match regex '^v\\d+$'"),
    (r"regex:v\d+", "v1-extra", r"tag 'v1-extra' does not match regex 'v\\d+'"),  # full match, not search
    (r"regex:v\d+", "v7", None),
    ("semver", "1.2.3", None),
    ("semver", "v1.2.3", None),
    ("semver", "1.2.3-rc.1", None),  # pre-releases are the policy's business, not the filter's
    ("semver", "latest", "tag 'latest' is not a semantic version"),
    ("semver", "1.2", "tag '1.2' is not a semantic version"),
    ("semver:>=1.2,<2", "1.2.0", None),
    ("semver:>=1.2,<2", "v1.9.9", None),
    ("semver:>=1.2,<2", "2.0.0", "version 2.0.0 is outside '>=1.2,<2'"),
    ("semver:>=1.2,<2", "v1.1.9", "version 1.1.9 is outside '>=1.2,<2'"),
    ("semver:>=1.2,<2", "latest", "tag 'latest' is not a semantic version"),
]


@pytest.mark.parametrize(("spec", "tag", "refusal"), TAG_CASES, ids=[f"{s}|{t}" for s, t, _ in TAG_CASES])
def test_tag_filter(spec: str, tag: str, refusal: str | None) -> None:
    assert one_rule_tags(spec).refusal(tag) == refusal


FILTER_KINDS = [
    ("latest", "exact", "latest"),
    ("glob", "exact", "glob"),  # no colon: a plain tag that happens to be called "glob"
    ("glob:release-*", "glob", "glob:release-*"),
    ("regex:^v[0-9]+$", "regex", "regex:^v[0-9]+$"),
    ("semver", "semver", "semver"),
    ("semver:>=1.2,<2", "semver", "semver:>=1.2,<2"),
]


@pytest.mark.parametrize(("spec", "kind", "text"), FILTER_KINDS, ids=[s for s, _, _ in FILTER_KINDS])
def test_tag_filter_kind_and_str(spec: str, kind: str, text: str) -> None:
    tags = one_rule_tags(spec)
    assert (tags.kind, str(tags)) == (kind, text)


# ---- located errors ---------------------------------------------------------------------------
HEADER = """\
defaults:
  update: {parallelism: 1, delay: 5s}
  timeout: 5m
services:
  api:
    repository: acme/api
"""
# Line numbers below: 1 defaults, 2 update, 3 timeout, 4 services, 5 api, 6 repository, 7+ what follows.

ERRORS: list[tuple[str, str, list[str]]] = [
    (
        "unknown-service-key",
        HEADER + "    tags: semver\n    colour: red\n",
        [f"line 8: services.api.colour: unknown key 'colour' — the keys here are {SERVICE_KEYS}"],
    ),
    (
        "unknown-defaults-key",
        HEADER.replace("  timeout: 5m\n", "  timeout: 5m\n  retries: 3\n") + "    tags: latest\n",
        ["line 4: defaults.retries: unknown key 'retries' — the keys here are update, timeout, notify, notify_on"],
    ),
    (
        "unknown-update-key",
        HEADER + "    tags: latest\n    update:\n      speed: fast\n",
        [f"line 9: services.api.update.speed: unknown key 'speed' — the keys here are {UPDATE_KEYS}"],
    ),
    (
        "bad-duration",
        HEADER + "    tags: latest\n    timeout: soon\n",
        [f"line 8: services.api.timeout: 'soon' is not a duration: {FORMS}"],
    ),
    (
        "bad-duration-in-flow-mapping",
        HEADER.replace("delay: 5s", "delay: 5x") + "    tags: latest\n",
        [f"line 2: defaults.update.delay: '5x' is not a duration: {FORMS}"],
    ),
    (
        "bad-policy",
        HEADER + "    tags: semver\n    policy: newest\n",
        ["line 8: services.api.policy: must be 'all', 'major', 'minor' or 'patch'"],
    ),
    (
        "policy-with-non-semver-filter",
        HEADER + "    tags: 'glob:release-*'\n    policy: minor\n",
        ["line 8: services.api.policy: policy applies to semver tag filters only (tags: semver or semver:RANGE)"],
    ),
    (
        "invalid-regex",
        HEADER + "    tags: 'regex:[a-'\n",
        ["line 7: services.api.tags: invalid regular expression '[a-': unterminated character set at position 0"],
    ),
    (
        "invalid-semver-range",
        HEADER + "    tags: 'semver:~1.2'\n",
        ["line 7: services.api.tags: '~1.2' is not a version comparator: use forms like >=1.2, <2, ==1.4.0, !=1.3.1"],
    ),
    (
        "tag-neither-docker-tag-nor-filter",
        HEADER + "    tags: 'release:*'\n",
        [
            "line 7: services.api.tags: 'release:*' is neither a Docker tag nor a filter "
            "(glob:PATTERN, regex:PATTERN, semver[:RANGE])"
        ],
    ),
    (
        "image-with-a-tag",
        HEADER + "    image: acme/api:1.2\n    tags: latest\n",
        ["line 7: services.api.image: 'acme/api:1.2' is not a valid image name (lowercase, no tag or digest)"],
    ),
    (
        "repository-with-a-digest",
        HEADER.replace("acme/api", "acme/api@sha256:abc") + "    tags: latest\n",
        [
            "line 6: services.api.repository: 'acme/api@sha256:abc' is not a valid image name "
            "(lowercase, no tag or digest)"
        ],
    ),
    (
        "uppercase-repository",
        HEADER.replace("acme/api", "Acme/API") + "    tags: latest\n",
        ["line 6: services.api.repository: 'Acme/API' is not a valid image name (lowercase, no tag or digest)"],
    ),
    (
        "missing-tags",
        HEADER,
        ["line 5: services.api.tags: is required"],
    ),
    (
        "duplicate-service-key",
        HEADER + "    tags: latest\n  api:\n    repository: acme/other\n    tags: latest\n",
        ["line 8: services.api: duplicate key"],
    ),
    (
        "duplicate-nested-key",
        HEADER + "    tags: latest\n    update:\n      monitor: 1s\n      monitor: 2s\n",
        ["line 10: services.api.update.monitor: duplicate key"],
    ),
    (
        "yaml-tab",
        HEADER + "\ttags: latest\n",
        ["line 7: not valid YAML: found character '\\t' that cannot start any token"],
    ),
    (
        "yaml-bad-indent",
        HEADER + "   tags: latest\n",
        ["line 7: not valid YAML: expected <block end>, but found '<block mapping start>'"],
    ),
    (
        "yaml-mapping-value-here",
        "services: : x\n",
        ["line 1: not valid YAML: mapping values are not allowed here"],
    ),
    ("empty-file", "", ["the file must be a mapping with a 'services:' section"]),
    ("only-comments", "# nothing yet\n", ["the file must be a mapping with a 'services:' section"]),
    ("top-level-list", "- api\n", ["the file must be a mapping with a 'services:' section"]),
    ("missing-services", "defaults:\n  timeout: 5m\n", ["line 1: services: is required"]),
    (
        "services-not-a-mapping",
        "defaults: {}\nservices:\n  - api\n",
        ["line 2: services: must be a mapping (key: value)"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in ERRORS], ids=[i for i, _, _ in ERRORS])
def test_located_errors(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


BAD_NAMES = ["-bad", "_lead", "has space", "x" * 64, "a/b"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=["dash", "underscore", "space", "64-chars", "slash"])
def test_bad_service_name_is_reported(name: str) -> None:
    problems = problems_of(HEADER.replace("  api:", f"  {name!r}:") + "    tags: latest\n")
    [problem] = problems
    assert problem == f"line 5: services.{name}: {name!r} is not a valid Swarm service name"


def test_bad_service_name_is_located() -> None:
    [problem] = problems_of(HEADER.replace("  api:", "  -bad:") + "    tags: latest\n")
    assert problem.startswith("line 5: services.-bad: ")


def test_good_service_names() -> None:
    names = ["a", "a3_api", "Stack.web-1", "x" * 63]
    rules = rules_of({n: {"repository": "acme/api", "tags": "latest"} for n in names})
    assert list(rules.rules) == names


def test_several_errors_are_all_reported() -> None:
    text = """\
    defaults:
      update: {monitor: 5x, parallelism: -1}
      colour: red
    services:
      api:
        repository: Acme/Api
        tags: latest
        policy: major
        update:
          delay: nope
      api:
        repository: acme/api
        tags: latest
    """
    with pytest.raises(RulesError) as exc:
        parse_rules(textwrap.dedent(text), source="r.yaml")
    expected = [
        "line 11: services.api: duplicate key",
        "line 2: defaults.update.parallelism: must be at least 0",
        f"line 2: defaults.update.monitor: '5x' is not a duration: {FORMS}",
        "line 3: defaults.colour: unknown key 'colour' — the keys here are update, timeout, notify, notify_on",
    ]
    # The duplicate's last occurrence is what YAML keeps; the first entry's errors are hidden by it.
    assert exc.value.problems == expected
    assert exc.value.message == "r.yaml: 4 error(s)\n" + "\n".join(f"  {p}" for p in expected)


def test_several_service_errors_are_all_reported() -> None:
    text = HEADER.replace("acme/api", "Acme/Api") + "    tags: 'regex:('\n    timeout: never\n    colour: red\n"
    assert problems_of(text) == [
        "line 6: services.api.repository: 'Acme/Api' is not a valid image name (lowercase, no tag or digest)",
        "line 7: services.api.tags: invalid regular expression '(': missing ), unterminated subpattern at position 0",
        f"line 8: services.api.timeout: 'never' is not a duration: {FORMS}",
        f"line 9: services.api.colour: unknown key 'colour' — the keys here are {SERVICE_KEYS}",
    ]


@pytest.mark.parametrize("value", [".inf", "99999999999h"])
def test_out_of_range_duration_is_located(value: str) -> None:
    [problem] = problems_of(HEADER + f"    tags: latest\n    timeout: {value}\n")
    assert problem.startswith("line 8: services.api.timeout: ")


@pytest.mark.parametrize(
    "tags", ["{kind: regex, pattern: '[a-'}", "{kind: semver, pattern: '~1'}"], ids=["regex", "semver"]
)
def test_mapping_form_of_tags_is_validated(tags: str) -> None:
    [problem] = problems_of(HEADER + f"    tags: {tags}\n")
    assert problem.startswith("line 7: services.api.tags: ")


UNREADABLE: list[tuple[str, bytes | None, str]] = [
    ("missing", None, "cannot read: No such file or directory"),
    ("directory", b"DIR", "cannot read: Is a directory"),
    ("latin-1", "services:\n  caf\xe9: {}\n".encode("latin-1"), "line 2: not UTF-8 text: byte 0xe9 at offset 15"),
    ("utf-16", "services: {}\n".encode("utf-16"), "line 1: not UTF-8 text: byte 0xff at offset 0"),
    ("truncated-utf-8", b"services: {}\n# caf\xc3", "line 2: not UTF-8 text: byte 0xc3 at offset 18"),
]


@pytest.mark.parametrize(("content", "problem"), [(c, p) for _, c, p in UNREADABLE], ids=[i for i, _, _ in UNREADABLE])
def test_load_rules_unreadable_file_is_one_located_problem(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "rules.yaml"
    if content == b"DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(RulesError) as exc:
        load_rules(path)
    assert (exc.value.path, exc.value.problems) == (str(path), [problem])


def test_load_rules_accepts_a_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes("\ufeffservices: {}\n".encode())
    assert load_rules(path).rules == {}


NESTED = ["services: " + "[" * 5000 + "]" * 5000, "loop: &a [*a]\nservices: {}\n"]


@pytest.mark.parametrize("text", NESTED, ids=["deep", "self-alias"])
def test_recursion_is_a_problem_not_a_crash(text: str) -> None:
    assert problems_of(text) == ["nested too deeply, or a YAML alias (*name) refers to itself"]


# ---- unknown keys suggest the nearest known key ------------------------------------------------
KEY_SUGGESTIONS: list[tuple[str, str, str]] = [
    (
        "service",
        HEADER + "    tags: semver\n    polcy: minor\n",
        "line 8: services.api.polcy: unknown key 'polcy' — did you mean 'policy'?",
    ),
    ("singular", HEADER + "    tag: latest\n", "line 7: services.api.tag: unknown key 'tag' — did you mean 'tags'?"),
    ("case", HEADER + "    Tags: latest\n", "line 7: services.api.Tags: unknown key 'Tags' — did you mean 'tags'?"),
    (
        "update",
        HEADER + "    tags: latest\n    update: {monitr: 5s}\n",
        "line 8: services.api.update.monitr: unknown key 'monitr' — did you mean 'monitor'?",
    ),
    (
        "defaults",
        HEADER.replace("  timeout: 5m\n", "  timout: 5m\n") + "    tags: latest\n",
        "line 3: defaults.timout: unknown key 'timout' — did you mean 'timeout'?",
    ),
    (
        "top-level",
        "servics:\n  api: {repository: acme/api, tags: latest}\n",
        "line 1: servics: unknown key 'servics' — did you mean 'services'?",
    ),
    (
        "no-near-key",
        HEADER + "    tags: latest\n    replicas: 3\n",
        f"line 8: services.api.replicas: unknown key 'replicas' — the keys here are {SERVICE_KEYS}",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in KEY_SUGGESTIONS], ids=[i for i, _, _ in KEY_SUGGESTIONS]
)
def test_unknown_key_suggests_the_nearest(text: str, expected: str) -> None:
    found = problems_of(text)
    assert expected in found, found


def test_unknown_proxy_key_suggests_from_the_proxy_section() -> None:
    found = problems_of("services: {}\nproxy:\n  webhok: {}\n")
    assert "line 3: proxy.webhok: unknown key 'webhok' — did you mean 'webhook'?" in found


# ---- tag values that look like misspelt filters ------------------------------------------------
def _as_tag(value: str) -> str:
    return f"(for the tag {value!r} itself, write 'glob:{value}')"


TAG_TYPOS: list[tuple[str, str]] = [
    ("semvr", f"'semvr' looks like a misspelt filter — did you mean 'semver'? {_as_tag('semvr')}"),
    ("semver2", f"'semver2' looks like a misspelt filter — did you mean 'semver'? {_as_tag('semver2')}"),
    ("semvar", f"'semvar' looks like a misspelt filter — did you mean 'semver'? {_as_tag('semvar')}"),
    ("Semver", f"'Semver' looks like a misspelt filter — did you mean 'semver'? {_as_tag('Semver')}"),
    ("SEMVER", f"'SEMVER' looks like a misspelt filter — did you mean 'semver'? {_as_tag('SEMVER')}"),
    ("semver>=1.2", "'semver>=1.2' is not a tag filter — did you mean 'semver:>=1.2'?"),
    ("Semver:>=1.2", "'Semver:>=1.2' is not a tag filter — did you mean 'semver:>=1.2'?"),
    ("semvr:>=1.2", "'semvr:>=1.2' is not a tag filter — did you mean 'semver:>=1.2'?"),
    ("glob*", "'glob*' is not a tag filter — did you mean 'glob:*'?"),
    ("globrelease-*", "'globrelease-*' is not a tag filter — did you mean 'glob:release-*'?"),
    ("Glob:release-*", "'Glob:release-*' is not a tag filter — did you mean 'glob:release-*'?"),
    ("release-*", "'release-*' is not a tag filter — did you mean 'glob:release-*'?"),
    ("v?.*", "'v?.*' is not a tag filter — did you mean 'glob:v?.*'?"),
    ("regx:^a", "'regx:^a' is not a tag filter — did you mean 'regex:^a'?"),
    ("regexp:^v[0-9]+$", "'regexp:^v[0-9]+$' is not a tag filter — did you mean 'regex:^v[0-9]+$'?"),
    ("regex^a", "'regex^a' is not a tag filter — did you mean 'regex:^a'?"),
    ("glob:", "'glob:' has no pattern after 'glob:'"),
    ("regex:", "'regex:' has no pattern after 'regex:'"),
    ("release:*", "'release:*' is neither a Docker tag nor a filter (glob:PATTERN, regex:PATTERN, semver[:RANGE])"),
]


@pytest.mark.parametrize(("value", "message"), TAG_TYPOS, ids=[v for v, _ in TAG_TYPOS])
def test_misspelt_filter_is_an_error_with_a_suggestion(value: str, message: str) -> None:
    assert problems_of(HEADER + f"    tags: {value!r}\n") == [f"line 7: services.api.tags: {message}"]


# Real tags, some close to a keyword, stay exact tags.
EXACT_TAGS = ["latest", "stable", "main", "server", "seven", "sem", "glob", "regex", "Glob", "1.2.3", "v1", "edge-2"]


@pytest.mark.parametrize("value", EXACT_TAGS)
def test_real_tags_stay_exact(value: str) -> None:
    tags = one_rule_tags(value)
    assert (tags.kind, tags.pattern, tags.refusal(value)) == ("exact", value, None)


@pytest.mark.parametrize("value", ["semvr", "Semver"])
def test_the_suggested_escape_deploys_the_exact_tag(value: str) -> None:
    tags = one_rule_tags(f"glob:{value}")
    assert (tags.refusal(value), tags.refusal(value + "x")) == (
        None,
        f"tag {value + 'x'!r} does not match glob {value!r}",
    )


# ---- RulesSource ------------------------------------------------------------------------------
def _write(path: Path, services: dict[str, Any], mtime: float) -> None:
    path.write_text(yaml.safe_dump({"services": services}), encoding="utf-8")
    os.utime(path, (mtime, mtime))


def _svc(tags: str = "latest") -> dict[str, Any]:
    return {"repository": "acme/api", "tags": tags}


def seen(source: RulesSource) -> tuple[list[str], str | None, bool]:
    """What a request would see; a function so that mypy does not narrow ``error`` across reloads."""
    return list(source.current().rules), source.error, source.loaded


def test_rules_source_reloads_and_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, {"one": _svc()}, mtime=1_000_000)
    source = RulesSource(path)
    assert seen(source) == (["one"], None, True)

    # Changed content with the same mtime is not noticed: reloading is driven by mtime.
    _write(path, {"two": _svc()}, mtime=1_000_000)
    assert list(source.current().rules) == ["one"]

    os.utime(path, (1_000_100, 1_000_100))
    assert seen(source) == (["two"], None, True)

    path.write_text("services:\n  two:\n    repository: acme/api\n    tags: latest\n    colour: red\n")
    os.utime(path, (1_000_200, 1_000_200))
    kept = source.current()
    assert list(kept.rules) == ["two"]
    assert (
        source.error
        == f"{path}: 1 error(s)\n  line 5: services.two.colour: unknown key 'colour' — the keys here are {SERVICE_KEYS}"
    )
    assert source.current() is kept  # asking again does not re-read the broken file

    _write(path, {"three": _svc()}, mtime=1_000_300)
    assert seen(source) == (["three"], None, True)


FALLBACK = RuleSet.from_file(RulesFile.model_validate({"services": {"old": _svc()}}))

# (what is at the path, the problem it causes): a worker must boot with each of them.
UNLOADABLE: list[tuple[str, Any, str]] = [
    ("broken", "services:\n  api:\n    repository: acme/api\n", "line 2: services.api.tags: is required"),
    ("missing", None, "cannot read: No such file or directory"),
    ("directory", "DIR", "cannot read: Is a directory"),
    ("not-yaml", "services: [\n", "line 2: not valid YAML: expected the node content, but found '<stream end>'"),
]


def _place(path: Path, content: str | None) -> None:
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("fallback", [None, FALLBACK], ids=["no-fallback", "fallback"])
@pytest.mark.parametrize(("content", "problem"), [(c, p) for _, c, p in UNLOADABLE], ids=[i for i, _, _ in UNLOADABLE])
def test_rules_source_starts_whatever_the_file(
    tmp_path: Path, content: str | None, problem: str, fallback: RuleSet | None
) -> None:
    path = tmp_path / "rules.yaml"
    _place(path, content)
    source = RulesSource(path, fallback=fallback)
    assert source.error == f"{path}: 1 error(s)\n  {problem}"
    assert source.loaded is (fallback is not None)
    assert source.current() == (fallback or RuleSet(rules={}))
    assert source.current().for_repository("acme/api") == ([FALLBACK.rules["old"]] if fallback else [])

    # Fixing the file is enough: the next look picks it up and the error goes away.
    if content == "DIR":
        path.rmdir()
    _write(path, {"new": _svc()}, mtime=1_000_000)
    assert seen(source) == (["new"], None, True)


def test_rules_source_prefers_a_good_file_to_the_fallback(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, {"one": _svc()}, mtime=1_000_000)
    source = RulesSource(path, fallback=FALLBACK)
    assert seen(source) == (["one"], None, True)


def test_rules_source_survives_an_unexpected_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, {"one": _svc()}, mtime=1_000_000)

    def explode(_: Path | str) -> RuleSet:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("webhook_server.rules.load_rules", explode)
    source = RulesSource(path, fallback=FALLBACK)
    assert (source.current(), source.loaded) == (FALLBACK, True)
    assert source.error == f"{path}: 1 error(s)\n  cannot load: RecursionError: maximum recursion depth exceeded"


def test_rules_source_recovers_after_the_file_disappears(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, {"one": _svc()}, mtime=1_000_000)
    source = RulesSource(path)
    path.unlink()
    assert list(source.current().rules) == ["one"]
    assert source.error == f"{path}: 1 error(s)\n  cannot read: No such file or directory"

    _write(path, {"two": _svc()}, mtime=1_000_100)
    assert seen(source) == (["two"], None, True)


# ---- durations print as the rules write them --------------------------------------------------
DURATION_TEXT = [
    ({}, {}, ("5s", "15s", "5m")),  # built-in defaults
    ({"update": {"delay": "90s", "monitor": "0.5"}, "timeout": "120s"}, {}, ("1m30s", "500ms", "2m")),
    ({"timeout": "1h"}, {"update": {"monitor": "1m30s"}, "timeout": "10m"}, ("5s", "1m30s", "10m")),
]


@pytest.mark.parametrize(("defaults", "entry", "texts"), DURATION_TEXT, ids=["builtin", "defaults", "overrides"])
def test_rule_durations_print_as_written(
    defaults: dict[str, Any], entry: dict[str, Any], texts: tuple[str, str, str]
) -> None:
    rule = rules_of({"api": {"repository": "acme/api", "tags": "latest", **entry}}, defaults=defaults).rules["api"]
    assert (str(rule.update.delay), str(rule.update.monitor), f"{rule.timeout}") == texts


DESCRIBED: list[tuple[dict[str, Any], str]] = [
    (
        {"repository": "acme/api", "tags": "semver", "policy": "minor"},
        "acme/api, tags semver, policy minor, timeout 5m, update 1 at a time every 5s, start-first, monitor 15s, "
        "on failure rollback",
    ),
    (
        {
            "repository": "acme/web",
            "image": "reg.example.com/acme/web",
            "tags": "glob:release-*",
            "timeout": "90s",
            "update": {"parallelism": 0, "delay": "500ms", "monitor": "2m", "max_failure_ratio": 0.25},
        },
        "acme/web → reg.example.com/acme/web, tags glob:release-*, timeout 1m30s, update all at once every 500ms, "
        "start-first, monitor 2m, on failure rollback (tolerating 25% failed)",
    ),
]


@pytest.mark.parametrize(("entry", "line"), DESCRIBED, ids=["semver", "glob-tuned"])
def test_describe_writes_durations_as_the_file_does(entry: dict[str, Any], line: str) -> None:
    assert rules_of({"svc": entry}).rules["svc"].describe() == line


# ---- notifications ------------------------------------------------------------------------------
SECRET = "xoxb-Secret-Token-9f2c"
HOOK = f"json://127.0.0.1:8080/hooks/{SECRET}"
OTHER = f"discord://4174216298/{SECRET}-discord"


def test_notify_defaults_to_rollbacks_and_failures_and_no_urls() -> None:
    rule = rules_of({"svc": {"repository": "acme/api", "tags": "latest"}}).rules["svc"]
    assert rule.notify == ()
    assert rule.notify_on == ("rolled_back", "failed")


def test_notify_in_defaults_applies_to_every_service_unless_one_sets_its_own() -> None:
    rules = rules_of(
        {
            "inherits": {"repository": "acme/api", "tags": "latest"},
            "own": {"repository": "acme/web", "tags": "latest", "notify": [OTHER], "notify_on": ["succeeded"]},
            "silent": {"repository": "acme/job", "tags": "latest", "notify": []},
        },
        defaults={"notify": [HOOK], "notify_on": ["failed", "succeeded", "skipped", "superseded", "failed"]},
    )
    inherits, own, silent = rules.rules["inherits"], rules.rules["own"], rules.rules["silent"]
    assert [u.get_secret_value() for u in inherits.notify] == [HOOK]
    # Listed twice, kept once.
    assert inherits.notify_on == ("failed", "succeeded", "skipped", "superseded")
    assert [u.get_secret_value() for u in own.notify] == [OTHER]
    assert own.notify_on == ("succeeded",)
    assert silent.notify == ()
    assert silent.notify_on == inherits.notify_on


def test_notify_urls_never_show_when_rules_are_printed_or_serialized() -> None:
    rules = rules_of({"svc": {"repository": "acme/api", "tags": "latest", "notify": [HOOK, OTHER]}})
    rule = rules.rules["svc"]
    for text in (repr(rule), str(rule), rules.model_dump_json(), repr(rules.model_dump()), rule.describe()):
        assert SECRET not in text
    assert rule.describe().endswith(", notifies 2 URL(s) when rolled_back, failed")


def test_bad_notify_entries_are_located_and_never_echoed() -> None:
    found = problems_of(
        f"""\
        defaults:
          notify_on: [rolled_back, exploded]
        services:
          api:
            repository: acme/api
            tags: latest
            notify:
              - {HOOK}
              - nosuchservice://{SECRET}
              - {SECRET}
              - discord://{SECRET}
              - 42
        """
    )
    assert found == [
        "line 2: defaults.notify_on.1: must be 'succeeded', 'rolled_back', 'failed', 'skipped' or 'superseded'",
        "line 9: services.api.notify.1: nosuchservice:// is not a notification service apprise knows",
        "line 10: services.api.notify.2: is not a notification URL (SERVICE://…, such as json://host/path or"
        " slack://…)",
        "line 11: services.api.notify.3: is not a valid Discord URL (discord://…): a part is missing or malformed",
        "line 12: services.api.notify.4: must be a string: a notification URL such as json://host/path or"
        " slack://TOKEN_A/TOKEN_B/TOKEN_C",
    ]
    assert not any(SECRET in p for p in found)


def test_notify_must_be_a_list() -> None:
    assert problems_of(
        f"""\
        services:
          api:
            repository: acme/api
            tags: latest
            notify: {HOOK}
        """
    ) == ["line 5: services.api.notify: must be a list"]


def test_a_worker_uses_the_rules_its_master_read_while_the_file_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, {"one": _svc()}, mtime=1_000_000)
    master = load_rules(path)
    parsed: list[str] = []
    real = rules_module.parse_rules
    monkeypatch.setattr(rules_module, "parse_rules", lambda text, **kw: parsed.append(text) or real(text, **kw))

    worker = RulesSource(path, fallback=master)
    assert worker.current() is master and parsed == []  # parsed once, by the master

    _write(path, {"two": _svc()}, mtime=1_000_100)
    assert seen(worker) == (["two"], None, True) and len(parsed) == 1
    # A worker started after that edit parses the file: its master's rules are of an older file.
    assert seen(RulesSource(path, fallback=master)) == (["two"], None, True) and len(parsed) == 2


def test_rules_are_found_by_repository_whatever_their_number() -> None:
    many = {f"s{i}": {"repository": f"acme/app{i}", "tags": "latest"} for i in range(1000)}
    many["twin"] = {"repository": "acme/app7", "tags": "latest"}
    ruleset = parse_rules(yaml.safe_dump({"services": many}))
    assert [r.service for r in ruleset.for_repository("ACME/app7")] == ["s7", "twin"]
    assert ruleset.for_repository("acme/none") == []


def test_a_worker_reads_a_file_replaced_under_the_same_mtime(tmp_path: Path) -> None:
    """gunicorn's SIGHUP starts new workers to re-read the rules: an edit that kept the mtime must count."""
    path = tmp_path / "rules.yaml"
    _write(path, {"one": _svc()}, mtime=1_000_000)
    master = load_rules(path)
    staged = tmp_path / "rules.new"
    _write(staged, {"two": _svc()}, mtime=1_000_000)
    os.replace(staged, path)
    assert seen(RulesSource(path, fallback=master)) == (["two"], None, True)
