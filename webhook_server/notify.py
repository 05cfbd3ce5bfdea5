"""Telling people about deployment outcomes, through apprise: the only module that imports it.

A :class:`Notifier` listens to the journal. Each outcome the rule's ``notify_on`` names is queued (bounded)
for one background sender thread, so a slow, hanging or failing notifier never delays or changes a
rollout. Each attempt is recorded with :meth:`Journal.record_notification` under a label that names the
service but holds no secret (``json://127.0.0.1:8080/…``, ``Slack (slack://…)``).

Notification URLs are secrets (webhook tokens, passwords). They never reach a log line or the journal:
apprise's own logger, which prints URLs and their parts, is cut off from the application's logs, and what
it says about a failed attempt is kept only after every part of the URL has been masked.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import apprise

from webhook_server import logs
from webhook_server.durations import format_duration
from webhook_server.errors import ConfigError
from webhook_server.journal import Deployment, Journal
from webhook_server.refs import ImageRef
from webhook_server.rules import DEFAULT_NOTIFY_ON, RuleSet
from webhook_server.settings import Settings, parse_url_list

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT",
    "DEFAULT_QUEUE_SIZE",
    "Event",
    "Notifier",
    "check_urls",
    "label",
    "message_for",
    "parse_url_list",
    "url_problem",
]

DEFAULT_QUEUE_SIZE = 100
# The longest one attempt may hold the sender: past it the attempt is abandoned and recorded failed.
DEFAULT_ATTEMPT_TIMEOUT = 30.0
# apprise's per-request socket timeouts, unless a URL sets its own with ?cto= / ?rto=.
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 10.0
# Schemes whose host is an address, not a token: their label may show it.
_ADDRESS_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://")
# Parts of a URL shorter than this are not masked in failure details: masking "a" or "v1" everywhere would
# garble the text, and a secret that short protects nothing anyway.
_MIN_SECRET = 4
_MAX_DETAIL = 500

_APPRISE_LOG = logging.getLogger("apprise")
# apprise logs the URLs it parses and sends to (at every level, "Unsupported URL: <the URL>" among them):
# none of that may reach the application's handlers. Its warnings are captured per attempt instead.
_APPRISE_LOG.propagate = False
_APPRISE_LOG.setLevel(logging.WARNING)
if not _APPRISE_LOG.handlers:
    # Without a handler of its own, logging would print apprise's records through its last-resort handler.
    _APPRISE_LOG.addHandler(logging.NullHandler())

# How services that show a sender (Slack, Discord, Teams, e-mail) name us; apprise's default is "Apprise".
_ASSET = apprise.AppriseAsset(app_id="webhook-server", app_desc="Docker Swarm deployments")

_NOTIFY_TYPES: dict[str, apprise.NotifyType] = {
    "succeeded": apprise.NotifyType.SUCCESS,
    "rolled_back": apprise.NotifyType.FAILURE,
    "failed": apprise.NotifyType.FAILURE,
    "skipped": apprise.NotifyType.INFO,
    "superseded": apprise.NotifyType.INFO,
}


# ---- URLs --------------------------------------------------------------------------------------------
def _scheme(url: str) -> str | None:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else None


@functools.cache
def _known_schemes() -> dict[str, tuple[str, bool]]:
    """Every scheme apprise knows -> (its service name, whether it can be used on this system)."""
    found: dict[str, tuple[str, bool]] = {}
    for entry in apprise.Apprise().details(show_disabled=True)["schemas"]:
        for scheme in (*(entry.get("protocols") or ()), *(entry.get("secure_protocols") or ())):
            found[str(scheme).lower()] = (str(entry["service_name"]), bool(entry.get("enabled", True)))
    return found


def url_problem(url: object) -> str | None:
    """Why apprise cannot use ``url``, in words that never repeat the URL (it may hold a token); None if it
    can. The scheme alone may be named: it is the service's name, not a secret."""
    if not isinstance(url, str):
        return "must be a string: a notification URL such as json://host/path or slack://TOKEN_A/TOKEN_B/TOKEN_C"
    if not url.strip():
        return "is empty"
    scheme = _scheme(url.strip())
    if scheme is None:
        return "is not a notification URL (SERVICE://…, such as json://host/path or slack://…)"
    known = _known_schemes().get(scheme)
    if known is None:
        return f"{scheme}:// is not a notification service apprise knows"
    service, enabled = known
    if not enabled:
        return f"{scheme}:// ({service}) cannot be used on this system"
    if apprise.Apprise.instantiate(url.strip()) is None:
        return f"is not a valid {service} URL ({scheme}://…): a part is missing or malformed"
    return None


def check_urls(urls: Sequence[str], *, source: str) -> None:
    """Raise ConfigError naming ``source`` and the 1-based position of every URL apprise cannot use."""
    problems = [f"entry {i}: {p}" for i, url in enumerate(urls, start=1) if (p := url_problem(url)) is not None]
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def label(url: str) -> str:
    """What logs and the journal call a target: ``json://127.0.0.1:8080/…`` for generic web hooks (whose
    host is an address), else the service's name and scheme (``Slack (slack://…)``): never a token."""
    scheme = _scheme(url) or "?"
    if scheme in _ADDRESS_SCHEMES:
        try:
            parts = urllib.parse.urlsplit(url)
            host = parts.hostname or "?"
            port = parts.port
        except ValueError:
            return f"{scheme}://…"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}{f':{port}' if port else ''}/…"
    known = _known_schemes().get(scheme)
    return f"{known[0]} ({scheme}://…)" if known else f"{scheme}://…"


def _secrets_of(url: str) -> list[str]:
    """Every piece of ``url`` that could be a secret, longest first (so a longer one is masked whole)."""
    pieces = {url, url.strip()}
    rest = url.split("://", 1)[-1]
    pieces.add(rest)
    try:
        parts = urllib.parse.urlsplit(url)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        pieces.update(userinfo.split(":"))
        pieces.update(urllib.parse.unquote(p) for p in userinfo.split(":"))
        if (_scheme(url) or "") not in _ADDRESS_SCHEMES:
            # For most services the "host" is a token (discord://WEBHOOK_ID/TOKEN).
            pieces.update({hostport, parts.hostname or ""})
        for segment in parts.path.split("/"):
            pieces.update({segment, urllib.parse.unquote(segment)})
        pieces.add(parts.path)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            pieces.update({value, urllib.parse.quote(value, safe="")})
            del key
        pieces.update({parts.query, parts.fragment})
    except ValueError:
        pass
    return sorted((p for p in pieces if len(p) >= _MIN_SECRET), key=len, reverse=True)


def _masked(text: str, url: str) -> str:
    for secret in _secrets_of(url):
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


# ---- the message -------------------------------------------------------------------------------------
def _short(ref: str | None, *, fallback_tag: str | None = None, image: str | None = None) -> str:
    """``1.4.2 (sha256:0123456789ab)``; the image name is shown too when it is not ``image``."""
    if not ref:
        return fallback_tag or "unknown"
    parsed = ImageRef.parse(ref)
    text = parsed.tag or fallback_tag or "untagged"
    if image is not None and parsed.name != image:
        text = f"{parsed.name}:{text}"
    if parsed.digest:
        algorithm, _, hex_digest = parsed.digest.partition(":")
        text += f" ({algorithm}:{hex_digest[:12]})"
    return text


def _took(dep: Deployment) -> str | None:
    start = dep.started_at or dep.created_at
    if not dep.finished_at:
        return None
    elapsed = datetime.fromisoformat(dep.finished_at) - datetime.fromisoformat(start)
    # Milliseconds are noise in a message a person reads.
    return format_duration(timedelta(seconds=round(elapsed.total_seconds())))


def message_for(dep: Deployment) -> tuple[str, str]:
    """(title, body) telling what happened to ``dep``: service, from → to, state, Swarm's reason, duration,
    trigger and deployment id."""
    to = _short(dep.image_ref or f"{dep.image}:{dep.tag}", fallback_tag=dep.tag, image=dep.image)
    before = _short(dep.previous_image, image=dep.image)
    lines = [
        f"{dep.service} {dep.state}: {before} → {to}",
        f"image: {dep.image}",
    ]
    if dep.message:
        lines.append(f"reason: {dep.message}")
    took = _took(dep)
    verb = "took" if dep.started_at else "after"
    lines.append(" · ".join(p for p in (f"{verb} {took}" if took else None, f"trigger {dep.trigger}") if p))
    lines[-1] += f" · deployment {dep.id}"
    title = f"{dep.service}: {dep.state} ({dep.tag})"
    return title, "\n".join(lines)


# ---- capturing what apprise says about one attempt ------------------------------------------------------
class _Capture(logging.Handler):
    """Keeps apprise's warnings per thread: each attempt runs on its own thread and reads its own."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._lock_ = threading.Lock()
        self._by_thread: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            return
        with self._lock_:
            found = self._by_thread.get(record.thread or 0)
            if found is not None and len(found) < 10:
                found.append(text)

    def begin(self) -> None:
        with self._lock_:
            self._by_thread[threading.get_ident()] = []

    def end(self, ident: int) -> list[str]:
        with self._lock_:
            return self._by_thread.pop(ident, [])

    def attempting(self, ident: int) -> bool:
        with self._lock_:
            return ident in self._by_thread


_CAPTURE = _Capture()
_APPRISE_LOG.addHandler(_CAPTURE)


class _NotFromAttempts(logging.Filter):
    """Drops what the HTTP libraries log on an attempt's thread: at DEBUG urllib3 writes each request line,
    and the path of a web hook URL is often its token (``/services/T000/B000/XXXX``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _CAPTURE.attempting(record.thread or 0)


# A filter on a logger sees only that logger's own records, so each module that logs requests is named.
for _name in (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
    "requests_oauthlib",
    "requests_oauthlib.oauth2_session",
    "oauthlib",
):
    logging.getLogger(_name).addFilter(_NotFromAttempts())


@dataclass
class _Attempt:
    ok: bool = False
    error: str | None = None
    said: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def _with_timeouts(plugin: apprise.plugins.NotifyBase, url: str, *, connect: float, read: float) -> None:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if "cto" not in query:
        plugin.socket_connect_timeout = connect
    if "rto" not in query:
        plugin.socket_read_timeout = read


# ---- the notifier -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """Something to tell that is not a deployment's outcome (a certificate about to expire): sent to the
    global URLs as it is, and logged; the journal records notifications per deployment only."""

    subject: str  # what it is about, for the log: "certificate example.com"
    title: str
    body: str
    failure: bool = True


@dataclass(frozen=True)
class _Work:
    dep: Deployment | None
    urls: tuple[str, ...] = field(repr=False)
    event: Event | None = None

    @property
    def subject(self) -> str:
        if self.event is not None:
            return self.event.subject
        assert self.dep is not None
        return f"deployment {self.dep.id} of {self.dep.service}"

    @property
    def notify_type(self) -> apprise.NotifyType | None:
        if self.event is not None:
            return apprise.NotifyType.FAILURE if self.event.failure else apprise.NotifyType.SUCCESS
        assert self.dep is not None
        return _NOTIFY_TYPES.get(self.dep.state)


class Notifier:
    """Sends outcome notifications on one background thread; see the module's docstring.

    ``urls`` are the global targets (every service's outcomes); a rule's ``notify:`` adds its own. Which
    outcomes are sent is the rule's ``notify_on`` (default: rolled_back, failed); a deployment whose rule
    is gone uses the default.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        urls: Sequence[str] = (),
        rules: Callable[[], RuleSet] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        check_urls(urls, source="notification URLs")
        self._journal = journal
        self._urls = tuple(u.strip() for u in urls)
        self._rules = rules
        self._queue_size = queue_size
        self._attempt_timeout = attempt_timeout
        self._connect_timeout = min(connect_timeout, attempt_timeout)
        self._read_timeout = min(read_timeout, attempt_timeout)
        self._pending: collections.deque[_Work] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, journal: Journal, rules: Callable[[], RuleSet]) -> Notifier:
        return cls(
            journal,
            urls=settings.notify_url_values(),
            rules=rules,
            queue_size=settings.notify_queue,
            attempt_timeout=settings.notify_timeout.total_seconds(),
        )

    def __repr__(self) -> str:
        return f"Notifier({len(self._urls)} global target(s))"

    # ---- wiring -----------------------------------------------------------------------------------
    def subscribe(self) -> None:
        """Listen to the journal's outcomes (call once)."""
        self._journal.subscribe(self.on_outcome)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._closed, self._deadline = False, None
            self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to ``timeout`` seconds, then record the rest as not sent."""
        with self._cond:
            self._closed = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout + 0.5)
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            self._thread = None
        for work in left:
            for url in work.urls:
                self._record(work, url, "failed", "not sent: the server stopped first")

    def tell(self, event: Event) -> None:
        """Queue ``event`` for the global URLs and return at once; never raises."""
        if not self._urls:
            log.info("%s: %s (no notification URL set)", event.subject, event.title)
            return
        with self._cond:
            if not self._closed and self._thread is not None and len(self._pending) < self._queue_size:
                self._pending.append(_Work(None, self._urls, event))
                self._cond.notify()
                return
        log.warning("%s: not notified (the notifier is stopped or full): %s", event.subject, event.title)

    # ---- the listener (on the thread that ended the deployment) ---------------------------------------
    def on_outcome(self, dep: Deployment) -> None:
        """Queue ``dep``'s notifications and return at once; never raises."""
        try:
            urls = self.targets_for(dep)
            if not urls:
                return
            with self._cond:
                if self._closed or self._thread is None:
                    refused = "not sent: the notifier is not running"
                elif len(self._pending) >= self._queue_size:
                    refused = f"dropped: {len(self._pending)} notifications were already waiting"
                else:
                    self._pending.append(_Work(dep, urls))
                    self._cond.notify()
                    return
            log.warning("deployment %s of %s: %s (%s)", dep.id, dep.service, refused, dep.state)
            for url in urls:
                self._record(_Work(dep, urls), url, "failed", refused)
        except Exception:
            log.exception("deployment %s: cannot queue its notifications", dep.id)

    def targets_for(self, dep: Deployment) -> tuple[str, ...]:
        """The URLs to tell about ``dep``'s outcome: none unless its rule's ``notify_on`` names it."""
        rule = self._rules().get(dep.service) if self._rules is not None else None
        notify_on = rule.notify_on if rule is not None else DEFAULT_NOTIFY_ON
        if dep.state not in notify_on:
            return ()
        own = tuple(u.get_secret_value().strip() for u in rule.notify) if rule is not None else ()
        # The same URL globally and in the rule is one target: nobody wants every message twice.
        return tuple(dict.fromkeys((*self._urls, *own)))

    # ---- the sender thread ---------------------------------------------------------------------------
    def _next(self) -> _Work | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending or self._past_deadline():
                return None
            return self._pending.popleft()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def _run(self) -> None:
        while (work := self._next()) is not None:
            if work.dep is None:
                self._notify(work)
                continue
            with logs.context(request_id=work.dep.request_id, deployment=work.dep.id):
                self._notify(work)

    def _notify(self, work: _Work) -> None:
        # A bug below must cost one notification, not the sender thread.
        try:
            if work.event is not None:
                title, body = work.event.title, work.event.body
            else:
                assert work.dep is not None
                title, body = message_for(work.dep)
        except Exception:
            log.exception("%s: cannot write its notification", work.subject)
            for url in work.urls:
                self._record(work, url, "failed", "not sent: the message could not be written")
            return
        for url in work.urls:
            try:
                self._send(work, url, title, body)
            except Exception:
                log.exception("%s: notifying %s failed unexpectedly", work.subject, label(url))

    def _send(self, work: _Work, url: str, title: str, body: str) -> None:
        if self._past_deadline():
            self._record(work, url, "failed", "not sent: the server stopped first")
            return
        attempt = _Attempt()
        thread = threading.Thread(
            target=self._attempt,
            args=(attempt, url, title, body, work.notify_type),
            name="notify-attempt",
            daemon=True,
        )
        started = time.monotonic()
        thread.start()
        finished = self._wait(attempt, started)
        if not finished:
            # The attempt thread is abandoned; its socket timeouts end it later, and what it says is dropped.
            waited = format_duration(timedelta(seconds=round(time.monotonic() - started, 1)))
            self._record(work, url, "failed", f"no answer within {waited}; gave up")
            return
        if attempt.ok:
            self._record(work, url, "sent", None)
            return
        said = [_masked(s, url) for s in attempt.said]
        reason = _masked(attempt.error, url) if attempt.error else None
        detail = "; ".join(dict.fromkeys(p for p in (reason, *said) if p)) or "the service refused it"
        self._record(work, url, "failed", detail)

    def _wait(self, attempt: _Attempt, started: float) -> bool:
        """Wait for the attempt until its own time limit, or stop's deadline if that comes first."""
        while True:
            limit = started + self._attempt_timeout
            if self._deadline is not None:
                limit = min(limit, self._deadline)
            remaining = limit - time.monotonic()
            if remaining <= 0:
                return attempt.done.is_set()
            # Short slices: stop() may set a deadline while we wait.
            if attempt.done.wait(min(remaining, 0.25)):
                return True

    def _attempt(
        self, attempt: _Attempt, url: str, title: str, body: str, notify_type: apprise.NotifyType | None
    ) -> None:
        _CAPTURE.begin()
        try:
            plugin = apprise.Apprise.instantiate(url, asset=_ASSET)
            if plugin is None:
                attempt.error = "apprise cannot use this URL"
                return
            _with_timeouts(plugin, url, connect=self._connect_timeout, read=self._read_timeout)
            attempt.ok = bool(
                plugin.notify(
                    body=body,
                    title=title,
                    notify_type=notify_type or apprise.NotifyType.INFO,
                    body_format=apprise.NotifyFormat.TEXT,
                )
            )
        except Exception as e:
            attempt.error = f"{type(e).__name__}: {e}"
        finally:
            attempt.said = _CAPTURE.end(threading.get_ident())
            attempt.done.set()

    def _record(self, work: _Work, url: str, outcome: Literal["sent", "failed"], detail: str | None) -> None:
        target = label(url)
        what = work.dep.state if work.dep is not None else work.event.title if work.event is not None else "?"
        if outcome == "sent":
            log.info("%s: notified %s (%s)", work.subject, target, what)
        else:
            log.warning("%s: notifying %s failed: %s", work.subject, target, detail)
        if work.dep is None:
            return
        try:
            self._journal.record_notification(work.dep.id, target=target, outcome=outcome, detail=detail)
        except Exception:
            log.exception("deployment %s: cannot record the notification to %s", work.dep.id, target)
