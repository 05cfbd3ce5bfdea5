"""deploy_rules.yaml: which pushes deploy which Swarm services, and how.

The file is parsed once into frozen models; ``load_rules`` turns every problem into a located line
("line 12: services.api.policy: ...") and raises :class:`RulesError` with all of them.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import gc
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from webhook_server import problems
from webhook_server.durations import Duration, duration
from webhook_server.errors import RulesError
from webhook_server.proxy.config import ProxyConfig
from webhook_server.versions import Policy, VersionRange, parse_tag_version

# Docker's reference grammar, without tag or digest; an optional registry host[:port] in front.
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_NAME = re.compile(rf"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*$")
DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_log = logging.getLogger(__name__)


class TagFilter(BaseModel):
    """Which tags deploy: ``latest`` (exact), ``glob:release-*``, ``regex:^v\\d+$``, ``semver[:RANGE]``."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    kind: Literal["exact", "glob", "regex", "semver"]
    pattern: str = ""
    range: VersionRange | None = None

    @classmethod
    def parse(cls, value: Any) -> Any:
        if isinstance(value, TagFilter):
            return value
        if not isinstance(value, str):
            raise ValueError('must be a string: a tag ("latest"), "glob:...", "regex:...", "semver" or "semver:RANGE"')
        kind, sep, rest = value.partition(":")
        if not sep and value == "semver":
            return {"kind": "semver"}
        if kind == "semver" and sep:
            return {"kind": "semver", "pattern": rest, "range": VersionRange.parse(rest)}
        if kind in ("glob", "regex") and sep and not rest:
            raise ValueError(f"{value!r} has no pattern after '{kind}:'")
        if kind == "glob" and sep:
            return {"kind": "glob", "pattern": rest}
        if kind == "regex" and sep:
            try:
                re.compile(rest)
            except re.error as e:
                raise ValueError(f"invalid regular expression {rest!r}: {e}") from None
            return {"kind": "regex", "pattern": rest}
        if DOCKER_TAG.fullmatch(value) and not _misspelt_semver(value):
            return {"kind": "exact", "pattern": value}
        raise ValueError(_not_a_filter(value))

    def refusal(self, tag: str) -> str | None:
        """Why this filter does not accept ``tag``, or None when it does."""
        if self.kind == "exact":
            return None if tag == self.pattern else f"tag {tag!r} is not {self.pattern!r}"
        if self.kind == "glob":
            ok = fnmatch.fnmatchcase(tag, self.pattern)
            return None if ok else f"tag {tag!r} does not match glob {self.pattern!r}"
        if self.kind == "regex":
            ok = re.fullmatch(self.pattern, tag) is not None
            return None if ok else f"tag {tag!r} does not match regex {self.pattern!r}"
        version = parse_tag_version(tag)
        if version is None:
            return f"tag {tag!r} is not a semantic version"
        if self.range is not None and not self.range.contains(version):
            return f"version {version} is outside {self.range.text!r}"
        return None

    def __str__(self) -> str:
        if self.kind == "exact":
            return self.pattern
        return f"{self.kind}:{self.pattern}" if self.pattern else self.kind


_FILTER_KINDS = ("glob", "regex", "semver")
_GLOB_CHARS = frozenset("*?[]")


def _misspelt_semver(value: str) -> bool:
    """Whether a value that is a valid Docker tag is more likely a misspelt ``semver`` than a tag.

    Taking it as an exact tag would silently deploy nothing. Real tags must stay accepted, so only values
    that start like the keyword count ("Semver", "semvr", "semver2", "semvar"), not every near word
    ("server" is a plausible tag one substitution away). ``glob:semvr`` deploys such a tag if it is meant.
    """
    low = value.lower()
    if low == "semver":
        return value != "semver"
    if low.startswith("semver"):
        return True
    return low.startswith("sem") and difflib.SequenceMatcher(None, low, "semver").ratio() >= 0.8


def _not_a_filter(value: str) -> str:
    """Why ``value`` is refused, with the filter it most likely means."""
    kind, sep, rest = value.partition(":")
    suggestion: str | None = None
    if sep:
        # Docker tags cannot contain ':', so this was meant as KIND:PATTERN.
        close = difflib.get_close_matches(kind.lower(), _FILTER_KINDS, n=1, cutoff=0.6)
        suggestion = f"{close[0]}:{rest}" if close else None
    else:
        low = value.lower()
        keyword = next((k for k in _FILTER_KINDS if low.startswith(k)), None)
        if keyword is not None and keyword != low:
            rest = value[len(keyword) :]
            if keyword == "semver" and rest[:1] not in ("", "<", ">", "=", "!"):
                suggestion = "semver"
            else:
                suggestion = f"{keyword}:{rest}" if rest else keyword
        elif low == "semver" or _misspelt_semver(value):
            suggestion = "semver"
        elif _GLOB_CHARS & set(value):
            suggestion = f"glob:{value}"
    if suggestion is not None and DOCKER_TAG.fullmatch(value):
        return (
            f"{value!r} looks like a misspelt filter — did you mean {suggestion!r}? "
            f"(for the tag {value!r} itself, write 'glob:{value}')"
        )
    if suggestion is not None:
        return f"{value!r} is not a tag filter — did you mean {suggestion!r}?"
    return f"{value!r} is neither a Docker tag nor a filter (glob:PATTERN, regex:PATTERN, semver[:RANGE])"


TagFilterField = Annotated[TagFilter, BeforeValidator(TagFilter.parse)]


def _matching(pattern: re.Pattern[str], what: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return BeforeValidator(check)


ImageName = Annotated[str, _matching(IMAGE_NAME, "image name (lowercase, no tag or digest)")]

# The final states a rule may ask to be told about (``notify_on``).
NotifyEvent = Literal["succeeded", "rolled_back", "failed", "skipped", "superseded"]
DEFAULT_NOTIFY_ON: tuple[NotifyEvent, ...] = ("rolled_back", "failed")


def _notify_url(value: Any) -> Any:
    # Imported here: apprise loads its ~100 plugins on first use, and only files that notify need it.
    from webhook_server.notify import url_problem

    problem = url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value.strip()


def _unique_events(value: Any) -> Any:
    return list(dict.fromkeys(value)) if isinstance(value, list | tuple) else value


# A secret: its repr, str and JSON are "**********", so a rule printed or serialized never shows it.
NotifyUrl = Annotated[SecretStr, BeforeValidator(_notify_url)]
NotifyEvents = Annotated[tuple[NotifyEvent, ...], BeforeValidator(_unique_events)]


class UpdateSettings(BaseModel):
    """Swarm's UpdateConfig for a rollout. ``failure_action: rollback`` makes Swarm health-gate it."""

    model_config = _FROZEN

    parallelism: int = Field(default=1, ge=0)
    delay: Duration = duration(seconds=5)
    order: Literal["start-first", "stop-first"] = "start-first"
    failure_action: Literal["rollback", "pause", "continue"] = "rollback"
    monitor: Duration = duration(seconds=15)
    max_failure_ratio: float = Field(default=0.0, ge=0.0, le=1.0)


class UpdateOverrides(BaseModel):
    model_config = _FROZEN

    parallelism: int | None = Field(default=None, ge=0)
    delay: Duration | None = None
    order: Literal["start-first", "stop-first"] | None = None
    failure_action: Literal["rollback", "pause", "continue"] | None = None
    monitor: Duration | None = None
    max_failure_ratio: float | None = Field(default=None, ge=0.0, le=1.0)


class Defaults(BaseModel):
    model_config = _FROZEN

    update: UpdateSettings = UpdateSettings()
    timeout: Duration = duration(minutes=5)
    # Apprise URLs told about every service's outcomes (besides the server's global ones).
    notify: tuple[NotifyUrl, ...] = ()
    notify_on: NotifyEvents = DEFAULT_NOTIFY_ON


class ServiceEntry(BaseModel):
    """One entry under ``services:`` as written in the file."""

    model_config = _FROZEN

    repository: ImageName
    image: ImageName | None = None
    tags: TagFilterField
    policy: Policy | None = None
    update: UpdateOverrides = UpdateOverrides()
    timeout: Duration | None = None
    # Replace the defaults' (``notify: []`` turns them off for this service).
    notify: tuple[NotifyUrl, ...] | None = None
    notify_on: NotifyEvents | None = None

    @field_validator("policy")
    @classmethod
    def _policy_needs_semver(cls, value: Policy | None, info: ValidationInfo) -> Policy | None:
        tags = info.data.get("tags")
        if value is not None and isinstance(tags, TagFilter) and tags.kind != "semver":
            raise ValueError("policy applies to semver tag filters only (tags: semver or semver:RANGE)")
        return value


ServiceName = Annotated[str, _matching(SERVICE_NAME, "Swarm service name")]


class RulesFile(BaseModel):
    model_config = _FROZEN

    defaults: Defaults = Defaults()
    services: dict[ServiceName, ServiceEntry]
    # nginx in front of the receiver and the services (``webhook-server render-nginx``); optional.
    proxy: ProxyConfig | None = None


class Rule(BaseModel):
    """A service's rule with defaults applied: what travels after loading."""

    model_config = _FROZEN

    service: str
    repository: str
    image: str
    tags: TagFilter
    policy: Policy | None
    update: UpdateSettings
    timeout: Duration
    notify: tuple[SecretStr, ...] = ()
    notify_on: tuple[NotifyEvent, ...] = DEFAULT_NOTIFY_ON

    @property
    def is_semver(self) -> bool:
        return self.tags.kind == "semver"

    @property
    def effective_policy(self) -> Policy:
        # Without an explicit policy a semver rule takes any newer release, never a pre-release.
        return self.policy or "major"

    def describe(self) -> str:
        """One line for ``check-rules``, durations written as in the file:
        ``acme/api → acme/api, tags semver, policy minor, timeout 5m, update 1 at a time every 5s,
        start-first, monitor 15s, on failure rollback``."""
        u = self.update
        target = self.repository if self.image == self.repository else f"{self.repository} → {self.image}"
        policy = f", policy {self.effective_policy}" if self.is_semver else ""
        batch = "all at once" if u.parallelism == 0 else f"{u.parallelism} at a time"
        ratio = f" (tolerating {u.max_failure_ratio:.0%} failed)" if u.max_failure_ratio else ""
        # How many, never which: the URLs hold tokens.
        notify = (
            f", notifies {len(self.notify)} URL(s) when {', '.join(self.notify_on) or 'never'}" if self.notify else ""
        )
        return (
            f"{target}, tags {self.tags}{policy}, timeout {self.timeout}, update {batch} every {u.delay}, "
            f"{u.order}, monitor {u.monitor}, on failure {u.failure_action}{ratio}{notify}"
        )


class RuleSet(BaseModel):
    model_config = _FROZEN

    rules: dict[str, Rule]
    proxy: ProxyConfig | None = None
    # Pushes are matched by repository: an index, so a push costs the same with 10 rules or 10,000.
    _by_repository: dict[str, list[Rule]] = PrivateAttr(default_factory=dict)
    # The file these rules were read from and its mtime just before: a process that inherits them (a gunicorn
    # worker) uses them as they are while the file is unchanged, instead of parsing it again.
    _read_from: tuple[Path, FileStamp] | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        for rule in self.rules.values():
            self._by_repository.setdefault(rule.repository, []).append(rule)

    @classmethod
    def from_file(cls, parsed: RulesFile) -> RuleSet:
        defaults = parsed.defaults
        rules = {}
        for name, entry in parsed.services.items():
            overrides = {k: v for k, v in entry.update if v is not None}
            # Every part was validated with the file (RulesFile): validating it again per rule took a third of
            # the time 10,000 rules need to load.
            rules[name] = Rule.model_construct(
                service=name,
                repository=entry.repository,
                image=entry.image or entry.repository,
                tags=entry.tags,
                policy=entry.policy,
                update=defaults.update.model_copy(update=overrides) if overrides else defaults.update,
                timeout=entry.timeout if entry.timeout is not None else defaults.timeout,
                notify=entry.notify if entry.notify is not None else defaults.notify,
                notify_on=entry.notify_on if entry.notify_on is not None else defaults.notify_on,
            )
        return cls(rules=rules, proxy=parsed.proxy)

    def for_repository(self, repository: str) -> list[Rule]:
        return list(self._by_repository.get(repository.lower(), ()))

    def get(self, service: str) -> Rule | None:
        return self.rules.get(service)


def load_rules(path: Path | str) -> RuleSet:
    """Read and validate a rules file; raise RulesError listing every located problem."""
    path = Path(path)
    stamp = _stamp(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RulesError(str(path), [f"cannot read: {e.strerror or e}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RulesError(
            str(path), [f"line {line}: not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}"]
        ) from None
    rules = parse_rules(text, source=str(path))
    if stamp is not None:
        rules._read_from = (path.absolute(), stamp)
    return rules


# The file's identity and last change: ctime moves with every write or rename, even one that restores the
# mtime (an edit picked up only when gunicorn starts new workers on SIGHUP must not look unchanged).
FileStamp = tuple[int, int, int]


def _stamp(path: Path) -> FileStamp | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_ino, found.st_mtime_ns, found.st_ctime_ns)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    """Validate rules text; raise RulesError listing every located problem."""
    try:
        with _collector_paused():
            return _parse_rules(text, source)
    except RecursionError:
        # PyYAML and pydantic recurse per level: deep nesting or an alias inside itself exhausts the stack.
        raise RulesError(source, ["nested too deeply, or a YAML alias (*name) refers to itself"]) from None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Parsing makes a dozen objects per rule and frees few: Python's cycle collector, run again and again
    over them and over all else the process holds, took more than half the time 10,000 rules need."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _parse_rules(text: str, source: str) -> RuleSet:
    try:
        root, data = _load_yaml(text)
    except yaml.YAMLError as fast:
        e = _python_yaml_error(text) or fast
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise RulesError(source, [f"{where}not valid YAML: {getattr(e, 'problem', None) or e}"]) from None
    found = list(_duplicate_keys(root))
    if not isinstance(data, dict):
        found.append("the file must be a mapping with a 'services:' section")
        raise RulesError(source, found)
    try:
        parsed = RulesFile.model_validate(data)
    except ValidationError as e:
        for loc, text in problems.problems(e, model=RulesFile):
            line = _line_of(root, loc)
            where = f"line {line}: " if line else ""
            found.append(f"{where}{problems.dotted(loc) or '(top level)'}: {text}")
    if found:
        raise RulesError(source, found)
    return RuleSet.from_file(parsed)


def _load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers and duplicate keys) and its data, from one parse, with
    libyaml when PyYAML has it: 10,000 rules parse in well under a second instead of four."""
    loader = yaml.CSafeLoader(text) if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def _python_yaml_error(text: str) -> yaml.YAMLError | None:
    """PyYAML's own parser on a file libyaml refused: slower, but its messages say more ("expected <block
    end>, but found '<block mapping start>'" where libyaml says "did not find expected key")."""
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        return e
    return None


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node that ``loc`` reaches."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(node: yaml.Node | None, path: str = "") -> Iterator[str]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = str(k.value)
            where = f"{path}.{key}" if path else key
            if key in seen:
                yield f"line {k.start_mark.line + 1}: {where}: duplicate key"
            seen.add(key)
            yield from _duplicate_keys(v, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]")


class RulesSource:
    """The rules file as the server sees it: reloaded when it changes, the last good version kept.

    Constructing one never raises: a gunicorn worker that a broken file stopped from booting would make
    gunicorn halt the whole server (WORKER_BOOT_ERROR). Instead the source starts on ``fallback`` (the last
    good rules its caller has, e.g. those the master loaded at start) or on no rules at all, and ``error``
    says what is wrong (``/readyz`` reports it) until the file is fixed. An edit that breaks the file later
    never stops deployments already possible either.
    """

    def __init__(self, path: Path | str, *, fallback: RuleSet | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # Stat before reading: an edit landing between the two is then seen as a change and read again.
        self._mtime = _mtime(self.path)
        self._rules: RuleSet | None = fallback
        self.error: str | None = None
        if fallback is not None and fallback._read_from == (self.path.absolute(), _stamp(self.path)):
            return  # the fallback is this file as it is now (the master read it before forking)
        if not self._load():
            kept = "the rules loaded at start" if fallback is not None else "no rules"
            _log.error("serving with %s until the file is fixed: %s", kept, self.error)

    @property
    def loaded(self) -> bool:
        """False while running on no rules at all (the file never loaded and there was no fallback).

        Like ``error``, it reflects the last :meth:`current` call, which is what re-reads a changed file."""
        return self._rules is not None

    def _load(self) -> bool:
        """Read the file; on success it becomes the rules in force, else ``error`` says why."""
        try:
            rules = load_rules(self.path)
        except RulesError as e:
            self.error = e.message
            return False
        except Exception as e:
            # load_rules turns every known problem into RulesError; anything else is a bug in this module,
            # and it must cost a reload, not a worker or a request.
            _log.exception("unexpected error loading %s", self.path)
            self.error = RulesError(str(self.path), [f"cannot load: {type(e).__name__}: {e}"]).message
            return False
        self._rules, self.error = rules, None
        return True

    def current(self) -> RuleSet:
        """The rules in force, re-reading the file first if it changed; empty when none ever loaded."""
        with self._lock:
            mtime = _mtime(self.path)
            if mtime != self._mtime:
                self._mtime = mtime
                if self._load():
                    _log.info("reloaded %s", self.path)
                else:
                    kept = "keeping the previous rules" if self._rules is not None else "still no rules"
                    _log.error("%s: %s", kept, self.error)
            return self._rules if self._rules is not None else _NO_RULES


_NO_RULES = RuleSet(rules={})
