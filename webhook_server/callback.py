"""Docker Hub's ``callback_url``: once every deployment a push caused has ended, tell Docker Hub how it went.

Off by default (``WEBHOOK_CALLBACK=true`` turns it on). The URL comes from whoever sent the push, so it is
called only if it is ``https`` on an allow-listed host (default ``registry.hub.docker.com``), named by
name (never an address), with no user or unusual port; redirects are not followed and the call has a
short deadline. It runs off the rollout thread and never changes a deployment; each attempt is recorded
with the deployment's notifications, under a label without the URL's path (which carries a token).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Literal

import requests

from webhook_server.journal import Deployment, Journal

log = logging.getLogger(__name__)

DEFAULT_HOSTS = ("registry.hub.docker.com",)
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
CONTEXT = "webhook-server"
_OK = frozenset({"succeeded", "skipped"})


def refusal(url: str, hosts: Sequence[str]) -> str | None:
    """Why ``url`` must not be called, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a URL"
    if parts.scheme != "https":
        return "not https"
    host = (parts.hostname or "").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return "an address, not a host name"
    if parts.username or parts.password:
        return "carries credentials"
    if port not in (None, 443):
        return "not the https port"
    if host not in {h.lower() for h in hosts}:
        return f"{host or 'no host'} is not an allowed callback host"
    return None


def label(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or "?"
    return f"Docker Hub callback (https://{host}/…)"


def payload(deployments: Sequence[Deployment]) -> dict[str, str]:
    """What Docker Hub expects: state success/failure, a description, and who says so."""
    ok = all(d.state in _OK for d in deployments)
    parts = [f"{d.service} {d.state}" for d in deployments]
    description = "; ".join(parts)[:255] or "no deployment"
    return {"state": "success" if ok else "failure", "description": description, "context": CONTEXT}


class Callbacks:
    """Listens to the journal; when the last deployment of a push with a callback ends, calls it once."""

    def __init__(self, journal: Journal, *, hosts: Sequence[str] = DEFAULT_HOSTS) -> None:
        self._journal = journal
        self._hosts = tuple(hosts)
        self._lock = threading.Lock()
        self._sent: set[int] = set()

    def subscribe(self) -> None:
        self._journal.subscribe(self.on_outcome)

    def on_outcome(self, dep: Deployment) -> None:
        """Never raises, never waits for the call."""
        try:
            if dep.push_id is None:
                return
            url, deployments = self._journal.push_outcome(dep.push_id)
            if not url or not all(d.done for d in deployments):
                return
            with self._lock:
                if dep.push_id in self._sent:
                    return
                self._sent.add(dep.push_id)
            threading.Thread(target=self.call, args=(url, deployments), name="callback", daemon=True).start()
        except Exception:
            log.exception("deployment %s: cannot prepare the Docker Hub callback", dep.id)

    def call(self, url: str, deployments: Sequence[Deployment]) -> None:
        last = deployments[-1]
        why = refusal(url, self._hosts)
        if why is not None:
            log.warning("push %s: not calling its callback_url: %s", last.push_id, why)
            self._journal.record_notification(last.id, target="Docker Hub callback", outcome="failed", detail=why)
            return
        outcome: Literal["sent", "failed"]
        try:
            response = requests.post(
                url, json=payload(deployments), timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), allow_redirects=False
            )
        except requests.RequestException as e:
            detail: str | None = e.__class__.__name__
            outcome = "failed"
        else:
            ok = 200 <= response.status_code < 300
            outcome = "sent" if ok else "failed"
            detail = None if ok else f"answered {response.status_code}"
        self._journal.record_notification(last.id, target=label(url), outcome=outcome, detail=detail)
