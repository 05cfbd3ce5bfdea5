"""Which services get which image: data in, data out. No Flask, no Docker, no clock.

Two moments decide a deployment:
- on arrival (``plan_push``, ``plan_manual``): the rules and the tag alone, so a push that cannot deploy is
  answered at once and never touches Docker;
- just before the rollout (``coalesce``, ``policy_refusal_for``): against what runs now, because only then
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
    pinned: bool = False  # a rollback to one exact image: runs alone, in order, and competes with no push
    ready: bool = True  # False while it waits out a retry delay


@dataclass(frozen=True)
class Coalesced:
    """What to do with a service's queue now: run ``chosen``; the others lose to it or are refused."""

    chosen: Candidate | None = None
    superseded: tuple[Candidate, ...] = ()
    refused: tuple[tuple[Candidate, str], ...] = ()


def coalesce(
    rule: Rule | None, candidates: Sequence[Candidate], *, running_image: str | None, known: bool
) -> Coalesced:
    """Latest wins, among what the rule's policy allows against what runs now.

    ``known`` is False when what runs could not be read (Docker down): then the newest candidate is tried on
    its own and nothing is superseded or refused, since neither can be decided without the running version.
    A candidate waiting out a retry delay is not run early; if it is the best, nothing runs yet.
    """
    if not candidates:
        return Coalesced()
    pinned = sorted((c for c in candidates if c.pinned), key=lambda c: c.order)
    if pinned:
        return Coalesced(chosen=pinned[0] if pinned[0].ready else None)
    if not known or rule is None:
        ready = [c for c in candidates if c.ready]
        return Coalesced(chosen=max(ready, key=lambda c: c.order) if ready else None)
    refused = tuple(
        (c, reason) for c in candidates if (reason := policy_refusal_for(rule, c.tag, running_image)) is not None
    )
    refused_ids = {c.id for c, _ in refused}
    allowed = [c for c in candidates if c.id not in refused_ids]
    if not allowed:
        return Coalesced(refused=refused)
    best = best_of(rule, allowed)
    if not best.ready:
        return Coalesced()
    return Coalesced(chosen=best, superseded=tuple(c for c in allowed if c.id != best.id), refused=refused)


def best_of(rule: Rule, candidates: Sequence[Candidate]) -> Candidate:
    """The highest semver for semver rules (ties: latest arrival), else the latest arrival."""
    if rule.is_semver:
        ranked = [(v, c.order, c) for c in candidates if (v := parse_tag_version(c.tag)) is not None]
        if ranked:
            return max(ranked, key=lambda item: (item[0], item[1]))[2]
    return max(candidates, key=lambda c: c.order)
