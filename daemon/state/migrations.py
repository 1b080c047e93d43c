"""The SQLite schema as numbered migrations, applied in order and counted by `user_version`.

`MIGRATIONS[n - 1]` takes a database from version n - 1 to n. Each is applied in its own
transaction together with the new `user_version`, so a crash leaves the database at a version
that exists. Never edit a migration that has shipped: append a new one.

Every time column holds fixed-width ISO-8601 UTC text (`2026-11-10T12:00:00.000000Z`, see
`codec.utc_text`), so comparing and ordering them as text is comparing them as times. JSON columns
hold `codec.encode_value` text.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from daemon.state.store import StateError

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE cursors (
        source      TEXT PRIMARY KEY,
        cursor      TEXT NOT NULL,              -- JSON object
        updated_at  TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE seen (
        key         TEXT PRIMARY KEY,           -- Event.key
        seen_at     TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX seen_by_time ON seen (seen_at);

    CREATE TABLE memory (
        kind        TEXT NOT NULL,              -- MemoryKind: for | throttle | cooldown
        rule        TEXT NOT NULL,
        group_key   TEXT NOT NULL,
        since       TEXT NOT NULL,
        PRIMARY KEY (kind, rule, group_key)
    ) STRICT, WITHOUT ROWID;

    -- Keeps its rowid: it breaks ties between entries recorded in the same microsecond.
    CREATE TABLE ledger (
        key         TEXT PRIMARY KEY,           -- the idempotency key, Decision.key
        rule        TEXT NOT NULL,
        action      TEXT NOT NULL,
        mode        TEXT NOT NULL,              -- Mode: enforce | dry_run
        params      TEXT NOT NULL,              -- JSON
        event       TEXT,                       -- JSON, NULL for decisions without an event
        decided_at  TEXT NOT NULL,              -- Decision.time
        state       TEXT NOT NULL,              -- LedgerState
        attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        detail      TEXT NOT NULL DEFAULT '',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX ledger_by_state ON ledger (state, created_at);
    CREATE INDEX ledger_by_rule ON ledger (rule, created_at);
    CREATE INDEX ledger_by_time ON ledger (created_at);

    CREATE TABLE alerts (
        key         TEXT PRIMARY KEY,           -- the alert's stable dedup key
        rule        TEXT NOT NULL,
        status      TEXT NOT NULL,              -- firing | resolved
        started_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        data        TEXT NOT NULL               -- JSON object
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX alerts_by_status ON alerts (status, started_at);

    CREATE TABLE budgets (
        rule        TEXT NOT NULL,
        scope       TEXT NOT NULL,
        month       TEXT NOT NULL,              -- 2026-11
        updated_at  TEXT NOT NULL,
        data        TEXT NOT NULL,              -- JSON object
        PRIMARY KEY (rule, scope, month)
    ) STRICT, WITHOUT ROWID;
    """,
    # 2: alerts resolve by rule and `resolve.same` values; notifications wait in an outbox.
    """
    ALTER TABLE alerts ADD COLUMN resolve_key TEXT NOT NULL DEFAULT '';  -- JSON text, or ''
    CREATE INDEX alerts_by_resolve_key ON alerts (rule, resolve_key, status);

    -- AUTOINCREMENT: an id is never reused, so a stale id never reaches a newer delivery.
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        destination     TEXT NOT NULL,          -- a route, or <route>#<n>
        delivery_key    TEXT NOT NULL,          -- unique per destination: enqueue is idempotent
        alert_key       TEXT NOT NULL,          -- Notification.alert_key
        notification    TEXT NOT NULL,          -- JSON of Notification.as_dict()
        created_at      TEXT NOT NULL,
        next_at         TEXT NOT NULL,          -- due at or after this time
        attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        last_error      TEXT NOT NULL DEFAULT '',
        UNIQUE (destination, delivery_key)
    ) STRICT;
    CREATE INDEX outbox_by_due ON outbox (destination, next_at, id);
    -- Each alert's notifications go out in order: only its oldest queued one is sendable.
    CREATE INDEX outbox_by_alert ON outbox (destination, alert_key, id);
    """,
)

LATEST = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """Split a migration into its SQL statements."""
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        # A `;` inside a string literal or a trigger body does not end a statement.
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                found.append(pending.strip())
            pending = ""
    if pending.strip(" \t\r\n;"):
        found.append(pending.strip())
    return found


async def user_version(db: aiosqlite.Connection) -> int:
    """Return the schema version recorded in the database."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(
    db: aiosqlite.Connection, path: Path, migrations: tuple[str, ...] = MIGRATIONS
) -> int:
    """Bring the database at `path` up to the newest version; return the version it was at."""
    found = await user_version(db)
    _refuse_newer(path, found, len(migrations))
    for number, script in enumerate(migrations, start=1):
        if number <= found:
            continue
        await db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            current = await user_version(db)
            _refuse_newer(path, current, len(migrations))
            if current >= number:
                await db.execute("ROLLBACK")
                continue
            for statement in statements(script):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {number}")
            await db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StateError(f"{path}: schema migration {number} failed: {exc}") from exc
            raise
    return found


def _refuse_newer(path: Path, version: int, known: int) -> None:
    if version > known:
        raise StateError(
            f"{path} has schema version {version}; this Cloudpilot knows up to {known}: "
            "upgrade Cloudpilot"
        )
