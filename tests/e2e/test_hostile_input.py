# ruff: noqa: E501  (the cases are one request per line, as sent)
"""What the open internet sends, over real HTTP to the real server (gunicorn): every bad input gets a 4xx
that says why, nothing is deployed or journaled as accepted, and nothing a client chose reaches the log raw.

No Docker is needed: each request is refused before anything would talk to it.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.server import API_TOKEN, WEBHOOK_TOKEN, Server, documented_payload, server_env, start_server

RULES = "services:\n  api: {repository: acme/api, image: 'reg.test/acme/api', tags: semver}\n"
HOOK = f"/hooks/dockerhub/{WEBHOOK_TOKEN}"
MAX_BODY = 4096
FORGED = "2026-01-01 00:00:00,000 INFO webhook_server.views: FORGED accepted"


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def raw(server: Server, request: bytes) -> bytes:
    """Send bytes as they are (no client library would send these) and return the answer's first line."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n" not in answer and (chunk := conn.recv(4096)):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def chunked(path: str, body: bytes, *, framing: bytes | None = None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + (framing if framing is not None else b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))


Case = Callable[[Server], int]

CASES: list[tuple[str, Case, int]] = [
    (
        "deep-json-hook",
        lambda s: s.session.post(s.url + HOOK, data=deep(1500), headers={"Content-Type": "application/json"}).status_code,
        400,
    ),
    (
        "deep-json-api",
        lambda s: s.api("POST", "/deployments", data=deep(1500), headers={"Content-Type": "application/json"}).status_code,
        400,
    ),
    (
        "surrogate-repo-name",
        lambda s: s.session.post(
            s.url + HOOK,
            data=b'{"repository": {"repo_name": "acme/api\\ud800"}, "push_data": {"tag": "1.0.0"}}',
            headers={"Content-Type": "application/json"},
        ).status_code,
        400,
    ),
    (
        "surrogate-pusher",
        lambda s: s.session.post(
            s.url + HOOK,
            data=b'{"repository": {"repo_name": "acme/api"}, "push_data": {"tag": "1.0.0", "pusher": "\\udfff"}}',
            headers={"Content-Type": "application/json"},
        ).status_code,
        400,
    ),
    (
        "newline-in-repo-name",
        lambda s: s.hook(documented_payload(f"acme/api\n{FORGED}", "1.0.0")).status_code,
        400,
    ),
    ("huge-pusher", lambda s: s.hook({**documented_payload("acme/api", "1.0.0"), "push_data": {"tag": "1.0.0", "pusher": "p" * 3000}}).status_code, 400),
    ("crlf-callback", lambda s: s.hook({**documented_payload("acme/api", "1.0.0"), "callback_url": "https://x/\r\nA: b"}).status_code, 400),
    ("id-beyond-64-bits", lambda s: s.api("GET", f"/deployments/{2**64}").status_code, 404),
    ("rollback-to-beyond-64-bits", lambda s: s.api("POST", "/services/api/rollback", json={"to": 2**63}).status_code, 400),
    ("rollback-to-true", lambda s: s.api("POST", "/services/api/rollback", json={"to": True}).status_code, 400),
    (
        "rollback-text-body",
        lambda s: s.api("POST", "/services/api/rollback", data="to=1", headers={"Content-Type": "text/plain"}).status_code,
        400,
    ),
    (
        "rollback-malformed-json",
        lambda s: s.api("POST", "/services/api/rollback", data="{", headers={"Content-Type": "application/json"}).status_code,
        400,
    ),
    ("bad-chunk-size", lambda s: int(raw(s, chunked(HOOK, b"", framing=b"ZZ\r\n{}\r\n0\r\n\r\n")).split()[1]), 400),
    (
        "chunked-over-the-limit",
        lambda s: int(raw(s, chunked(HOOK, json.dumps({**documented_payload("acme/api", "1.0.0"), "pad": "x" * MAX_BODY}).encode())).split()[1]),
        413,
    ),
    ("forged-log-line-in-path", lambda s: int(raw(s, f"GET /x%0A{FORGED.replace(' ', '%20')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()).split()[1]), 404),
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    factory_root = tmp_path_factory.mktemp("hostile")
    rules = factory_root / "deploy_rules.yaml"
    rules.write_text(RULES)
    env = server_env(
        factory_root,
        docker_host=f"unix://{factory_root / 'no-docker.sock'}",
        rules=rules,
        extra={"WEBHOOK_MAX_BODY_BYTES": str(MAX_BODY), "WEBHOOK_TRUSTED_PROXIES": "127.0.0.1"},
    )
    started = start_server(factory_root, env=env)
    yield started
    started.stop()


def journal_rows(server: Server, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(Path(server.env["WEBHOOK_DB"])) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize(("send", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_request_is_refused_and_changes_nothing(server: Server, send: Case, status: int) -> None:
    assert send(server) == status
    assert journal_rows(server, "SELECT id FROM deployments") == []
    assert server.session.get(server.url + "/healthz", timeout=10).status_code == 200


def test_nothing_a_client_chose_reached_the_log_raw(server: Server) -> None:
    for _, send, _ in CASES:
        send(server)
    log = server.log_text()
    assert "FORGED" in log  # the requests were logged...
    assert not any(line.lstrip().startswith(FORGED[:10]) or "\nFORGED" in line for line in log.splitlines())
    # ... with the newline escaped, inside the one line of the request that carried it.
    assert all("FORGED" not in line or "\\x0a" in line for line in log.splitlines())
    assert "Traceback" not in log and '" 500' not in log


def test_a_trusted_proxys_forwarded_for_that_is_not_an_address_is_not_stored(server: Server) -> None:
    answer = server.hook(documented_payload("acme/nobody", "1.0.0"), headers={"X-Forwarded-For": "not-an-address"})
    assert answer.status_code == 200  # ignored: no rule wants acme/nobody
    [(client,)] = journal_rows(server, "SELECT client FROM pushes ORDER BY id DESC LIMIT 1")
    assert client == "127.0.0.1"
    answer = server.hook(documented_payload("acme/nobody", "1.0.1"), headers={"X-Forwarded-For": "203.0.113.9"})
    [(client,)] = journal_rows(server, "SELECT client FROM pushes ORDER BY id DESC LIMIT 1")
    assert client == "203.0.113.9"


def test_limits_hold_across_workers_on_the_real_client_address(tmp_path: Path) -> None:
    rules = tmp_path / "deploy_rules.yaml"
    rules.write_text(RULES)
    env = server_env(
        tmp_path,
        docker_host=f"unix://{tmp_path / 'no-docker.sock'}",
        rules=rules,
        extra={"WEBHOOK_TRUSTED_PROXIES": "127.0.0.1", "WEBHOOK_RATE_LIMIT": "40", "WEBHOOK_AUTH_FAILURE_LIMIT": "5"},
    )
    server = start_server(tmp_path, env=env, workers=2)
    try:
        guesses = [server.hook({}, token=f"guess-{i}-0123456789abcdef").status_code for i in range(5)]
        assert guesses == [404] * 5
        locked = server.hook(documented_payload("acme/nobody", "1.0.0"))  # the right token, too late
        assert locked.status_code == 429 and 1 <= int(locked.headers["Retry-After"]) <= 600
        # Behind the trusted proxy, another client is another address.
        elsewhere = server.hook(documented_payload("acme/nobody", "1.0.0"), headers={"X-Forwarded-For": "198.51.100.4"})
        assert elsewhere.status_code == 200
        # Request rate: 40 a minute from one address, whichever worker answers; probes are not counted.
        allowed = 0
        while (
            answer := server.api("GET", "/deployments", headers={"X-Forwarded-For": "198.51.100.5"})
        ).status_code == 200:
            allowed += 1
            assert allowed <= 80, "no limit"
        assert answer.status_code == 429 and answer.headers["Retry-After"].isdigit()
        assert 40 <= allowed <= 80  # 40 in a window; a minute that turns during the loop allows one more window
        assert server.session.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        server.stop()


def test_a_chunked_rollback_body_is_read_once_and_used(server: Server) -> None:
    """The body is read before deciding whether there is one; a chunked body cannot be read twice."""
    head = f"Authorization: Bearer {API_TOKEN}\r\n".encode()
    request = chunked("/api/services/api/rollback", b'{"to": 1}').replace(b"Host: x\r\n", b"Host: x\r\n" + head)
    # Parsed: the request goes on to ask Docker (absent here), not a 400 for an unreadable body.
    assert raw(server, request).split()[1] == b"503"
