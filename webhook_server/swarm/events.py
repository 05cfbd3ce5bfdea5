"""Docker's event stream for services, read on one thread: a rollout's watch wakes as soon as its service
changes (Swarm starts, completes, pauses or rolls back the update) instead of at its next poll.

Polling stays the fallback: while the stream is down (Docker restarting, an SSH host gone) waits simply run
to their timeout, and the stream is opened again with backoff.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from webhook_server.swarm.client import connect

log = logging.getLogger(__name__)

# A quiet stream is read again this often (a dead connection shows up no later than this).
READ_TIMEOUT = 60.0
MAX_BACKOFF = 30.0


class ServiceEvents:
    """How many events each service has had since the stream was opened; waits for the next one."""

    def __init__(self, docker_host: str | None) -> None:
        self._docker_host = docker_host
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._changed = threading.Condition()
        self._started = False

    def seen(self, service: str) -> int:
        self._start()
        with self._changed:
            return self._counts[service]

    def wait(self, service: str, *, after: int, timeout: float) -> int:
        """Return once ``service`` has had more than ``after`` events, or after ``timeout`` seconds."""
        self._start()
        with self._changed:
            self._changed.wait_for(lambda: self._counts[service] > after, timeout=timeout)
            return self._counts[service]

    def _start(self) -> None:
        with self._changed:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._read, name="service-events", daemon=True).start()

    def _read(self) -> None:
        delay = 1.0
        while True:
            try:
                client = connect(self._docker_host, timeout=READ_TIMEOUT)
                try:
                    for event in client.events(decode=True, filters={"type": ["service"]}):
                        delay = 1.0
                        name = (event.get("Actor") or {}).get("Attributes", {}).get("name")
                        if name:
                            with self._changed:
                                self._counts[str(name)] += 1
                                self._changed.notify_all()
                finally:
                    client.close()
            except Exception as e:  # any failure of the stream only means polling until it is back
                log.debug("Docker's event stream: %s; polling until it is back", e)
            stop = threading.Event()
            stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF)
