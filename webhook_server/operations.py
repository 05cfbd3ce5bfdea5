"""What a person can ask for, the same from the HTTP API and the CLI: deploy, roll back, try a deploy.

Each function checks the request against the rules, journals it and returns the queued deployment; the
executor (in the server, or run inline by the CLI) does the rollout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from webhook_server.cluster import Swarm, start_first_blocked
from webhook_server.errors import ConfigError, JournalError, RuleNotFound
from webhook_server.journal import Deployment, Journal, PushRecord, is_postgresql, journal_exists, journal_name
from webhook_server.matching import plan_manual, policy_refusal_for
from webhook_server.rollback import RollbackTarget, plan_rollback
from webhook_server.rules import RuleSet

log = logging.getLogger(__name__)
T = TypeVar("T")


def open_journal(location: Path | str) -> Journal:
    """The journal at ``location`` (an SQLite file or a postgresql:// URL), created or upgraded, or a
    ConfigError naming it (never its password) and what is wrong with it."""
    if not is_postgresql(location) and Path(location).is_dir():  # SQLite would only say "unable to open"
        raise _refusal(location, "it is a directory")
    return _refusing(location, lambda: Journal(location))


def journal_is_new(location: Path | str) -> bool:
    """Whether no journal is at ``location`` yet (a new install); creates nothing."""
    return not _refusing(location, lambda: journal_exists(location))


def _refusing(location: Path | str, call: Callable[[], T]) -> T:
    try:
        return call()
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(location) else ""
        raise _refusal(location, f"{e.strerror or e}{where}") from None
    except JournalError as e:
        raise _refusal(location, e.reason) from None


def _refusal(location: Path | str, reason: str) -> ConfigError:
    what = "it" if is_postgresql(location) else "the file"
    return ConfigError(f"cannot open the journal {journal_name(location)}: {reason} (WEBHOOK_DB names {what})")


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
