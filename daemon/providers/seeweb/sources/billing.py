"""Month-to-date spend from the Seeweb bills (servers, templates, snapshots) and GPU bills."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.client.errors import ProviderError
from daemon.client.records import GpuPodBill, ServerBilling
from daemon.clock import Clock
from daemon.facts import Facts, MonthBills, MonthCost
from daemon.models import Event
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.providers.seeweb.client import SeewebClient
from daemon.sources.base import cursor_map, iso
from daemon.state.store import Cursor


@dataclass(frozen=True, slots=True)
class MonthBill:
    """One provider's bill for the month so far: its total, its split by scope, its detail."""

    name: str  # "seeweb" or "k8sgpu": the event type's prefix
    total: float
    scopes: dict[str, float]
    billed_until: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, Any] = field(default_factory=dict)


class BillingSource:
    """Keep month-to-date cost per scope in facts and gauges; say when a bill's total changed."""

    name = "billing"

    def __init__(
        self,
        client: SeewebClient,
        facts: Facts,
        clock: Clock,
        *,
        metrics: Metrics,
        k8sgpu: K8sGpuClient | None = None,
    ) -> None:
        self._client = client
        self._facts = facts
        self._clock = clock
        self._metrics = metrics
        self._k8sgpu = k8sgpu
        metrics.read_from(self.series)

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return a `<bill>.billing.updated` event per bill whose total moved since the cursor."""
        now = self._clock.now()
        month = f"{now.year:04d}-{now.month:02d}"
        bills = [await self._seeweb_bill(now)]
        if self._k8sgpu is not None:
            bills.append(await self._gpu_bill(self._k8sgpu, now))
        self._update_costs(month, bills, now)
        seeweb = bills[0].rows
        gpu: tuple[GpuPodBill, ...] | None = bills[1].rows["pods"] if len(bills) > 1 else None
        self._facts.bills = MonthBills(
            month=month,
            observed_at=now,
            billed_until=bills[0].billed_until,
            servers=seeweb["servers"],
            templates=seeweb["templates"],
            snapshots=seeweb["snapshots"],
            snapshots_total=seeweb["snapshots_total"],
            gpu=gpu,
        )
        same_month = cursor is not None and cursor.get("month") == month
        previous = cursor_map(cursor, "totals") if same_month else {}
        events = [
            self._event(bill, month, previous.get(bill.name), now)
            for bill in bills
            if previous.get(bill.name) != bill.total
        ]
        return events, {"month": month, "totals": {bill.name: bill.total for bill in bills}}

    async def _seeweb_bill(self, now: datetime) -> MonthBill:
        servers = await self._client.billing_servers(now.year, now.month)
        templates = await self._client.billing_templates(now.year, now.month)
        snapshots = await self._client.billing_snapshots(now.year, now.month)
        _check_month("seeweb", "/billing/snapshots", snapshots.year, snapshots.month, now)
        for kind, bill in (("servers", servers.rows), ("templates", templates.rows)):
            for row in bill:
                if row.year is not None and row.month is not None:
                    _check_month("seeweb", f"/billing/{kind}", row.year, row.month, now, row.name)
        scopes: dict[str, float] = defaultdict(float)
        for row in servers.rows:
            scopes[f"server:{row.name}"] += row.cost
            if row.group:
                scopes[f"group:{row.group}"] += row.cost
        parts = {
            "servers": servers.total_cost,
            "templates": templates.total_cost,
            "snapshots": snapshots.total_cost,
        }
        return MonthBill(
            name="seeweb",
            total=_euros(math.fsum(parts.values())),
            scopes=scopes,
            billed_until=estimate_billed_until(servers, now),
            detail={part: _euros(cost) for part, cost in parts.items()},
            rows={
                "servers": servers.rows,
                "templates": templates.rows,
                "snapshots": snapshots.rows,
                "snapshots_total": snapshots.total_cost,
            },
        )

    async def _gpu_bill(self, client: K8sGpuClient, now: datetime) -> MonthBill:
        bill = await client.billing(now.year, now.month)
        _check_month("k8sgpu", "/billing", bill.year, bill.month, now)
        clusters: dict[str, float] = defaultdict(float)
        for row in bill.pods:
            clusters[row.pod.cluster if row.pod and row.pod.cluster else ""] += row.cost
        return MonthBill(
            name="k8sgpu",
            total=_euros(bill.total_cost),
            scopes={f"k8sgpu:{cluster}": cost for cluster, cost in clusters.items()},
            detail={"clusters": {c: _euros(v) for c, v in sorted(clusters.items())}},
            rows={"pods": bill.pods},
        )

    def _update_costs(self, month: str, bills: list[MonthBill], now: datetime) -> None:
        until = bills[0].billed_until
        costs = {"account": math.fsum(bill.total for bill in bills)}
        for bill in bills:
            costs.update(bill.scopes)
        self._facts.month_cost = {
            scope: MonthCost(scope, month, _euros(euros), now, until)
            for scope, euros in costs.items()
        }

    def series(self) -> Iterator[Sample]:
        """Return the month-to-date cost of each scope in facts (the scrape's reader)."""
        gauge = self._metrics.month_cost
        for scope, cost in self._facts.month_cost.items():
            yield gauge, (scope,), cost.euros

    def _event(self, bill: MonthBill, month: str, previous: Any, now: datetime) -> Event:
        digest = hashlib.sha256(f"{bill.total:.2f}".encode()).hexdigest()[:12]
        return Event(
            type=f"{bill.name}.billing.updated",
            key=f"{bill.name}.billing:{month}:{digest}",
            time=now,
            resource="account" if bill.name == "seeweb" else bill.name,
            data={
                "month": month,
                "total": bill.total,
                "previous_total": previous,
                "billed_until": iso(bill.billed_until),
                **bill.detail,
            },
            source=self.name,
        )


def _check_month(
    provider: str, path: str, year: int, month: int, now: datetime, row: str | None = None
) -> None:
    """Refuse a bill (or a row of one) that is not for the month asked for."""
    if (year, month) != (now.year, now.month):
        where = f" row {row!r}" if row else ""
        raise ProviderError(
            provider,
            "GET",
            f"{path}/{now.year:04d}/{now.month:02d}",
            f"{where.strip() + ': ' if where else ''}month: the bill is for "
            f"{year:04d}-{month:02d}, not {now.year:04d}-{now.month:02d}",
        )


def _euros(value: float) -> float:
    return round(value, 2)


def estimate_billed_until(bill: ServerBilling, now: datetime) -> datetime | None:
    """Return the instant the servers' bill is complete up to, as far as its rows tell.

    Bills count whole hours since a server's creation or the month's start: a server alive all
    along gives the cut-off exactly; others (deleted ones too) give earlier bounds, so the
    latest bound wins, and deleting the longest-running server does not move it back.
    """
    month_start = datetime(bill.year, bill.month, 1, tzinfo=UTC)
    bounds = [
        max(month_start, row.creation_date or month_start) + timedelta(hours=row.billed_hours)
        for row in bill.rows
        if row.billed_hours is not None
    ]
    return min(max(bounds), now) if bounds else None
