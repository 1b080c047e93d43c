"""The alert book: alerts fire from decisions, resolve from later events, and queue notifications.

Everything here runs inside the poll batch's transaction, in event order: an event first
resolves the alerts it ends, then fires the alerts its decisions raise. So a failure and its fix
read in one poll reach the receivers as a firing and then a resolved notification, and a crash
before the commit loses nothing (the events come again) while one after it repeats nothing (the
notifications are already in the outbox, and the events are marked seen).

An alert's identity is `<rule>/<group>`: the rule's `throttle.group_by` values (or the event's
resource), the same across restarts and across instances. While an alert fires, new occurrences
update it and send nothing; Alertmanager hears it again from the dispatcher's refresh.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import structlog

from daemon.clock import Clock
from daemon.facts import Facts
from daemon.models import Decision, Event, Mode, Outcome, OutcomeStatus
from daemon.notifications import (
    DESCRIPTION_LIMIT,
    SUMMARY_LIMIT,
    AlertStatus,
    Notification,
    Severity,
    dedup_key,
)
from daemon.notify.alert_action import AlertParams, ResolveParams
from daemon.notify.templates import AlertTemplate
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics
from daemon.rules.compiled import CompiledRule, RuleSet
from daemon.rules.match import MISSING, value_getter
from daemon.rules.memory import MemoryEntry, MemoryKind
from daemon.state.store import AlertRecord, Batch, LedgerState, Store

Logger = structlog.typing.FilteringBoundLogger

ALERT_ACTION = "alert"
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(slots=True)
class Settled:
    """What one batch did to alerts: destinations with new deliveries, throttles to forget.

    The counts are for after the commit: a batch that rolls back changed nothing.
    """

    destinations: set[str] = field(default_factory=set)
    forget: list[MemoryEntry] = field(default_factory=list)
    changes: list[tuple[str, str]] = field(default_factory=list)  # (rule, fired|repeated|resolved)
    outcomes: list[str] = field(default_factory=list)  # the alert decisions' outcome statuses


@dataclass(frozen=True, slots=True)
class _Resolver:
    """A rule whose alerts end when an event of one of `types` shares the `same` fields."""

    rule: str
    types: tuple[str, ...]
    same: tuple[str, ...]

    def meets(self, event_type: str) -> bool:
        """Return whether an event of this type may resolve the rule's alerts."""
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.types)


def field_text(event: Event, path: str) -> str:
    """Return the text of one event field ("" when missing or null), as groups write it."""
    value = value_getter(path)(event)
    if value is MISSING or value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def resolve_key(event: Event, same: Iterable[str]) -> str:
    """Return the JSON text of the `same` fields of an event: equal keys resolve each other."""
    return json.dumps([field_text(event, path) for path in same], ensure_ascii=False)


def group_labels(rule: CompiledRule, event: Event) -> dict[str, str]:
    """Return a label per `group_by` field other than resource (`data.type` → `type`)."""
    paths = rule.throttle.group_by if rule.throttle is not None else ("resource",)
    labels: dict[str, str] = {}
    for path in paths:
        if path == "resource":
            continue
        name = _LABEL_UNSAFE.sub("_", path.rsplit(".", 1)[-1])
        if not name or name[0].isdigit() or name in ("alertname", "severity", "resource"):
            name = f"group_{name}"
        labels[name] = field_text(event, path)
    return labels


def unknown_routes(rules: RuleSet, routes: Collection[str]) -> list[str]:
    """Return `file:line: field: reason` for each alert route that is not configured."""
    problems: list[str] = []
    known = ", ".join(sorted(routes)) or "none configured"
    in_file: dict[str, int] = {}
    for rule in rules.rules:
        position = in_file[rule.file] = in_file.get(rule.file, -1) + 1
        for index, step in enumerate(rule.steps):
            if step.action != ALERT_ACTION:
                continue
            for route in step.params.get("to", ()):
                if route not in routes:
                    problems.append(
                        f"{rule.where}: rules[{position}].do[{index}].alert.to: "
                        f"unknown route {route!r} (known: {known})"
                    )
    for scaler in rules.autoscale:
        for route in scaler.to:
            if route not in routes:
                problems.append(
                    f"{scaler.where}: {scaler.name}.autoscale.to: "
                    f"unknown route {route!r} (known: {known})"
                )
    for budget in rules.budgets:
        for route in budget.to:
            if route not in routes:
                problems.append(
                    f"{budget.where}: {budget.name}.budget.to: "
                    f"unknown route {route!r} (known: {known})"
                )
    guard = rules.guard_in_force
    for route in guard.to:
        if route not in routes:
            problems.append(f"{guard.file}: guard.to: unknown route {route!r} (known: {known})")
    return problems


@lru_cache(maxsize=512)
def _template(source: str) -> AlertTemplate:
    return AlertTemplate(source)


class AlertBook:
    """Raise and resolve alerts in the store, and queue their notifications in the outbox."""

    def __init__(
        self,
        *,
        rules: RuleSet,
        routes: Mapping[str, tuple[str, ...]],
        store: Store,
        facts: Facts,
        metrics: Metrics,
        clock: Clock,
        log: Logger,
        on_queued: Callable[[set[str]], None] = lambda _destinations: None,
    ) -> None:
        self._routes = routes
        self._store = store
        self._facts = facts
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._on_queued = on_queued
        self._rules = rules
        self._resolvers: list[_Resolver] = []
        self._by_type: dict[str, list[_Resolver]] = {}
        # Alerts firing by rule, as the store last said. A rule whose alerts all resolved reads
        # 0 (not absent) while it is loaded, so a query on it sees them end.
        self._firing: dict[str, int] = {}
        self._loaded: frozenset[str] = frozenset()
        self.replace_rules(rules)
        metrics.read_from(self.series)

    def replace_rules(self, rules: RuleSet) -> None:
        """Use new rules: their alert steps say which events resolve which alerts."""
        self._rules = rules
        self._resolvers = []
        for rule in rules.rules:
            for step in rule.steps:
                if step.action != ALERT_ACTION or not step.params.get("resolve"):
                    continue
                resolve = ResolveParams.model_validate(step.params["resolve"])
                if resolve.on:
                    self._resolvers.append(
                        _Resolver(rule.name, tuple(resolve.on), tuple(resolve.same))
                    )
        self._by_type = {}
        self._loaded = frozenset(
            [rule.name for rule in rules.rules]
            + [rule.name for rule in rules.autoscale]
            + [rule.name for rule in rules.budgets]
        )
        self._firing = {rule: n for rule, n in self._firing.items() if n or rule in self._loaded}

    def unknown_routes(self, rules: RuleSet) -> list[str]:
        """Return a problem per alert step naming a route the config does not have."""
        return unknown_routes(rules, self._routes)

    async def settle(
        self, batch: Batch, events: Sequence[Event], decisions: Sequence[Decision], now: datetime
    ) -> Settled:
        """Resolve and raise alerts for one batch, in event order, inside its transaction."""
        settled = Settled()
        raising: dict[str, list[Decision]] = {}
        for decision in decisions:
            if (
                decision.action == ALERT_ACTION
                and decision.mode is Mode.ENFORCE
                and decision.event is not None
            ):
                raising.setdefault(decision.event.key, []).append(decision)
        if not raising and not self._resolvers:
            return settled
        for event in events:
            for resolver in self._resolvers_for(event.type):
                await self._resolve(batch, resolver, event, now, settled)
            for decision in raising.get(event.key, ()):
                outcome = await self._raise(batch, decision, now, settled)
                state = LedgerState(outcome.status.value)
                await batch.mark_finished(decision.key, state, outcome.detail, now)
                settled.outcomes.append(outcome.status.value)
        return settled

    async def committed(self, settled: Settled) -> None:
        """Wake the dispatcher for a committed batch's deliveries, and count what it did."""
        if settled.destinations:
            self._on_queued(settled.destinations)
        for outcome in settled.outcomes:
            self._metrics.actions.labels(ALERT_ACTION, outcome).inc()
        for rule, change in settled.changes:
            self._metrics.alert_changes.labels(rule, change).inc()
        if any(change != "repeated" for _, change in settled.changes):
            try:
                await self.count_firing()
            except Exception as exc:  # only a gauge: the batch has committed, go on
                self._log.error("alert_gauge_failed", error=f"{type(exc).__name__}: {exc}")

    async def count_firing(self) -> None:
        """Count the alerts firing by rule in the store (0 for a rule whose alerts resolved)."""
        counts = {rule: 0 for rule in self._firing if rule in self._loaded}
        for alert in await self._store.firing_alerts():
            counts[alert.rule] = counts.get(alert.rule, 0) + 1
        self._firing = counts

    @property
    def firing(self) -> int:
        """Return how many alerts fire now, as last counted."""
        return sum(self._firing.values())

    def series(self) -> Iterator[Sample]:
        """Return the alerts firing by rule (the scrape's reader)."""
        gauge = self._metrics.alerts_firing
        for rule, count in self._firing.items():
            yield gauge, (rule,), count

    async def raise_alert(self, decision: Decision) -> Outcome:
        """Raise a decision's alert in a transaction of its own (the runner's path)."""
        settled = Settled()
        async with self._store.batch() as batch:
            outcome = await self._raise(batch, decision, self._clock.now(), settled)
        await self.committed(settled)
        return outcome

    # --- raising ---------------------------------------------------------------------------------

    async def _raise(
        self, batch: Batch, decision: Decision, now: datetime, settled: Settled
    ) -> Outcome:
        event = decision.event
        if event is None:
            return Outcome(OutcomeStatus.SKIPPED, "an alert needs the event that raised it")
        params = AlertParams.model_validate(decision.params)
        rule = self._rules.get(decision.rule)
        group = rule.group(event) if rule is not None else event.resource
        key = f"{decision.rule}/{group}"
        existing = await batch.get_alert(key)
        if existing is not None and existing.status == AlertStatus.FIRING:
            await batch.put_alert(
                dataclasses.replace(
                    existing,
                    updated_at=now,
                    data={**existing.data, "count": int(existing.data.get("count", 1)) + 1},
                )
            )
            settled.changes.append((decision.rule, "repeated"))
            since = existing.started_at.isoformat()
            return Outcome(OutcomeStatus.SKIPPED, f"already firing since {since}; not sent again")
        notification = self._notification(decision.rule, rule, params, event, key)
        routes = [route for route in params.to if route in self._routes]
        for missing in sorted(set(params.to) - set(routes)):
            self._log.error("alert_route_unknown", rule=decision.rule, route=missing)
        await batch.put_alert(
            AlertRecord(
                key=key,
                rule=decision.rule,
                status=AlertStatus.FIRING.value,
                started_at=notification.started_at,
                updated_at=now,
                data={
                    "notification": notification.as_dict(),
                    "routes": routes,
                    "group": group,
                    "count": 1,
                    "resolve_after_s": params.resolve.after if params.resolve else None,
                },
                resolve_key=resolve_key(event, params.resolve.same) if params.resolve else "",
            )
        )
        await self._enqueue(batch, notification, routes, now, settled)
        settled.changes.append((decision.rule, "fired"))
        self._log.warning(
            "alert_fired",
            rule=decision.rule,
            alert=key,
            severity=params.severity,
            resource=event.resource,
            routes=routes,
        )
        return Outcome(OutcomeStatus.DONE, f"queued for {', '.join(routes) or 'no route'}")

    def _notification(
        self,
        rule_name: str,
        rule: CompiledRule | None,
        params: AlertParams,
        event: Event,
        key: str,
    ) -> Notification:
        context = self._context(rule_name, event, params.severity)
        summary = self._render(rule_name, "summary", params.summary, context, SUMMARY_LIMIT)
        if not summary:
            summary = f"{rule_name}: {event.type} on {event.resource or 'unknown resource'}"
        description = self._render(
            rule_name, "description", params.description, context, DESCRIPTION_LIMIT
        )
        labels = {
            **(group_labels(rule, event) if rule is not None else {}),
            **params.labels,
            "alertname": rule_name,
            "severity": params.severity,
            "resource": event.resource,
        }
        return Notification(
            alert_key=key,
            dedup_key=dedup_key(key),
            rule=rule_name,
            status=AlertStatus.FIRING,
            severity=Severity(params.severity),
            summary=summary,
            description=description,
            resource=event.resource,
            labels=labels,
            started_at=event.time,
            event=_event_data(event),
        )

    def _context(self, rule: str, event: Event, severity: str) -> dict[str, Any]:
        server = next(
            (
                dataclasses.asdict(fact)
                for fact in self._facts.servers.values()
                if fact.name == event.resource or fact.id == event.resource
            ),
            {},
        )
        return {"event": _event_data(event), "rule": rule, "severity": severity, "server": server}

    def _render(
        self, rule: str, part: str, source: str, context: Mapping[str, Any], limit: int
    ) -> str:
        if not source:
            return ""
        text, error = _template(source).render(context, limit)
        if error is not None:
            self._metrics.template_errors.labels(rule).inc()
            self._log.warning("alert_template_failed", rule=rule, part=part, error=error)
        return text

    # --- resolving -------------------------------------------------------------------------------

    def _resolvers_for(self, event_type: str) -> list[_Resolver]:
        found = self._by_type.get(event_type)
        if found is None:
            found = [resolver for resolver in self._resolvers if resolver.meets(event_type)]
            if len(self._by_type) >= 4096:
                self._by_type.clear()  # event types partly come from provider text
            self._by_type[event_type] = found
        return found

    async def _resolve(
        self, batch: Batch, resolver: _Resolver, event: Event, now: datetime, settled: Settled
    ) -> None:
        matching = await batch.firing_alerts_matching(
            resolver.rule, resolve_key(event, resolver.same)
        )
        for alert in matching:
            if event.time < alert.started_at:
                continue  # an older event read late does not end a newer failure
            await self._end(batch, alert, event.time, _event_data(event), now, settled)
            self._log.info("alert_resolved", rule=alert.rule, alert=alert.key, by_event=event.key)

    async def resolve_prefixed(self, prefixes: Sequence[str]) -> None:
        """End every firing alert whose key starts with one of `prefixes` (a month's warnings)."""
        starts = tuple(prefixes)
        for alert in await self._store.firing_alerts():
            if alert.key.startswith(starts):
                await self.resolve_alert(alert.key)

    async def resolve_alert(self, key: str) -> bool:
        """End a firing alert by its key, in a transaction of its own; return whether one was."""
        settled = Settled()
        now = self._clock.now()
        async with self._store.batch() as batch:
            alert = await batch.get_alert(key)
            if alert is None or alert.status != AlertStatus.FIRING:
                return False
            await self._end(batch, alert, now, {}, now, settled)
        self._log.info("alert_resolved", rule=alert.rule, alert=key, by="effect")
        await self.committed(settled)
        return True

    async def expire(self) -> int:
        """Resolve the alerts whose `resolve.after` has passed since they last occurred."""
        now = self._clock.now()
        due = [alert for alert in await self._store.firing_alerts() if _quiet_until(alert) <= now]
        if not due:
            return 0
        settled = Settled()
        async with self._store.batch() as batch:
            for candidate in due:
                alert = await batch.get_alert(candidate.key)
                if alert is None or alert.status != AlertStatus.FIRING or _quiet_until(alert) > now:
                    continue  # resolved or repeated meanwhile
                await self._end(batch, alert, now, {}, now, settled)
                self._log.info("alert_resolved", rule=alert.rule, alert=alert.key, by="after")
        await self.committed(settled)
        return len(settled.changes)

    async def _end(
        self,
        batch: Batch,
        alert: AlertRecord,
        ended_at: datetime,
        event: Mapping[str, Any],
        now: datetime,
        settled: Settled,
    ) -> None:
        fired = Notification.from_dict(alert.data["notification"])
        notification = dataclasses.replace(
            fired, status=AlertStatus.RESOLVED, ended_at=ended_at, event=event or fired.event
        )
        await batch.put_alert(
            dataclasses.replace(
                alert,
                status=AlertStatus.RESOLVED.value,
                updated_at=now,
                data={**alert.data, "notification": notification.as_dict()},
            )
        )
        routes = [route for route in alert.data.get("routes", ()) if route in self._routes]
        await self._enqueue(batch, notification, routes, now, settled)
        # A new failure after the fix is a new alert, whatever the throttle remembers.
        group = str(alert.data.get("group", ""))
        settled.forget.append(MemoryEntry(MemoryKind.THROTTLE, alert.rule, group, now))
        settled.changes.append((alert.rule, "resolved"))

    async def _enqueue(
        self,
        batch: Batch,
        notification: Notification,
        routes: Iterable[str],
        now: datetime,
        settled: Settled,
    ) -> None:
        # One key per firing cycle and change: two cycles may start at the same provider second.
        delivery_key = (
            f"{notification.alert_key}@{notification.started_at.isoformat()}"
            f"/{notification.status.value}/{notification.event.get('key', '')}"
        )
        for route in routes:
            for destination in self._routes[route]:
                if await batch.enqueue(destination, delivery_key, notification, now):
                    settled.destinations.add(destination)


def _quiet_until(alert: AlertRecord) -> datetime:
    """Return when a firing alert resolves on its own: `resolve.after` past its last occurrence."""
    after = alert.data.get("resolve_after_s")
    if after is None:
        return datetime.max.replace(tzinfo=UTC)
    return alert.updated_at + timedelta(seconds=float(after))


def _event_data(event: Event) -> dict[str, Any]:
    data = event.as_dict()
    data["time"] = event.time.isoformat()
    return data
