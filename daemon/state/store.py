"""The durable state behind one protocol: what the daemon must remember across restarts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from daemon.errors import CloudpilotError
from daemon.models import Decision
from daemon.notifications import Delivery, Notification
from daemon.rules.memory import MemoryEntry


class StateError(CloudpilotError):
    """The durable state cannot be opened, read or written; the message names the database."""


Cursor = Mapping[str, Any]
"""A source's position, as a JSON object (e.g. `{"high_water": 709, "open": [712, 713]}`)."""


class LedgerState(StrEnum):
    """Where a decision stands: recorded, under way, or ended."""

    INTENT = "intent"
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    ABORTED = "aborted"
    DRY_RUN = "dry_run"

    @property
    def is_open(self) -> bool:
        """Return whether the runner still owes this entry a result."""
        return self in (LedgerState.INTENT, LedgerState.STARTED)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A decision and what became of it. The decision's key is the idempotency key."""

    decision: Decision
    state: LedgerState
    updated_at: datetime
    attempts: int = 0
    detail: str = ""

    @property
    def key(self) -> str:
        """Return the idempotency key."""
        return self.decision.key


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The state of one alert, keyed by its identity (`<rule>/<group values>`).

    `started_at` is when the current firing began; `updated_at` when the record last changed
    (for a resolved alert: when it resolved). `resolve_key` is the JSON text of the firing
    event's `resolve.same` values, which a resolving event must equal ("" when the alert has no
    `resolve`). `data` holds what the alert book needs to resend or resolve it: the last
    notification, the routes, the group and how often it fired.
    """

    key: str
    rule: str
    status: str  # "firing" | "resolved"
    started_at: datetime
    updated_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    resolve_key: str = ""


@dataclass(frozen=True, slots=True)
class BudgetRecord:
    """What a budget rule knows about one scope in one calendar month (`2026-11`)."""

    rule: str
    scope: str
    month: str
    updated_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


class Batch(Protocol):
    """One poll batch, written as one transaction: all of it lands, or none of it."""

    async def unseen(self, keys: Sequence[str]) -> set[str]:
        """Return the keys among `keys` that were never marked seen."""
        ...

    async def mark_seen(self, keys: Sequence[str], now: datetime) -> None:
        """Remember these event keys as seen at `now`."""
        ...

    async def set_cursor(self, source: str, cursor: Cursor) -> None:
        """Save the source's new position."""
        ...

    async def record_decisions(self, decisions: Sequence[Decision]) -> list[Decision]:
        """Add decisions to the ledger (dry-run ones as DRY_RUN, others as INTENT).

        Return the decisions newly added; a key already in the ledger is left as it is.
        """
        ...

    async def put_memory(self, entries: Sequence[MemoryEntry]) -> None:
        """Insert or replace timing memory."""
        ...

    async def drop_memory(self, entries: Sequence[MemoryEntry]) -> None:
        """Forget timing memory (matched on kind, rule and group)."""
        ...

    async def mark_finished(self, key: str, state: LedgerState, detail: str, now: datetime) -> None:
        """Move an open ledger entry to DONE, FAILED, SKIPPED or ABORTED, within this batch."""
        ...

    async def get_alert(self, key: str) -> AlertRecord | None:
        """Return one alert's state."""
        ...

    async def put_alert(self, alert: AlertRecord) -> None:
        """Insert or replace one alert's state."""
        ...

    async def put_budget(self, record: BudgetRecord) -> None:
        """Insert or replace a budget's state, with the rest of the batch."""
        ...

    async def firing_alerts_matching(self, rule: str, resolve_key: str) -> list[AlertRecord]:
        """Return the rule's firing alerts whose `resolve_key` equals this one, oldest first."""
        ...

    async def enqueue(
        self, destination: str, delivery_key: str, notification: Notification, now: datetime
    ) -> bool:
        """Add a delivery to the outbox, due now; return False when the key is already queued."""
        ...


class Store(Protocol):
    """Cursors, seen keys, timing memory, the action ledger, alert and budget state."""

    async def open(self) -> None:
        """Connect, apply pending migrations and check durability settings."""
        ...

    async def close(self) -> None:
        """Close the connection; pending batches must have finished."""
        ...

    def batch(self) -> AbstractAsyncContextManager[Batch]:
        """Begin one transaction; commit on normal exit, roll back on an exception."""
        ...

    async def get_cursor(self, source: str) -> Cursor | None:
        """Return the saved position of a source, or None before its first batch."""
        ...

    async def load_memory(self) -> list[MemoryEntry]:
        """Return all timing memory."""
        ...

    async def get_entry(self, key: str) -> LedgerEntry | None:
        """Return one ledger entry by idempotency key."""
        ...

    async def open_entries(self) -> list[LedgerEntry]:
        """Return the entries in INTENT or STARTED state, oldest first."""
        ...

    async def ledger(self, *, rule: str | None = None, limit: int = 1000) -> list[LedgerEntry]:
        """Return ledger entries, newest first, optionally for one rule."""
        ...

    async def mark_started(self, key: str, now: datetime) -> None:
        """Move an entry to STARTED and count the attempt."""
        ...

    async def mark_finished(self, key: str, state: LedgerState, detail: str, now: datetime) -> None:
        """Move an entry to DONE, FAILED, SKIPPED or ABORTED with a short detail."""
        ...

    async def prune_seen(self, older_than: datetime) -> int:
        """Forget seen keys marked before `older_than`; return how many."""
        ...

    async def get_alert(self, key: str) -> AlertRecord | None:
        """Return one alert's state."""
        ...

    async def put_alert(self, alert: AlertRecord) -> None:
        """Insert or replace one alert's state."""
        ...

    async def firing_alerts(self) -> list[AlertRecord]:
        """Return the alerts currently firing."""
        ...

    async def get_budget(self, rule: str, scope: str, month: str) -> BudgetRecord | None:
        """Return a budget's state for one month."""
        ...

    async def put_budget(self, record: BudgetRecord) -> None:
        """Insert or replace a budget's state for one month."""
        ...

    async def budgets(
        self, *, month: str | None = None, scope_prefix: str = ""
    ) -> list[BudgetRecord]:
        """Return budget records, of one month if given, whose scope starts with `scope_prefix`.

        Ordered by rule, month, scope.
        """
        ...

    async def transition_budget(
        self,
        rule: str,
        scope: str,
        month: str,
        *,
        expect: str,
        data: Mapping[str, Any],
        now: datetime,
    ) -> BudgetRecord | None:
        """Replace a record's data only while its `data["state"]` is `expect`, atomically.

        Return the record as written, or None when it is missing or no longer in `expect`
        (someone else decided first).
        """
        ...

    async def due_deliveries(
        self, destination: str, now: datetime, limit: int = 10
    ) -> list[Delivery]:
        """Return a destination's deliveries due at `now`, oldest first.

        Only each alert's oldest queued delivery counts: the others wait behind it, in order.
        """
        ...

    async def next_delivery_at(self, destination: str) -> datetime | None:
        """Return when the destination's next sendable delivery falls due (it may have passed).

        None when nothing is queued.
        """
        ...

    async def remove_delivery(self, delivery_id: int) -> None:
        """Remove a delivery: accepted, refused for good, or given up on; an unknown id is fine."""
        ...

    async def postpone_delivery(self, delivery_id: int, next_at: datetime, error: str) -> None:
        """Count a failed attempt and make the delivery due again at `next_at` (if still queued)."""
        ...

    async def pending_deliveries(self) -> dict[str, int]:
        """Return how many deliveries each destination has queued."""
        ...

    async def alerts_to_refresh(self, resolved_since: datetime) -> list[AlertRecord]:
        """Return the firing alerts and those resolved at or after `resolved_since`."""
        ...

    async def prune_alerts(self, resolved_before: datetime) -> int:
        """Forget alerts resolved before `resolved_before`; return how many."""
        ...

    async def prune_ledger(self, decided_before: datetime) -> int:
        """Forget ended ledger entries created before `decided_before`; return how many.

        Open entries (`intent`, `started`) are kept whatever their age: the runner owes them.
        """
        ...

    async def integrity_check(self) -> str:
        """Return the database's own integrity verdict (`ok` when healthy)."""
        ...
