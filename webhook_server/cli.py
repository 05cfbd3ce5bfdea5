"""``webhook-server``: a thin shell over the same functions the HTTP API uses.

User mistakes become one line on stderr and exit code 2; a deployment that ends badly exits 1.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from webhook_server import display, logs
from webhook_server.certs import Certificates, state_json
from webhook_server.cluster import Swarm
from webhook_server.durations import format_duration
from webhook_server.errors import ConfigError, WebhookError
from webhook_server.executor import Executor
from webhook_server.journal import Deployment, Journal, journal_name
from webhook_server.leadership import executor_lock, renewed
from webhook_server.operations import dry_run as try_deploy
from webhook_server.operations import journal_is_new, open_journal, request_deploy, request_rollback
from webhook_server.proxy.commands import reload_proxy, render_nginx
from webhook_server.proxy.lineages import certificate_lines
from webhook_server.rules import RuleSet, RulesSource, load_rules
from webhook_server.settings import NEW_INSTALL_TOKEN_LENGTH, Settings, load_settings
from webhook_server.status import cluster_status, deployment_detail, executor_detail, overview

log = logging.getLogger(__name__)
DEFAULT_BIND = "127.0.0.1:9000"
# history fits a 120-column terminal; the message column takes what the others leave.
HISTORY_WIDTH = 120


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
    logs.configure(settings.log_level, settings.secrets(), fmt=settings.log_format)
    return settings


def _journal(settings: Settings) -> Journal:
    """The journal, saying which when this command creates it (a wrong WEBHOOK_DB or cwd shows here)."""
    new = journal_is_new(settings.journal_location)
    journal = open_journal(settings.journal_location)
    if new:
        click.echo(f"webhook-server: new journal at {journal_name(settings.journal_location)}", err=True)
    return journal


def _swarm(settings: Settings) -> Swarm:
    # The only place the CLI builds a real Swarm: docker-py loads for the commands that talk to Docker.
    from webhook_server.swarm import SwarmServices

    return SwarmServices(timeout=settings.docker_timeout.total_seconds())


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
@click.option(
    "--connections",
    default=1000,
    show_default=True,
    type=click.IntRange(10, 100000),
    help="Open connections each worker holds at most (gevent).",
)
def serve(bind: str, workers: int, connections: int) -> None:
    """Serve the webhook and API with gunicorn."""
    from webhook_server import notify, server

    settings = _settings()
    tokens = (("WEBHOOK_TOKEN", settings.webhook_token), ("WEBHOOK_API_TOKEN", settings.api_token))
    missing = [n for n, v in tokens if v is None]
    if missing:
        raise ConfigError(f"set {' and '.join(missing)} (or {missing[0]}_FILE) to long random strings")
    if journal_is_new(settings.journal_location):
        short = [n for n, v in tokens if v is not None and len(v.get_secret_value()) < NEW_INSTALL_TOKEN_LENGTH]
        if short:
            absent = "has no journal" if settings.db_url is not None else "does not exist"
            raise ConfigError(
                f"{' and '.join(short)}: a new install needs tokens of at least {NEW_INSTALL_TOKEN_LENGTH} "
                f"characters (openssl rand -base64 32); this is a new install: "
                f"{journal_name(settings.journal_location)} {absent} yet"
            )
    address = server.parse_bind(bind)
    # Everything a worker needs is checked here, once, so a mistake is one line and not a traceback per worker.
    rules = load_rules(settings.rules_path)
    notify.check_urls(settings.notify_url_values(), source="WEBHOOK_NOTIFY_URLS")
    open_journal(settings.journal_location).close()
    server.check_free(address)
    if not server.patched():
        server.exec_patched(
            ["serve", "--bind", str(address), "--workers", str(workers), "--connections", str(connections)]
        )
    server.run_gunicorn(settings, rules=rules, bind=address, workers=workers, connections=connections)


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
    if rules.proxy is not None:
        for line in certificate_lines(rules.proxy):
            click.echo(line)


# ---- deploy ----------------------------------------------------------------------------------
@main.command()
@click.argument("service")
@click.argument("tag")
@click.option("--wait", is_flag=True, help="Follow the rollout live and wait for the outcome.")
@click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing. Exits 1 if it would skip.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome (or the queued deployment) as JSON.")
def deploy(service: str, tag: str, wait: bool, dry_run: bool, as_json: bool) -> None:
    """Deploy TAG to SERVICE with the same checks and rollout as a push."""
    settings = _settings()
    rules = load_rules(settings.rules_path)
    swarm = _swarm(settings)
    if dry_run:
        result = try_deploy(swarm=swarm, rules=rules, service=service, tag=tag)
        if as_json:
            display.print_json(dataclasses.asdict(result))
        else:
            click.echo(f"{service} runs {result.running}")
            click.echo(f"would skip: {result.skip}" if result.skip else f"would update to {result.target}")
            for warning in result.warnings:
                click.echo(f"warning: {warning}")
        if result.skip is not None:
            sys.exit(1)
        return
    journal = _journal(settings)
    dep = request_deploy(journal=journal, rules=rules, service=service, tag=tag)
    if not as_json:
        click.echo(f"deployment {dep.id}: {service} ← {dep.image}:{dep.tag} queued")
    _report(
        journal,
        _run_or_wait(journal, dep, swarm=swarm, rules=rules, settings=settings, wait=wait, quiet=as_json),
        as_json=as_json,
    )


def _run_or_wait(
    journal: Journal,
    dep: Deployment,
    *,
    swarm: Swarm,
    rules: RuleSet,
    settings: Settings,
    wait: bool,
    quiet: bool,
) -> Deployment:
    """Run the rollout here when no server holds the executor lock (or lease), following it; else let the
    server do it, following it only with ``wait``."""
    lock = executor_lock(journal)
    if not lock.try_acquire():
        return display.follow(journal, dep.id, swarm=swarm, quiet=quiet) if wait else journal.get(dep.id)
    from webhook_server.notify import Notifier  # apprise loads only for commands that roll out

    source = RulesSource(settings.rules_path, fallback=rules)
    # The CLI is the executor now, so it tells people of the outcomes as the server would.
    notifier = Notifier.from_settings(settings, journal=journal, rules=source.current)
    notifier.subscribe()
    notifier.start()
    executor = Executor.from_settings(settings, journal=journal, swarm=swarm, rules=source)
    stop = threading.Event()
    with renewed(lock) as lost:

        def run() -> None:
            # A lost lease (a server took over) ends it here; the server follows what was started.
            while not journal.get(dep.id).done and not stop.is_set() and not lost.is_set():
                executor.drain(dep.service)
                stop.wait(0.5)

        worker = threading.Thread(target=run, name="rollout", daemon=True)
        worker.start()
        try:
            return display.follow(journal, dep.id, swarm=swarm, quiet=quiet, still_running=worker.is_alive)
        finally:
            stop.set()
            worker.join()
            notifier.stop(timeout=settings.notify_timeout.total_seconds())


def _report(journal: Journal, dep: Deployment, *, as_json: bool) -> None:
    if as_json:
        display.print_json(deployment_detail(journal, dep))
    else:
        click.echo(f"deployment {dep.id}: {dep.state}" + (f": {dep.message}" if dep.message else ""))
        if dep.nodes:
            click.echo(f"tasks ran on: {', '.join(dep.nodes)}")
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
@click.option("--wait", is_flag=True, help="Follow the rollout live and wait for the outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome (or the queued deployment) as JSON.")
def rollback(service: str, to: int | None, wait: bool, as_json: bool) -> None:
    """Roll SERVICE back to an earlier succeeded deployment from the journal."""
    settings = _settings()
    rules = load_rules(settings.rules_path)
    swarm = _swarm(settings)
    journal = _journal(settings)
    done = request_rollback(journal=journal, swarm=swarm, rules=rules, service=service, to=to)
    target = done.target
    if not as_json:
        click.echo(f"deployment {done.deployment.id}: {service} ← {target.image_ref} ({target.description}) queued")
    ran = _run_or_wait(journal, done.deployment, swarm=swarm, rules=rules, settings=settings, wait=wait, quiet=as_json)
    _report(journal, ran, as_json=as_json)


# ---- the proxy -------------------------------------------------------------------------------
main.add_command(render_nginx)
main.add_command(reload_proxy)


# ---- history ---------------------------------------------------------------------------------
@main.command()
@click.option("--service", help="Only this service.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="Print the deployments as a JSON array.")
def history(service: str | None, limit: int, as_json: bool) -> None:
    """Recent deployments, newest first (times in UTC)."""
    settings = _settings()
    new = journal_is_new(settings.journal_location)
    journal = open_journal(settings.journal_location)
    rows = journal.find(service=service, limit=limit)
    if as_json:
        display.print_json([deployment_detail(journal, d, transitions=False) for d in rows])
        return
    if not rows:
        click.echo(
            f"no deployments recorded in {journal_name(settings.journal_location)}" + (" (new journal)" if new else "")
        )
        return
    for line in history_table(rows, now=datetime.now(UTC)):
        click.echo(line)


# ---- status and show ---------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the services as JSON, as GET /api/services does.")
def status(as_json: bool) -> None:
    """Every service in the rules: what it runs, its last deployment, what waits and what is rolling out."""
    settings = _settings()
    rules = load_rules(settings.rules_path)
    swarm = _swarm(settings)
    node = swarm.node()
    journal = _journal(settings)
    found = cluster_status(journal=journal, swarm=swarm, rules=rules)
    executor = executor_detail(journal)
    watch = Certificates.from_settings(settings, config=lambda: rules.proxy)
    certificates = watch.current() if watch is not None else []
    if as_json:
        listed = state_json(certificates, warn_days=settings.cert_warn_days)["certificates"]
        display.print_json({**overview(node, executor, found), "certificates": listed})
        return
    lines = [display.node_line(node), *display.executor_lines(executor), *display.status_lines(found)]
    for line in [*lines, *display.certificate_lines(certificates)]:
        click.echo(line)


@main.command()
@click.argument("deployment_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the deployment as JSON, as the API does.")
def show(deployment_id: int, as_json: bool) -> None:
    """One deployment with its transitions and notifications."""
    settings = _settings()
    journal = _journal(settings)
    dep = journal.get(deployment_id)
    if as_json:
        display.print_json(deployment_detail(journal, dep))
        return
    for line in display.show_lines(journal, dep):
        click.echo(line)


# (header, width); the message column is last and takes the rest of HISTORY_WIDTH.
_COLUMNS = (("ID", 5), ("CREATED", 20), ("SERVICE", 16), ("TAG", 14), ("TRIGGER", 9), ("STATE", 11), ("TOOK", 7))


def history_table(rows: list[Deployment], *, now: datetime) -> list[str]:
    """The history as lines of at most HISTORY_WIDTH characters."""
    fixed = sum(width + 1 for _, width in _COLUMNS)
    message_width = HISTORY_WIDTH - fixed

    def line(cells: list[str], message: str) -> str:
        padded = [
            _fit(c, w).rjust(w) if i == 0 else _fit(c, w).ljust(w)
            for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
        ]
        return (" ".join(padded) + " " + _fit(message, message_width)).rstrip()

    lines = [line([h for h, _ in _COLUMNS], "MESSAGE")]
    for d in rows:
        cells = [str(d.id), display.utc(d.created_at), d.service, d.tag, d.trigger, d.state, _took(d, now=now)]
        lines.append(line(cells, " ".join((d.message or "").split())))
    return lines


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _took(d: Deployment, *, now: datetime) -> str:
    """How long the rollout took (so far, while it runs); "-" before it started."""
    if d.started_at is None:
        return "-"
    end = datetime.fromisoformat(d.finished_at) if d.finished_at else now
    seconds = max(0, round((end - datetime.fromisoformat(d.started_at)).total_seconds()))
    return format_duration(timedelta(seconds=seconds))
