"""Which services get which image: data in, data out. No Flask, no Docker, no clock.

Two moments decide a deployment:
- on arrival (``plan_push``, ``plan_manual``): the rules and the tag alone, so a push that cannot deploy is
  answered at once and never touches Docker;
- just before the rollout (``policy_refusal_for``, ``pick_best``): against what runs now, because only then
  is it known, and it may have changed since the push arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import semver

from webhook_server.errors import NotAllowed, RuleNotFound
from webhook_server.refs import ImageRef
from webhook_server.rules import Rule, RuleSet
from webhook_server.versions import parse_tag_version, policy_refusal


@dataclass(frozen=True)
class DeployPlan:
    service: str
    repository: str
    image: str  # what to deploy, without tag or digest
    tag: str


@dataclass(frozen=True)
class Ignored:
    reason: str


def tag_refusal(rule: Rule, tag: str) -> str | None:
    """Why ``rule`` refuses ``tag`` before looking at what runs, or None if it may deploy."""
    refusal = rule.tags.refusal(tag)
    if refusal is None and rule.is_semver:
        version = parse_tag_version(tag)
        assert version is not None  # the semver filter accepted it
        refusal = policy_refusal(rule.effective_policy, version, None)
    return refusal


def plan_push(*, repository: str, tag: str, rules: RuleSet) -> list[DeployPlan] | Ignored:
    """The deployments a push of ``repository:tag`` asks for (one per matching service), or why none."""
    candidates = rules.for_repository(repository)
    if not candidates:
        return Ignored(f"no rule deploys repository {repository!r}")
    plans, refusals = [], []
    for rule in candidates:
        refusal = tag_refusal(rule, tag)
        if refusal is None:
            plans.append(_plan(rule, tag))
        else:
            refusals.append(f"{rule.service}: {refusal}")
    return plans if plans else Ignored("; ".join(refusals))


def plan_manual(*, service: str, tag: str, rules: RuleSet) -> DeployPlan:
    """A person asks for ``service`` at ``tag``: the same rule checks as a push."""
    rule = rules.get(service)
    if rule is None:
        raise RuleNotFound(f"no rule in the rules file names service {service!r}")
    refusal = tag_refusal(rule, tag)
    if refusal is not None:
        raise NotAllowed(f"{service}: {refusal}")
    return _plan(rule, tag)


def _plan(rule: Rule, tag: str) -> DeployPlan:
    return DeployPlan(service=rule.service, repository=rule.repository, image=rule.image, tag=tag)


def running_version(rule: Rule, running_image: str | None) -> semver.Version | None:
    """The semver the service runs now, if it runs this rule's image under a semver tag."""
    if not running_image:
        return None
    ref = ImageRef.parse(running_image)
    if ref.canonical_name != ImageRef(rule.image).canonical_name or ref.tag is None:
        return None
    return parse_tag_version(ref.tag)


def policy_refusal_for(rule: Rule, tag: str, running_image: str | None) -> str | None:
    """Why moving the service from ``running_image`` to ``tag`` breaks the rule's policy, or None."""
    if not rule.is_semver:
        return None
    candidate = parse_tag_version(tag)
    if candidate is None:
        return f"tag {tag!r} is not a semantic version"
    return policy_refusal(rule.effective_policy, candidate, running_version(rule, running_image))


@dataclass(frozen=True)
class Candidate:
    """A queued deployment competing for a service; ``order`` grows with arrival."""

    id: int
    tag: str
    order: int


def pick_best(rule: Rule, candidates: Sequence[Candidate]) -> Candidate:
    """Latest wins: the highest semver for semver rules (ties: latest arrival), else the latest arrival."""
    if not candidates:
        raise ValueError("pick_best needs at least one candidate")
    if rule.is_semver:
        versioned = [(parse_tag_version(c.tag), c) for c in candidates]
        ranked = [(v, c.order, c) for v, c in versioned if v is not None]
        if ranked:
            return max(ranked, key=lambda item: (item[0], item[1]))[2]
    return max(candidates, key=lambda c: c.order)
