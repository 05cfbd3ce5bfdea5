"""What a person can ask for, the same from the HTTP API and the CLI: deploy, roll back, try a deploy.

Each function checks the request against the rules, journals it and returns the queued deployment; the
executor (in the server, or run inline by the CLI) does the rollout.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from webhook_server.cluster import Swarm, start_first_blocked
from webhook_server.errors import ConfigError, RuleNotFound
from webhook_server.journal import Deployment, Journal, PushRecord
from webhook_server.matching import plan_manual, policy_refusal_for
from webhook_server.rollback import RollbackTarget, plan_rollback
from webhook_server.rules import RuleSet

log = logging.getLogger(__name__)


def open_journal(location: Path | str) -> Journal:
    """The journal at ``location``, or a ConfigError naming the file and what is wrong with it."""
    path = Path(location)

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"cannot open the journal {path}: {reason} (WEBHOOK_DB names the file)")

    if path.is_dir():  # SQLite would only say "unable to open database file"
        raise refuse("it is a directory")
    try:
        return Journal(path)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
        raise refuse(f"{e.strerror or e}{where}") from None
    except sqlite3.Error as e:
        raise refuse(str(e)) from None


def request_deploy(
    *,
    journal: Journal,
    rules: RuleSet,
    service: str,
    tag: str,
    client: str | None = None,
    request_id: str | None = None,
) -> Deployment:
    """Queue ``tag`` for ``service`` with the same rule checks as a push."""
    plan = plan_manual(service=service, tag=tag, rules=rules)
    record = PushRecord(
        trigger="manual", repository=plan.repository, tag=plan.tag, client=client, request_id=request_id
    )
    [dep] = journal.accept(record, [plan])
    log.info(
        "manual deployment %s of %s:%s to %s requested%s",
        dep.id,
        plan.image,
        plan.tag,
        plan.service,
        f" from {client}" if client else "",
    )
    return dep


@dataclass(frozen=True)
class Rollback:
    deployment: Deployment  # the new, queued one
    target: RollbackTarget  # the image it returns to, and which deployment (if any) deployed it


def request_rollback(
    *,
    journal: Journal,
    swarm: Swarm,
    rules: RuleSet,
    service: str,
    to: int | None = None,
    client: str | None = None,
    request_id: str | None = None,
) -> Rollback:
    """Queue a return to ``to`` (default: the newest succeeded deployment whose digest is not running)."""
    running = swarm.inspect(service)
    plan, target = plan_rollback(journal=journal, rules=rules, service=service, running_image=running.image, to=to)
    record = PushRecord(
        trigger="rollback", repository=plan.repository, tag=plan.tag, client=client, request_id=request_id
    )
    [dep] = journal.accept(record, [plan], pinned_ref=target.image_ref)
    log.info(
        "rollback %s of %s to %s (%s) requested%s",
        dep.id,
        service,
        target.image_ref,
        target.description,
        f" from {client}" if client else "",
    )
    return Rollback(deployment=dep, target=target)


@dataclass(frozen=True)
class DryRun:
    running: str  # the image the service runs now
    target: str | None  # image:tag@digest it would move to, when it would update
    skip: str | None  # why it would not, otherwise
    warnings: tuple[str, ...] = ()  # what would go wrong in Swarm although the deployment would start


def dry_run(*, swarm: Swarm, rules: RuleSet, service: str, tag: str) -> DryRun:
    """What deploying ``tag`` to ``service`` would do now; changes nothing."""
    plan = plan_manual(service=service, tag=tag, rules=rules)
    rule = rules.get(service)
    if rule is None:  # plan_manual has checked; this keeps the type checker informed
        raise RuleNotFound(f"no rule in the rules file names service {service!r}")
    state = swarm.inspect(service)
    refusal = policy_refusal_for(rule, tag, state.image)
    if refusal is not None:
        return DryRun(running=state.image, target=None, skip=refusal)
    target = f"{plan.image}:{plan.tag}@{swarm.resolve_digest(plan.image, plan.tag)}"
    if state.runs(target):
        return DryRun(running=state.image, target=None, skip=f"already runs {target.partition('@')[2]}")
    blocked = (
        start_first_blocked(state.placement, nodes=swarm.schedulable_nodes())
        if rule.update.order == "start-first"
        else None
    )
    return DryRun(running=state.image, target=target, skip=None, warnings=(blocked,) if blocked else ())


def wait_seconds(rules: RuleSet, service: str, *, margin: float) -> float:
    """How long a caller waits for a deployment of ``service``: its rule's timeout plus ``margin``."""
    rule = rules.get(service)
    return (rule.timeout.total_seconds() if rule else 0) + margin
