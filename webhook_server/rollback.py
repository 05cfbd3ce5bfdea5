"""Rolling a service back to an earlier succeeded deployment, chosen from our own journal.

Swarm's ``PreviousSpec`` is one step deep and gone after an automatic rollback; the journal remembers every
digest that succeeded, so "back" always has an answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from webhook_server.errors import NotAllowed, RuleNotFound
from webhook_server.journal import Deployment, Journal
from webhook_server.matching import DeployPlan
from webhook_server.refs import ImageRef
from webhook_server.rules import RuleSet


def choose_target(history: Sequence[Deployment], *, running_image: str, to: Deployment | None = None) -> Deployment:
    """The deployment to return to: ``to`` if given, else the newest success whose digest is not running.

    ``history`` is the service's succeeded deployments, newest first.
    """
    running = ImageRef.parse(running_image).digest
    if to is not None:
        if to.state != "succeeded" or not to.image_ref:
            raise NotAllowed(f"deployment {to.id} is {to.state}; only a succeeded deployment can be returned to")
        return to
    for dep in history:
        if dep.image_ref and ImageRef.parse(dep.image_ref).digest != running:
            return dep
    raise NotAllowed("no earlier succeeded deployment with another digest is recorded for this service")


def plan_rollback(
    *, journal: Journal, rules: RuleSet, service: str, running_image: str, to: int | None = None
) -> tuple[DeployPlan, Deployment]:
    """The plan for a rollback and the deployment it returns to; raises if there is none."""
    rule = rules.get(service)
    if rule is None:
        raise RuleNotFound(f"no rule in the rules file names service {service!r}")
    chosen = journal.get(to) if to is not None else None
    if chosen is not None and chosen.service != service:
        raise NotAllowed(f"deployment {chosen.id} belongs to {chosen.service}, not {service}")
    target = choose_target(journal.last_succeeded(service), running_image=running_image, to=chosen)
    ref = ImageRef.parse(target.image_ref or "")
    plan = DeployPlan(service=service, repository=rule.repository, image=ref.name, tag=ref.tag or "")
    return plan, target
