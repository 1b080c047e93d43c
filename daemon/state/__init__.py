"""Durable state: cursors, seen event keys, timing memory, the action ledger, alerts, budgets."""

from __future__ import annotations

from daemon.state.sqlite import Durability, SqliteStore
from daemon.state.store import (
    AlertRecord,
    Batch,
    BudgetRecord,
    Cursor,
    LedgerEntry,
    LedgerState,
    StateError,
    Store,
)

__all__ = [
    "AlertRecord",
    "Batch",
    "BudgetRecord",
    "Cursor",
    "Durability",
    "LedgerEntry",
    "LedgerState",
    "SqliteStore",
    "StateError",
    "Store",
]
