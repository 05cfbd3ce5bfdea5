"""What the benchmark deploys: one service per part, each with its own repository and tags, and the rules
file that routes pushes to them (padded with rules nobody pushes to, for the 10 / 1,000 / 10,000 runs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from docker.types import UpdateConfig

from tests.bed import SwarmBed, wait_for

REPLICAS = 2
# The same rolling update for the floor (docker-py) and for this project (the rules below).
RULE_UPDATE = "{parallelism: 1, delay: 100ms, order: start-first, failure_action: rollback, monitor: 2s}"
FLOOR_UPDATE = UpdateConfig(
    parallelism=1, delay=100_000_000, order="start-first", failure_action="rollback", monitor=2_000_000_000
)
BASE_TAG = "1.0.0"
# A repository no rule names: the ignored push (every rule is looked at before it is ignored).
IGNORED_REPO = "acme/nobody"


def tags(count: int) -> list[str]:
    return [f"1.0.{i}" for i in range(1, count + 1)]


@dataclass
class Target:
    """One Swarm service, the repository whose pushes deploy it, and its published tags' digests."""

    service: str
    repo: str
    registry: str
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return f"{self.registry}/{self.repo}"

    def ref(self, tag: str) -> str:
        return f"{self.image}:{tag}@{self.digests[tag]}"

    @property
    def newest(self) -> str:
        return tags(len(self.digests))[-1]


def prepare(bed: SwarmBed, wanted: dict[str, int]) -> dict[str, Target]:
    """For each ``name: tag count``: an image ``acme/bench-NAME:1.0.0``, that many more tags, and a service
    ``bench_NAME`` running 1.0.0 with REPLICAS tasks. Services start together; this waits for all of them."""
    targets: dict[str, Target] = {}
    for name, count in wanted.items():
        target = Target(service=f"bench_{name}", repo=f"acme/bench-{name}", registry=bed.registry)
        base = bed.make_image(target.repo, BASE_TAG)
        target.digests = bed.publish_tags(base, tags(count)) if count else {}
        bed.create_service(target.service, base, replicas=REPLICAS, update_config=FLOOR_UPDATE, wait=False)
        targets[name] = target
    for target in targets.values():
        wait_for(
            lambda t=target: len(bed.running_tasks(t.service)) == REPLICAS,
            timeout=120,
            what=f"{REPLICAS} running tasks of {target.service}",
        )
    return targets


def rules_text(targets: Sequence[Target], *, total: int) -> str:
    """Rules for ``targets`` (semver tags, any newer version) plus rules for services nobody pushes to, so
    the file has ``total`` services."""
    lines = [f"defaults:\n  update: {RULE_UPDATE}\n  timeout: 90s\nservices:\n"]
    for t in targets:
        lines.append(f"  {t.service}:\n    repository: {t.repo}\n    image: {t.image}\n    tags: semver\n")
        lines.append("    policy: major\n")
    for i in range(total - len(targets)):
        lines.append(f"  pad_{i:05d}:\n    repository: acme/pad-{i:05d}\n    tags: semver\n")
    return "".join(lines)
