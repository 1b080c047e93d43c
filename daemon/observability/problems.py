"""What keeps Cloudpilot from doing its job right now, said once per cause and kept for `/status`.

Two kinds of trouble are quiet by nature, so they are collected here and made loud:

- **holds**: a policy cannot decide for a server because the data it needs is missing or odd (no
  priced plan, the server's plan not in the catalogue, no CPU samples). A hold is logged as a
  warning when it starts and once more when it ends, shown in `/status` and `cloudpilot plan`,
  and counted in `cloudpilot_policy_blocked{rule, reason}` for an alert to fire on;
- **unreadable items**: a list answer held an item that did not fit its record, so it was left
  out. Each is counted in `cloudpilot_parse_errors_total{provider, endpoint, field}`; the
  provider client logs it (once per item) and the latest are kept for `/status`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.client.base import RequestLog
from daemon.client.records import ItemProblem
from daemon.clock import Clock
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics

#: Why a policy holds, as the metric's `reason` label says it. A fixed set keeps the label bounded.
REASONS = {
    "plans_unavailable": "the plan list could not be read or is empty",
    "plan_not_in_catalogue": "the server's plan is not in the plan list",
    "no_priced_plan": "no plan of the server's family carries a monthly price",
    "cores_unknown": "the server's listing does not say how many cores it has",
    "no_cpu_samples": "the provider gives no CPU samples for the server",
    "cpu_samples_stale": "the newest CPU sample is too old to act on",
    "no_bill": "no complete bill for the month has been read",
    "bill_stale": "the bill is older than max_bill_age",
    "unpriced": "something runs that has no known price, so it is counted as free",
}

# The unreadable items kept for /status: the latest causes, each with its count.
MAX_UNREADABLE_SHOWN = 50


@dataclass(frozen=True, slots=True)
class Hold:
    """Why one rule cannot decide for one subject (a server, a pod, or `*` for the whole rule)."""

    rule: str
    subject: str
    reason: str
    detail: str
    endpoint: str | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown hold reason {self.reason!r}")

    @property
    def key(self) -> tuple[str, str, str]:
        """Return what makes two holds the same cause."""
        return (self.rule, self.subject, self.reason)

    def describe(self) -> str:
        """Return the hold in one line: the detail, and where the data should have come from."""
        where = " ".join(part for part in (self.endpoint, self.field) if part)
        return f"{self.detail} ({where})" if where else self.detail


@dataclass(slots=True)
class _Unreadable:
    provider: str
    endpoint: str
    field: str
    item: str
    error: str
    count: int
    first_seen: datetime
    last_seen: datetime


class Problems:
    """The holds in force and the unreadable items seen, with their log lines and metrics."""

    def __init__(self, *, metrics: Metrics, clock: Clock, log: RequestLog | None = None) -> None:
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._holds: dict[str, dict[tuple[str, str, str], tuple[Hold, datetime]]] = {}
        self._unreadable: OrderedDict[tuple[str, str, str, str], _Unreadable] = OrderedDict()
        # Subjects held, by rule and reason. A count that falls to 0 stays, also for a rule
        # forgotten, so an alert on `min_over_time` of it sees the hold end instead of a series
        # that stops (whose last values would keep it firing).
        self._blocked: dict[str, dict[str, int]] = {}
        metrics.read_from(self.series)

    # --- holds -----------------------------------------------------------------------------------

    def settle(self, rule: str, holds: Iterable[Hold]) -> None:
        """Make `holds` the rule's holds now: warn of new ones, note the ones that ended."""
        now = self._clock.now()
        before = self._holds.get(rule, {})
        after: dict[tuple[str, str, str], tuple[Hold, datetime]] = {}
        for hold in holds:
            if hold.rule != rule:
                raise ValueError(f"hold for rule {hold.rule!r} settled under {rule!r}")
            if hold.key in after:
                continue
            since = before[hold.key][1] if hold.key in before else now
            after[hold.key] = (hold, since)
            if hold.key not in before and self._log is not None:
                self._log.warning(
                    "policy_blocked",
                    rule=rule,
                    subject=hold.subject,
                    reason=hold.reason,
                    detail=hold.detail,
                    endpoint=hold.endpoint,
                    field=hold.field,
                )
        for key, (hold, since) in before.items():
            if key not in after and self._log is not None:
                self._log.info(
                    "policy_unblocked",
                    rule=rule,
                    subject=hold.subject,
                    reason=hold.reason,
                    blocked_s=round((now - since).total_seconds(), 3),
                )
        if after:
            self._holds[rule] = after
        else:
            self._holds.pop(rule, None)
        counts = dict.fromkeys(self._blocked.get(rule, ()), 0)
        for hold, _ in after.values():
            counts[hold.reason] = counts.get(hold.reason, 0) + 1
        if counts:
            self._blocked[rule] = counts

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the holds of rules no longer loaded, without log lines (the rule is gone)."""
        kept = set(keep)
        for rule in [rule for rule in self._holds if rule not in kept]:
            del self._holds[rule]
            self._blocked[rule] = dict.fromkeys(self._blocked[rule], 0)

    def holds(self, rule: str | None = None) -> list[Hold]:
        """Return the holds in force, of one rule or of all, in a stable order."""
        rules = [rule] if rule is not None else sorted(self._holds)
        found = [hold for name in rules for hold, _ in self._holds.get(name, {}).values()]
        return sorted(found, key=lambda hold: hold.key)

    def series(self) -> Iterator[Sample]:
        """Return the subjects held by rule and reason (the scrape's reader)."""
        gauge = self._metrics.policy_blocked
        for rule, counts in self._blocked.items():
            for reason, count in counts.items():
                yield gauge, (rule, reason), count

    # --- unreadable items ------------------------------------------------------------------------

    def unreadable(self, provider: str, endpoint: str, problem: ItemProblem) -> None:
        """Count an item a provider's answer held that did not parse (a client's `on_problem`)."""
        self._metrics.parse_errors.labels(provider, endpoint, problem.field).inc()
        now = self._clock.now()
        key = (provider, endpoint, problem.field, problem.item)
        seen = self._unreadable.pop(key, None)
        if seen is None:
            seen = _Unreadable(
                provider, endpoint, problem.field, problem.item, problem.message, 0, now, now
            )
        seen.count += 1
        seen.error = problem.message
        seen.last_seen = now
        self._unreadable[key] = seen
        while len(self._unreadable) > MAX_UNREADABLE_SHOWN:
            self._unreadable.popitem(last=False)

    # --- reports ---------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """Return the holds and the latest unreadable items, for `/status`."""
        blocked = []
        for rule in sorted(self._holds):
            for hold, since in sorted(self._holds[rule].values(), key=lambda h: h[0].key):
                blocked.append(
                    {
                        "rule": hold.rule,
                        "subject": hold.subject,
                        "reason": hold.reason,
                        "detail": hold.detail,
                        "endpoint": hold.endpoint,
                        "field": hold.field,
                        "since": since.isoformat(),
                    }
                )
        unreadable = [
            {
                "provider": seen.provider,
                "endpoint": seen.endpoint,
                "field": seen.field,
                "item": seen.item,
                "error": seen.error,
                "count": seen.count,
                "first_seen": seen.first_seen.isoformat(),
                "last_seen": seen.last_seen.isoformat(),
            }
            for seen in reversed(self._unreadable.values())
        ]
        return {"blocked": blocked, "unreadable": unreadable}
