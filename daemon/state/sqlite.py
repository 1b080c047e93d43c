"""The default store: one SQLite file in WAL mode with `synchronous=FULL`, through aiosqlite."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite

from daemon.clock import Clock, SystemClock
from daemon.models import Decision, Mode
from daemon.notifications import Delivery, Notification
from daemon.rules.memory import MemoryEntry, MemoryKind
from daemon.state.codec import (
    decode_event,
    decode_value,
    encode_event,
    encode_value,
    parse_utc,
    utc_text,
)
from daemon.state.migrations import migrate
from daemon.state.store import (
    AlertRecord,
    Batch,
    BudgetRecord,
    Cursor,
    LedgerEntry,
    LedgerState,
    StateError,
)

IN_CHUNK = 500
"""The most keys one `IN (...)` query carries; SQLite limits the bound parameters per query."""

ERROR_LIMIT = 300
"""The most characters of a failed delivery's error the outbox keeps."""

_FINISHED = (LedgerState.DONE, LedgerState.FAILED, LedgerState.SKIPPED, LedgerState.ABORTED)
_OPEN = (LedgerState.INTENT.value, LedgerState.STARTED.value)
_LEDGER_COLUMNS = (
    "key, rule, action, mode, params, event, decided_at, state, attempts, detail, updated_at"
)
_ALERT_COLUMNS = "key, rule, status, started_at, updated_at, data, resolve_key"
_BUDGET_COLUMNS = "rule, scope, month, updated_at, data"
_OUTBOX_COLUMNS = "id, destination, notification, created_at, next_at, attempts, last_error"


@dataclass(frozen=True, slots=True)
class Durability:
    """The durability settings a connection actually runs with, as SQLite reports them."""

    journal_mode: str  # "wal"
    synchronous: int  # 2 = FULL


# A delivery with no older one queued for the same alert and destination.
_OLDEST_OF_ITS_ALERT = (
    "NOT EXISTS (SELECT 1 FROM outbox AS older WHERE older.destination = o.destination"
    " AND older.alert_key = o.alert_key AND older.id < o.id)"
)


class SqliteStore:
    """Cursors, seen keys, timing memory, the ledger, alerts and budgets in one SQLite file.

    One connection, and one asyncio lock that every method and every batch holds while it talks
    to the database, so writers never interleave. Across processes, `BEGIN IMMEDIATE` and the
    busy timeout keep a second writer waiting instead of failing.
    """

    # What `open` asks SQLite for; `open` then checks what it got against WAL and FULL.
    _journal_mode_request: ClassVar[str] = "WAL"
    _synchronous_request: ClassVar[str] = "FULL"

    def __init__(
        self, path: Path, *, clock: Clock | None = None, busy_timeout: float = 10.0
    ) -> None:
        self._path = Path(path)
        self._clock = clock if clock is not None else SystemClock()
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._batch_task: asyncio.Task[Any] | None = None

    @property
    def path(self) -> Path:
        """Return the database file's path."""
        return self._path

    async def open(self) -> None:
        """Connect, check WAL and synchronous=FULL, and apply pending migrations."""
        async with self._lock:
            if self._db is None:
                self._db = await self._connect()

    async def close(self) -> None:
        """Close the connection once the running batch, if any, has finished; idempotent."""
        if self._db is None:
            return
        if self._batch_task is not None and self._batch_task is asyncio.current_task():
            raise StateError(f"{self._path}: cannot close the store inside a batch")
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def durability(self) -> Durability:
        """Return the journal mode and synchronous level the connection runs with."""
        async with self._exclusive("read durability settings") as db:
            return Durability(
                journal_mode=str(await _pragma(db, "journal_mode")).lower(),
                synchronous=int(await _pragma(db, "synchronous")),
            )

    def batch(self) -> AbstractAsyncContextManager[Batch]:
        """Begin one transaction; commit on normal exit, roll back on an exception."""
        return self._batch()

    async def get_cursor(self, source: str) -> Cursor | None:
        """Return the saved position of a source, or None before its first batch."""
        async with self._exclusive(f"read the cursor of {source!r}") as db:
            row = await _one(db, "SELECT cursor FROM cursors WHERE source = ?", (source,))
        return None if row is None else dict(decode_value(row[0]))

    async def load_memory(self) -> list[MemoryEntry]:
        """Return all timing memory."""
        async with self._exclusive("read timing memory") as db:
            rows = await _all(
                db, "SELECT kind, rule, group_key, since FROM memory ORDER BY kind, rule, group_key"
            )
        return [
            MemoryEntry(MemoryKind(kind), rule, group, parse_utc(since))
            for kind, rule, group, since in rows
        ]

    async def get_entry(self, key: str) -> LedgerEntry | None:
        """Return one ledger entry by idempotency key."""
        async with self._exclusive(f"read ledger entry {key!r}") as db:
            row = await _one(db, f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE key = ?", (key,))  # noqa: S608
        return None if row is None else _ledger_entry(row)

    async def open_entries(self) -> list[LedgerEntry]:
        """Return the entries in INTENT or STARTED state, oldest first."""
        async with self._exclusive("read open ledger entries") as db:
            rows = await _all(
                db,
                f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE state IN (?, ?)"  # noqa: S608
                " ORDER BY created_at, rowid",
                _OPEN,
            )
        return [_ledger_entry(row) for row in rows]

    async def ledger(self, *, rule: str | None = None, limit: int = 1000) -> list[LedgerEntry]:
        """Return ledger entries, newest first, optionally for one rule."""
        where, args = ("WHERE rule = ?", (rule, limit)) if rule is not None else ("", (limit,))
        async with self._exclusive("read the ledger") as db:
            rows = await _all(
                db,
                f"SELECT {_LEDGER_COLUMNS} FROM ledger {where}"  # noqa: S608
                " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                args,
            )
        return [_ledger_entry(row) for row in rows]

    async def mark_started(self, key: str, now: datetime) -> None:
        """Move an open entry to STARTED and count the attempt."""
        async with self._exclusive(f"start ledger entry {key!r}") as db:
            changed = await _change(
                db,
                "UPDATE ledger SET state = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE key = ? AND state IN (?, ?)",
                (LedgerState.STARTED.value, utc_text(now, "now"), key, *_OPEN),
            )
            if not changed:
                await _refuse_transition(db, key, LedgerState.STARTED)

    async def mark_finished(self, key: str, state: LedgerState, detail: str, now: datetime) -> None:
        """Move an open entry to DONE, FAILED, SKIPPED or ABORTED with a short detail."""
        _require_finishing(key, state)
        async with self._exclusive(f"finish ledger entry {key!r}") as db:
            await _finish(db, key, state, detail, now)

    async def prune_seen(self, older_than: datetime) -> int:
        """Forget seen keys marked before `older_than`; return how many."""
        async with self._exclusive("prune seen keys") as db:
            return await _change(
                db, "DELETE FROM seen WHERE seen_at < ?", (utc_text(older_than, "older_than"),)
            )

    async def get_alert(self, key: str) -> AlertRecord | None:
        """Return one alert's state."""
        async with self._exclusive(f"read alert {key!r}") as db:
            return await _get_alert(db, key)

    async def put_alert(self, alert: AlertRecord) -> None:
        """Insert or replace one alert's state."""
        values = _alert_values(alert)
        async with self._exclusive(f"write alert {alert.key!r}") as db:
            await _put_alert(db, values)

    async def firing_alerts(self) -> list[AlertRecord]:
        """Return the alerts currently firing, oldest first."""
        async with self._exclusive("read firing alerts") as db:
            rows = await _all(
                db,
                f"SELECT {_ALERT_COLUMNS} FROM alerts"  # noqa: S608
                " WHERE status = 'firing' ORDER BY started_at, key",
            )
        return [_alert(row) for row in rows]

    async def alerts_to_refresh(self, resolved_since: datetime) -> list[AlertRecord]:
        """Return the firing alerts and those resolved since `resolved_since`, oldest first."""
        since = utc_text(resolved_since, "resolved_since")
        async with self._exclusive("read alerts to refresh") as db:
            rows = await _all(
                db,
                f"SELECT {_ALERT_COLUMNS} FROM alerts"  # noqa: S608
                " WHERE status = 'firing' OR (status = 'resolved' AND updated_at >= ?)"
                " ORDER BY started_at, key",
                (since,),
            )
        return [_alert(row) for row in rows]

    async def prune_alerts(self, resolved_before: datetime) -> int:
        """Forget alerts resolved before `resolved_before`; return how many."""
        before = utc_text(resolved_before, "resolved_before")
        async with self._exclusive("prune resolved alerts") as db:
            return await _change(
                db, "DELETE FROM alerts WHERE status = 'resolved' AND updated_at < ?", (before,)
            )

    async def prune_ledger(self, decided_before: datetime) -> int:
        """Forget ended ledger entries created before `decided_before`; return how many."""
        before = utc_text(decided_before, "decided_before")
        ended = [state.value for state in LedgerState if not state.is_open]
        marks = ", ".join("?" for _ in ended)
        async with self._exclusive("prune the ledger") as db:
            # ledger_by_state (state, created_at) makes this a range scan per ended state.
            return await _change(
                db,
                f"DELETE FROM ledger WHERE state IN ({marks}) AND created_at < ?",  # noqa: S608
                (*ended, before),
            )

    async def get_budget(self, rule: str, scope: str, month: str) -> BudgetRecord | None:
        """Return a budget's state for one month."""
        async with self._exclusive(f"read budget {rule!r} {scope!r} {month}") as db:
            return await _get_budget(db, rule, scope, month)

    async def put_budget(self, record: BudgetRecord) -> None:
        """Insert or replace a budget's state for one month."""
        values = _budget_values(record)
        async with self._exclusive(f"write {_budget_name(record)}") as db:
            await _put_budget(db, values)

    async def budgets(
        self, *, month: str | None = None, scope_prefix: str = ""
    ) -> list[BudgetRecord]:
        """Return budget records, of one month if given, whose scope starts with `scope_prefix`.

        Ordered by rule, month, scope.
        """
        # substr compares the prefix as plain text: `_` and `%` in it match only themselves.
        where = ["substr(scope, 1, ?) = ?"]
        args: list[Any] = [len(scope_prefix), scope_prefix]
        if month is not None:
            where.append("month = ?")
            args.append(month)
        async with self._exclusive("read budgets") as db:
            rows = await _all(
                db,
                f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE {' AND '.join(where)}"  # noqa: S608
                " ORDER BY rule, month, scope",
                args,
            )
        return [_budget(row) for row in rows]

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
        record = BudgetRecord(rule, scope, month, now, dict(data))
        values = _budget_values(record)
        async with self._exclusive(f"change {_budget_name(record)}") as db:
            # BEGIN IMMEDIATE takes the write lock before the read, so another process (the
            # daemon, or a second `cloudpilot approve`) cannot change the record in between.
            await _uninterrupted(db, "BEGIN IMMEDIATE")
            try:
                current = await _get_budget(db, rule, scope, month)
                if current is None or current.data.get("state") != expect:
                    await _rollback(db)
                    return None
                await _put_budget(db, values)
                await _uninterrupted(db, "COMMIT")
            except BaseException:
                await _rollback(db)
                raise
        return record

    async def due_deliveries(
        self, destination: str, now: datetime, limit: int = 10
    ) -> list[Delivery]:
        """Return up to `limit` of a destination's deliveries due at `now`, oldest first.

        Only each alert's oldest queued delivery is returned: a resolved notification waits
        while its firing one is being retried, and other alerts' deliveries go on meanwhile.
        """
        at = utc_text(now, "now")
        async with self._exclusive(f"read the deliveries due to {destination!r}") as db:
            rows = await _all(
                db,
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox AS o"  # noqa: S608
                f" WHERE destination = ? AND next_at <= ? AND {_OLDEST_OF_ITS_ALERT}"
                " ORDER BY id LIMIT ?",
                (destination, at, limit),
            )
        return [_delivery(row) for row in rows]

    async def next_delivery_at(self, destination: str) -> datetime | None:
        """Return when the destination's next sendable delivery falls due (perhaps already)."""
        async with self._exclusive(f"read the next delivery to {destination!r}") as db:
            row = await _one(
                db,
                "SELECT min(next_at) FROM outbox AS o"  # noqa: S608
                f" WHERE destination = ? AND {_OLDEST_OF_ITS_ALERT}",
                (destination,),
            )
        return None if row is None or row[0] is None else parse_utc(row[0])

    async def remove_delivery(self, delivery_id: int) -> None:
        """Remove a delivery: accepted, refused for good, or given up on; a missing one is fine."""
        async with self._exclusive(f"remove delivery {delivery_id}") as db:
            await db.execute("DELETE FROM outbox WHERE id = ?", (delivery_id,))

    async def postpone_delivery(self, delivery_id: int, next_at: datetime, error: str) -> None:
        """Count a failed attempt, keep the error's head and make the delivery due at `next_at`.

        A delivery no longer queued (removed meanwhile) is left alone.
        """
        at = utc_text(next_at, "next_at")
        async with self._exclusive(f"postpone delivery {delivery_id}") as db:
            await db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?"
                " WHERE id = ?",
                (at, error[:ERROR_LIMIT], delivery_id),
            )

    async def pending_deliveries(self) -> dict[str, int]:
        """Return how many deliveries each destination has queued (only those with any)."""
        async with self._exclusive("count queued deliveries") as db:
            rows = await _all(
                db,
                "SELECT destination, count(*) FROM outbox GROUP BY destination"
                " ORDER BY destination",
            )
        return {str(destination): int(count) for destination, count in rows}

    async def integrity_check(self) -> str:
        """Return the database's own integrity verdict (`ok` when healthy)."""
        async with self._exclusive("check integrity") as db:
            rows = await _all(db, "PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)

    async def _connect(self) -> aiosqlite.Connection:
        await asyncio.to_thread(self._create_file)
        try:
            db = await aiosqlite.connect(self._path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"{self._path}: cannot open the state database: {exc}") from exc
        try:
            await self._configure(db)
            await migrate(db, self._path)
        except sqlite3.Error as exc:
            await db.close()
            raise StateError(f"{self._path}: cannot use the state database: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return db

    def _create_file(self) -> None:
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            if self._path.parent.is_dir():
                return  # the database exists already, or another process created it just now
            raise StateError(
                f"{self._path}: cannot create the state database: {self._path.parent}"
                " is not a folder"
            ) from None
        except OSError as exc:
            raise StateError(f"{self._path}: cannot create the state database: {exc}") from exc
        os.close(fd)

    async def _configure(self, db: aiosqlite.Connection) -> None:
        await db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        await db.execute(f"PRAGMA journal_mode = {self._journal_mode_request}")
        await db.execute(f"PRAGMA synchronous = {self._synchronous_request}")
        # SQLite answers a pragma it cannot honour by keeping the old value, silently.
        journal_mode = str(await _pragma(db, "journal_mode")).lower()
        if journal_mode != "wal":
            raise StateError(
                f"{self._path}: journal_mode is {journal_mode!r}, not 'wal'; the store needs WAL"
                " (a local filesystem that supports shared memory)"
            )
        synchronous = int(await _pragma(db, "synchronous"))
        if synchronous != 2:
            raise StateError(f"{self._path}: synchronous is {synchronous}, not 2 (FULL)")

    @asynccontextmanager
    async def _exclusive(self, what: str) -> AsyncIterator[aiosqlite.Connection]:
        if self._batch_task is not None and self._batch_task is asyncio.current_task():
            raise StateError(f"{self._path}: cannot {what} inside a batch; use the batch")
        async with self._lock:
            if self._db is None:
                raise StateError(f"{self._path}: cannot {what}: the store is not open")
            with _translated(self._path, what):
                yield self._db

    @asynccontextmanager
    async def _batch(self) -> AsyncIterator[Batch]:
        async with self._exclusive("run a batch") as db:
            self._batch_task = asyncio.current_task()
            batch = _SqliteBatch(db, self._path, self._clock)
            try:
                await _uninterrupted(db, "BEGIN IMMEDIATE")
                try:
                    yield batch
                except BaseException:
                    batch.active = False
                    await _rollback(db)
                    raise
                batch.active = False
                try:
                    await _uninterrupted(db, "COMMIT")
                except sqlite3.Error:
                    await _rollback(db)
                    raise
            finally:
                batch.active = False
                self._batch_task = None


class _SqliteBatch:
    """The writes of one poll batch, inside the transaction `SqliteStore.batch` holds open."""

    def __init__(self, db: aiosqlite.Connection, path: Path, clock: Clock) -> None:
        self._db = db
        self._path = path
        self._clock = clock
        self.active = True

    async def unseen(self, keys: Sequence[str]) -> set[str]:
        """Return the keys among `keys` that were never marked seen."""
        wanted = list(dict.fromkeys(keys))
        seen: set[str] = set()
        with self._using("look up seen keys"):
            for start in range(0, len(wanted), IN_CHUNK):
                chunk = wanted[start : start + IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = await _all(
                    self._db,
                    f"SELECT key FROM seen WHERE key IN ({marks})",  # noqa: S608 (placeholders only)
                    chunk,
                )
                seen.update(row[0] for row in rows)
        return set(wanted) - seen

    async def mark_seen(self, keys: Sequence[str], now: datetime) -> None:
        """Remember these event keys as seen at `now`."""
        at = utc_text(now, "now")
        with self._using("mark keys seen"):
            # A key seen again lives on: its age counts from the latest sighting.
            await self._db.executemany(
                "INSERT INTO seen (key, seen_at) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET seen_at = max(seen_at, excluded.seen_at)",
                [(key, at) for key in dict.fromkeys(keys)],
            )

    async def set_cursor(self, source: str, cursor: Cursor) -> None:
        """Save the source's new position."""
        text = encode_value(dict(cursor), f"cursor of {source!r}")
        with self._using(f"save the cursor of {source!r}"):
            await self._db.execute(
                "INSERT OR REPLACE INTO cursors (source, cursor, updated_at) VALUES (?, ?, ?)",
                (source, text, utc_text(self._clock.now(), "clock")),
            )

    async def record_decisions(self, decisions: Sequence[Decision]) -> list[Decision]:
        """Add decisions to the ledger (dry-run ones as DRY_RUN, others as INTENT).

        Return the decisions newly added; a key already in the ledger is left as it is.
        """
        now = utc_text(self._clock.now(), "clock")
        added: list[Decision] = []
        with self._using("record decisions"):
            for decision in decisions:
                where = f"decision {decision.key!r}"
                mode = Mode(decision.mode)
                state = LedgerState.DRY_RUN if mode is Mode.DRY_RUN else LedgerState.INTENT
                event = None if decision.event is None else encode_event(decision.event)
                inserted = await _change(
                    self._db,
                    "INSERT INTO ledger (key, rule, action, mode, params, event, decided_at,"
                    " state, attempts, detail, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, '', ?, ?) ON CONFLICT (key) DO NOTHING",
                    (
                        decision.key,
                        decision.rule,
                        decision.action,
                        mode.value,
                        encode_value(decision.params, f"{where} params"),
                        event,
                        utc_text(decision.time, f"{where} time"),
                        state.value,
                        now,
                        now,
                    ),
                )
                if inserted:
                    added.append(decision)
        return added

    async def put_memory(self, entries: Sequence[MemoryEntry]) -> None:
        """Insert or replace timing memory."""
        rows = [
            (
                MemoryKind(entry.kind).value,
                entry.rule,
                entry.group,
                utc_text(entry.since, f"memory {entry.rule!r} {entry.group!r}"),
            )
            for entry in entries
        ]
        with self._using("save timing memory"):
            await self._db.executemany(
                "INSERT OR REPLACE INTO memory (kind, rule, group_key, since) VALUES (?, ?, ?, ?)",
                rows,
            )

    async def drop_memory(self, entries: Sequence[MemoryEntry]) -> None:
        """Forget timing memory (matched on kind, rule and group)."""
        rows = [(MemoryKind(entry.kind).value, entry.rule, entry.group) for entry in entries]
        with self._using("drop timing memory"):
            await self._db.executemany(
                "DELETE FROM memory WHERE kind = ? AND rule = ? AND group_key = ?", rows
            )

    async def mark_finished(self, key: str, state: LedgerState, detail: str, now: datetime) -> None:
        """Move an open ledger entry to DONE, FAILED, SKIPPED or ABORTED with a short detail."""
        _require_finishing(key, state)
        with self._using(f"finish ledger entry {key!r}"):
            await _finish(self._db, key, state, detail, now)

    async def get_alert(self, key: str) -> AlertRecord | None:
        """Return one alert's state, as this batch has left it so far."""
        with self._using(f"read alert {key!r}"):
            return await _get_alert(self._db, key)

    async def put_alert(self, alert: AlertRecord) -> None:
        """Insert or replace one alert's state."""
        values = _alert_values(alert)
        with self._using(f"write alert {alert.key!r}"):
            await _put_alert(self._db, values)

    async def put_budget(self, record: BudgetRecord) -> None:
        """Insert or replace a budget's state, with the rest of the batch."""
        values = _budget_values(record)
        with self._using(f"write {_budget_name(record)}"):
            await _put_budget(self._db, values)

    async def firing_alerts_matching(self, rule: str, resolve_key: str) -> list[AlertRecord]:
        """Return the rule's firing alerts whose `resolve_key` equals this one, oldest first."""
        with self._using(f"read the firing alerts of {rule!r}"):
            rows = await _all(
                self._db,
                f"SELECT {_ALERT_COLUMNS} FROM alerts"  # noqa: S608
                " WHERE rule = ? AND resolve_key = ? AND status = 'firing'"
                " ORDER BY started_at, key",
                (rule, resolve_key),
            )
        return [_alert(row) for row in rows]

    async def enqueue(
        self, destination: str, delivery_key: str, notification: Notification, now: datetime
    ) -> bool:
        """Add a delivery to the outbox, due now; return False when the key is already queued."""
        where = f"delivery {delivery_key!r} to {destination!r}"
        at = utc_text(now, "now")
        text = encode_value(notification.as_dict(), f"{where} notification")
        with self._using(f"queue {where}"):
            added = await _change(
                self._db,
                "INSERT INTO outbox (destination, delivery_key, alert_key, notification,"
                " created_at, next_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (destination, delivery_key) DO NOTHING",
                (destination, delivery_key, notification.alert_key, text, at, at),
            )
        return added > 0

    @contextmanager
    def _using(self, what: str) -> Iterator[None]:
        if not self.active:
            raise StateError(f"{self._path}: cannot {what}: the batch has ended")
        with _translated(self._path, what):
            yield


@contextmanager
def _translated(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StateError(f"{path}: cannot {what}: {exc}") from exc


async def _pragma(db: aiosqlite.Connection, name: str) -> Any:
    row = await _one(db, f"PRAGMA {name}")
    return None if row is None else row[0]


async def _one(
    db: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()
) -> sqlite3.Row | tuple[Any, ...] | None:
    async with db.execute(sql, args) as cursor:
        return await cursor.fetchone()


async def _all(
    db: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()
) -> list[sqlite3.Row | tuple[Any, ...]]:
    async with db.execute(sql, args) as cursor:
        return list(await cursor.fetchall())


async def _change(db: aiosqlite.Connection, sql: str, args: Sequence[Any]) -> int:
    async with db.execute(sql, args) as cursor:
        return cursor.rowcount


async def _uninterrupted(db: aiosqlite.Connection, statement: str) -> None:
    """Run BEGIN or COMMIT to its end even if the caller is cancelled meanwhile.

    aiosqlite runs the statement in its thread whatever happens to the awaiting task, so a
    cancelled BEGIN would otherwise leave a transaction open that no one rolls back, and a
    cancelled COMMIT would land while its caller believes it failed.
    """
    running = asyncio.ensure_future(db.execute(statement))
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        with contextlib.suppress(sqlite3.Error):
            await running
        if statement.startswith("BEGIN"):
            await _rollback(db)
        raise


async def _rollback(db: aiosqlite.Connection) -> None:
    if db.in_transaction:
        await db.execute("ROLLBACK")


def _require_finishing(key: str, state: LedgerState) -> None:
    if state not in _FINISHED:
        raise ValueError(
            f"ledger entry {key!r}: {state!r} does not finish an entry"
            " (use done, failed or skipped)"
        )


async def _finish(
    db: aiosqlite.Connection, key: str, state: LedgerState, detail: str, now: datetime
) -> None:
    changed = await _change(
        db,
        "UPDATE ledger SET state = ?, detail = ?, updated_at = ? WHERE key = ? AND state IN (?, ?)",
        (LedgerState(state).value, detail, utc_text(now, "now"), key, *_OPEN),
    )
    if not changed:
        await _refuse_transition(db, key, LedgerState(state))


async def _get_alert(db: aiosqlite.Connection, key: str) -> AlertRecord | None:
    row = await _one(db, f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE key = ?", (key,))  # noqa: S608
    return None if row is None else _alert(row)


def _alert_values(alert: AlertRecord) -> tuple[str, ...]:
    """Encode an alert before the lock is taken, so a bad value fails without touching the file."""
    where = f"alert {alert.key!r}"
    return (
        alert.key,
        alert.rule,
        alert.status,
        utc_text(alert.started_at, f"{where} started_at"),
        utc_text(alert.updated_at, f"{where} updated_at"),
        encode_value(alert.data, f"{where} data"),
        alert.resolve_key,
    )


async def _put_alert(db: aiosqlite.Connection, values: tuple[str, ...]) -> None:
    await db.execute(
        f"INSERT OR REPLACE INTO alerts ({_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        values,
    )


def _budget_name(record: BudgetRecord) -> str:
    return f"budget {record.rule!r} {record.scope!r} {record.month}"


def _budget_values(record: BudgetRecord) -> tuple[str, ...]:
    """Encode a budget record before the lock is taken, so a bad value leaves the file alone."""
    where = _budget_name(record)
    return (
        record.rule,
        record.scope,
        record.month,
        utc_text(record.updated_at, f"{where} updated_at"),
        encode_value(record.data, f"{where} data"),
    )


async def _get_budget(
    db: aiosqlite.Connection, rule: str, scope: str, month: str
) -> BudgetRecord | None:
    row = await _one(
        db,
        f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE rule = ? AND scope = ? AND month = ?",  # noqa: S608
        (rule, scope, month),
    )
    return None if row is None else _budget(row)


async def _put_budget(db: aiosqlite.Connection, values: tuple[str, ...]) -> None:
    await db.execute(
        f"INSERT OR REPLACE INTO budgets ({_BUDGET_COLUMNS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608
        values,
    )


async def _refuse_transition(db: aiosqlite.Connection, key: str, to: LedgerState) -> None:
    row = await _one(db, "SELECT state FROM ledger WHERE key = ?", (key,))
    if row is None:
        raise StateError(f"ledger entry {key!r} does not exist")
    raise StateError(f"ledger entry {key!r} is {row[0]}; only an open entry can become {to}")


def _ledger_entry(row: Sequence[Any]) -> LedgerEntry:
    key, rule, action, mode, params, event, decided_at, state, attempts, detail, updated_at = row
    decision = Decision(
        key=key,
        rule=rule,
        action=action,
        params=decode_value(params),
        mode=Mode(mode),
        event=None if event is None else decode_event(event),
        time=parse_utc(decided_at),
    )
    return LedgerEntry(decision, LedgerState(state), parse_utc(updated_at), attempts, detail)


def _alert(row: Sequence[Any]) -> AlertRecord:
    key, rule, status, started_at, updated_at, data, resolve_key = row
    return AlertRecord(
        key,
        rule,
        status,
        parse_utc(started_at),
        parse_utc(updated_at),
        decode_value(data),
        resolve_key,
    )


def _budget(row: Sequence[Any]) -> BudgetRecord:
    rule, scope, month, updated_at, data = row
    return BudgetRecord(rule, scope, month, parse_utc(updated_at), decode_value(data))


def _delivery(row: Sequence[Any]) -> Delivery:
    delivery_id, destination, notification, created_at, next_at, attempts, last_error = row
    return Delivery(
        id=delivery_id,
        destination=destination,
        notification=Notification.from_dict(decode_value(notification)),
        created_at=parse_utc(created_at),
        next_at=parse_utc(next_at),
        attempts=attempts,
        last_error=last_error,
    )
