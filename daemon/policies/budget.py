"""Budget caps: warnings on actual and forecast spend, and graded enforcement steps.

Each budget rule is evaluated on every poll batch against the spend model (`spend.py`):

- a `warn_at` threshold alerts the rule's routes once per month for actual spend and once for
  the forecast (several crossed at once make one alert naming the highest; a threshold actual
  spend has passed is not announced again as a forecast); the warnings resolve when the month
  ends;
- an `enforce` step is in force while month-to-date spend is at or above its percentage. Steps
  act only on a bill of the current month read no longer than `max_bill_age` ago, each target
  once per month, at most `max_per_hour` targets per step in any hour, in dry run unless the
  step says `mode: enforce`, and, with `approval`, only after `cloudpilot approve ID`.

Decision keys are `<rule>/<month>/<step>/<action>/<target>`: the ledger holds each once, so a
restart repeats nothing, and the per-hour limit is rebuilt from the ledger's times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from daemon.client.errors import ProviderError
from daemon.client.plans import PlanCatalogue
from daemon.facts import Facts, PodFact, ServerFact
from daemon.models import Decision, Event, Mode
from daemon.notifications import Severity, event_alert
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Hold, Problems
from daemon.policies.spend import (
    Reconciled,
    Spend,
    SpendModel,
    month_of,
    pod_in_scope,
    server_in_scope,
)
from daemon.rules.compiled import BudgetRule, BudgetStep, RuleSet
from daemon.rules.vocabulary import Where
from daemon.state.store import BudgetRecord, LedgerEntry, Store

Logger = structlog.typing.FilteringBoundLogger

WARNING = "budget.warning"
ENFORCE = "budget.enforce"
APPROVAL = "budget.approval"
STATE_SCOPE = "state"
APPROVAL_SCOPE = "approval:"
HOUR = timedelta(hours=1)
POWER_READS_AT_ONCE = 4
_KINDS = ("actual", "forecast")


@dataclass(slots=True)
class Budgeted:
    """What one evaluation decided: decisions, their events, records to store, alerts to end."""

    decisions: list[Decision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    records: list[BudgetRecord] = field(default_factory=list)
    resolve: list[str] = field(default_factory=list)
    resolve_prefixes: list[str] = field(default_factory=list)

    def extend(self, other: Budgeted) -> None:
        """Add another evaluation's results to these."""
        self.decisions += other.decisions
        self.events += other.events
        self.records += other.records
        self.resolve += other.resolve
        self.resolve_prefixes += other.resolve_prefixes


@dataclass(frozen=True, slots=True)
class StepView:
    """One step as things stand: in force or not, and what it would touch now."""

    step: BudgetStep
    in_force: bool
    targets: tuple[str, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return the view as JSON-able data."""
        return {
            "step": self.step.label,
            "at": self.step.at,
            "mode": self.step.mode.value,
            "in_force": self.in_force,
            "targets": list(self.targets),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A budget as its last evaluation saw it, for /status and `cloudpilot plan`."""

    rule: str
    scope: str
    cap: float
    spend: Spend | None
    note: str = ""
    steps: tuple[StepView, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the view as JSON-able data."""
        spend = self.spend
        return {
            "rule": self.rule,
            "scope": self.scope,
            "cap_euros": self.cap,
            "billed_euros": None if spend is None else round(spend.billed, 2),
            "estimated_euros": None if spend is None else round(spend.estimated, 2),
            "forecast_euros": None if spend is None else round(spend.forecast, 2),
            "burn_euros_per_hour": None if spend is None else round(spend.rate, 4),
            "percent": None if spend is None else round(spend.percent(self.cap), 1),
            "billed_until": None if spend is None else spend.billed_until.isoformat(),
            "unpriced": [] if spend is None else list(spend.unpriced),
            "note": self.note,
            "steps": [step.as_dict() for step in self.steps],
        }


@dataclass(slots=True)
class _Warned:
    """The thresholds a budget has announced this month, for actual and forecast spend."""

    month: str
    actual: set[float] = field(default_factory=set)
    forecast: set[float] = field(default_factory=set)

    def record(self, rule: str, now: datetime) -> BudgetRecord:
        """Return the record that keeps these across restarts."""
        return BudgetRecord(
            rule,
            STATE_SCOPE,
            self.month,
            now,
            {"warned": {"actual": sorted(self.actual), "forecast": sorted(self.forecast)}},
        )


@dataclass(frozen=True, slots=True)
class _Target:
    """One server or pod a step would act on."""

    action: str  # power_off | delete_pod
    id: str  # the server name or pod uuid
    name: str
    params: Mapping[str, Any]
    about: str  # words for alerts and plan output


# Ends the key of a step's dry-run decision (`…/power_off/ec600003#dry_run`).
DRY_RUN_MARK = "#dry_run"


def approval_id(decision_key: str) -> str:
    """Return the short id `cloudpilot approve` takes for a decision awaiting approval."""
    return hashlib.sha256(decision_key.encode()).hexdigest()[:10]


def _where(readings: Mapping[str, Where], kind: str) -> tuple[str, str]:
    """Return the request and field the spend's `kind` of data comes from (bill, server, pod)."""
    where = readings.get(kind) or readings.get("server")
    return (where.endpoint, where.field) if where is not None else ("", "")


def _holds(
    rule: BudgetRule, spend: Spend, unusable: str | None, readings: Mapping[str, Where]
) -> list[Hold]:
    """Return what keeps a budget from counting or acting on its spend fully."""
    bill = _where(readings, "bill")
    holds = [Hold(rule.name, "*", "bill_stale", unusable, *bill)] if unusable else []
    for item in spend.unpriced:
        kind = item.partition(":")[0]
        holds.append(
            Hold(
                rule.name,
                item,
                "unpriced",
                f"{item} runs but its price is unknown: the estimate counts it as free",
                *_where(readings, kind),
            )
        )
    return holds


class BudgetPolicy:
    """Evaluate budget rules: spend gauges, warnings, enforcement decisions, the scale-up gate."""

    def __init__(
        self,
        *,
        facts: Facts,
        metrics: Metrics,
        log: Logger,
        plans: Callable[[], PlanCatalogue],
        problems: Problems,
        billed: str,
        gpu_prices: Mapping[str, float] | None = None,
        readings: Mapping[str, Where] | None = None,
    ) -> None:
        self._readings = dict(readings or {})
        self._facts = facts
        self._metrics = metrics
        self._problems = problems
        self._log = log
        self.power: dict[str, str] = {}
        self.model = SpendModel(
            facts, plans=plans, gpu_prices=gpu_prices or {}, power=self.power.get, billed=billed
        )
        self._rules: tuple[BudgetRule, ...] = ()
        self._warned: dict[str, _Warned] = {}
        self._decided: set[str] = set()
        self._acted: dict[tuple[str, str], list[datetime]] = {}
        self._waiting: dict[str, BudgetRecord] = {}
        self._spend: dict[str, Spend] = {}
        self._estimate_error: dict[str, float] = {}
        """Estimate minus bill at each budget's last reconciliation, in EUR."""
        self._evaluated_at: datetime | None = None
        self.views: dict[str, BudgetView] = {}
        metrics.read_from(self.series)

    @property
    def active(self) -> bool:
        """Return whether any budget rule is enabled."""
        return any(rule.enabled for rule in self._rules)

    def replace_rules(self, rules: RuleSet) -> None:
        """Use the budget rules of a new rule set."""
        self._rules = rules.budgets
        names = {rule.name for rule in self._rules}
        for gone in [name for name in self.views if name not in names]:
            del self.views[gone]
            self._spend.pop(gone, None)
            self._estimate_error.pop(gone, None)
        self.model.forget(names)

    # --- memory across restarts ------------------------------------------------------------------

    async def remember(self, store: Store, entries: Iterable[LedgerEntry], now: datetime) -> None:
        """Learn this month's warnings, decisions, the last hour's actions and open approvals."""
        month = month_of(now)
        for rule in self._rules:
            record = await store.get_budget(rule.name, STATE_SCOPE, month)
            warned = (record.data.get("warned") if record else None) or {}
            self._warned[rule.name] = _Warned(
                month,
                {float(p) for p in warned.get("actual", ())},
                {float(p) for p in warned.get("forecast", ())},
            )
        for entry in entries:
            parts = _parse_key(entry.key)
            if parts is None:
                continue
            name, key_month, label = parts
            if key_month == month:
                self._decided.add(entry.key)
            if now - entry.decision.time < HOUR:
                lane = _lane(name, label, entry.decision.mode)
                self._acted.setdefault(lane, []).append(entry.decision.time)
        for record in await store.budgets(scope_prefix=APPROVAL_SCOPE):
            if record.month == month:
                # Refused or timed out: not asked again this month; acted: in the ledger.
                self._decided.add(str(record.data.get("decision_key")))
            if record.data.get("state") in ("waiting", "approved"):
                self._waiting[str(record.data.get("id"))] = record
                self._acted.setdefault((record.rule, str(record.data.get("step"))), []).append(
                    _time(record.data.get("requested_at"), now)
                )

    # --- power state -----------------------------------------------------------------------------

    async def refresh_power(self, power_state: Callable[[str], Awaitable[str]]) -> None:
        """Read the power state of the servers budgets count; unknown counts as running."""
        wanted = [
            server.name
            for server in self._facts.servers_of(self.model.billed_provider)
            if any(rule.enabled and server_in_scope(rule.scope, server) for rule in self._rules)
        ]
        gate = asyncio.Semaphore(POWER_READS_AT_ONCE)

        async def read(name: str) -> None:
            async with gate:
                try:
                    self.power[name] = await power_state(name)
                except ProviderError as exc:
                    self.power.pop(name, None)
                    self._log.warning("budget_power_read_failed", server=name, error=str(exc))

        await asyncio.gather(*(read(name) for name in wanted))
        for name in set(self.power) - set(wanted):
            del self.power[name]

    # --- approvals -------------------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """Return whether any decision waits for approval."""
        return bool(self._waiting)

    async def approvals(self, store: Store, now: datetime) -> Budgeted:
        """Act on approvals given (`cloudpilot approve`), refused or timed out since last time."""
        out = Budgeted()
        if not self._waiting:
            return out
        rules = {rule.name: rule for rule in self._rules if rule.enabled}
        for record in await store.budgets(scope_prefix=APPROVAL_SCOPE):
            ident = str(record.data.get("id"))
            if ident not in self._waiting:
                continue
            state = record.data.get("state")
            rule = rules.get(record.rule)
            alert = f"{record.rule}/{record.month}/approve/{ident}"
            if state == "approved" and rule is not None:
                self._act(rule, record, "approved", now, out)
                acted = {**record.data, "state": "acted"}
                out.records.append(dataclasses.replace(record, updated_at=now, data=acted))
            elif state == "waiting" and now >= _time(record.data.get("expires_at"), now):
                then = "proceeded" if record.data.get("on_timeout") == "proceed" else "expired"
                data = {**record.data, "state": then, "decided_at": now.isoformat()}
                data["decided_by"] = "timeout"
                written = await store.transition_budget(
                    record.rule, record.scope, record.month, expect="waiting", data=data, now=now
                )
                if written is None:
                    continue  # decided meanwhile: seen next time
                if then == "proceeded" and rule is not None:
                    self._act(rule, written, then, now, out)
                else:
                    self._count(record.rule, str(record.data.get("step")), then)
                    self._log.warning("budget_approval_expired", rule=record.rule, id=ident)
                    self._close(record)
            elif state not in ("waiting", "approved"):
                self._count(record.rule, str(record.data.get("step")), str(state))
                self._log.info("budget_approval_closed", rule=record.rule, id=ident, state=state)
                self._close(record)
            else:
                continue
            out.resolve.append(alert)
        return out

    def _close(self, record: BudgetRecord) -> None:
        """Forget a request refused or timed out; its target is not asked about again this month."""
        self._waiting.pop(str(record.data.get("id")), None)
        self._decided.add(str(record.data.get("decision_key")))

    def _act(
        self, rule: BudgetRule, record: BudgetRecord, how: str, now: datetime, out: Budgeted
    ) -> None:
        data = record.data
        key = str(data["decision_key"])
        event = _enforce_event(rule, key, str(data.get("target")), dict(data), now)
        out.events.append(event)
        out.decisions.append(
            Decision(
                key=key,
                rule=rule.name,
                action=str(data["action"]),
                params=dict(data["params"]),
                mode=Mode.ENFORCE,
                event=event,
                time=now,
            )
        )
        self._decided.add(key)
        self._waiting.pop(str(data.get("id")), None)
        self._count(rule.name, str(data.get("step")), how)
        self._log.warning("budget_approval_acted", rule=rule.name, id=data.get("id"), how=how)

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate(self, now: datetime) -> Budgeted:
        """Update spend gauges, warn, and decide what each step in force does now."""
        out = Budgeted()
        self._evaluated_at = now
        for rule in self._rules:
            if not rule.enabled:
                self._problems.settle(rule.name, ())
                continue
            try:
                spend, reconciled = self.model.spend(rule.name, rule.scope, now)
            except LookupError as exc:
                self._spend.pop(rule.name, None)
                self.views[rule.name] = BudgetView(
                    rule.name, rule.scope.describe(), rule.cap, None, str(exc)
                )
                hold = Hold(rule.name, "*", "no_bill", str(exc), *_where(self._readings, "bill"))
                self._problems.settle(rule.name, [hold])
                continue
            self._spend[rule.name] = spend
            if reconciled is not None:
                self._reconciled(rule, reconciled)
            self._warn(rule, spend, now, out)
            unusable = self._unusable(rule, spend, now)
            self.views[rule.name] = BudgetView(
                rule.name,
                rule.scope.describe(),
                rule.cap,
                spend,
                unusable or "",
                tuple(self._step(rule, step, spend, now, out) for step in rule.steps),
            )
            self._problems.settle(rule.name, _holds(rule, spend, unusable, self._readings))
        return out

    def _reconciled(self, rule: BudgetRule, reconciled: Reconciled) -> None:
        self._estimate_error[rule.name] = reconciled.error
        self._log.info(
            "budget_reconciled",
            rule=rule.name,
            since=reconciled.lo.isoformat(),
            until=reconciled.hi.isoformat(),
            estimated=round(reconciled.estimated, 2),
            billed=round(reconciled.billed, 2),
        )

    def series(self) -> Iterator[Sample]:
        """Return each budget's spend, cap, ratio, burn and estimate error (the scrape's reader).

        A budget whose spend is unknown (no bill read) has only its estimate error, if any.
        """
        metrics = self._metrics
        for name, view in self.views.items():
            spend = view.spend
            if spend is None:
                continue
            labels = (name,)
            yield metrics.budget_spend, (name, "billed"), spend.billed
            yield metrics.budget_spend, (name, "estimated"), spend.estimated
            yield metrics.budget_spend, (name, "forecast"), spend.forecast
            yield metrics.budget_cap, labels, view.cap
            yield metrics.budget_ratio, labels, spend.estimated / view.cap
            yield metrics.budget_burn, labels, spend.rate
        for name, error in self._estimate_error.items():
            yield metrics.budget_estimate_error, (name,), error

    # --- warnings --------------------------------------------------------------------------------

    def _warn(self, rule: BudgetRule, spend: Spend, now: datetime, out: Budgeted) -> None:
        warned = self._warned.get(rule.name)
        if warned is None or warned.month != spend.month:
            if warned is not None:
                # A new month: last month's warnings end, and counting starts again.
                out.resolve_prefixes.append(f"{rule.name}/{warned.month}/")
                self._decided = {k for k in self._decided if f"/{spend.month}/" in k}
            warned = self._warned[rule.name] = _Warned(spend.month)
        actual = spend.percent(rule.cap)
        crossed = [p for p in rule.warn_at if actual >= p and p not in warned.actual]
        if crossed:
            warned.actual.update(crossed)
            # Spend that has passed a threshold needs no forecast saying it will.
            warned.forecast.update(p for p in rule.warn_at if p <= max(crossed))
        ahead = spend.forecast_percent(rule.cap)
        foreseen = [p for p in rule.warn_at if ahead >= p and p not in warned.forecast]
        warned.forecast.update(foreseen)
        for kind, passed in (("actual", crossed), ("forecast", foreseen)):
            if passed:
                self._alert_warning(rule, spend, kind, max(passed), now, out)
        if crossed or foreseen:
            out.records.append(warned.record(rule.name, now))

    def _alert_warning(
        self,
        rule: BudgetRule,
        spend: Spend,
        kind: str,
        threshold: float,
        now: datetime,
        out: Budgeted,
    ) -> None:
        month = spend.month
        cap = f"{rule.cap:g} EUR"
        if kind == "actual":
            summary = (
                f"{rule.name}: {spend.estimated:.2f} EUR spent in {month} is "
                f"{spend.percent(rule.cap):.0f}% of the {cap} cap (passed {threshold:g}%)"
            )
        else:
            summary = (
                f"{rule.name}: {month} is heading for {spend.forecast:.2f} EUR, "
                f"{spend.forecast_percent(rule.cap):.0f}% of the {cap} cap "
                f"(forecast passes {threshold:g}%)"
            )
        detail = (
            f"Scope: {rule.scope.describe()}. Billed {spend.billed:.2f} EUR up to "
            f"{spend.billed_until.isoformat()}, estimated {spend.unbilled:.2f} EUR since; "
            f"burning {spend.rate:.3f} EUR/hour."
        )
        label = f"{threshold:g}"
        event = Event(
            type=WARNING,
            key=f"{WARNING}:{rule.name}:{month}:{kind}:{label}",
            time=now,
            resource=f"{month}/{kind}/{label}",
            data={
                "rule": rule.name,
                "month": month,
                "kind": kind,
                "threshold": threshold,
                "cap": rule.cap,
                "billed": round(spend.billed, 2),
                "estimated": round(spend.estimated, 2),
                "forecast": round(spend.forecast, 2),
                "summary": summary,
                "detail": detail,
            },
            source="budget",
        )
        out.events.append(event)
        out.decisions.append(
            # Warnings go out whatever the mode: dry run is about enforcement.
            event_alert(
                f"{rule.name}/{month}/warn/{kind}/{label}",
                rule.name,
                event,
                severity=Severity.CRITICAL if threshold >= 100 else Severity.WARNING,
                labels={
                    "budget": rule.name,
                    "spend": kind,
                    "threshold": label,
                    "scope": rule.scope.describe(),
                },
                to=rule.to,
            )
        )
        self._metrics.budget_warnings.labels(rule.name, kind).inc()
        self._log.warning("budget_warning", rule=rule.name, kind=kind, threshold=threshold)

    # --- enforcement -----------------------------------------------------------------------------

    def _unusable(self, rule: BudgetRule, spend: Spend, now: datetime) -> str | None:
        """Return why no step may act on this spend, or None when steps may act."""
        age = (now - spend.bill_read_at).total_seconds()
        if age > rule.max_bill_age_s:
            return (
                f"the bill was read {age / 3600:.1f} h ago, more than max_bill_age "
                f"({rule.max_bill_age_s / 3600:g} h): no step acts on stale data"
            )
        return None

    def _step(
        self, rule: BudgetRule, step: BudgetStep, spend: Spend, now: datetime, out: Budgeted
    ) -> StepView:
        percent = spend.percent(rule.cap)
        if percent < step.at:
            return StepView(step, False, note=f"spend is at {percent:.0f}%, under {step.at:g}%")
        why = self._unusable(rule, spend, now)
        if why is not None:
            return StepView(step, True, note=why)
        if step.kind == "block_scale_up":
            if step.mode is Mode.DRY_RUN:
                return StepView(step, True, note="dry run: scale-ups go ahead, logged as denied")
            return StepView(step, True, note="scale-ups in the budget's scope are refused")
        lane = _lane(rule.name, step.label, step.mode)
        hour = [at for at in self._acted.get(lane, []) if now - at < HOUR]
        self._acted[lane] = hour
        targets = self._targets(rule, step, spend.month)
        room = max(0, step.max_per_hour - len(hour))
        chosen, later = targets[:room], targets[room:]
        for target in chosen:
            key = decision_key(rule.name, spend.month, step, target)
            hour.append(now)
            if step.approval_timeout_s is not None and step.mode is Mode.ENFORCE:
                self._request_approval(rule, step, target, key, spend.month, now, out)
            else:
                self._decide(rule, step, target, key, now, out)
        if later:
            self._count(rule.name, step.label, "limited", len(later))
        note = f"{len(later)} more wait for max_per_hour ({step.max_per_hour})" if later else ""
        return StepView(step, True, tuple(t.about for t in chosen), note)

    def _targets(self, rule: BudgetRule, step: BudgetStep, month: str) -> list[_Target]:
        """Return what the step would act on, in order, leaving out what it already did."""
        waiting = {str(r.data.get("decision_key")) for r in self._waiting.values()}

        def fresh(target: _Target) -> bool:
            key = decision_key(rule.name, month, step, target)
            return key not in self._decided and key not in waiting

        if step.kind == "power_off":
            assert step.servers is not None
            selector = step.servers
            catalogue = self.model.plans()
            servers = [
                server
                for server in self._facts.servers_of(self.model.billed_provider)
                if selector.matches(server)
                and server_in_scope(rule.scope, server)
                and self.power.get(server.name) in (None, "RUNNING")
            ]
            # The dearest first: the most saved per server touched.
            servers.sort(key=lambda s: (-(catalogue.hourly_price(s.plan) or 0.0), s.name))
            return [t for t in (_power_off(s) for s in servers) if fresh(t)]
        assert step.cluster is not None
        pods = [
            pod
            for pod in self._facts.pods.values()
            if pod.cluster == step.cluster
            and pod.online
            and not pod.in_deletion
            and pod_in_scope(rule.scope, pod)
        ]
        oldest = datetime.min.replace(tzinfo=UTC)
        pods.sort(key=lambda p: (p.created_at or oldest, p.uuid), reverse=True)
        doomed = pods[: max(0, len(pods) - step.keep)]
        return [t for t in map(_delete_pod, doomed) if fresh(t)]

    def _decide(
        self,
        rule: BudgetRule,
        step: BudgetStep,
        target: _Target,
        key: str,
        now: datetime,
        out: Budgeted,
    ) -> None:
        data = {"step": step.label, "action": target.action, "about": target.about}
        event = _enforce_event(rule, key, target.name, data, now)
        out.events.append(event)
        out.decisions.append(
            Decision(
                key=key,
                rule=rule.name,
                action=target.action,
                params=dict(target.params),
                mode=step.mode,
                event=event,
                time=now,
            )
        )
        self._decided.add(key)
        outcome = "decided" if step.mode is Mode.ENFORCE else "dry_run"
        self._count(rule.name, step.label, outcome)
        self._log.warning(
            "budget_enforcement",
            rule=rule.name,
            step=step.label,
            action=target.action,
            target=target.name,
            mode=step.mode.value,
        )

    def _request_approval(
        self,
        rule: BudgetRule,
        step: BudgetStep,
        target: _Target,
        key: str,
        month: str,
        now: datetime,
        out: Budgeted,
    ) -> None:
        assert step.approval_timeout_s is not None
        ident = approval_id(key)
        expires = now + timedelta(seconds=step.approval_timeout_s)
        record = BudgetRecord(
            rule.name,
            f"{APPROVAL_SCOPE}{ident}",
            month,
            now,
            {
                "id": ident,
                "state": "waiting",
                "rule": rule.name,
                "step": step.label,
                "action": target.action,
                "target": target.name,
                "summary": target.about,
                "requested_at": now.isoformat(),
                "expires_at": expires.isoformat(),
                "on_timeout": step.on_timeout,
                "decision_key": key,
                "params": dict(target.params),
            },
        )
        out.records.append(record)
        self._waiting[ident] = record
        then = "go ahead" if step.on_timeout == "proceed" else "not happen"
        summary = (
            f"{rule.name} wants to {target.about}: run `cloudpilot approve {ident}` "
            f"(or `--reject`) by {expires.isoformat()}, else it will {then}"
        )
        event = Event(
            type=APPROVAL,
            key=f"{APPROVAL}:{key}",
            time=now,
            resource=f"{month}/approve/{ident}",
            data={"rule": rule.name, "id": ident, "summary": summary, "target": target.name},
            source="budget",
        )
        out.events.append(event)
        out.decisions.append(
            event_alert(
                f"{rule.name}/{month}/approve/{ident}",
                rule.name,
                event,
                severity=Severity.CRITICAL,
                labels={"budget": rule.name, "approval": ident},
                to=rule.to,
                describe=False,
            )
        )
        self._count(rule.name, step.label, "approval_requested")
        self._log.warning("budget_approval_requested", rule=rule.name, id=ident, target=target.name)

    # --- the scale-up gate -----------------------------------------------------------------------

    def allow_scale_up(
        self, rule: str, server: ServerFact, extra_monthly_euros: float | None
    ) -> tuple[bool, str]:
        """Refuse a scale-up while a block_scale_up step of a budget covering the server holds."""
        now = self._evaluated_at
        for budget in self._rules:
            spend = self._spend.get(budget.name)
            if not budget.enabled or spend is None or now is None:
                continue
            if self._unusable(budget, spend, now) is not None:
                continue
            if budget.scope.kind != "account" and not server_in_scope(budget.scope, server):
                continue
            percent = spend.percent(budget.cap)
            for step in budget.steps:
                if step.kind != "block_scale_up" or percent < step.at:
                    continue
                why = (
                    f"budget {budget.name} ({budget.scope.describe()}) is at {percent:.0f}% of "
                    f"its {budget.cap:g} EUR cap; step {step.label} refuses scale-ups from "
                    f"{step.at:g}%"
                )
                if step.mode is Mode.ENFORCE:
                    self._count(budget.name, step.label, "denied")
                    return False, why
                self._count(budget.name, step.label, "would_deny")
                self._log.info(
                    "budget_would_deny", rule=rule, server=server.name, budget=budget.name
                )
        return True, ""

    def _count(self, rule: str, step: str, outcome: str, by: int = 1) -> None:
        self._metrics.budget_enforcements.labels(rule, step, outcome).inc(by)


def _power_off(server: ServerFact) -> _Target:
    """Return the step that powers a server off, on the provider its fact came from."""
    notes = f" (notes: {server.notes})" if server.notes else ""
    return _Target(
        "power_off",
        server.name,
        server.name,
        {"server": server.name, "provider": server.provider},
        f"power off {server.name}{notes}",
    )


def _delete_pod(pod: PodFact) -> _Target:
    name = pod.name or pod.uuid
    return _Target(
        "delete_pod",
        pod.uuid,
        name,
        {"pod": pod.uuid, "cluster": pod.cluster, "name": name},
        f"delete GPU pod {name} ({pod.runtime_class}) in {pod.cluster}",
    )


def _enforce_event(
    rule: BudgetRule, key: str, target: str, data: Mapping[str, Any], now: datetime
) -> Event:
    return Event(
        type=ENFORCE,
        key=f"{ENFORCE}:{key}",
        time=now,
        resource=target,
        data={"rule": rule.name, "scope": rule.scope.describe(), **data},
        source="budget",
    )


def decision_key(rule: str, month: str, step: BudgetStep, target: _Target) -> str:
    """Return the identity of a step's decision on a target this month.

    A dry run has a key of its own: what a step decided in dry run must never stand in for the
    enforced decision once the step is switched to `mode: enforce`.
    """
    key = f"{rule}/{month}/{step.label}/{target.action}/{target.id}"
    return key + DRY_RUN_MARK if step.mode is Mode.DRY_RUN else key


def _lane(rule: str, label: str, mode: Mode) -> tuple[str, str]:
    """Return what `max_per_hour` counts in: dry runs apart, so they never hold enforcement back."""
    return (rule, label + DRY_RUN_MARK if mode is Mode.DRY_RUN else label)


def _parse_key(key: str) -> tuple[str, str, str] | None:
    """Return (rule, month, step label) of an enforcement decision key, else None."""
    parts = key.split("/", 4)
    if len(parts) != 5 or parts[3] not in ("power_off", "delete_pod") or ":" not in parts[2]:
        return None
    return parts[0], parts[1], parts[2]


def _time(text: object, default: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return default
