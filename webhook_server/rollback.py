"""Rolling a service back to an earlier image, chosen from our own journal.

Swarm's ``PreviousSpec`` is one step deep and gone after an automatic rollback; the journal remembers every
digest that succeeded, and the image the service ran before this tool first deployed it, so "back" always
has an answer where one exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from webhook_server.errors import NotAllowed, RuleNotFound
from webhook_server.journal import Deployment, Journal
from webhook_server.matching import DeployPlan
from webhook_server.refs import ImageRef
from webhook_server.rules import RuleSet


@dataclass(frozen=True)
class RollbackTarget:
    image_ref: str
    id: int | None  # the succeeded deployment that deployed it; None for the image from before our first one
    description: str


def choose_target(
    history: Sequence[Deployment],
    *,
    running_image: str,
    to: Deployment | None = None,
    original: Deployment | None = None,
) -> RollbackTarget:
    """``to`` if given; else the newest success whose digest is not running; else the image the service ran
    before this tool's first deployment (``original.previous_image``).

    ``history`` is the service's succeeded deployments, newest first.
    """
    running = ImageRef.parse(running_image)
    if to is not None:
        if to.state != "succeeded" or not to.image_ref:
            raise NotAllowed(f"deployment {to.id} is {to.state}; only a succeeded deployment can be returned to")
        return RollbackTarget(image_ref=to.image_ref, id=to.id, description=f"as deployed by {to.id}")
    for dep in history:
        if dep.image_ref and ImageRef.parse(dep.image_ref).digest != running.digest:
            return RollbackTarget(image_ref=dep.image_ref, id=dep.id, description=f"as deployed by {dep.id}")
    if original is not None and original.previous_image and not _same_image(original.previous_image, running):
        return RollbackTarget(
            image_ref=original.previous_image,
            id=None,
            description=f"the image it ran before its first deployment here ({original.id})",
        )
    raise NotAllowed(
        "nothing earlier to return to: no succeeded deployment with another image is recorded for this service"
        " and it runs the image it had before; deploy a tag instead (webhook-server deploy SERVICE TAG)"
    )


def _same_image(image: str, running: ImageRef) -> bool:
    ref = ImageRef.parse(image)
    return image == str(running) or (ref.digest is not None and ref.digest == running.digest)


def plan_rollback(
    *, journal: Journal, rules: RuleSet, service: str, running_image: str, to: int | None = None
) -> tuple[DeployPlan, RollbackTarget]:
    """The plan for a rollback and the image it returns to; raises if there is none."""
    rule = rules.get(service)
    if rule is None:
        raise RuleNotFound(f"no rule in the rules file names service {service!r}")
    chosen = journal.get(to) if to is not None else None
    if chosen is not None and chosen.service != service:
        raise NotAllowed(f"deployment {chosen.id} belongs to {chosen.service}, not {service}")
    target = choose_target(
        journal.last_succeeded(service),
        running_image=running_image,
        to=chosen,
        original=journal.first_previous_image(service),
    )
    ref = ImageRef.parse(target.image_ref)
    plan = DeployPlan(service=service, repository=rule.repository, image=ref.name, tag=ref.tag or "")
    return plan, target
