"""What a budget's scope has cost this month: billed, estimated since the bill, and forecast.

Bills lag real use by hours. The month-to-date figure is the bill plus an estimate of the use
since the instant the bill is complete up to (`billed_until`): the burn rate, integrated over
the rates seen since then. Burn rate is what runs now: Seeweb servers at their plan's hourly
price (unless known to be off), snapshot and template storage at what their bill rows cost per
hour, and online GPU pods at their runtime class's price (the configured table, else what the
GPU bill charged per online hour). When a later bill covers more hours, the estimate for those
hours is compared with what they were billed: that difference is the estimate's error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from daemon.client.plans import PlanCatalogue
from daemon.client.records import GpuPodBill, ServerBill
from daemon.facts import Facts, MonthBills, PodFact, ServerFact
from daemon.rules.compiled import BudgetScope

RUNNING = "RUNNING"
HOUR_S = 3600.0


def month_of(moment: datetime) -> str:
    """Return the calendar month of an instant in UTC, as `2026-11`."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def month_end(moment: datetime) -> datetime:
    """Return the first instant of the next calendar month (UTC)."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year + (utc.month == 12), utc.month % 12 + 1, 1, tzinfo=UTC)


def previous_month(month: str) -> str:
    """Return the month before `2026-11`-style `month`."""
    year, number = (int(part) for part in month.split("-"))
    return f"{year - (number == 1):04d}-{(number - 2) % 12 + 1:02d}"


@dataclass(frozen=True, slots=True)
class Spend:
    """One scope's spend at one instant, in EUR."""

    month: str
    billed: float
    unbilled: float
    rate: float  # EUR per hour, now
    forecast: float
    billed_until: datetime
    bill_read_at: datetime
    unpriced: tuple[str, ...] = ()  # what runs but has no known price (counted as free)

    @property
    def estimated(self) -> float:
        """Return month-to-date: the bill plus the estimate since it."""
        return self.billed + self.unbilled

    def percent(self, cap: float) -> float:
        """Return month-to-date as a percentage of `cap`."""
        return 100.0 * self.estimated / cap

    def forecast_percent(self, cap: float) -> float:
        """Return the forecast to month end as a percentage of `cap`."""
        return 100.0 * self.forecast / cap


@dataclass(frozen=True, slots=True)
class Burn:
    """What burns money now in a scope, item by item, in EUR per hour."""

    items: tuple[tuple[str, float], ...]
    unpriced: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        """Return the total EUR per hour."""
        return math.fsum(rate for _, rate in self.items)


@dataclass(slots=True)
class BurnHistory:
    """The burn rates seen since the bill's cut-off: each holds until the next one was seen."""

    rates: list[tuple[datetime, float]] = field(default_factory=list)

    def add(self, at: datetime, rate: float) -> None:
        """Remember the rate seen at `at` (a time before the last one is ignored)."""
        if self.rates and at < self.rates[-1][0]:
            return
        self.rates.append((at, rate))

    def integral(self, lo: datetime, hi: datetime) -> float:
        """Return the EUR burnt within [lo, hi): before the first rate seen, that rate holds."""
        if hi <= lo or not self.rates:
            return 0.0
        total = 0.0
        for index, (at, rate) in enumerate(self.rates):
            start = lo if index == 0 else max(lo, at)
            end = self.rates[index + 1][0] if index + 1 < len(self.rates) else hi
            end = min(end, hi)
            if end > start:
                total += rate * (end - start).total_seconds() / HOUR_S
        return total

    def forget_before(self, cutoff: datetime) -> None:
        """Drop rates wholly before `cutoff`, keeping the one in force at it."""
        while len(self.rates) > 1 and self.rates[1][0] <= cutoff:
            self.rates.pop(0)


@dataclass(frozen=True, slots=True)
class Reconciled:
    """A later bill covered hours the model had estimated: what it said and what they cost."""

    lo: datetime
    hi: datetime
    estimated: float
    billed: float

    @property
    def error(self) -> float:
        """Return estimate minus bill, in EUR (positive: the estimate ran high)."""
        return self.estimated - self.billed


class SpendModel:
    """Compute scopes' spend from the bills in facts, server power, plans and GPU prices."""

    def __init__(
        self,
        facts: Facts,
        *,
        plans: Callable[[], PlanCatalogue],
        gpu_prices: Mapping[str, float],
        power: Callable[[str], str | None] = lambda _name: None,
        billed: str,
    ) -> None:
        self.billed_provider = billed
        """The provider whose servers the bills list (the one offering `billing` for servers)."""
        self._facts = facts
        self.plans = plans
        self._gpu_prices = dict(gpu_prices)
        self._power = power
        self._history: dict[str, BurnHistory] = {}
        self._last: dict[str, tuple[datetime, float]] = {}  # key -> (billed_until, billed)

    def spend(self, key: str, scope: BudgetScope, now: datetime) -> tuple[Spend, Reconciled | None]:
        """Return the scope's spend now, and a reconciliation when the bill moved on.

        `key` names the history of burn rates (a budget rule's name). Raise LookupError when
        there is no bill for the current month yet.
        """
        bills = self._facts.bills
        month = month_of(now)
        if bills is None or bills.month != month:
            raise LookupError(f"no complete bill for {month} has been read yet")
        billed = self.billed(scope, bills)
        burn = self.burn(scope, bills)
        until = min(bills.billed_until or bills.observed_at, now)
        history = self._history.setdefault(key, BurnHistory())
        reconciled = None
        last = self._last.get(key)
        if last is not None and until < last[0] and month_of(last[0]) == month:
            # A bill is never less complete than an earlier one: the cut-off only looks earlier
            # when the rows that gave it are gone (a deleted server).
            until = last[0]
        if last is not None and last[0] != until:
            lo, was = last
            if until > lo and month_of(lo) == month:
                reconciled = Reconciled(lo, until, history.integral(lo, until), billed - was)
        if last is None or last[0] != until:
            self._last[key] = (until, billed)
            history.forget_before(until)
        history.add(now, burn.rate)
        unbilled = history.integral(until, now)
        left = max(0.0, (month_end(now) - now).total_seconds() / HOUR_S)
        estimated = billed + unbilled
        spend = Spend(
            month=month,
            billed=round(billed, 4),
            unbilled=round(unbilled, 4),
            rate=round(burn.rate, 6),
            forecast=round(estimated + burn.rate * left, 4),
            billed_until=until,
            bill_read_at=bills.observed_at,
            unpriced=burn.unpriced,
        )
        return spend, reconciled

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the rate histories of budgets no longer loaded."""
        wanted = set(keep)
        for key in list(self._history):
            if key not in wanted:
                del self._history[key]
                self._last.pop(key, None)

    # --- billed ----------------------------------------------------------------------------------

    def billed(self, scope: BudgetScope, bills: MonthBills) -> float:
        """Return what the bills charge the scope this month."""
        # The server list knows more of a server than its bill row does (its location).
        listed = {s.name: s for s in self._facts.servers_of(self.billed_provider)}
        parts = [row.cost for row in bills.servers if _in_scope(scope, listed.get(row.name) or row)]
        if scope.kind == "account":
            parts += [row.cost for row in bills.templates]
            parts.append(bills.snapshots_total)
        if scope.kind in ("account", "cluster"):
            parts += [row.cost for row in bills.gpu or () if _gpu_row_in_scope(scope, row)]
        return math.fsum(parts)

    # --- burning now -----------------------------------------------------------------------------

    def burn(self, scope: BudgetScope, bills: MonthBills) -> Burn:
        """Return what burns money in the scope now, per server, storage and pod."""
        items: list[tuple[str, float]] = []
        unpriced: list[str] = []
        if scope.kind != "cluster":
            self._servers(scope, bills, items, unpriced)
        if scope.kind == "account":
            for snap in bills.snapshots:
                if snap.snapshot_deleted_at is None and snap.hours:
                    items.append((f"snapshot:{snap.snapshot}", snap.final_cost / snap.hours))
            for template in bills.templates:
                if template.deletion_date is None and template.hours:
                    items.append((f"template:{template.name}", template.cost / template.hours))
        if scope.kind in ("account", "cluster"):
            self._pods(scope, bills, items, unpriced)
        return Burn(tuple(items), tuple(unpriced))

    def _servers(
        self,
        scope: BudgetScope,
        bills: MonthBills,
        items: list[tuple[str, float]],
        unpriced: list[str],
    ) -> None:
        catalogue = self.plans()
        rows = {row.name: row for row in bills.servers if row.deletion_date is None}
        listed = {s.name: s for s in self._facts.servers_of(self.billed_provider)}
        for name in sorted(rows.keys() | listed.keys()):
            fact, row = listed.get(name), rows.get(name)
            if not _in_scope(scope, fact if fact is not None else row):
                continue
            if fact is None and self._facts.polled_at.get("metrics") is not None:
                continue  # billed this month, but the server list says it is gone
            if self._power(name) not in (None, RUNNING):
                # Off: its hours are discounted (wholly, in the simulator); counted as free.
                continue
            plan = fact.plan if fact is not None else row.plan if row is not None else None
            price = catalogue.hourly_price(plan)
            if price is None and row is not None and row.billed_hours:
                price = row.cost / row.billed_hours
            if price is None:
                unpriced.append(f"server:{name}")
                continue
            items.append((f"server:{name}", price))

    def _pods(
        self,
        scope: BudgetScope,
        bills: MonthBills,
        items: list[tuple[str, float]],
        unpriced: list[str],
    ) -> None:
        learned = _learned_gpu_prices(bills.gpu or ())
        for pod in sorted(self._facts.pods.values(), key=lambda p: p.uuid):
            if not pod.online or (scope.kind == "cluster" and pod.cluster != scope.cluster):
                continue
            price = self._gpu_prices.get(pod.runtime_class, learned.get(pod.runtime_class))
            if price is None:
                unpriced.append(f"pod:{pod.name or pod.uuid}({pod.runtime_class})")
                continue
            items.append((f"pod:{pod.name or pod.uuid}", price))


def server_in_scope(scope: BudgetScope, server: ServerFact) -> bool:
    """Return whether a server belongs to a budget's scope (a GPU cluster has none)."""
    return _in_scope(scope, server)


def pod_in_scope(scope: BudgetScope, pod: PodFact) -> bool:
    """Return whether a GPU pod belongs to a budget's scope."""
    return scope.kind == "account" or (scope.kind == "cluster" and pod.cluster == scope.cluster)


def _in_scope(scope: BudgetScope, server: ServerFact | ServerBill | None) -> bool:
    if server is None:
        return False
    if scope.kind == "account":
        return True
    if scope.kind == "group":
        return server.group == scope.group
    if scope.kind == "servers":
        assert scope.servers is not None
        return scope.servers.matches(server)
    return False


def _gpu_row_in_scope(scope: BudgetScope, row: GpuPodBill) -> bool:
    if scope.kind == "account":
        return True
    return row.pod is not None and row.pod.cluster == scope.cluster


def _learned_gpu_prices(rows: Iterable[GpuPodBill]) -> dict[str, float]:
    """Return EUR per online hour by runtime class, as the GPU bill charged them."""
    cost: dict[str, float] = {}
    hours: dict[str, float] = {}
    for row in rows:
        if row.runtime_class and row.online_hour:
            cost[row.runtime_class] = cost.get(row.runtime_class, 0.0) + row.cost
            hours[row.runtime_class] = hours.get(row.runtime_class, 0.0) + row.online_hour
    return {name: cost[name] / hours[name] for name in cost if hours[name] > 0}
