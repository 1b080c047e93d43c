"""Evaluate events against compiled rules: pure, synchronous, and fast on the common path."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from daemon.facts import Facts
from daemon.models import Decision, Event, Mode
from daemon.rules.cel import CelInput
from daemon.rules.compiled import CompiledRule, FirstSeen, RuleSet, RunOptions
from daemon.rules.memory import MemoryEntry, MemoryKind


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
