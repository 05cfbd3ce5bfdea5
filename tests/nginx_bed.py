"""Real nginx, pebble, pebble-challtestsrv and certbot for the proxy's end-to-end tests.

Each daemon runs from its own temp dir on 127.0.0.1 high ports, is stopped by its pid, and its dir is removed.
Nothing here talks to anything but loopback addresses.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.bed import alive, debootstrap, free_port, stop_process, unavailable, wait_for
from webhook_server.proxy.config import ProxyConfig
from webhook_server.proxy.render import render_nginx_conf

PACKAGES = {
    "nginx": "nginx-light",
    "openssl": "openssl",
    "certbot": "certbot",
    "pebble": "pebble",
    "pebble-challtestsrv": "pebble",
}


def require(*binaries: str) -> None:
    """Skip (or, under CI / REQUIRE_SWARM=1, fail) when a binary the test needs is not installed."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if not missing:
        return
    packages = sorted({PACKAGES.get(b, b) for b in missing})
    unavailable(f"missing {', '.join(missing)} (apt-get install {' '.join(packages)})")


def make_dir(prefix: str) -> Path:
    """A temp dir nginx's workers can read: they run as nobody when the master starts as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


# ---- certificates --------------------------------------------------------------------------------------


def self_signed(directory: Path, names: Sequence[str], *, days: int = 7) -> tuple[Path, Path]:
    """fullchain.pem and privkey.pem for ``names`` in certbot's live/ layout (EC P-256, CA:TRUE)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    san = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", f"/CN={names[0]}",
         "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def serial_of(der_or_pem: bytes) -> str:
    form = "PEM" if der_or_pem.startswith(b"-----") else "DER"
    out = subprocess.run(
        ["openssl", "x509", "-inform", form, "-noout", "-serial"], input=der_or_pem, check=True, capture_output=True
    )
    return out.stdout.decode().strip().removeprefix("serial=")


# ---- nginx ---------------------------------------------------------------------------------------------


def relocate(
    config: ProxyConfig,
    prefix: Path,
    *,
    http_port: int,
    https_port: int,
    resolver: str | None = None,
    certificates: Path | None = None,
) -> ProxyConfig:
    """``config`` moved into ``prefix``: 127.0.0.1 on high ports, pid/temp/logs/webroot inside it."""
    data = config.model_dump()
    data["listen"] = {
        "addresses": ["127.0.0.1"],
        "http_port": http_port,
        "https_port": https_port,
        "redirect_https_port": https_port,
    }
    data["paths"] = {
        "acme_webroot": str(prefix / "acme"),
        "certificates": str(certificates or prefix / "live"),
        "pid": str(prefix / "nginx.pid"),
        "temp": str(prefix / "tmp"),
    }
    data["logs"] = {"access": str(prefix / "logs" / "access.log"), "error": str(prefix / "logs" / "error.log")}
    data["logs"]["error_level"] = "info"
    data["user"] = None
    if resolver is not None:
        data["resolvers"] = [resolver]
    return ProxyConfig.model_validate(data)


def prepare_prefix(prefix: Path, config: ProxyConfig, *, acme_only: bool = False) -> Path:
    """Write nginx.conf (and the dirs it names) into ``prefix``; returns the conf path."""
    for sub in ("acme", "tmp", "logs"):
        (prefix / sub).mkdir(exist_ok=True)
        (prefix / sub).chmod(0o755)
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(config, acme_only=acme_only))
    return conf


def nginx_test(prefix: Path, *, nginx: Sequence[str] = ("nginx",)) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``prefix``/nginx.conf, without root when the config keeps everything in the prefix."""
    return subprocess.run(
        [*nginx, "-t", "-q", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def children(pid: int) -> set[int]:
    kids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids.update(int(k) for k in (task / "children").read_text().split())
    return kids


@dataclass
class Nginx:
    prefix: Path
    proc: subprocess.Popen[bytes]
    http_port: int
    https_port: int

    @property
    def master_pid(self) -> int:
        return self.proc.pid

    def pid_file(self) -> int:
        return int((self.prefix / "nginx.pid").read_text().strip())

    def workers(self) -> set[int]:
        return {p for p in children(self.master_pid) if alive(p)}

    def access_log(self) -> str:
        return _read(self.prefix / "logs" / "access.log")

    def error_log(self) -> str:
        return _read(self.prefix / "logs" / "error.log") + _read(self.prefix / "nginx.stderr")

    def write_config(self, config: ProxyConfig, *, acme_only: bool = False) -> None:
        prepare_prefix(self.prefix, config, acme_only=acme_only)

    def reload(self, *, timeout: float = 15) -> set[int]:
        """SIGHUP the master and wait until a new set of workers took over; returns the new workers."""
        before = self.workers()
        os.kill(self.master_pid, signal.SIGHUP)

        def replaced() -> set[int] | None:
            now = self.workers()
            return now if now and not (now & before) else None

        result: set[int] = wait_for(replaced, timeout=timeout, what="nginx workers to be replaced after SIGHUP")
        return result

    def stop(self) -> list[str]:
        """Stop master and workers by pid; returns survivors (empty when clean)."""
        tree = {self.master_pid, *children(self.master_pid)}
        stop_process(self.proc, timeout=10)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not any(alive(p) for p in tree), timeout=10, what="nginx to exit")
        for pid in tree:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return [f"nginx pid {p}" for p in tree if alive(p)]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def start_nginx(prefix: Path, *, http_port: int, https_port: int) -> Nginx:
    """Run nginx in the foreground (so Popen's pid is the master's) from ``prefix``/nginx.conf."""
    stderr = (prefix / "nginx.stderr").open("wb")
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"],
        stdout=stderr, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    server = Nginx(prefix=prefix, proc=proc, http_port=http_port, https_port=https_port)

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}: {_read(prefix / 'nginx.stderr')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", http_port), timeout=0.5):
            return bool(server.workers())
        return False

    try:
        wait_for(listening, timeout=15, what="nginx to listen")
    except BaseException:
        server.stop()
        raise
    return server


# ---- HTTP(S) through nginx with any SNI, Host and source address ------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    peer_cert: bytes | None = None
    tls_version: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    *,
    host: str,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    tls: bool = True,
    sni: str | None = None,
    cafile: Path | None = None,
    source: str = "127.0.0.1",
    tls_version: ssl.TLSVersion | None = None,
    timeout: float = 10,
) -> Reply:
    """One request to 127.0.0.1:``port``. TLS verifies the served cert against ``cafile`` for ``sni``.

    ``source`` picks the client's loopback address, so tests can tell the client's address from nginx's.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    peer_cert = version = None
    try:
        if tls:
            ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            if cafile is None:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            if tls_version is not None:
                ctx.minimum_version = ctx.maximum_version = tls_version
            sock = ctx.wrap_socket(sock, server_hostname=sni or host)
            peer_cert, version = sock.getpeercert(binary_form=True), sock.version()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return Reply(resp.status, headers, resp.read(), peer_cert, version)
    finally:
        sock.close()


def served_serial(port: int, sni: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)


# ---- an upstream that records what reaches it -------------------------------------------------------


@dataclass
class Recorder:
    """A plain HTTP server standing for a web service; it records every request's headers."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def start_recorder() -> Recorder:
    recorded: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}
            )
            reply = json.dumps({"seen": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="recorder", daemon=True)
    thread.start()
    return Recorder(server=server, thread=thread, requests=recorded)


# ---- pebble and its DNS ------------------------------------------------------------------------------


@dataclass
class Pebble:
    root: Path
    acme_port: int
    management_port: int
    dns_port: int
    ca_bundle: Path  # the CA of pebble's own API certificate (REQUESTS_CA_BUNDLE for certbot)
    procs: list[subprocess.Popen[bytes]]

    @property
    def directory(self) -> str:
        return f"https://localhost:{self.acme_port}/dir"

    @property
    def dns(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def issuing_root(self) -> str:
        """The root pebble signs with (new on every start): what verifies the certificates it issues."""
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        conn = http.client.HTTPSConnection("localhost", self.management_port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/roots/0")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def stop(self) -> list[str]:
        for proc in reversed(self.procs):
            stop_process(proc, timeout=10)
        return [f"pid {p.pid}" for p in self.procs if alive(p.pid)]


def start_challtestsrv(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    """pebble-challtestsrv as a DNS server that answers 127.0.0.1 for every name (and no AAAA)."""
    dns_port, management_port = free_port(), free_port()
    proc = subprocess.Popen(
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
         "-dns01", f"127.0.0.1:{dns_port}", "-management", f"127.0.0.1:{management_port}",
         "-http01", "", "-https01", "", "-tlsalpn01", ""],
        stdout=(root / "challtestsrv.log").open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"pebble-challtestsrv exited: {_read(root / 'challtestsrv.log')[-1000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", management_port), timeout=0.5):
            return True
        return False

    try:
        wait_for(up, timeout=15, what="pebble-challtestsrv to listen")
    except BaseException:
        stop_process(proc)
        raise
    return proc, dns_port


def start_pebble(
    root: Path, *, http_port: int, validity_seconds: int = 7776000, dns_server: str | None = None
) -> Pebble:
    """pebble with its own localhost API certificate, validating http-01 on ``http_port`` (nginx's).

    ``dns_server`` (``127.0.0.1:PORT``): the DNS pebble asks, for DNS-01 (a real bind9, tests/dns_bed.py),
    instead of a pebble-challtestsrv of its own; authorizations are then never reused, so every renewal
    validates through DNS again."""
    api_cert, api_key = self_signed(root / "api", ["localhost", "127.0.0.1"])
    acme_port, management_port = free_port(), free_port()
    (root / "pebble.json").write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme_port}",
                    "managementListenAddress": f"127.0.0.1:{management_port}",
                    "certificate": str(api_cert),
                    "privateKey": str(api_key),
                    "httpPort": http_port,
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                    "certificateValidityPeriod": validity_seconds,
                }
            }
        )
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        if dns_server is None:
            dns_proc, dns_port = start_challtestsrv(root)
            procs.append(dns_proc)
        else:
            dns_port = int(dns_server.rsplit(":", 1)[1])
            env["PEBBLE_AUTHZREUSE"] = "0"
        proc = subprocess.Popen(
            ["pebble", "-config", str(root / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
            stdout=(root / "pebble.log").open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        procs.append(proc)
        pebble = Pebble(root, acme_port, management_port, dns_port, api_cert, procs)

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"pebble exited: {_read(root / 'pebble.log')[-1000:]}")
            try:
                return bool(pebble.issuing_root().startswith("-----BEGIN CERTIFICATE-----"))
            except OSError:
                return False

        wait_for(up, timeout=20, what="pebble to answer")
        return pebble
    except BaseException:
        for p in reversed(procs):
            stop_process(p)
        raise


# ---- certbot -----------------------------------------------------------------------------------------


@dataclass
class Certbot:
    root: Path
    pebble: Pebble
    env: dict[str, str] = field(default_factory=dict)
    # Left out of certbot's environment (and so of its hooks'): DOCKER_HOST, say, to prove a hook needs none.
    unset: tuple[str, ...] = ()

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def live(self) -> Path:
        return self.config_dir / "live"

    @property
    def deploy_hooks(self) -> Path:
        return self.config_dir / "renewal-hooks" / "deploy"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "REQUESTS_CA_BUNDLE": str(self.pebble.ca_bundle), **self.env}
        for name in self.unset:
            env.pop(name, None)
        proc = subprocess.run(
            ["certbot", *args,
             "--config-dir", str(self.config_dir), "--work-dir", str(self.root / "work"),
             "--logs-dir", str(self.root / "logs"), "--server", self.pebble.directory,
             "--non-interactive", "--no-random-sleep-on-renew"],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"certbot {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


@contextlib.contextmanager
def removed_after(path: Path) -> Iterator[Path]:
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- versions, and a Debian rootfs with another nginx ------------------------------------------------

ROOTFS_SUITE, ROOTFS_PACKAGE = "trixie", "nginx"  # nginx 1.26 with OpenSSL 3.5: the "modern" syntax branch


# Left out of the rootfs: not needed to run nginx, and a quarter of its size.
@dataclass(frozen=True)
class NginxBuild:
    nginx: tuple[int, int, int]
    openssl: tuple[int, int, int]


def parse_nginx_v(text: str) -> NginxBuild:
    """Versions from ``nginx -V`` (it prints to stderr): ``nginx/1.22.1`` and ``built with OpenSSL 3.0.13``."""
    nginx = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    openssl = re.search(r"(?:built with|running with) OpenSSL (\d+)\.(\d+)\.(\d+)", text)
    if not nginx or not openssl:
        raise ValueError(f"cannot read versions from nginx -V: {text[:300]!r}")
    n = nginx.groups()
    o = openssl.groups()
    return NginxBuild((int(n[0]), int(n[1]), int(n[2])), (int(o[0]), int(o[1]), int(o[2])))


def local_nginx_build() -> NginxBuild:
    out = subprocess.run(["nginx", "-V"], capture_output=True, text=True, check=True)
    return parse_nginx_v(out.stderr + out.stdout)


@dataclass
class Rootfs:
    """A Debian rootfs with nginx: ``nginx -t`` runs in it by chroot, and it becomes the Swarm test image."""

    root: Path
    build: NginxBuild

    def nginx(self) -> list[str]:
        return ["chroot", str(self.root), "nginx"]

    def tar(self, dest: Path) -> Path:
        subprocess.run(["tar", "-C", str(self.root), "-cf", str(dest), "."], check=True, capture_output=True)
        return dest


def debootstrap_nginx(dest: Path, *, suite: str = ROOTFS_SUITE, package: str = ROOTFS_PACKAGE) -> Rootfs:
    debootstrap(dest, suite=suite, include=package)
    out = subprocess.run(["chroot", str(dest), "nginx", "-V"], capture_output=True, text=True, check=True)
    return Rootfs(dest, parse_nginx_v(out.stderr))
