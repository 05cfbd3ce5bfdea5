"""A TCP front for a Docker socket that can lose the answer to a service update, as a flaky network would.

The receiver talks to ``tcp://127.0.0.1:PORT``; everything is relayed to the bed's unix socket unchanged,
except the next service update(s) the test arms: ``lose_answers`` relays the request to Docker but never
relays its answer (the update happens, the client times out); ``drop_requests`` never relays the request
(nothing happens, the client times out all the same).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

_UPDATE = re.compile(rb"^POST /[^ ]*/services/[^/ ]+/update[ ?]", re.MULTILINE)


@dataclass
class DockerProxy:
    unix_path: str
    lose_answers: int = 0
    drop_requests: int = 0
    port: int = 0
    updates_seen: int = 0
    _server: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: list[socket.socket] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", 0))
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, name="docker-proxy", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            sockets = [*self._open, *([self._server] if self._server else [])]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.unix_path)
            with self._lock:
                self._open += [client, upstream]
            muted = threading.Event()  # set: Docker's answers on this connection are swallowed
            threading.Thread(target=self._requests, args=(client, upstream, muted), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, muted), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if _UPDATE.search(data):
                    with self._lock:
                        self.updates_seen += 1
                        drop = self.drop_requests > 0
                        lose = not drop and self.lose_answers > 0
                        self.drop_requests -= drop
                        self.lose_answers -= lose
                    if drop:
                        continue
                    if lose:
                        muted.set()
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _answers(self, upstream: socket.socket, client: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if not muted.is_set():
                    client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def docker_proxy(unix_path: str) -> Iterator[DockerProxy]:
    proxy = DockerProxy(unix_path=unix_path)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
