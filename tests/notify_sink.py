"""A notification endpoint for tests: a small HTTP server on a free loopback port that records what apprise
posts to it (``json://127.0.0.1:PORT/PATH``), and can answer 500 or hang instead of 200."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["ok", "error", "hang"]


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]


class NotifySink:
    def __init__(self, mode: Mode = "ok") -> None:
        self.mode: Mode = mode
        self.received: list[Received] = []
        self._lock = threading.Lock()
        # Set at stop: a hanging answer returns then, so the server's threads end.
        self._release = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with sink._lock:
                    sink.received.append(Received(self.path, json.loads(raw or b"{}")))
                if sink.mode == "hang":
                    sink._release.wait(120)
                    return
                status = 500 if sink.mode == "error" else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads `received`; stderr noise would hide real failures

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="notify-sink", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "hook", *, scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def start(self) -> NotifySink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def wait(self, count: int = 1, *, timeout: float = 30.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived; return all of them."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} notification(s) expected within {timeout}s; got {self.received}")
            time.sleep(0.05)


@contextmanager
def notify_sink(mode: Mode = "ok") -> Iterator[NotifySink]:
    sink = NotifySink(mode).start()
    try:
        yield sink
    finally:
        sink.stop()
