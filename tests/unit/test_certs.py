"""The expiry watch's decisions: how long a certificate has, what is worth telling, and telling it once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from webhook_server import certs, display
from webhook_server.certs import Certificates, CertificateStatus, decide, expiry_state, probe_name, read_lineage
from webhook_server.notify import Event
from webhook_server.proxy.config import ProxyConfig

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
WARN = timedelta(days=14)


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (timedelta(days=60), "ok"),
        (timedelta(days=14), "ok"),
        (timedelta(days=14) - timedelta(seconds=1), "expiring"),
        (timedelta(seconds=1), "expiring"),
        (timedelta(0), "expired"),
        (-timedelta(days=3), "expired"),
    ],
)
def test_expiry_state(left: timedelta, expected: str) -> None:
    assert expiry_state(NOW + left, now=NOW, warn=WARN) == expected


def status(lineage: str = "example.com", **fields: Any) -> CertificateStatus:
    values: dict[str, Any] = {
        "path": f"/live/{lineage}/fullchain.pem",
        "state": "ok",
        "not_after": "2025-06-10T12:00:00+00:00",
        "expires_in_seconds": 9 * 86400.0,
        "serial": "0A",
    }
    values.update(fields)
    return CertificateStatus(lineage=lineage, **values)


@pytest.mark.parametrize(
    ("previous", "now", "conditions", "told"),
    [
        ([], status(), [], []),
        ([], status(state="expiring"), ["expiring"], ["expiring"]),
        (["expiring"], status(state="expiring"), ["expiring"], []),  # once per state change, not per check
        (["expiring"], status(state="expired"), ["expired"], ["expired"]),
        (["expiring"], status(), [], []),  # renewed: quiet
        # nginx serving another serial: first seen is only suspected (certbot may reload a moment later)...
        ([], status(served_serial="09"), ["stale-suspected"], []),
        (["stale-suspected"], status(served_serial="0A"), [], []),
        # ...and told when seen again.
        (["stale-suspected"], status(served_serial="09"), ["stale"], ["stale"]),
        (["stale"], status(served_serial="09"), ["stale"], []),
        (["stale", "expiring"], status(state="expiring", served_serial="0A"), ["expiring"], []),
        ([], status(state="unreadable", problem="cannot read: No such file"), ["unreadable"], ["unreadable"]),
    ],
)
def test_decide(previous: list[str], now: CertificateStatus, conditions: list[str], told: list[str]) -> None:
    found, events = decide({"example.com": previous}, [now], warn_days=14)
    assert found == {"example.com": conditions}
    assert [e.title for e in events] == ([f"certificate example.com: {', '.join(told)}"] if told else [])


def test_messages_say_what_and_what_to_do() -> None:
    _, [soon] = decide({}, [status(state="expiring")], warn_days=14)
    assert soon.body.startswith("certificate example.com expires soon: in 9.0 days (at 2025-06-10T12:00:00+00:00;")
    _, [stale] = decide({"example.com": ["stale-suspected"]}, [status(served_serial="09")], warn_days=14)
    assert "nginx serves an older certificate for example.com than the one on disk (served serial 09, on disk 0A)" in (
        stale.body
    )
    assert "POST /api/proxy/reload" in stale.body
    assert certs.warnings([status(state="expiring", served_serial="09")]) == [
        "certificate example.com: expires in 9.0 days",
        "certificate example.com: nginx serves serial 09, the file is 0A",
    ]


def write_certificate(directory: Path, names: list[str], *, not_after: datetime, serial: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_after - timedelta(days=90))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_read_lineage(tmp_path: Path) -> None:
    write_certificate(
        tmp_path / "example.com", ["example.com", "*.example.com"], not_after=NOW + timedelta(days=5), serial=0xABC
    )
    found = read_lineage(tmp_path, "example.com", now=NOW, warn=WARN)
    assert (found.state, found.serial, found.names, found.expires_in_seconds) == (
        "expiring",
        "0ABC",  # as openssl prints it
        ("example.com", "*.example.com"),
        5 * 86400.0,
    )
    missing = read_lineage(tmp_path, "other", now=NOW, warn=WARN)
    assert (missing.state, missing.problem) == ("unreadable", "cannot read: No such file or directory")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "fullchain.pem").write_text("not a certificate")
    assert read_lineage(tmp_path, "broken", now=NOW, warn=WARN).state == "unreadable"


CONFIG = ProxyConfig.model_validate(
    {
        "webhook": {"server_name": "hooks.example.com", "upstream": {"host": "webhook", "port": 9000}},
        "sites": [
            {"server_names": ["*.example.com"], "upstream": {"host": "web", "port": 80}},
            {"server_names": ["*.other.org"], "upstream": {"host": "web", "port": 80}},
        ],
        "certificates": {"example.com": ["example.com", "*.example.com"], "other.org": ["*.other.org"]},
    }
)


def test_probe_name_is_a_name_nginx_serves_with_that_lineage() -> None:
    assert probe_name(CONFIG, "example.com") == "hooks.example.com"
    assert probe_name(CONFIG, "other.org") == "webhook-server-probe.other.org"


class Told:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def tell(self, event: Event) -> None:
        self.events.append(event)


def test_the_watch_tells_once_and_remembers_across_checks(tmp_path: Path) -> None:
    live, state = tmp_path / "live", tmp_path / "state"
    state.mkdir()
    write_certificate(live / "example.com", ["example.com"], not_after=NOW + timedelta(days=3), serial=1)
    write_certificate(live / "other.org", ["*.other.org"], not_after=NOW + timedelta(days=60), serial=2)
    clock = [NOW]
    watch = Certificates(config=lambda: CONFIG, cert_dir=live, state_dir=state, warn_days=14, clock=lambda: clock[0])
    told = Told()
    for _ in range(3):
        watch.check(probe=None, notifier=told)  # type: ignore[arg-type]
    assert [e.title for e in told.events] == ["certificate example.com: expiring"]
    # A new process (another worker, a restart) reads what was told from the file beside the journal.
    again = Certificates(config=lambda: CONFIG, cert_dir=live, state_dir=state, warn_days=14, clock=lambda: clock[0])
    again.check(probe=None, notifier=told)  # type: ignore[arg-type]
    clock[0] = NOW + timedelta(days=4)
    again.check(probe=None, notifier=told)  # type: ignore[arg-type]
    assert [e.title for e in told.events] == ["certificate example.com: expiring", "certificate example.com: expired"]
    found = again.current()
    assert [(c.lineage, c.state) for c in found] == [("example.com", "expired"), ("other.org", "ok")]
    assert display.certificate_lines(found) == [
        "certificate example.com: EXPIRED (expires 2025-06-04 12:00:00Z), serial 01",
        "certificate other.org: ok, expires 2025-07-31 12:00:00Z (in 56 days), serial 02",
    ]


def test_no_proxy_section_nothing_to_watch(tmp_path: Path) -> None:
    watch = Certificates(config=lambda: None, cert_dir=tmp_path, state_dir=tmp_path, warn_days=14)
    assert watch.current() == [] and watch.check(probe=None, notifier=None) == []
