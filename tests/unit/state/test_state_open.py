"""Opening the SQLite store: file creation, durability settings, migrations and refusals."""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from daemon.state import Durability, SqliteStore, StateError
from daemon.state.migrations import LATEST, MIGRATIONS, migrate, statements

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
TABLES = ["alerts", "budgets", "cursors", "ledger", "memory", "outbox", "seen", "sqlite_sequence"]


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the file on a connection of its own, as another process would."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_fresh_store_creates_private_files_with_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "var" / "cloudpilot" / "state.db"
    store = SqliteStore(path)
    await store.open()
    try:
        async with store.batch() as batch:
            await batch.mark_seen(["k"], START)
        assert mode_of(path.parent) == 0o700
        assert mode_of(path) == 0o600
        assert mode_of(path.with_name("state.db-wal")) == 0o600
        assert mode_of(path.with_name("state.db-shm")) == 0o600
    finally:
        await store.close()
    assert rows(path, "PRAGMA user_version") == [(LATEST,)]
    names = rows(path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert [name for (name,) in names] == TABLES


def folder(path: Path, mode: int) -> Path:
    path.mkdir()
    path.chmod(mode)
    return path


async def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    shared = folder(tmp_path / "state", 0o710)  # e.g. made by systemd's StateDirectory=
    store = SqliteStore(shared / "state.db")
    await store.open()
    await store.close()
    assert mode_of(shared) == 0o710


async def test_wal_and_synchronous_full_are_in_force(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    await store.open()
    try:
        # journal_mode is a property of the file: another connection sees it.
        assert rows(path, "PRAGMA journal_mode") == [("wal",)]
        # synchronous belongs to a connection: ask the store's own.
        assert await store.durability() == Durability(journal_mode="wal", synchronous=2)
    finally:
        await store.close()


class _NoWal(SqliteStore):
    _journal_mode_request = "TRUNCATE"


class _LaxSync(SqliteStore):
    _synchronous_request = "NORMAL"


async def test_a_journal_mode_that_did_not_take_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with pytest.raises(StateError) as caught:
        await _NoWal(path).open()
    assert str(caught.value) == (
        f"{path}: journal_mode is 'truncate', not 'wal'; the store needs WAL"
        " (a local filesystem that supports shared memory)"
    )


async def test_a_synchronous_level_that_did_not_take_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with pytest.raises(StateError, match=f"^{path}: synchronous is 1, not 2 \\(FULL\\)$"):
        await _LaxSync(path).open()


async def test_reopening_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    await store.open()
    async with store.batch() as batch:
        await batch.set_cursor("actions", {"high_water": 709})
    await store.close()
    schema = rows(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")

    again = SqliteStore(path)
    await again.open()
    try:
        assert await again.get_cursor("actions") == {"high_water": 709}
    finally:
        await again.close()
    assert rows(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema
    assert rows(path, "PRAGMA user_version") == [(LATEST,)]

    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, path) == LATEST


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(StateError) as caught:
        await SqliteStore(path).open()
    assert str(caught.value) == (
        f"{path} has schema version 7; this Cloudpilot knows up to {LATEST}: upgrade Cloudpilot"
    )
    assert rows(path, "PRAGMA user_version") == [(7,)]


async def test_migrations_apply_in_order_each_in_its_own_transaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    steps = (
        "CREATE TABLE a (x TEXT); INSERT INTO a VALUES ('semi;colon');",
        "CREATE TABLE b (y INTEGER); INSERT INTO b VALUES (1);",
        "CREATE TABLE c (z INTEGER); INSERT INTO nowhere VALUES (1);",
    )
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, path, steps[:1]) == 0
        assert await migrate(db, path, steps[:2]) == 1
        with pytest.raises(
            StateError, match=f"^{path}: schema migration 3 failed: no such table: nowhere$"
        ):
            await migrate(db, path, steps)
        assert not db.in_transaction
    # The failed migration left no trace; the ones before it stay.
    assert rows(path, "PRAGMA user_version") == [(2,)]
    assert rows(path, "SELECT x FROM a") == [("semi;colon",)]
    assert rows(path, "SELECT y FROM b") == [(1,)]
    assert rows(path, "SELECT name FROM sqlite_master WHERE name = 'c'") == []


def test_statements_split_only_where_a_statement_ends() -> None:
    script = """
        CREATE TABLE t (x TEXT DEFAULT 'a;b');  -- a comment; with a semicolon
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 'c;d'; END;
        CREATE INDEX i ON t (x);
    """
    found = statements(script)
    assert len(found) == 3
    assert found[1].startswith("-- a comment; with a semicolon\n")
    assert found[1].endswith("END;")
    assert all(sqlite3.complete_statement(s) for s in found)
    assert len(statements(MIGRATIONS[0])) == 11  # six tables, five indexes


async def test_an_unwritable_place_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    path = blocker / "state.db"
    with pytest.raises(StateError, match=f"^{path}: cannot create the state database: "):
        await SqliteStore(path).open()


async def test_a_folder_in_the_way_is_named(tmp_path: Path) -> None:
    path = folder(tmp_path / "state.db", 0o700)
    with pytest.raises(
        StateError, match=f"^{path}: cannot open the state database: unable to open"
    ):
        await SqliteStore(path).open()


async def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not SQLite, just text that happens to be long enough" * 20)
    with pytest.raises(
        StateError, match=f"^{path}: cannot use the state database: file is not a database$"
    ):
        await SqliteStore(path).open()


async def test_an_existing_file_is_opened_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o640)
    os.close(fd)
    path.chmod(0o640)
    store = SqliteStore(path)
    await store.open()
    await store.close()
    assert mode_of(path) == 0o640
    assert rows(path, "PRAGMA user_version") == [(LATEST,)]


async def test_close_is_idempotent_and_a_closed_store_says_so(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    with pytest.raises(
        StateError, match=f"^{path}: cannot check integrity: the store is not open$"
    ):
        await store.integrity_check()
    await store.open()
    await store.open()  # already open: nothing happens
    assert await store.integrity_check() == "ok"
    await store.close()
    await store.close()
    with pytest.raises(StateError, match="cannot run a batch: the store is not open"):
        async with store.batch():
            pass
    await store.open()  # a closed store can be opened again
    assert await store.integrity_check() == "ok"
    await store.close()
