"""Evaluate events against compiled rules: pure, synchronous, and fast on the common path."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from daemon.engine.cel import CelCondition, CelInput
from daemon.engine.match import Predicate
from daemon.engine.schema import DEFAULT_RISKY
from daemon.facts import Facts
from daemon.models import Decision, Event, Mode
from daemon.policies.scaling import ScalingSpec
from daemon.policies.selector import ServerSelector
from daemon.state.store import MemoryEntry, MemoryKind

Concurrency = Literal["queued", "parallel", "single"]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How the runner runs one rule's decisions: concurrency mode, parallel limit, timeout."""

    concurrency: Concurrency = "queued"
    max_running: int = 10
    timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ActionStep:
    """One `do` entry: the action's registry name and its validated parameters as data."""

    action: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Throttle:
    """Decide at most once per `once_within_s` for each group."""

    once_within_s: float
    group_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FirstSeen:
    """Go on only for a combination of values not seen by the rule within `within_s`.

    `group` gives an event's combination: the values at the `by` paths joined with `|`.
    """

    within_s: float
    by: tuple[str, ...]
    group: Callable[[Event], str]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A validated rule with its tests compiled, ready to meet events."""

    name: str
    file: str
    line: int
    on: str
    steps: tuple[ActionStep, ...]
    mode: Mode = Mode.ENFORCE
    enabled: bool = True
    description: str = ""
    match: Predicate | None = None
    when: CelCondition | None = None
    for_s: float | None = None
    throttle: Throttle | None = None
    first_seen: FirstSeen | None = None
    group: Callable[[Event], str] = field(default=lambda event: event.resource)
    run: RunOptions = RunOptions()

    @property
    def where(self) -> str:
        """Return `file:line` of the rule's definition."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class GuardSpec:
    """The guard section: risky action types and the snapshot taken before them."""

    risky: tuple[str, ...] = DEFAULT_RISKY
    snapshot_first: bool = True
    snapshot_timeout_s: float = 1800.0
    keep_snapshots: int = 3
    file: str = ""
    verify_timeout_s: float = 600.0
    rollback_on_failure: bool = False
    to: tuple[str, ...] = ()


DEFAULT_GUARD = GuardSpec()


@dataclass(frozen=True, slots=True)
class AutoscaleRule:
    """A compiled `autoscale:` rule: which servers, and the scaling settings."""

    name: str
    file: str
    line: int
    provider: str
    servers: ServerSelector
    spec: ScalingSpec
    mode: Mode = Mode.ENFORCE
    enabled: bool = True
    description: str = ""
    snapshot: str | None = None
    to: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """Return `file:line` of the rule's definition."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """What a budget counts: `account`, `group`, `servers` (a selector) or `k8sgpu` (a cluster)."""

    kind: Literal["account", "group", "servers", "k8sgpu"]
    group: str | None = None
    servers: ServerSelector | None = None
    cluster: str | None = None

    def describe(self) -> str:
        """Return the scope in words, e.g. `group eg1` or `servers notes=*batch*`."""
        if self.kind == "group":
            return f"group {self.group}"
        if self.kind == "servers":
            assert self.servers is not None
            return f"servers {self.servers.describe()}"
        if self.kind == "k8sgpu":
            return f"k8sgpu cluster {self.cluster}"
        return "account"


@dataclass(frozen=True, slots=True)
class BudgetStep:
    """One graded enforcement step of a budget, at `at` percent of the cap."""

    index: int
    at: float
    kind: Literal["block_scale_up", "power_off", "delete_gpu_pods"]
    mode: Mode = Mode.DRY_RUN
    servers: ServerSelector | None = None  # power_off
    cluster: str | None = None  # delete_gpu_pods
    keep: int = 0  # delete_gpu_pods
    max_per_hour: int = 5
    approval_timeout_s: float | None = None  # None: no approval needed
    on_timeout: Literal["cancel", "proceed"] = "cancel"

    @property
    def label(self) -> str:
        """Return the step's name in metrics and logs, e.g. `2:power_off`."""
        return f"{self.index}:{self.kind}"


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A compiled `budget:` rule: its scope, monthly cap in EUR, warnings and steps."""

    name: str
    file: str
    line: int
    scope: BudgetScope
    cap: float
    warn_at: tuple[float, ...] = (80.0, 100.0)
    to: tuple[str, ...] = ()
    steps: tuple[BudgetStep, ...] = ()
    mode: Mode = Mode.ENFORCE
    enabled: bool = True
    description: str = ""
    max_bill_age_s: float = 3 * 3600.0

    @property
    def where(self) -> str:
        """Return `file:line` of the rule's definition."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every rule loaded from the rule files, in load order, and the guard if one was given."""

    rules: tuple[CompiledRule, ...] = ()
    guard: GuardSpec | None = None
    files: tuple[str, ...] = ()
    autoscale: tuple[AutoscaleRule, ...] = ()
    budgets: tuple[BudgetRule, ...] = ()

    def __len__(self) -> int:
        events = sum(1 for rule in self.rules if rule.enabled)
        scalers = sum(1 for rule in self.autoscale if rule.enabled)
        return events + scalers + sum(1 for rule in self.budgets if rule.enabled)

    @property
    def guard_in_force(self) -> GuardSpec:
        """Return the guard section, or the defaults when no file has one."""
        return self.guard or DEFAULT_GUARD

    def get(self, name: str) -> CompiledRule | None:
        """Return the rule called `name`, or None."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one evaluation decided, and the timing memory it wants kept or forgotten."""

    decisions: list[Decision]
    put: list[MemoryEntry]
    drop: list[MemoryEntry]


class EngineObserver(Protocol):
    """Hears what the engine does, to count it; the only side effect evaluation has."""

    def matched(self, rule: str) -> None:
        """Count an event that met a rule's conditions."""
        ...

    def decided(self, rule: str, mode: Mode) -> None:
        """Count one decision."""
        ...

    def error(self, rule: str, event: Event, message: str) -> None:
        """Report a condition that could not be evaluated for an event."""
        ...

    def stale(self, event: Event) -> None:
        """Count an event too old to act on."""
        ...


_MemoryKey = tuple[MemoryKind, str, str]
_DEFAULT_RUN = RunOptions()
_TYPE_CACHE_LIMIT = 4096


class _RuleIndex:
    """Which enabled rules an event type meets: exact types in a dict, globs tried once per type."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self._exact: dict[str, list[CompiledRule]] = {}
        self._globs: list[CompiledRule] = []
        self._ordered = [rule for rule in rules if rule.enabled]
        # Only `first_seen` rules look at stale events (to learn from them, never to decide).
        self.learns = any(rule.first_seen is not None for rule in self._ordered)
        for rule in self._ordered:
            if any(char in rule.on for char in "*?["):
                self._globs.append(rule)
            else:
                self._exact.setdefault(rule.on, []).append(rule)
        self.by_type: dict[str, tuple[CompiledRule, ...]] = {}

    def rules_for(self, event_type: str) -> tuple[CompiledRule, ...]:
        """Return the rules meeting `event_type`, in load order."""
        found = self.by_type.get(event_type)
        if found is None:
            exact = self._exact.get(event_type, [])
            globbed = [rule for rule in self._globs if fnmatch.fnmatchcase(event_type, rule.on)]
            if globbed:
                chosen = {id(rule) for rule in exact + globbed}
                found = tuple(rule for rule in self._ordered if id(rule) in chosen)
            else:
                found = tuple(exact)
            if len(self.by_type) >= _TYPE_CACHE_LIMIT:
                self.by_type.clear()  # k8sgpu event kinds come from the API: stay bounded
            self.by_type[event_type] = found
        return found


class Engine:
    """Turns events into decisions by the rules, remembering windows, throttles, values seen."""

    def __init__(
        self,
        rules: RuleSet,
        *,
        stale_after: float,
        memory: Iterable[MemoryEntry] = (),
        observer: EngineObserver | None = None,
    ) -> None:
        self._rules = rules
        self._index = _RuleIndex(rules.rules)
        self._stale_after = timedelta(seconds=stale_after)
        self._observer = observer
        self._memory: dict[_MemoryKey, MemoryEntry] = {}
        # Memory of rules not in force: unused, and listed by `expired` until it is dropped.
        self._orphans: dict[_MemoryKey, MemoryEntry] = {}
        self._sort_memory({(entry.kind, entry.rule, entry.group): entry for entry in memory})

    @property
    def rules(self) -> RuleSet:
        """Return the rules in force."""
        return self._rules

    @property
    def memory(self) -> list[MemoryEntry]:
        """Return the timing memory in force."""
        return list(self._memory.values())

    def run_options(self, rule_name: str) -> RunOptions:
        """Return how the runner runs a rule's decisions (defaults for unknown rules)."""
        rule = self._rules.get(rule_name)
        return rule.run if rule is not None else _DEFAULT_RUN

    def replace_rules(self, rules: RuleSet) -> None:
        """Put new rules in force, keeping the memory of rules whose name still exists."""
        self._rules = rules
        self._index = _RuleIndex(rules.rules)
        # A rule back under its old name finds its memory again, as after a restart.
        self._sort_memory({**self._orphans, **self._memory})

    def _sort_memory(self, memory: Mapping[_MemoryKey, MemoryEntry]) -> None:
        """Keep the memory of rules in force; set the rest aside for `expired`."""
        names = {rule.name for rule in self._rules.rules}
        self._memory = {key: entry for key, entry in memory.items() if entry.rule in names}
        self._orphans = {key: entry for key, entry in memory.items() if entry.rule not in names}

    def apply(self, evaluation: Evaluation) -> None:
        """Commit an evaluation's memory changes, once the store has committed them too."""
        for entry in evaluation.drop:
            key = (entry.kind, entry.rule, entry.group)
            self._memory.pop(key, None)
            self._orphans.pop(key, None)
        for entry in evaluation.put:
            self._memory[(entry.kind, entry.rule, entry.group)] = entry

    def expired(self, now: datetime) -> list[MemoryEntry]:
        """Return the memory that can be forgotten at `now` without changing any later decision.

        That is: every entry of a rule no longer in force; `seen` and `throttle` entries whose
        window (`first_seen.within`, `throttle.once_within`) ended more than the staleness limit
        before `now` (an event older than that limit never decides, so no event that may still
        decide falls inside the window); and `seen`, `throttle` and `for` entries of a rule that
        no longer has `first_seen`, `throttle` or `for`. Drop them from the store, then commit
        with `apply(Evaluation([], [], entries))` before the next `plan`.
        """
        rules = {rule.name: rule for rule in self._rules.rules}
        found = list(self._orphans.values())
        for entry in self._memory.values():
            rule = rules.get(entry.rule)
            if rule is None:
                found.append(entry)
                continue
            window: float | None
            if entry.kind == MemoryKind.SEEN:
                window = rule.first_seen.within_s if rule.first_seen is not None else None
            elif entry.kind == MemoryKind.THROTTLE:
                window = rule.throttle.once_within_s if rule.throttle is not None else None
            elif entry.kind == MemoryKind.FOR:
                if rule.for_s is None:
                    found.append(entry)
                continue
            else:
                continue
            if window is None or now - entry.since >= timedelta(seconds=window) + self._stale_after:
                found.append(entry)
        return found

    def evaluate(self, events: Sequence[Event], facts: Facts, now: datetime) -> list[Decision]:
        """Return the decisions the rules make for these events."""
        return self.plan(events, facts, now).decisions

    def plan(self, events: Sequence[Event], facts: Facts, now: datetime) -> Evaluation:
        """Return the decisions and memory changes for these events, changing nothing."""
        memory = _Overlay(self._memory)
        decisions: list[Decision] = []
        observer = self._observer
        known_types = self._index.by_type
        learns = self._index.learns
        oldest = now - self._stale_after
        for event in events:
            rules = known_types.get(event.type)
            if rules is None:
                rules = self._index.rules_for(event.type)
            if not rules:
                continue
            if event.time < oldest:
                if observer is not None:
                    observer.stale(event)
                if learns:
                    self._learn(rules, event, memory)
                continue
            source: CelInput | None = None
            # The hot loop: most rules fail here, so it stays inline and allocates nothing.
            for rule in rules:
                met = rule.match is None or rule.match(event)
                if met and rule.when is not None:
                    if source is None:
                        source = CelInput(event)
                    met, error = rule.when.check(source)
                    if error is not None and observer is not None:
                        observer.error(rule.name, event, error)
                if met:
                    if observer is not None:
                        observer.matched(rule.name)
                    self._settle(rule, event, now, memory, decisions)
                elif rule.for_s is not None:
                    memory.forget((MemoryKind.FOR, rule.name, rule.group(event)))
        return memory.evaluation(decisions)

    def _learn(self, rules: Sequence[CompiledRule], event: Event, memory: _Overlay) -> None:
        """Let a stale event refresh what `first_seen` rules have seen; it decides nothing."""
        source: CelInput | None = None
        for rule in rules:
            first_seen = rule.first_seen
            if first_seen is None or (rule.match is not None and not rule.match(event)):
                continue
            if rule.when is not None:
                if source is None:
                    source = CelInput(event)
                met, error = rule.when.check(source)
                if error is not None and self._observer is not None:
                    self._observer.error(rule.name, event, error)
                if not met:
                    continue
            _first_sighting(rule.name, first_seen, event, memory)

    def _settle(
        self,
        rule: CompiledRule,
        event: Event,
        now: datetime,
        memory: _Overlay,
        decisions: list[Decision],
    ) -> None:
        """Decide for an event that met the rule's conditions, unless a gate says not (yet).

        The gates, in order: `first_seen` (values seen lately), `for`, throttle.
        """
        first_seen = rule.first_seen
        if first_seen is not None and not _first_sighting(rule.name, first_seen, event, memory):
            return
        group = rule.group(event)
        if rule.for_s is not None:
            key = (MemoryKind.FOR, rule.name, group)
            window = memory.get(key)
            if window is None:
                window = memory.put(MemoryEntry(MemoryKind.FOR, rule.name, group, event.time))
            if (event.time - window.since).total_seconds() < rule.for_s:
                return
        if rule.throttle is not None:
            last = memory.get((MemoryKind.THROTTLE, rule.name, group))
            if last is not None and (
                (event.time - last.since).total_seconds() < rule.throttle.once_within_s
            ):
                return
            memory.put(MemoryEntry(MemoryKind.THROTTLE, rule.name, group, event.time))
        for index, step in enumerate(rule.steps):
            decisions.append(
                Decision(
                    key=f"{rule.name}/{index}/{event.key}",
                    rule=rule.name,
                    action=step.action,
                    params=step.params,
                    mode=rule.mode,
                    event=event,
                    time=now,
                )
            )
            if self._observer is not None:
                self._observer.decided(rule.name, rule.mode)


def _first_sighting(rule: str, first_seen: FirstSeen, event: Event, memory: _Overlay) -> bool:
    """Remember the event's values as seen at its time; return whether they count as new.

    They are new when the rule never saw them, or last saw them at least `within` before the
    event. The remembered time only moves forward, whatever order events arrive in.
    """
    group = first_seen.group(event)
    last = memory.get((MemoryKind.SEEN, rule, group))
    if last is None:
        memory.put(MemoryEntry(MemoryKind.SEEN, rule, group, event.time))
        return True
    if event.time > last.since:
        memory.put(MemoryEntry(MemoryKind.SEEN, rule, group, event.time))
    return (event.time - last.since).total_seconds() >= first_seen.within_s


class _Overlay:
    """The engine's memory as one evaluation sees it: changes on top, the committed state below."""

    __slots__ = ("_base", "_changes")

    def __init__(self, base: Mapping[_MemoryKey, MemoryEntry]) -> None:
        self._base = base
        self._changes: dict[_MemoryKey, MemoryEntry | None] = {}

    def get(self, key: _MemoryKey) -> MemoryEntry | None:
        """Return the entry under `key` as of now in this evaluation."""
        if key in self._changes:
            return self._changes[key]
        return self._base.get(key)

    def put(self, entry: MemoryEntry) -> MemoryEntry:
        """Remember `entry`, replacing any under the same kind, rule and group."""
        self._changes[(entry.kind, entry.rule, entry.group)] = entry
        return entry

    def forget(self, key: _MemoryKey) -> None:
        """Forget the entry under `key`, if there is one."""
        if self.get(key) is not None:
            self._changes[key] = None

    def evaluation(self, decisions: list[Decision]) -> Evaluation:
        """Return the decisions with the memory to put and to drop."""
        put: list[MemoryEntry] = []
        drop: list[MemoryEntry] = []
        for key, entry in self._changes.items():
            if entry is not None:
                put.append(entry)
            elif (old := self._base.get(key)) is not None:
                drop.append(old)
        return Evaluation(decisions, put, drop)
