"""Alert state in SQLite: resolve keys, matching, refresh and pruning, and migration 2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest
from conftest import rows

from daemon.clock import FakeClock
from daemon.models import Decision, Mode
from daemon.state import AlertRecord, LedgerState, SqliteStore, StateError
from daemon.state.migrations import LATEST, MIGRATIONS, migrate

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
RESOLVE = '{"resource":"ec200001"}'


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def alert(
    key: str,
    *,
    rule: str = "vm-down",
    status: str = "firing",
    started: float = 0,
    updated: float | None = None,
    resolve_key: str = RESOLVE,
) -> AlertRecord:
    """An alert that started `started` minutes after START and changed `updated` minutes after."""
    started_at = START + timedelta(minutes=started)
    updated_at = started_at if updated is None else START + timedelta(minutes=updated)
    return AlertRecord(
        key=key,
        rule=rule,
        status=status,
        started_at=started_at,
        updated_at=updated_at,
        data={"routes": ["oncall"], "fired": 1},
        resolve_key=resolve_key,
    )


async def put(store: SqliteStore, *alerts: AlertRecord) -> None:
    async with store.batch() as batch:
        for one in alerts:
            await batch.put_alert(one)


# Migration 2


async def test_a_version_1_database_migrates_and_keeps_its_alerts(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, path, MIGRATIONS[:1]) == 0
        await db.execute(
            "INSERT INTO alerts (key, rule, status, started_at, updated_at, data)"
            " VALUES ('vm-down/ec200001', 'vm-down', 'firing', '2026-11-10T12:00:00.000000Z',"
            " '2026-11-10T12:05:00.000000Z', '{\"fired\":2}')"
        )
    assert rows(path, "PRAGMA user_version") == [(1,)]

    store = SqliteStore(path)
    await store.open()
    try:
        old = AlertRecord(
            "vm-down/ec200001",
            "vm-down",
            "firing",
            START,
            START + timedelta(minutes=5),
            {"fired": 2},
        )
        assert await store.get_alert("vm-down/ec200001") == old
        assert old.resolve_key == ""
        assert await store.firing_alerts() == [old]
        async with store.batch() as batch:
            assert await batch.firing_alerts_matching("vm-down", "") == [old]
        assert await store.pending_deliveries() == {}
    finally:
        await store.close()
    assert LATEST == 2
    assert rows(path, "PRAGMA user_version") == [(2,)]
    indexes = rows(
        path,
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    assert ("alerts_by_resolve_key",) in indexes
    assert ("outbox_by_due",) in indexes


# Round trips


async def test_resolve_key_round_trips_through_store_and_batch(store: SqliteStore) -> None:
    firing = alert("vm-down/ec200001")
    await store.put_alert(firing)
    assert await store.get_alert(firing.key) == firing

    resolved = alert(
        "vm-down/ec200001", status="resolved", updated=3, resolve_key='{"resource":"other"}'
    )
    async with store.batch() as batch:
        assert await batch.get_alert(firing.key) == firing
        await batch.put_alert(resolved)
        assert await batch.get_alert(firing.key) == resolved  # the batch sees its own write
        assert await batch.get_alert("nope") is None
    assert await store.get_alert(firing.key) == resolved
    assert rows(store.path, "SELECT key, status, resolve_key FROM alerts") == [
        ("vm-down/ec200001", "resolved", '{"resource":"other"}')
    ]
    assert await store.firing_alerts() == []


async def test_a_bad_alert_is_refused_by_name_and_rolls_the_batch_back(store: SqliteStore) -> None:
    naive = datetime(2026, 11, 10)  # noqa: DTZ001
    bad = AlertRecord("vm-down/x", "vm-down", "firing", START, naive)
    with pytest.raises(StateError, match=r"^alert 'vm-down/x' updated_at: .* has no time zone"):
        async with store.batch() as batch:
            await batch.put_alert(alert("vm-down/kept-out"))
            await batch.put_alert(bad)
    assert rows(store.path, "SELECT count(*) FROM alerts") == [(0,)]


# Matching a resolving event


async def test_matching_takes_rule_resolve_key_and_firing_status(store: SqliteStore) -> None:
    later = alert("vm-down/b", started=10)
    earlier = alert("vm-down/a", started=-10)
    same_time_z = alert("vm-down/z", started=0)
    same_time_c = alert("vm-down/c", started=0)
    await put(
        store,
        later,
        earlier,
        same_time_z,
        same_time_c,
        alert("vm-down/resolved", status="resolved", started=-20, updated=-5),
        alert("vm-down/other-resource", resolve_key='{"resource":"ec200002"}'),
        alert("vm-down/no-resolve", resolve_key=""),
        alert("disk-full/a", rule="disk-full"),
    )
    async with store.batch() as batch:
        matching = await batch.firing_alerts_matching("vm-down", RESOLVE)
        assert matching == [earlier, same_time_c, same_time_z, later]
        assert [a.key for a in await batch.firing_alerts_matching("vm-down", "")] == [
            "vm-down/no-resolve"
        ]
        assert [a.key for a in await batch.firing_alerts_matching("disk-full", RESOLVE)] == [
            "disk-full/a"
        ]
        assert await batch.firing_alerts_matching("vm-down", '{"resource":"nope"}') == []
        assert await batch.firing_alerts_matching("unknown", RESOLVE) == []
        # Resolving in the batch takes the alert out of the match at once.
        await batch.put_alert(alert("vm-down/a", status="resolved", started=-10, updated=1))
        assert [a.key for a in await batch.firing_alerts_matching("vm-down", RESOLVE)] == [
            "vm-down/c",
            "vm-down/z",
            "vm-down/b",
        ]


# Refresh and prune


async def test_refresh_takes_firing_alerts_and_recent_resolutions(store: SqliteStore) -> None:
    await put(
        store,
        alert("old-firing", started=-600),
        alert("resolved-long-ago", status="resolved", started=-500, updated=-120),
        alert("resolved-at-the-edge", status="resolved", started=-400, updated=-60),
        alert("resolved-just-now", status="resolved", started=-300, updated=-1),
        alert("new-firing", started=-5, updated=-2),
    )
    refresh = await store.alerts_to_refresh(START - timedelta(minutes=60))
    assert [a.key for a in refresh] == [
        "old-firing",
        "resolved-at-the-edge",
        "resolved-just-now",
        "new-firing",
    ]
    assert refresh[0] == alert("old-firing", started=-600)
    assert [a.key for a in await store.alerts_to_refresh(START)] == ["old-firing", "new-firing"]


async def test_prune_forgets_only_alerts_resolved_before_the_horizon(store: SqliteStore) -> None:
    await put(
        store,
        alert("firing-for-ages", started=-10_000),
        alert("resolved-long-ago", status="resolved", started=-500, updated=-120),
        alert("resolved-older", status="resolved", started=-900, updated=-200),
        alert("resolved-at-the-edge", status="resolved", started=-400, updated=-60),
    )
    assert await store.prune_alerts(START - timedelta(minutes=60)) == 2
    assert rows(store.path, "SELECT key FROM alerts ORDER BY key") == [
        ("firing-for-ages",),
        ("resolved-at-the-edge",),
    ]
    assert await store.prune_alerts(START - timedelta(minutes=60)) == 0
    assert await store.prune_alerts(START) == 1
    assert [a.key for a in await store.firing_alerts()] == ["firing-for-ages"]


# The ledger, from inside a batch


async def test_a_batch_finishes_open_entries_like_the_store_does(
    store: SqliteStore, clock: FakeClock
) -> None:
    old = Decision("r/0/old", "r", "alert", {}, Mode.ENFORCE, None, START)
    new = Decision("r/0/new", "r", "alert", {}, Mode.ENFORCE, None, START)
    dry = Decision("r/0/dry", "r", "alert", {}, Mode.DRY_RUN, None, START)
    async with store.batch() as batch:
        await batch.record_decisions([old, dry])
    await store.mark_started(old.key, START)
    clock.advance(5)

    async with store.batch() as batch:
        await batch.record_decisions([new])
        await batch.mark_finished(new.key, LedgerState.DONE, "alert sent", clock.now())
        await batch.mark_finished(old.key, LedgerState.SKIPPED, "superseded", clock.now())
    done, skipped = await store.get_entry(new.key), await store.get_entry(old.key)
    assert done is not None
    assert skipped is not None
    assert (done.state, done.detail, done.updated_at) == (
        LedgerState.DONE,
        "alert sent",
        clock.now(),
    )
    assert (skipped.state, skipped.detail, skipped.attempts) == (
        LedgerState.SKIPPED,
        "superseded",
        1,
    )

    with pytest.raises(ValueError, match=r"ledger entry 'r/0/new': .* does not finish an entry"):
        async with store.batch() as batch:
            await batch.mark_finished(new.key, LedgerState.STARTED, "", clock.now())
    for key, state in ((new.key, "done"), (dry.key, "dry_run")):
        with pytest.raises(
            StateError,
            match=f"ledger entry '{key}' is {state}; only an open entry can become failed",
        ):
            async with store.batch() as batch:
                await batch.put_alert(alert("vm-down/lost"))
                await batch.mark_finished(key, LedgerState.FAILED, "again", clock.now())
    with pytest.raises(StateError, match="ledger entry 'nope' does not exist"):
        async with store.batch() as batch:
            await batch.mark_finished("nope", LedgerState.DONE, "", clock.now())

    # A refused move rolls its batch back and leaves the entry as it was.
    assert await store.get_entry(new.key) == done
    assert await store.get_alert("vm-down/lost") is None
