"""How the CLI shows state to a person: the status table, one deployment, and a rollout followed live.

Only text here; what is shown comes from ``status`` and the journal, the same as the HTTP API returns.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from webhook_server.certs import CertificateStatus
from webhook_server.cluster import NodeStatus, Swarm
from webhook_server.errors import DockerError
from webhook_server.journal import Deployment, Journal, Transition
from webhook_server.status import Progress, ServiceStatus, progress

FOLLOW_INTERVAL = 0.5


def utc(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def transition_line(t: Transition) -> str:
    return f"  {utc(t.at)} {t.state:<11} {t.message or ''}".rstrip()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def short_image(ref: str | None) -> str:
    """``registry/acme/api:1.2.3@sha256:0123456789ab`` cut to the tag and 12 digest digits."""
    if not ref:
        return "-"
    name, _, digest = ref.partition("@")
    return f"{name}@{digest[:19]}" if digest else name


def progress_text(p: Progress) -> str:
    swarm = f", Swarm: {p.swarm_state}" if p.swarm_state else ""
    return f"{p.tasks_updated}/{p.tasks_total} task(s) on the new image{swarm}"


def node_line(node: NodeStatus) -> str:
    """Which Docker node the receiver talks to, and whether it can deploy from there."""
    if node.problems:
        return f"Docker at {node.docker_host}: " + "; ".join(node.problems)
    role = "manager" if node.is_manager else "not a manager"
    return f"Docker at {node.docker_host}: node {node.hostname or node.node_id} ({role}, swarm {node.swarm_state})"


def executor_lines(executor: dict[str, Any] | None) -> list[str]:
    """Which receiver runs rollouts, when several share the journal: nothing to say on SQLite."""
    if executor is None:
        return []
    if executor["holder"] is None:
        return ["rollouts: no receiver holds the lease now; the next eligible one takes it within seconds"]
    left = executor["expires_in_seconds"]
    return [f"rollouts: run by {executor['holder']} (lease tenure {executor['epoch']}, {left} s left unless renewed)"]


def status_lines(found: list[ServiceStatus]) -> list[str]:
    lines: list[str] = []
    for s in found:
        lines.append(f"{s.service}: {short_image(s.image) if s.problem is None else 'unknown: ' + s.problem}")
        if s.in_progress is not None:
            d = s.in_progress.deployment
            lines.append(f"  rolling out  #{d.id} {d.tag}: {progress_text(s.in_progress)}")
        if s.last is not None:
            lines.append(f"  last         #{s.last.id} {s.last.tag} {s.last.state} at {utc(s.last.at)}")
            if s.last.state != "succeeded" and s.last.message:
                lines.append(f"               {' '.join(s.last.message.split())}")
        if s.queued:
            lines.append("  queued       " + ", ".join(f"#{q.id} {q.tag}" for q in s.queued))
        if s.in_progress is None and s.last is None and not s.queued:
            lines.append("  no deployments recorded")
    return lines


def certificate_lines(found: list[CertificateStatus]) -> list[str]:
    """``status``: each certificate nginx serves, how long it has left, and whether nginx serves that one."""
    lines: list[str] = []
    for c in found:
        if c.state == "unreadable" or c.not_after is None:
            lines.append(f"certificate {c.lineage}: UNREADABLE: {c.problem}")
            continue
        days = (c.expires_in_seconds or 0.0) / 86400
        when = f"expires {utc(c.not_after)}"
        if c.state == "expired":
            verdict = f"EXPIRED ({when})"
        elif c.state == "expiring":
            verdict = f"expires soon: in {days:.1f} days ({when})"
        else:
            verdict = f"ok, {when} (in {days:.0f} days)"
        lines.append(f"certificate {c.lineage}: {verdict}, serial {c.serial}")
        if c.stale:
            lines.append(f"  nginx serves an OLDER certificate (serial {c.served_serial}): reload it")
    return lines


def show_lines(journal: Journal, dep: Deployment) -> list[str]:
    lines = [
        f"deployment {dep.id}: {dep.service} ← {dep.image}:{dep.tag}",
        f"  state      {dep.state}" + (f": {dep.message}" if dep.message else ""),
        f"  trigger    {dep.trigger}" + (f" (request {dep.request_id})" if dep.request_id else ""),
        f"  image      {dep.image_ref or '-'}",
        f"  before     {dep.previous_image or '-'}",
    ]
    if dep.nodes:
        lines.append(f"  nodes      {', '.join(dep.nodes)}")
    lines.append("transitions:")
    lines += [transition_line(t) for t in journal.transitions(dep.id)]
    notes = journal.notifications(dep.id)
    lines.append("notifications:" if notes else "notifications: none")
    lines += [f"  {utc(n.at)} {n.outcome:<6} {n.target}" + (f": {n.detail}" if n.detail else "") for n in notes]
    return lines


def follow(
    journal: Journal,
    deployment_id: int,
    *,
    swarm: Swarm,
    quiet: bool = False,
    still_running: Callable[[], bool] = lambda: True,
    stop: threading.Event | None = None,
) -> Deployment:
    """Print a deployment's transitions as they happen and, while Swarm updates, its progress: one line
    rewritten in place in a terminal, a new line when it changes otherwise. Returns the final record (or
    the current one if ``still_running`` turns false first, e.g. the inline executor stopped)."""
    tty = not quiet and sys.stdout.isatty()
    shown = 0
    last_progress = ""
    stop = stop or threading.Event()
    while True:
        dep = journal.get(deployment_id)
        transitions = journal.transitions(deployment_id)
        if not quiet:
            for t in transitions[shown:]:
                _clear(tty, last_progress)
                click.echo(transition_line(t))
                last_progress = "" if tty else last_progress
        shown = len(transitions)
        if dep.done or not still_running():
            _clear(tty, last_progress)
            return dep
        if not quiet and dep.state == "running" and dep.image_ref:
            text = _progress_now(swarm, dep)
            if text and text != last_progress:
                if tty:
                    click.echo(f"\r\x1b[2K  … {text}", nl=False)
                else:
                    click.echo(f"  … {text}")
                last_progress = text
        stop.wait(FOLLOW_INTERVAL)


def _progress_now(swarm: Swarm, dep: Deployment) -> str | None:
    try:
        return progress_text(progress(dep, swarm.inspect(dep.service), swarm.tasks(dep.service)))
    except DockerError:
        return None


def _clear(tty: bool, last_progress: str) -> None:
    if tty and last_progress:
        click.echo("\r\x1b[2K", nl=False)
