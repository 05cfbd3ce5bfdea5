"""The registry's digest of the push a claim will most likely choose, asked for while the claim goes on.

Resolving a tag is a round trip from dockerd to the registry, about as long as reading the service and
claiming together; the two need not wait for each other. The guess is only a head start: a claim that
chooses another tag, or a registry that failed the early question, gets its digest the usual way (and any
error from there).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

from webhook_server.cluster import Swarm
from webhook_server.errors import DockerError
from webhook_server.journal import Deployment
from webhook_server.matching import Candidate, best_of
from webhook_server.rules import Rule


class EarlyDigest:
    def __init__(self, swarm: Swarm, *, image: str, tag: str) -> None:
        self._asked = (image, tag)
        self._digest: str | None = None
        self._swarm = swarm
        self._thread = threading.Thread(target=self._resolve, name=f"digest-{image}:{tag}", daemon=True)
        self._thread.start()

    @classmethod
    def for_queue(cls, swarm: Swarm, rule: Rule | None, queued: Sequence[Deployment]) -> EarlyDigest | None:
        """Start resolving the queued push that the rule ranks first (None when there is nothing to resolve:
        no rule, or a rollback, which names its digest already)."""
        pushes = [d for d in queued if d.pinned_ref is None]
        if rule is None or not pushes:
            return None
        best = best_of(rule, [Candidate(id=d.id, tag=d.tag, order=d.id) for d in pushes])
        chosen = next(d for d in pushes if d.id == best.id)
        return cls(swarm, image=chosen.image, tag=chosen.tag)

    def _resolve(self) -> None:
        # On an error the claim's owner asks again itself, and hears it.
        with contextlib.suppress(DockerError):
            self._digest = self._swarm.resolve_digest(*self._asked)

    def digest(self, image: str, tag: str) -> str | None:
        """The digest, if this asked for ``image:tag`` and the registry answered; else None."""
        if (image, tag) != self._asked:
            return None
        self._thread.join()
        return self._digest
