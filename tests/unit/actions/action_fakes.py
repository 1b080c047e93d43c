"""Test doubles for the action tests: a dict-backed ledger, gated actions, a resolver, logs."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from structlog.testing import LogCapture

from daemon.clock import Clock
from daemon.models import Decision, Event, Mode, Outcome, OutcomeStatus
from daemon.rules.action import ActionContext, ActionParams
from daemon.state.store import LedgerEntry, LedgerState

EVENT_TIME = datetime(2026, 11, 1, 11, 59, tzinfo=UTC)
DECISION_TIME = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

Logger = structlog.typing.FilteringBoundLogger


def capture_logger() -> tuple[Logger, LogCapture]:
    """Return a logger whose entries land in a LogCapture, at every level."""
    capture = LogCapture()
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    return log, capture


def events_named(capture: LogCapture, name: str) -> list[MutableMapping[str, Any]]:
    """Return the captured entries with this event name."""
    return [entry for entry in capture.entries if entry["event"] == name]


def make_event(key: str = "seeweb.action:709:failed", resource: str = "ec200001") -> Event:
    """Return a failed-action event."""
    return Event(
        type="seeweb.action.failed",
        key=key,
        time=EVENT_TIME,
        resource=resource,
        data={"id": 709, "type": "power_off", "at": EVENT_TIME},
        source="actions",
    )


def make_decision(
    key: str = "r/0/e1",
    *,
    rule: str = "r",
    action: str = "fake",
    params: Mapping[str, Any] | None = None,
    mode: Mode = Mode.ENFORCE,
    event: Event | None = None,
) -> Decision:
    """Return a decision with sensible defaults."""
    return Decision(
        key=key,
        rule=rule,
        action=action,
        params=params or {},
        mode=mode,
        event=event if event is not None else make_event(),
        time=DECISION_TIME,
    )


class FakeLedger:
    """The ledger part of the Store protocol, in a dict, strict about state transitions."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.entries: dict[str, LedgerEntry] = {}

    def record(self, *decisions: Decision) -> list[Decision]:
        """Record decisions as the pipeline does: INTENT, or DRY_RUN; existing keys stay."""
        added = []
        for decision in decisions:
            if decision.key in self.entries:
                continue
            state = LedgerState.DRY_RUN if decision.mode is Mode.DRY_RUN else LedgerState.INTENT
            self.entries[decision.key] = LedgerEntry(decision, state, self._clock.now())
            added.append(decision)
        return added

    def put(self, entry: LedgerEntry) -> None:
        """Insert an entry as a previous run left it."""
        self.entries[entry.key] = entry

    def state(self, key: str) -> LedgerState:
        """Return an entry's state."""
        return self.entries[key].state

    async def get_entry(self, key: str) -> LedgerEntry | None:
        """Return one entry."""
        return self.entries.get(key)

    async def open_entries(self) -> list[LedgerEntry]:
        """Return INTENT and STARTED entries in insertion order (oldest first)."""
        return [entry for entry in self.entries.values() if entry.state.is_open]

    async def mark_started(self, key: str, now: datetime) -> None:
        """Move an open entry to STARTED and count the attempt."""
        entry = self.entries[key]
        assert entry.state.is_open, f"{key}: mark_started from {entry.state}"
        self.entries[key] = replace(
            entry, state=LedgerState.STARTED, attempts=entry.attempts + 1, updated_at=now
        )

    async def mark_finished(self, key: str, state: LedgerState, detail: str, now: datetime) -> None:
        """Close an open entry."""
        entry = self.entries[key]
        assert entry.state.is_open, f"{key}: mark_finished from {entry.state}"
        assert state in (LedgerState.DONE, LedgerState.FAILED, LedgerState.SKIPPED), state
        self.entries[key] = replace(entry, state=state, detail=detail, updated_at=now)


class FakeParams(ActionParams):
    """Parameters of the fake actions."""

    note: str = ""


class GatedAction:
    """An action whose runs wait at a gate the test opens; it records what happened."""

    name: ClassVar[str] = "fake"
    params_model: ClassVar[type[ActionParams]] = FakeParams
    destructive: ClassVar[bool] = False
    depends_on: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, gated: bool = True) -> None:
        self.gated = gated
        self.runs: list[str] = []
        self.reconciles: list[str] = []
        self.cancelled: list[str] = []
        self.outcomes: dict[str, Outcome] = {}
        self.errors: dict[str, Exception] = {}
        self.reconciled: dict[str, Outcome | None] = {}
        self.in_run = 0
        self.max_in_run = 0
        self._entered: dict[str, asyncio.Event] = {}
        self._gates: dict[str, asyncio.Event] = {}

    def _event(self, table: dict[str, asyncio.Event], key: str) -> asyncio.Event:
        return table.setdefault(key, asyncio.Event())

    async def entered(self, key: str) -> None:
        """Wait until the run of `key` has begun."""
        await self._event(self._entered, key).wait()

    def release(self, key: str) -> None:
        """Let the run of `key` finish."""
        self._event(self._gates, key).set()

    async def run(self, ctx: ActionContext) -> Outcome:
        """Record the run, wait at the gate, then answer as configured."""
        key = ctx.decision.key
        ctx.params(FakeParams)
        self.runs.append(key)
        self.in_run += 1
        self.max_in_run = max(self.max_in_run, self.in_run)
        self._event(self._entered, key).set()
        try:
            if self.gated:
                await self._event(self._gates, key).wait()
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.in_run -= 1
        if key in self.errors:
            raise self.errors[key]
        return self.outcomes.get(key, Outcome(OutcomeStatus.DONE, "ok"))

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Record the reconcile and answer as configured (unknown by default)."""
        self.reconciles.append(ctx.decision.key)
        return self.reconciled.get(ctx.decision.key)


class DestructiveAction(GatedAction):
    """A gated action the startup guard must hold until `actions` has polled."""

    name: ClassVar[str] = "fake_destructive"
    destructive: ClassVar[bool] = True
    depends_on: ClassVar[frozenset[str]] = frozenset({"actions"})


class FakeResolver(AbstractResolver):
    """A resolver answering from a table, remembering what it was asked."""

    def __init__(self, table: Mapping[str, list[str]]) -> None:
        self.table = dict(table)
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the table's addresses for `host`, or fail as getaddrinfo would."""
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"Name or service not known: {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.table[host]
        ]

    async def close(self) -> None:
        """Nothing to close."""
