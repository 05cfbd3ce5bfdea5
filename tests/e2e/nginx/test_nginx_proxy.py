"""Real nginx (rendered by render-nginx) in front of the real receiver, on 127.0.0.1 high ports.

Clients connect from other loopback addresses (127.0.0.2, ...) so the receiver's log can show whose address
it saw: the client's, or nginx's (127.0.0.1).
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import time
from typing import Any

import pytest

from tests.bed import free_port
from tests.e2e.nginx.conftest import HOOKS, WWW, ProxyStack, proxy_config
from tests.nginx_bed import make_dir, prepare_prefix, relocate, request, self_signed, start_nginx
from tests.server import documented_payload

pytestmark = pytest.mark.nginx


def hook_path(token: str) -> str:
    return f"/hooks/dockerhub/{token}"


def test_http_moves_to_https_with_308(stack: ProxyStack) -> None:
    port = stack.nginx.http_port
    reply = request(port, host=HOOKS, path="/api/deployments?limit=1", tls=False)
    assert reply.status == 308
    assert reply.headers["location"] == f"https://{HOOKS}:{stack.nginx.https_port}/api/deployments?limit=1"
    # 308, not 301: a client that follows keeps POST and its body.
    assert request(port, host=WWW, method="POST", path="/form", body=b"x", tls=False).status == 308


def test_acme_challenges_are_served_over_http_from_the_webroot(stack: ProxyStack) -> None:
    challenge = stack.nginx.prefix / "acme" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    challenge.chmod(0o755)
    (challenge.parent).chmod(0o755)
    (challenge / "tok3n").write_text("tok3n.thumbprint")
    (challenge / "tok3n").chmod(0o644)
    reply = request(stack.nginx.http_port, host=WWW, path="/.well-known/acme-challenge/tok3n", tls=False)
    assert (reply.status, reply.body) == (200, b"tok3n.thumbprint")
    assert reply.headers["content-type"] == "text/plain"
    missing = request(stack.nginx.http_port, host=WWW, path="/.well-known/acme-challenge/nope", tls=False)
    assert missing.status == 404


def test_unknown_host_on_port_80_is_closed_without_an_answer(stack: ProxyStack) -> None:
    with pytest.raises(http.client.RemoteDisconnected):
        request(stack.nginx.http_port, host="unknown.test", tls=False)


def test_unknown_sni_is_refused_in_the_handshake(stack: ProxyStack) -> None:
    with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name|INTERNAL_ERROR"):
        request(stack.nginx.https_port, host="unknown.test", path="/healthz")


def test_known_sni_with_unknown_host_is_closed_without_an_answer(stack: ProxyStack) -> None:
    with pytest.raises(http.client.RemoteDisconnected):
        request(stack.nginx.https_port, host="unknown.test", sni=HOOKS, cafile=stack.ca(HOOKS), path="/healthz")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["1.2", "1.3"])
def test_tls_versions_hsts_and_no_server_version(stack: ProxyStack, version: ssl.TLSVersion) -> None:
    reply = request(stack.nginx.https_port, host=HOOKS, cafile=stack.ca(HOOKS), path="/healthz", tls_version=version)
    assert reply.status == 200 and reply.json() == {"status": "ok"}
    assert reply.tls_version == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert reply.headers["strict-transport-security"] == "max-age=63072000"
    assert reply.headers["server"] == "nginx"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(stack: ProxyStack) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", stack.nginx.https_port), timeout=10) as raw,
        pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"),
    ):
        ctx.wrap_socket(raw, server_hostname=HOOKS)


def test_a_push_through_nginx_is_accepted_and_logged_with_the_clients_address(stack: ProxyStack) -> None:
    body = json.dumps(documented_payload("acme/web", "latest")).encode()
    reply = request(
        stack.nginx.https_port,
        host=HOOKS,
        cafile=stack.ca(HOOKS),
        method="POST",
        path=hook_path(stack.token),
        body=body,
        # A client cannot pass itself off as someone else: nginx replaces this header.
        headers={"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.9"},
        source="127.0.0.2",
    )
    assert reply.status == 202, reply.body
    assert reply.json()["status"] == "accepted"
    assert reply.headers["strict-transport-security"] == "max-age=63072000"
    time.sleep(0.2)
    log = stack.receiver.log_text()
    assert "push acme/web:latest from 127.0.0.2 accepted" in log
    assert "203.0.113.9" not in log
    assert '"POST /hooks/[redacted] HTTP/1.1" 202' in stack.nginx.access_log()


def test_get_on_the_webhook_is_refused(stack: ProxyStack) -> None:
    reply = request(stack.nginx.https_port, host=HOOKS, cafile=stack.ca(HOOKS), path=hook_path(stack.token))
    assert reply.status in (403, 405)


def test_only_the_receivers_routes_are_proxied(stack: ProxyStack) -> None:
    reply = request(stack.nginx.https_port, host=HOOKS, cafile=stack.ca(HOOKS), path="/etc/passwd")
    assert reply.status == 404 and reply.json()["error"] == "not_found"


def test_an_oversized_body_gets_413(stack: ProxyStack) -> None:
    reply = request(
        stack.nginx.https_port,
        host=HOOKS,
        cafile=stack.ca(HOOKS),
        method="POST",
        path=hook_path(stack.token),
        body=b"x" * (64 * 1024 + 1),
        headers={"Content-Type": "application/json"},
        source="127.0.0.4",
    )
    assert reply.status == 413


def test_a_burst_gets_429(stack: ProxyStack) -> None:
    """rate=20r/s, burst=10: a tight loop of at most 200 requests must be cut off well before its end."""
    statuses: list[int] = []
    deadline = time.monotonic() + 20
    for _ in range(200):
        reply = request(
            stack.nginx.https_port,
            host=HOOKS,
            cafile=stack.ca(HOOKS),
            method="POST",
            path=hook_path(stack.token),
            body=b"{}",
            headers={"Content-Type": "application/json"},
            source="127.0.0.3",
        )
        statuses.append(reply.status)
        if reply.status == 429:
            assert reply.json()["error"] == "rate_limited"
            break
        if time.monotonic() > deadline:
            break
    assert statuses[-1] == 429, statuses
    assert len(statuses) >= 11  # the burst of 10 (plus the first) got through to the receiver
    assert 429 not in statuses[:10]


def test_site_upstream_gets_forwarding_headers_and_no_proxy_header(stack: ProxyStack) -> None:
    reply = request(
        stack.nginx.https_port,
        host=WWW,
        cafile=stack.ca(WWW),
        path="/some/page?q=1",
        headers={"X-Forwarded-For": "203.0.113.9", "Proxy": "http://attacker.test:3128"},
        source="127.0.0.5",
    )
    assert reply.status == 200 and reply.json() == {"seen": "/some/page?q=1"}
    seen = {k.lower(): v for k, v in stack.echo.requests[-1]["headers"].items()}
    assert seen["x-forwarded-for"] == "127.0.0.5"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == WWW
    assert seen["host"] == WWW
    assert "proxy" not in seen


def test_the_token_is_never_logged(stack: ProxyStack) -> None:
    """Every way a request can carry the token: accepted, refused, redirected, oversized, odd spellings."""
    token = stack.token
    https: dict[str, Any] = {"host": HOOKS, "cafile": stack.ca(HOOKS), "source": "127.0.0.6"}
    json_headers = {"Content-Type": "application/json"}
    request(stack.nginx.http_port, host=HOOKS, method="POST", path=hook_path(token), body=b"{}", tls=False)
    request(stack.nginx.https_port, **https, path=hook_path(token))  # GET: 403
    request(stack.nginx.https_port, **https, method="POST", path=hook_path(token), body=b"{}", headers=json_headers)
    request(stack.nginx.https_port, **https, method="POST", path=f"/%68ooks/dockerhub/{token}", body=b"{}")
    request(stack.nginx.https_port, **https, method="POST", path=f"//hooks//dockerhub/{token}?x=1", body=b"{}")
    request(stack.nginx.https_port, **https, method="POST", path=f"/HOOKS/DockerHub/{token}", body=b"{}")
    request(stack.nginx.https_port, **https, method="POST", path=hook_path(token), body=b"x" * 70000)
    with pytest.raises(http.client.RemoteDisconnected):
        request(stack.nginx.http_port, host="unknown.test", method="POST", path=hook_path(token), tls=False)
    time.sleep(0.3)
    access, error, app = stack.nginx.access_log(), stack.nginx.error_log(), stack.receiver.log_text()
    assert access.count("/hooks/[redacted]") >= 7
    for name, text in (("nginx access log", access), ("nginx error log", error), ("receiver log", app)):
        assert token not in text, f"the token leaked into the {name}"


def test_receiver_down_gives_json_503_and_nginx_starts_without_it(dns: str) -> None:
    """nginx starts while nothing listens upstream (names resolve per request) and answers a JSON 503."""
    prefix = make_dir("nginx-down-")
    nginx = None
    try:
        self_signed(prefix / "live" / HOOKS, [HOOKS])
        self_signed(prefix / "live" / WWW, [WWW])
        http_port, https_port = free_port(), free_port()
        dead = free_port()  # nothing listens here
        config = relocate(
            proxy_config(receiver_port=dead, site_port=dead), prefix, http_port=http_port, https_port=https_port,
            resolver=dns,
        )  # fmt: skip
        prepare_prefix(prefix, config)
        nginx = start_nginx(prefix, http_port=http_port, https_port=https_port)
        cafile = prefix / "live" / HOOKS / "fullchain.pem"
        reply = request(https_port, host=HOOKS, cafile=cafile, method="POST", path="/hooks/dockerhub/x", body=b"{}")
        assert reply.status == 503
        assert reply.headers["content-type"] == "application/json"
        assert reply.json()["error"] == "receiver_unavailable"
        assert reply.headers["strict-transport-security"] == "max-age=63072000"
        assert request(https_port, host=HOOKS, cafile=cafile, path="/healthz").status == 503
    finally:
        survivors = nginx.stop() if nginx else []
        shutil.rmtree(prefix, ignore_errors=True)
    assert not survivors
