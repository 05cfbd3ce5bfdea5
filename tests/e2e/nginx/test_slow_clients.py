"""Clients that connect and send nothing, or send their headers a line at a time, must not stall the server
for everyone else: with 200 of each held open, /healthz and a valid push still answer within a second,
straight at gunicorn (gevent worker: a connection holds a greenlet, not a thread) and through the rendered
nginx config (which reads headers and bodies itself before it opens a connection upstream).

A control shows the measurement can see a stall: a server allowed only 10 connections does not answer.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.e2e.nginx.conftest import HOOKS, NO_DOCKER, RULES, ProxyStack
from tests.nginx_bed import request
from tests.server import WEBHOOK_TOKEN, documented_payload, server_env, start_server

pytestmark = pytest.mark.nginx

HELD = 200
LIMIT_SECONDS = 1.0
SAMPLES = 5
PARTIAL_HEADER = b"POST /hooks/dockerhub/" + WEBHOOK_TOKEN.encode() + b" HTTP/1.1\r\nHost: " + HOOKS.encode() + b"\r\n"


@dataclass
class Hostile:
    """``HELD`` idle and ``HELD`` slow-header connections, the slow ones fed one header line a second."""

    port: int
    tls: bool = False
    idle: list[socket.socket] = field(default_factory=list)
    slow: list[socket.socket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    dropped: int = 0

    def open(self) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        for _ in range(HELD):
            self.idle.append(socket.create_connection(("127.0.0.1", self.port), timeout=10))
        for _ in range(HELD):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            if self.tls:
                sock = ctx.wrap_socket(sock, server_hostname=HOOKS)
            sock.sendall(PARTIAL_HEADER)
            self.slow.append(sock)
        threading.Thread(target=self._trickle, name="slow-headers", daemon=True).start()

    def _trickle(self) -> None:
        line = 0
        while not self.stop.wait(1.0):
            line += 1
            for sock in list(self.slow):
                try:
                    sock.sendall(b"X-Slow-%d: a\r\n" % line)
                except OSError:
                    self.slow.remove(sock)
                    self.dropped += 1

    def close(self) -> None:
        self.stop.set()
        for sock in self.idle + self.slow:
            with contextlib.suppress(OSError):
                sock.close()


@contextlib.contextmanager
def held_open(port: int, *, tls: bool = False) -> Iterator[Hostile]:
    hostile = Hostile(port, tls=tls)
    try:
        hostile.open()
        yield hostile
    finally:
        hostile.close()


def timed(call: Callable[[], int], expected: int) -> float:
    started = time.monotonic()
    status = call()
    elapsed = time.monotonic() - started
    assert status == expected
    return elapsed


def median_time(call: Callable[[], int], expected: int) -> float:
    # The median of a few: one slow answer on a loaded machine is noise, a stall is every answer.
    return statistics.median(timed(call, expected) for _ in range(SAMPLES))


# The rules deploy acme/web:latest: each push is accepted (and coalesced with the ones before it).
PUSH = json.dumps(documented_payload("acme/web", "latest")).encode()


def test_idle_and_slow_clients_do_not_stall_the_server(tmp_path: Path) -> None:
    env = server_env(tmp_path, docker_host=NO_DOCKER, rules=_rules(tmp_path))
    server = start_server(tmp_path, env=env, workers=2)
    try:

        def health() -> int:
            return requests.get(f"{server.url}/healthz", timeout=10).status_code

        def push() -> int:
            hook = f"{server.url}/hooks/dockerhub/{WEBHOOK_TOKEN}"
            return requests.post(hook, data=PUSH, headers={"Content-Type": "application/json"}, timeout=10).status_code

        with held_open(int(server.url.rsplit(":", 1)[1])) as hostile:
            health_s, push_s = median_time(health, 200), median_time(push, 202)
            assert hostile.dropped == 0, "the server closed slow-header connections: they did not hold it"
        print(f"direct: /healthz {health_s * 1000:.0f} ms, push {push_s * 1000:.0f} ms with {HELD}+{HELD} held")
        assert health_s < LIMIT_SECONDS and push_s < LIMIT_SECONDS
    finally:
        server.stop()


def test_the_measurement_sees_a_stall_when_connections_run_out(tmp_path: Path) -> None:
    env = server_env(tmp_path, docker_host=NO_DOCKER, rules=_rules(tmp_path))
    server = start_server(tmp_path, env=env, workers=1, args=("--connections", "10"))
    try:
        with held_open(int(server.url.rsplit(":", 1)[1])), pytest.raises(requests.Timeout):
            requests.get(f"{server.url}/healthz", timeout=LIMIT_SECONDS)
    finally:
        server.stop()


def test_idle_and_slow_clients_do_not_stall_nginx_or_the_server_behind_it(stack: ProxyStack) -> None:
    port = stack.nginx.https_port

    def health() -> int:
        return request(port, host=HOOKS, cafile=stack.ca(HOOKS), path="/healthz", source="127.0.0.9").status

    def push() -> int:
        return request(
            port,
            host=HOOKS,
            cafile=stack.ca(HOOKS),
            method="POST",
            path=f"/hooks/dockerhub/{stack.token}",
            body=PUSH,
            headers={"Content-Type": "application/json"},
            source="127.0.0.9",
        ).status

    with held_open(port, tls=True) as hostile:
        health_s, push_s = median_time(health, 200), median_time(push, 202)
        assert hostile.dropped == 0
    print(f"nginx: /healthz {health_s * 1000:.0f} ms, push {push_s * 1000:.0f} ms with {HELD}+{HELD} held")
    assert health_s < LIMIT_SECONDS and push_s < LIMIT_SECONDS


def _rules(root: Path) -> Path:
    path = root / "deploy_rules.yaml"
    path.write_text(RULES)
    return path
