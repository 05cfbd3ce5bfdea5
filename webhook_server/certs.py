"""The certificates nginx serves, watched: how long each lineage has left, and whether nginx serves the
file on disk or still an older one (a renewal that reloaded nothing).

Reading a lineage and comparing serials are plain functions; what to tell, and when, is decided by
:func:`decide` over the previous conditions, so a warning is sent once per lineage and condition (when it
starts), not on every check. One :class:`CertificateWatch` per host does the checking: the gunicorn worker
that holds a lock beside the journal. It writes what it found (``certificates.json`` beside the journal)
so that any worker answers ``/api/certificates`` and ``/readyz`` with the served serial too.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict

from webhook_server.durations import format_duration
from webhook_server.leadership import FileLock
from webhook_server.notify import Event, Notifier
from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.lineages import covers
from webhook_server.settings import Settings

log = logging.getLogger(__name__)

STATE_NAME = "certificates.json"
LOCK_NAME = "certificates.lock"
PROBE_TIMEOUT = 10.0
# What a wildcard-only lineage is probed as: any name the wildcard covers gets the same certificate.
PROBE_LABEL = "webhook-server-probe"

Expiry = Literal["ok", "expiring", "expired", "unreadable"]
# A condition worth telling someone about; "stale": nginx serves an older certificate than the file.
# "stale-suspected" is a first sight of it, never told: certbot may have written the files a moment before
# its deploy hook reloads nginx. Seen again at the next check, it is "stale".
Condition = Literal["expiring", "expired", "unreadable", "stale", "stale-suspected"]


class CertificateStatus(BaseModel):
    """One lineage as the API, ``status`` and ``/readyz`` show it."""

    model_config = ConfigDict(frozen=True)

    lineage: str
    path: str
    state: Expiry
    not_after: str | None = None  # ISO 8601, UTC
    expires_in_seconds: float | None = None
    serial: str | None = None  # of the certificate on disk, hex
    names: tuple[str, ...] = ()
    problem: str | None = None
    served_serial: str | None = None  # what nginx served at the last check (when WEBHOOK_PROXY_PROBE is set)
    served_checked_at: str | None = None

    @property
    def stale(self) -> bool:
        return self.served_serial is not None and self.serial is not None and self.served_serial != self.serial


def serial_hex(serial: int) -> str:
    """As ``openssl x509 -serial`` prints it: uppercase hex, an even number of digits."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def expiry_state(not_after: datetime, *, now: datetime, warn: timedelta) -> Expiry:
    if not_after <= now:
        return "expired"
    return "expiring" if not_after - now < warn else "ok"


def read_lineage(cert_dir: Path, lineage: str, *, now: datetime, warn: timedelta) -> CertificateStatus:
    """The leaf certificate of ``cert_dir/lineage/fullchain.pem`` (the file nginx.conf names)."""
    path = cert_dir / lineage / "fullchain.pem"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as e:
        return CertificateStatus(
            lineage=lineage, path=str(path), state="unreadable", problem=f"cannot read: {e.strerror}"
        )
    except ValueError as e:
        return CertificateStatus(lineage=lineage, path=str(path), state="unreadable", problem=f"not a certificate: {e}")
    not_after = cert.not_valid_after_utc
    try:
        names = tuple(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = ()
    return CertificateStatus(
        lineage=lineage,
        path=str(path),
        state=expiry_state(not_after, now=now, warn=warn),
        not_after=not_after.isoformat(),
        expires_in_seconds=(not_after - now).total_seconds(),
        serial=serial_hex(cert.serial_number),
        names=names,
    )


def read_all(config: ProxyConfig, cert_dir: Path, *, now: datetime, warn: timedelta) -> list[CertificateStatus]:
    return [read_lineage(cert_dir, lineage, now=now, warn=warn) for lineage in config.lineages()]


def probe_name(config: ProxyConfig, lineage: str) -> str:
    """A name nginx serves with ``lineage``, to send as SNI: a plain one if any, else one its wildcard covers."""
    served = [config.webhook.server_name] if config.webhook_lineage == lineage else []
    served += [n for _, used, names in config.tls_servers() if used == lineage for n in names]
    plain = [n for n in served if not n.startswith("*.")]
    if plain:
        return plain[0]
    wildcard = served[0] if served else f"*.{lineage}"
    name = f"{PROBE_LABEL}.{wildcard[2:]}"
    assert covers(wildcard, name)
    return name


def served_serial(address: str, sni: str, *, timeout: float = PROBE_TIMEOUT) -> str:
    """The serial of the certificate nginx at ``HOST:PORT`` serves for ``sni``. Not verified: only compared."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise OSError("no certificate was served")
    return serial_hex(x509.load_der_x509_certificate(der).serial_number)


# ---- what to tell, and when ---------------------------------------------------------------------------
def conditions(status: CertificateStatus) -> set[Condition]:
    found: set[Condition] = set()
    if status.state != "ok":
        found.add(status.state)
    if status.stale:
        found.add("stale")
    return found


def decide(
    previous: Mapping[str, Sequence[str]], found: Sequence[CertificateStatus], *, warn_days: int
) -> tuple[dict[str, list[str]], list[Event]]:
    """(the conditions now, by lineage; the events to send): one event per lineage for each condition that
    was not there at the previous check. A condition that ends and comes back is told again."""
    now: dict[str, list[str]] = {}
    events: list[Event] = []
    for status in found:
        current = conditions(status)
        before = set(previous.get(status.lineage, ()))
        if "stale" in current and not before & {"stale", "stale-suspected"}:
            current = (current - {"stale"}) | {"stale-suspected"}
        now[status.lineage] = sorted(current)
        new = current - before - {"stale-suspected"}
        if new:
            events.append(_event(status, new, warn_days=warn_days))
    return now, events


def _left(status: CertificateStatus) -> str:
    """``9.5 days``; under a day, ``5h30m``."""
    seconds = max(status.expires_in_seconds or 0.0, 0.0)
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return format_duration(timedelta(seconds=round(seconds)))


def _event(status: CertificateStatus, new: set[Condition], *, warn_days: int) -> Event:
    lines: list[str] = []
    if "expired" in new:
        lines.append(f"certificate {status.lineage} EXPIRED at {status.not_after}")
    if "expiring" in new:
        lines.append(
            f"certificate {status.lineage} expires soon: in {_left(status)} (at {status.not_after}; "
            f"warned {warn_days} days ahead)"
        )
    if "unreadable" in new:
        lines.append(f"certificate {status.lineage} cannot be read: {status.problem}")
    if "stale" in new:
        lines.append(
            f"nginx serves an older certificate for {status.lineage} than the one on disk (served serial "
            f"{status.served_serial}, on disk {status.serial}): the renewal did not reach nginx; run "
            "reload-proxy or POST /api/proxy/reload"
        )
    lines.append(f"file: {status.path}")
    title = f"certificate {status.lineage}: " + ", ".join(sorted(new))
    return Event(subject=f"certificate {status.lineage}", title=title, body="\n".join(lines))


def warnings(found: Sequence[CertificateStatus]) -> list[str]:
    """``/readyz`` warnings: certificates that need someone's attention (never a reason for 503)."""
    out: list[str] = []
    for status in found:
        if status.state == "expired":
            out.append(f"certificate {status.lineage}: expired at {status.not_after}")
        elif status.state == "expiring":
            out.append(f"certificate {status.lineage}: expires in {_left(status)}")
        elif status.state == "unreadable":
            out.append(f"certificate {status.lineage}: {status.problem}")
        if status.stale:
            out.append(
                f"certificate {status.lineage}: nginx serves serial {status.served_serial}, the file is {status.serial}"
            )
    return out


# ---- the state file beside the journal ----------------------------------------------------------------
class _Saved(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    conditions: dict[str, list[str]] = {}
    served: dict[str, tuple[str, str]] = {}  # lineage -> (serial nginx served, when it was checked)


def _load(path: Path) -> _Saved:
    try:
        return _Saved.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return _Saved()


def _save(path: Path, saved: _Saved) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(saved.model_dump_json())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Certificates:
    """What one process knows about the certificates: read from disk when asked, with the served serials the
    watching process last saw. ``config`` is the proxy section in force (None: nothing to watch)."""

    def __init__(
        self,
        *,
        config: Callable[[], ProxyConfig | None],
        cert_dir: Path,
        state_dir: Path,
        warn_days: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self.cert_dir = cert_dir
        self.state_path = state_dir / STATE_NAME
        self.lock_path = state_dir / LOCK_NAME
        self.warn_days = warn_days
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, *, config: Callable[[], ProxyConfig | None]) -> Certificates | None:
        """The watch as settings describe it; None when WEBHOOK_CERT_DIR is unset (nothing is watched)."""
        if settings.cert_dir is None:
            return None
        return cls(
            config=config,
            cert_dir=settings.cert_dir,
            state_dir=settings.db_path.parent,
            warn_days=settings.cert_warn_days,
        )

    def current(self) -> list[CertificateStatus]:
        config = self._config()
        if config is None:
            return []
        found = read_all(config, self.cert_dir, now=self._clock(), warn=timedelta(days=self.warn_days))
        served = _load(self.state_path).served
        return [
            s.model_copy(update={"served_serial": served[s.lineage][0], "served_checked_at": served[s.lineage][1]})
            if s.lineage in served
            else s
            for s in found
        ]

    def check(self, *, probe: str | None, notifier: Notifier | None) -> list[CertificateStatus]:
        """Read every lineage, ask nginx what it serves (``probe``: HOST:PORT), tell what is new, save."""
        config = self._config()
        if config is None:
            return []
        now = self._clock()
        found = read_all(config, self.cert_dir, now=now, warn=timedelta(days=self.warn_days))
        saved = _load(self.state_path)
        served = dict(saved.served)
        if probe is not None:
            for status in found:
                try:
                    served[status.lineage] = (served_serial(probe, probe_name(config, status.lineage)), now.isoformat())
                except (OSError, ValueError) as e:
                    # nginx down is not a certificate problem; /readyz and the proxy's own checks say so.
                    log.warning("certificate %s: cannot ask nginx at %s: %s", status.lineage, probe, e)
                    served.pop(status.lineage, None)
            found = [
                s.model_copy(update={"served_serial": served[s.lineage][0], "served_checked_at": served[s.lineage][1]})
                if s.lineage in served
                else s
                for s in found
            ]
        now_conditions, events = decide(saved.conditions, found, warn_days=self.warn_days)
        for event in events:
            log.warning("%s", event.body.replace("\n", "; "))
            if notifier is not None:
                notifier.tell(event)
        _save(self.state_path, _Saved(conditions=now_conditions, served=served))
        return found


class CertificateWatch:
    """Checks every ``interval`` in a background thread, in the one process per host that holds the lock."""

    def __init__(
        self, certificates: Certificates, *, probe: str | None, notifier: Notifier | None, interval: float
    ) -> None:
        self._certificates = certificates
        self._probe = probe
        self._notifier = notifier
        self._interval = interval
        # One watching process per host; the kernel frees the lock when it exits and another takes over.
        self._lock = FileLock(certificates.lock_path)
        self._thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self._run, args=(stop,), name="certificate-watch", daemon=True)
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self._lock.try_acquire():
                    self._certificates.check(probe=self._probe, notifier=self._notifier)
            except Exception:
                log.exception("certificate check failed")
            stop.wait(self._interval)
        self._lock.release()


def state_json(found: Sequence[CertificateStatus], *, warn_days: int) -> dict[str, object]:
    """``GET /api/certificates`` and ``status --json``."""
    return {"warn_days": warn_days, "certificates": [dict(s.model_dump(), stale=s.stale) for s in found]}


__all__ = [
    "CertificateStatus",
    "CertificateWatch",
    "Certificates",
    "decide",
    "expiry_state",
    "probe_name",
    "read_lineage",
    "served_serial",
    "state_json",
    "warnings",
]
