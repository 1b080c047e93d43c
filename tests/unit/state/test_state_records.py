"""SqliteStore records: round trips, batches, the ledger, dedup and pruning, on real files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import rows

from daemon.clock import FakeClock
from daemon.models import Decision, Event, Mode
from daemon.rules.memory import MemoryEntry, MemoryKind
from daemon.state import (
    AlertRecord,
    BudgetRecord,
    LedgerEntry,
    LedgerState,
    SqliteStore,
    StateError,
)
from daemon.state.sqlite import IN_CHUNK

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def event(n: int, **data: Any) -> Event:
    return Event(
        type="seeweb.action.failed",
        key=f"seeweb.action:{n}:failed",
        time=START - timedelta(minutes=n),
        resource=f"ec2000{n:02d}",
        data={"id": n, "type": "power_off", **data},
        source="actions",
    )


def decision(n: int, *, rule: str = "page-failed", mode: Mode = Mode.ENFORCE) -> Decision:
    ev = event(n)
    return Decision(
        key=f"{rule}/0/{ev.key}",
        rule=rule,
        action="webhook",
        params={"url": "https://hooks.example/x", "retries": 3},
        mode=mode,
        event=ev,
        time=START + timedelta(seconds=n),
    )


async def record(store: SqliteStore, *decisions: Decision) -> list[Decision]:
    async with store.batch() as batch:
        return await batch.record_decisions(decisions)


# Round trips


async def test_cursor_round_trips_and_is_replaced(store: SqliteStore, clock: FakeClock) -> None:
    assert await store.get_cursor("actions") is None
    cursor = {"high_water": 709, "open": [712, 713], "since": datetime(2026, 11, 1, tzinfo=UTC)}
    async with store.batch() as batch:
        await batch.set_cursor("actions", cursor)
    assert await store.get_cursor("actions") == cursor
    clock.advance(30)
    async with store.batch() as batch:
        await batch.set_cursor("actions", {"high_water": 710})
    assert await store.get_cursor("actions") == {"high_water": 710}
    assert await store.get_cursor("logs") is None
    assert rows(store.path, "SELECT source, updated_at FROM cursors") == [
        ("actions", "2026-11-10T12:00:30.000000Z")
    ]


async def test_memory_round_trips_replaces_and_drops(store: SqliteStore) -> None:
    cest = timezone(timedelta(hours=2))
    entries = [
        MemoryEntry(MemoryKind.FOR, "web-autoscale", "web-1|up", START),
        MemoryEntry(MemoryKind.THROTTLE, "page-failed", "ec200001|power_off", START),
        MemoryEntry(
            MemoryKind.COOLDOWN, "web-autoscale", "web-1", datetime(2026, 11, 10, 15, tzinfo=cest)
        ),
    ]
    async with store.batch() as batch:
        await batch.put_memory(entries)
    assert sorted(await store.load_memory(), key=str) == sorted(entries, key=str)

    later = MemoryEntry(MemoryKind.FOR, "web-autoscale", "web-1|up", START + timedelta(hours=1))
    async with store.batch() as batch:
        await batch.put_memory([later])
        await batch.drop_memory(
            [MemoryEntry(MemoryKind.THROTTLE, "page-failed", "ec200001|power_off", START)]
        )
    loaded = await store.load_memory()
    assert sorted(loaded, key=str) == sorted([later, entries[2]], key=str)
    assert all(entry.since.tzinfo is UTC for entry in loaded)


async def test_alert_round_trips_and_only_firing_ones_are_listed(store: SqliteStore) -> None:
    firing = AlertRecord(
        key="page-failed|ec200001|power_off",
        rule="page-failed",
        status="firing",
        started_at=START,
        updated_at=START,
        data={"labels": {"team": "ops"}, "sent": ["oncall"], "count": 1},
    )
    older = AlertRecord("cap|account", "monthly-cap", "firing", START - timedelta(days=1), START)
    resolved = AlertRecord("page-failed|ec200002|rollback", "page-failed", "resolved", START, START)
    for alert in (firing, older, resolved):
        await store.put_alert(alert)
    assert await store.get_alert(firing.key) == firing
    assert await store.get_alert("nope") is None
    assert await store.firing_alerts() == [older, firing]

    resolved_now = AlertRecord(
        **{**_fields(firing), "status": "resolved", "updated_at": START + timedelta(minutes=5)}
    )
    await store.put_alert(resolved_now)
    assert await store.get_alert(firing.key) == resolved_now
    assert await store.firing_alerts() == [older]


async def test_budget_round_trips_per_month(store: SqliteStore) -> None:
    record_ = BudgetRecord(
        rule="monthly-cap",
        scope="account",
        month="2026-11",
        updated_at=START,
        data={"spent": 412.5, "forecast": 530.0, "warned": [50, 80], "enforced": []},
    )
    await store.put_budget(record_)
    assert await store.get_budget("monthly-cap", "account", "2026-11") == record_
    assert await store.get_budget("monthly-cap", "account", "2026-12") is None
    newer = BudgetRecord(
        "monthly-cap", "account", "2026-11", START + timedelta(hours=1), {"spent": 420}
    )
    await store.put_budget(newer)
    assert await store.get_budget("monthly-cap", "account", "2026-11") == newer
    assert rows(store.path, "SELECT count(*) FROM budgets") == [(1,)]


def _fields(alert: AlertRecord) -> dict[str, Any]:
    return {name: getattr(alert, name) for name in AlertRecord.__slots__}


# The ledger


async def test_a_decision_comes_back_exactly(store: SqliteStore) -> None:
    cest = timezone(timedelta(hours=2))
    ev = Event(
        type="seeweb.log",
        key="seeweb.log:88",
        time=datetime(2026, 11, 10, 14, 0, 0, 123456, tzinfo=cest),
        resource="ec200001",
        data={"when": datetime(2026, 11, 10, 11, 0, tzinfo=UTC), "pair": (1, "a"), "$x": 1},
        source="logs",
    )
    original = Decision("r/0/seeweb.log:88", "r", "log", {"level": "info"}, Mode.ENFORCE, ev, START)
    no_event = Decision("cap/0/2026-11", "cap", "alert", {}, Mode.ENFORCE, None, START)
    assert await record(store, original, no_event) == [original, no_event]

    entry = await store.get_entry(original.key)
    assert entry == LedgerEntry(original, LedgerState.INTENT, START, attempts=0, detail="")
    assert entry.key == original.key
    assert entry.decision.event is not None
    assert entry.decision.event.time.utcoffset() == timedelta(hours=2)
    assert entry.decision.event.data["pair"] == (1, "a")
    assert (await store.get_entry(no_event.key)) == LedgerEntry(no_event, LedgerState.INTENT, START)
    assert await store.get_entry("missing") is None


async def test_the_same_decision_is_recorded_once(store: SqliteStore) -> None:
    first = decision(1)
    assert await record(store, first, decision(2)) == [first, decision(2)]
    assert await record(store, first) == []
    assert await record(store, decision(3), decision(3), first) == [decision(3)]
    assert rows(store.path, "SELECT count(*) FROM ledger") == [(3,)]


async def test_a_second_record_leaves_the_first_as_it_is(
    store: SqliteStore, clock: FakeClock
) -> None:
    first = decision(1)
    await record(store, first)
    await store.mark_started(first.key, START)
    clock.advance(60)
    changed = Decision(
        first.key, first.rule, "alert", {"other": True}, Mode.DRY_RUN, None, clock.now()
    )
    assert await record(store, changed) == []
    entry = await store.get_entry(first.key)
    assert entry is not None
    assert (entry.decision, entry.state, entry.attempts) == (first, LedgerState.STARTED, 1)


async def test_dry_run_decisions_are_recorded_as_dry_run(store: SqliteStore) -> None:
    dry = decision(1, mode=Mode.DRY_RUN)
    await record(store, dry, decision(2))
    assert [(e.key, e.state) for e in await store.ledger()] == [
        (decision(2).key, LedgerState.INTENT),
        (dry.key, LedgerState.DRY_RUN),
    ]
    assert [e.key for e in await store.open_entries()] == [decision(2).key]


async def test_ledger_states_move_forward_only(store: SqliteStore, clock: FakeClock) -> None:
    d = decision(1)
    await record(store, d)

    await store.mark_started(d.key, START + timedelta(seconds=1))
    await store.mark_started(d.key, START + timedelta(seconds=2))  # a retry after a crash
    entry = await store.get_entry(d.key)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.updated_at) == (
        LedgerState.STARTED,
        2,
        START + timedelta(seconds=2),
    )

    await store.mark_finished(
        d.key, LedgerState.DONE, "delivered: 200", START + timedelta(seconds=3)
    )
    assert await store.get_entry(d.key) == LedgerEntry(
        d, LedgerState.DONE, START + timedelta(seconds=3), attempts=2, detail="delivered: 200"
    )
    assert await store.open_entries() == []

    with pytest.raises(
        StateError, match=f"ledger entry '{d.key}' is done; only an open entry can become started"
    ):
        await store.mark_started(d.key, START)
    with pytest.raises(
        StateError, match=f"ledger entry '{d.key}' is done; only an open entry can become failed"
    ):
        await store.mark_finished(d.key, LedgerState.FAILED, "again", START)
    with pytest.raises(StateError, match="ledger entry 'nope' does not exist"):
        await store.mark_started("nope", START)
    entry = await store.get_entry(d.key)
    assert entry is not None
    assert (entry.state, entry.detail) == (LedgerState.DONE, "delivered: 200")


async def test_an_intent_can_be_finished_without_starting(store: SqliteStore) -> None:
    skipped, failed = decision(1), decision(2)
    await record(store, skipped, failed)
    await store.mark_finished(
        skipped.key, LedgerState.SKIPPED, "reconciled: snapshot exists", START
    )
    await store.mark_finished(failed.key, LedgerState.FAILED, "409 busy", START)
    assert {e.key: (e.state, e.attempts) for e in await store.ledger()} == {
        skipped.key: (LedgerState.SKIPPED, 0),
        failed.key: (LedgerState.FAILED, 0),
    }


@pytest.mark.parametrize("state", [LedgerState.INTENT, LedgerState.STARTED, LedgerState.DRY_RUN])
async def test_only_done_failed_or_skipped_finish(store: SqliteStore, state: LedgerState) -> None:
    d = decision(1)
    await record(store, d)
    with pytest.raises(ValueError, match=f"ledger entry '{d.key}': .* does not finish an entry"):
        await store.mark_finished(d.key, state, "", START)
    entry = await store.get_entry(d.key)
    assert entry is not None
    assert entry.state is LedgerState.INTENT


async def test_dry_run_entries_never_start(store: SqliteStore) -> None:
    dry = decision(1, mode=Mode.DRY_RUN)
    await record(store, dry)
    with pytest.raises(StateError, match="is dry_run; only an open entry can become started"):
        await store.mark_started(dry.key, START)


async def test_open_entries_oldest_first_and_ledger_newest_first(
    store: SqliteStore, clock: FakeClock
) -> None:
    await record(store, decision(5), decision(1))  # same batch, same time: insertion order
    clock.advance(10)
    await record(store, decision(3, rule="other"))
    clock.advance(10)
    await record(store, decision(2))
    await store.mark_started(decision(1).key, clock.now())
    await store.mark_finished(decision(2).key, LedgerState.DONE, "", clock.now())

    assert [e.key for e in await store.open_entries()] == [
        decision(5).key,
        decision(1).key,
        decision(3, rule="other").key,
    ]
    assert [e.key for e in await store.ledger()] == [
        decision(2).key,
        decision(3, rule="other").key,
        decision(1).key,
        decision(5).key,
    ]
    assert [e.key for e in await store.ledger(limit=2)] == [
        decision(2).key,
        decision(3, rule="other").key,
    ]
    assert [e.key for e in await store.ledger(rule="page-failed", limit=2)] == [
        decision(2).key,
        decision(1).key,
    ]
    assert await store.ledger(rule="unknown") == []


# Batches


async def test_a_batch_commits_everything_together(store: SqliteStore) -> None:
    async with store.batch() as batch:
        assert await batch.unseen(["a", "b"]) == {"a", "b"}
        await batch.mark_seen(["a", "b"], START)
        await batch.set_cursor("actions", {"high_water": 1})
        await batch.record_decisions([decision(1)])
        await batch.put_memory([MemoryEntry(MemoryKind.THROTTLE, "r", "g", START)])
        # Inside the transaction the batch sees its own writes.
        assert await batch.unseen(["a", "c"]) == {"c"}
    assert rows(store.path, "SELECT key FROM seen ORDER BY key") == [("a",), ("b",)]
    assert rows(store.path, "SELECT cursor FROM cursors") == [('{"high_water":1}',)]
    assert rows(store.path, "SELECT key, state FROM ledger") == [(decision(1).key, "intent")]
    assert rows(store.path, "SELECT kind, rule, group_key FROM memory") == [("throttle", "r", "g")]


async def test_an_exception_in_a_batch_leaves_nothing(store: SqliteStore) -> None:
    async with store.batch() as batch:
        await batch.set_cursor("actions", {"high_water": 1})
        await batch.put_memory([MemoryEntry(MemoryKind.FOR, "r", "kept", START)])

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.batch() as batch:
            await batch.mark_seen([f"k{i}" for i in range(100)], START)
            await batch.set_cursor("actions", {"high_water": 2})
            await batch.set_cursor("logs", {"offset": 40})
            assert await batch.record_decisions([decision(1)]) == [decision(1)]
            await batch.put_memory([MemoryEntry(MemoryKind.FOR, "r", "lost", START)])
            await batch.drop_memory([MemoryEntry(MemoryKind.FOR, "r", "kept", START)])
            raise Boom

    assert await store.get_cursor("actions") == {"high_water": 1}
    assert await store.get_cursor("logs") is None
    assert [m.group for m in await store.load_memory()] == ["kept"]
    assert rows(store.path, "SELECT count(*) FROM seen") == [(0,)]
    assert rows(store.path, "SELECT count(*) FROM ledger") == [(0,)]
    # The lock was released and the connection is usable.
    assert await record(store, decision(1)) == [decision(1)]


async def test_a_state_error_inside_a_batch_rolls_it_back(store: SqliteStore) -> None:
    naive = datetime(2026, 11, 10)  # noqa: DTZ001
    with pytest.raises(StateError, match="has no time zone"):
        async with store.batch() as batch:
            await batch.set_cursor("actions", {"high_water": 3})
            await batch.mark_seen(["k"], naive)
    assert await store.get_cursor("actions") is None


async def test_a_batch_cannot_be_used_after_it_ends(store: SqliteStore) -> None:
    async with store.batch() as batch:
        pass
    with pytest.raises(StateError, match="cannot mark keys seen: the batch has ended"):
        await batch.mark_seen(["k"], START)


async def test_store_methods_inside_a_batch_fail_instead_of_deadlocking(store: SqliteStore) -> None:
    async with store.batch() as batch:
        await batch.set_cursor("actions", {"high_water": 1})
        with pytest.raises(StateError, match="cannot read the cursor of 'actions' inside a batch"):
            await store.get_cursor("actions")
        with pytest.raises(StateError, match="cannot run a batch inside a batch"):
            async with store.batch():
                pass
    assert await store.get_cursor("actions") == {"high_water": 1}


# Seen keys


async def test_unseen_handles_thousands_of_keys_in_chunks(store: SqliteStore) -> None:
    keys = [f"seeweb.log:{i}" for i in range(2_000)]
    async with store.batch() as batch:
        await batch.mark_seen(keys[::2], START)

    queries: list[str] = []
    assert store._db is not None
    await store._db.set_trace_callback(queries.append)
    async with store.batch() as batch:
        fresh = await batch.unseen([*keys, *keys[:10]])

    assert fresh == set(keys[1::2])
    lookups = [q for q in queries if "FROM seen WHERE key IN" in q]
    assert len(lookups) == 4
    assert all(q.count("?") + q.count("'seeweb.log:") <= IN_CHUNK for q in lookups)


async def test_prune_seen_forgets_by_age(store: SqliteStore) -> None:
    async with store.batch() as batch:
        await batch.mark_seen(["old", "refreshed"], START)
        await batch.mark_seen(["middle"], START + timedelta(hours=1))
        await batch.mark_seen(["new"], START + timedelta(hours=2))
    async with store.batch() as batch:
        await batch.mark_seen(["refreshed"], START + timedelta(hours=2))
        await batch.mark_seen(["new"], START)  # an older sighting does not make a key older

    assert await store.prune_seen(START + timedelta(minutes=90)) == 2
    assert rows(store.path, "SELECT key FROM seen ORDER BY key") == [("new",), ("refreshed",)]
    assert await store.prune_seen(START + timedelta(minutes=90)) == 0
    async with store.batch() as batch:
        assert await batch.unseen(["old", "middle", "new", "refreshed"]) == {"old", "middle"}


async def test_times_are_stored_as_utc_text(store: SqliteStore) -> None:
    cet = timezone(timedelta(hours=1))
    async with store.batch() as batch:
        await batch.mark_seen(["k"], datetime(2026, 11, 10, 13, 0, tzinfo=cet))
    assert rows(store.path, "SELECT seen_at FROM seen") == [("2026-11-10T12:00:00.000000Z",)]


async def test_retention_prunes_ended_entries_and_keeps_open_ones(
    store: SqliteStore, clock: FakeClock
) -> None:
    done, owed, failed = decision(1), decision(2), decision(3)
    await record(store, done, owed, failed)
    await store.mark_finished(done.key, LedgerState.DONE, "ok", START)
    await store.mark_started(owed.key, START)  # the runner still owes it a result
    await store.mark_finished(failed.key, LedgerState.FAILED, "409", START)
    clock.advance(100 * 86400)
    recent = decision(4, rule="later")
    await record(store, recent)
    await store.mark_finished(recent.key, LedgerState.DONE, "ok", clock.now())

    pruned = await store.prune_ledger(clock.now() - timedelta(days=90))

    assert pruned == 2
    assert {entry.decision.key for entry in await store.ledger()} == {owed.key, recent.key}
    # Pruning again finds nothing more: the index range is empty.
    assert await store.prune_ledger(clock.now() - timedelta(days=90)) == 0
