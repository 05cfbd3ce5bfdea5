"""A real authoritative DNS server (Debian's bind9) for certbot's DNS-01 tests: one zone on 127.0.0.1, which
certbot's RFC 2136 plugin updates with a TSIG key and pebble queries (``pebble -dnsserver``).

Everything lives in one temp dir (config, zone, journal, pid file, keys); ``controls { };`` opens no rndc
port. named runs in the foreground (``-g``), so the Popen pid is its own and it is stopped by that pid.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.bed import free_port, stop_process, wait_for
from tests.nginx_bed import PACKAGES, make_dir, require

PACKAGES.update({"named": "bind9", "tsig-keygen": "bind9-utils"})
KEY_NAME = "certbot-key"


@dataclass
class Bind:
    root: Path
    port: int
    zone: str
    key_name: str
    key_secret: str
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def credentials(self, path: Path) -> Path:
        """certbot-dns-rfc2136's credentials INI (mode 0600: certbot warns about anything looser)."""
        path.write_text(
            "dns_rfc2136_server = 127.0.0.1\n"
            f"dns_rfc2136_port = {self.port}\n"
            f"dns_rfc2136_name = {self.key_name}\n"
            f"dns_rfc2136_secret = {self.key_secret}\n"
            "dns_rfc2136_algorithm = HMAC-SHA256\n"
        )
        path.chmod(0o600)
        return path

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "named.log").read_text(errors="replace")
        return ""

    def stop(self) -> list[str]:
        stop_process(self.proc, timeout=10)
        return [f"named pid {self.proc.pid}"] if self.proc.poll() is None else []


def tsig_key(name: str) -> tuple[str, str]:
    """(the key clause for named.conf, its base64 secret), from ``tsig-keygen -a hmac-sha256``."""
    out = subprocess.run(["tsig-keygen", "-a", "hmac-sha256", name], capture_output=True, text=True, check=True)
    secret = out.stdout.split('secret "', 1)[1].split('"', 1)[0]
    return out.stdout, secret


def _udp_answers(port: int) -> bool:
    """A bare DNS query (SOA of the root, no recursion) gets any answer: named is serving."""
    query = b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(query, ("127.0.0.1", port))
            return sock.recv(512)[:2] == b"\x12\x34"
        except OSError:
            return False


def start_bind(zone: str) -> Bind:
    """named serving ``zone`` (every name in it, wildcard included, is 127.0.0.1), updatable for TXT records
    of ``_acme-challenge.ZONE`` with a new TSIG key."""
    require("named", "tsig-keygen")
    root = make_dir("dns-bed-")
    proc: subprocess.Popen[bytes] | None = None
    try:
        # named may drop to the bind user; it must write the zone's journal in its directory.
        shutil.chown(root, user="bind", group="bind") if _has_user("bind") else None
        port = free_port()
        key_clause, secret = tsig_key(KEY_NAME)
        (root / f"{zone}.zone").write_text(
            f"$ORIGIN {zone}.\n$TTL 60\n"
            f"@ IN SOA ns.{zone}. hostmaster.{zone}. 1 60 60 600 60\n"
            f"@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
        )
        (root / "named.conf").write_text(
            f"""{key_clause}
options {{
    directory "{root}";
    pid-file "{root}/named.pid";
    session-keyfile "{root}/session.key";
    managed-keys-directory "{root}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{zone}" {{
    type primary;
    file "{root}/{zone}.zone";
    update-policy {{ grant {KEY_NAME} name _acme-challenge.{zone}. TXT; }};
}};
"""
        )
        for path in root.iterdir():
            shutil.chown(path, user="bind", group="bind") if _has_user("bind") else None
        proc = subprocess.Popen(
            ["named", "-c", str(root / "named.conf"), "-g", "-4", "-u", "bind"]
            if _has_user("bind")
            else ["named", "-c", str(root / "named.conf"), "-g", "-4"],
            stdout=(root / "named.log").open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        bind = Bind(root, port, zone, KEY_NAME, secret, proc)

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"named exited with {proc.returncode}: {bind.log()[-2000:]}")
            return _udp_answers(port)

        wait_for(up, timeout=20, what="named to answer")
        return bind
    except BaseException:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)
        raise


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
