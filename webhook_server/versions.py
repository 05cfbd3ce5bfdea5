"""Semantic versions in image tags, version ranges, and update policies. Pure functions."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import semver

Policy = Literal["all", "major", "minor", "patch"]

_OPS: dict[str, Callable[[semver.Version, semver.Version], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
}
_COMPARATOR = re.compile(r"^(>=|<=|>|<|==|=|!=)?\s*v?(\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?)$")


def parse_tag_version(tag: str) -> semver.Version | None:
    """The semantic version a tag names ("1.2.3", "v1.2.3", "1.2.3-rc.1"), or None if it names none."""
    text = tag[1:] if tag[:1] in ("v", "V") else tag
    try:
        return semver.Version.parse(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class VersionRange:
    """Comma-separated comparators, all of which must hold: ">=1.2,<2". Partial versions mean .0."""

    text: str
    comparators: tuple[tuple[str, semver.Version], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        if not text.strip():
            raise ValueError("no range after 'semver:': write 'semver' for any version, or a range such as >=1.2,<2")
        comparators = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                raise ValueError(f"{text!r} has an empty comparator: separate comparators with single commas")
            match = _COMPARATOR.fullmatch(part)
            if not match:
                if all(_COMPARATOR.fullmatch(p) for p in part.split()):
                    joined = ",".join(part.split())
                    raise ValueError(f"{part!r}: separate comparators with commas ({joined})")
                raise ValueError(f"{part!r} is not a version comparator: use forms like >=1.2, <2, ==1.4.0, !=1.3.1")
            op, version = match.group(1) or "==", match.group(2)
            comparators.append((op, semver.Version.parse(version, optional_minor_and_patch=True)))
        parsed = cls(text=text, comparators=tuple(comparators))
        if parsed._empty():
            # A rule whose range admits nothing would accept every push and silently deploy none of them.
            raise ValueError(f"{text!r} matches no version")
        return parsed

    def _empty(self) -> bool:
        """Whether the bounds contradict each other (">=2,<1", "==1.2,!=1.2", ">1,<1")."""
        lows = [(v, op in (">",)) for op, v in self.comparators if op in (">=", ">", "==", "=")]
        highs = [(v, op in ("<",)) for op, v in self.comparators if op in ("<=", "<", "==", "=")]
        if lows and highs:
            low, low_strict = max(lows, key=lambda b: (b[0], b[1]))
            high, high_strict = min(highs, key=lambda b: (b[0], not b[1]))
            if low > high or (low == high and (low_strict or high_strict)):
                return True
        exact = {v for op, v in self.comparators if op in ("==", "=")}
        excluded = {v for op, v in self.comparators if op == "!="}
        return bool(exact & excluded) or len(exact) > 1

    def contains(self, version: semver.Version) -> bool:
        return all(_OPS[op](version, bound) for op, bound in self.comparators)


def policy_refusal(policy: Policy, candidate: semver.Version, running: semver.Version | None) -> str | None:
    """Why ``policy`` forbids moving from ``running`` to ``candidate``, or None if it allows it.

    Policies, relative to what runs now: ``all`` any newer version including pre-releases; ``major`` any
    newer release; ``minor`` newer releases within the running major; ``patch`` within the running
    major.minor. No policy ever goes to a lower version. Without a running semver, only the pre-release
    rule applies.
    """
    if candidate.prerelease and policy != "all":
        return f"{candidate} is a pre-release; policy {policy!r} deploys releases only"
    if running is None:
        return None
    if candidate < running:
        return f"{candidate} is older than the running {running}; semver rules never downgrade"
    if policy == "minor" and candidate.major != running.major:
        return f"{candidate} changes the major version of the running {running}; policy 'minor' forbids it"
    if policy == "patch" and (candidate.major, candidate.minor) != (running.major, running.minor):
        return f"{candidate} changes more than the patch of the running {running}; policy 'patch' forbids it"
    return None
