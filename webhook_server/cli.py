"""``webhook-server``: a thin shell over the same functions the HTTP API uses.

User mistakes become one line on stderr and exit code 2; a deployment that ends badly exits 1.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from webhook_server import logs
from webhook_server.errors import ConfigError, WebhookError
from webhook_server.executor import Executor, ExecutorLock, lock_path
from webhook_server.journal import Deployment, Journal, PushRecord
from webhook_server.matching import plan_manual, policy_refusal_for
from webhook_server.proxy.commands import reload_proxy, render_nginx
from webhook_server.rollback import plan_rollback
from webhook_server.rules import RulesSource, load_rules
from webhook_server.settings import Settings, load_settings

log = logging.getLogger(__name__)
DEFAULT_BIND = "127.0.0.1:9000"


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WebhookError as e:
            click.echo(f"webhook-server: {e.message}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="webhook-server")
def main() -> None:
    """Docker Hub webhook receiver that rolls Docker Swarm services forward."""


def _settings() -> Settings:
    settings = load_settings()
    logs.configure(settings.log_level, settings.secrets())
    return settings


# ---- serve -----------------------------------------------------------------------------------
@main.command()
@click.option(
    "--bind",
    default=DEFAULT_BIND,
    show_default=True,
    envvar="WEBHOOK_BIND",
    help="HOST:PORT to listen on (env WEBHOOK_BIND).",
)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256))
def serve(bind: str, workers: int, threads: int) -> None:
    """Serve the webhook and API with gunicorn."""
    settings = _settings()
    missing = [
        n
        for n, v in (("WEBHOOK_TOKEN", settings.webhook_token), ("WEBHOOK_API_TOKEN", settings.api_token))
        if v is None
    ]
    if missing:
        raise ConfigError(f"set {' and '.join(missing)} (or {missing[0]}_FILE) to long random strings")
    RulesSource(settings.rules_path)  # fail now, with located errors, rather than in every worker
    from webhook_server.server import run_gunicorn

    run_gunicorn(settings, bind=bind, workers=workers, threads=threads)


# ---- check-rules -----------------------------------------------------------------------------
@main.command("check-rules")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def check_rules(path: Path | None) -> None:
    """Validate a rules file (default: $WEBHOOK_RULES or ./deploy_rules.yaml)."""
    path = path or load_settings().rules_path
    rules = load_rules(path)
    click.echo(f"{path}: OK, {len(rules.rules)} service rule(s)")
    for rule in rules.rules.values():
        policy = f", policy {rule.effective_policy}" if rule.is_semver else ""
        click.echo(f"  {rule.service}: {rule.repository} → {rule.image}, tags {rule.tags}{policy}")


# ---- deploy ----------------------------------------------------------------------------------
@main.command()
@click.argument("service")
@click.argument("tag")
@click.option("--wait", is_flag=True, help="Wait for the outcome.")
@click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing.")
def deploy(service: str, tag: str, wait: bool, dry_run: bool) -> None:
    """Deploy TAG to SERVICE with the same checks and rollout as a push."""
    settings = _settings()
    rules = RulesSource(settings.rules_path)
    plan = plan_manual(service=service, tag=tag, rules=rules.current())
    from webhook_server.swarm import SwarmServices

    swarm = SwarmServices()
    if dry_run:
        rule = rules.current().get(service)
        assert rule is not None
        state = swarm.inspect(service)
        refusal = policy_refusal_for(rule, tag, state.image)
        digest = swarm.resolve_digest(plan.image, plan.tag)
        click.echo(f"{service} runs {state.image}")
        if refusal:
            click.echo(f"would skip: {refusal}")
        elif state.runs(f"{plan.image}:{plan.tag}@{digest}"):
            click.echo(f"would skip: already runs {digest}")
        else:
            click.echo(f"would update to {plan.image}:{plan.tag}@{digest}")
        return
    journal = Journal(settings.db_path)
    [dep] = journal.accept(PushRecord(trigger="manual", repository=plan.repository, tag=plan.tag), [plan])
    click.echo(f"deployment {dep.id}: {service} ← {plan.image}:{plan.tag} queued")
    final = _run_or_wait(journal, dep, swarm=swarm, rules=rules, settings=settings, wait=wait)
    _report(final)


def _run_or_wait(
    journal: Journal, dep: Deployment, *, swarm: Any, rules: RulesSource, settings: Settings, wait: bool
) -> Deployment:
    """Run the rollout here when no server holds the executor lock; else let the server do it."""
    lock = ExecutorLock(lock_path(journal))
    if lock.try_acquire():
        try:
            executor = Executor.from_settings(settings, journal=journal, swarm=swarm, rules=rules)
            while not journal.get(dep.id).done:
                executor.drain(dep.service)
                time.sleep(0.5)
        finally:
            lock.release()
    elif wait:
        return journal.wait_done(dep.id, interval=0.5)
    return journal.get(dep.id)


def _report(dep: Deployment) -> None:
    click.echo(f"deployment {dep.id}: {dep.state}" + (f": {dep.message}" if dep.message else ""))
    if dep.state in ("failed", "rolled_back"):
        sys.exit(1)


# ---- rollback --------------------------------------------------------------------------------
@main.command()
@click.argument("service")
@click.option(
    "--to",
    "to",
    type=click.IntRange(min=1),
    help="Return to this deployment id (default: the last succeeded deployment whose digest is not running now).",
)
@click.option("--wait", is_flag=True, help="Wait for the outcome.")
def rollback(service: str, to: int | None, wait: bool) -> None:
    """Roll SERVICE back to an earlier succeeded deployment from the journal."""
    settings = _settings()
    rules = RulesSource(settings.rules_path)
    from webhook_server.swarm import SwarmServices

    swarm = SwarmServices()
    journal = Journal(settings.db_path)
    running = swarm.inspect(service)
    plan, target = plan_rollback(
        journal=journal, rules=rules.current(), service=service, running_image=running.image, to=to
    )
    [dep] = journal.accept(
        PushRecord(trigger="rollback", repository=plan.repository, tag=plan.tag), [plan], pinned_ref=target.image_ref
    )
    click.echo(f"deployment {dep.id}: {service} ← {target.image_ref} (as deployed by {target.id}) queued")
    _report(_run_or_wait(journal, dep, swarm=swarm, rules=rules, settings=settings, wait=wait))


# ---- the proxy -------------------------------------------------------------------------------
main.add_command(render_nginx)
main.add_command(reload_proxy)


# ---- history ---------------------------------------------------------------------------------
@main.command()
@click.option("--service", help="Only this service.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
def history(service: str | None, limit: int) -> None:
    """Recent deployments, newest first."""
    journal = Journal(_settings().db_path)
    rows = journal.find(service=service, limit=limit)
    if not rows:
        click.echo("no deployments recorded")
        return
    click.echo(f"{'ID':>5}  {'CREATED':<19}  {'SERVICE':<20} {'TAG':<16} {'STATE':<11} MESSAGE")
    for d in rows:
        created = d.created_at[:19].replace("T", " ")
        click.echo(f"{d.id:>5}  {created:<19}  {d.service:<20} {d.tag:<16} {d.state:<11} {d.message or ''}")
