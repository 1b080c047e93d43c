"""The SQLite outbox: idempotent enqueue, due order, retries, removal and restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import rows

from daemon.clock import FakeClock
from daemon.models import Decision, Mode
from daemon.notifications import AlertStatus, Delivery, Notification, Severity, dedup_key
from daemon.state import AlertRecord, SqliteStore, StateError
from daemon.state.codec import decode_value
from daemon.state.sqlite import ERROR_LIMIT

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def notification(
    n: int, *, summary: str = "", status: AlertStatus = AlertStatus.FIRING
) -> Notification:
    identity = f"page-failed/ec2000{n:02d}"
    return Notification(
        alert_key=identity,
        dedup_key=dedup_key(identity),
        rule="page-failed",
        status=status,
        severity=Severity.CRITICAL,
        summary=summary or f"power_off failed on ec2000{n:02d}",
        description="",
        resource=f"ec2000{n:02d}",
        labels={"alertname": "page-failed", "severity": "critical", "resource": f"ec2000{n:02d}"},
        started_at=START,
    )


async def enqueue(
    store: SqliteStore, destination: str, key: str, note: Notification, now: datetime
) -> bool:
    async with store.batch() as batch:
        return await batch.enqueue(destination, key, note, now)


async def test_enqueue_is_idempotent_per_destination(store: SqliteStore, clock: FakeClock) -> None:
    first = notification(1)
    assert await enqueue(store, "oncall", "k1", first, clock.now()) is True
    clock.advance(5)
    # The same key again, even with another notification, leaves the queued one as it is.
    assert (
        await enqueue(store, "oncall", "k1", notification(1, summary="other"), clock.now()) is False
    )
    assert await enqueue(store, "oncall#2", "k1", first, clock.now()) is True

    assert await store.pending_deliveries() == {"oncall": 1, "oncall#2": 1}
    (only,) = await store.due_deliveries("oncall", clock.now())
    assert (only.notification, only.created_at, only.next_at) == (first, START, START)


async def test_enqueue_inside_one_batch_sees_its_own_rows(store: SqliteStore) -> None:
    async with store.batch() as batch:
        assert await batch.enqueue("oncall", "k1", notification(1), START) is True
        assert await batch.enqueue("oncall", "k1", notification(1), START) is False
    assert rows(store.path, "SELECT destination, delivery_key, alert_key FROM outbox") == [
        ("oncall", "k1", "page-failed/ec200001")
    ]
    # Plain data is stored as the plain JSON of `as_dict()`.
    ((stored,),) = rows(store.path, "SELECT notification FROM outbox")
    assert json.loads(stored) == notification(1).as_dict()


async def test_due_deliveries_come_oldest_first_and_only_when_due(
    store: SqliteStore, clock: FakeClock
) -> None:
    async with store.batch() as batch:
        for n in (3, 1, 2):
            await batch.enqueue("oncall", f"k{n}", notification(n), clock.now())
            clock.advance(10)
        await batch.enqueue("slack", "k9", notification(9), START)

    due = await store.due_deliveries("oncall", clock.now())
    assert [d.notification.alert_key for d in due] == [
        "page-failed/ec200003",
        "page-failed/ec200001",
        "page-failed/ec200002",
    ]
    assert [d.destination for d in due] == ["oncall"] * 3
    assert [d.next_at for d in due] == [START + timedelta(seconds=s) for s in (0, 10, 20)]
    assert due[0].id < due[1].id < due[2].id
    assert [d.id for d in await store.due_deliveries("oncall", clock.now(), limit=2)] == [
        d.id for d in due[:2]
    ]
    # Due means next_at <= now: the third is due at exactly START + 20 s, not a moment before.
    at_20 = START + timedelta(seconds=20)
    assert len(await store.due_deliveries("oncall", at_20)) == 3
    assert len(await store.due_deliveries("oncall", at_20 - timedelta(microseconds=1))) == 2
    assert await store.due_deliveries("oncall", START - timedelta(seconds=1)) == []
    assert await store.due_deliveries("nowhere", clock.now()) == []
    assert await store.next_delivery_at("oncall") == START
    assert await store.next_delivery_at("nowhere") is None


async def test_only_each_alerts_oldest_delivery_is_due(
    store: SqliteStore, clock: FakeClock
) -> None:
    resolved = notification(1, status=AlertStatus.RESOLVED)
    async with store.batch() as batch:
        await batch.enqueue("oncall", "k1/firing", notification(1), START)
        await batch.enqueue("oncall", "k1/resolved", resolved, START)
        await batch.enqueue("oncall", "k2/firing", notification(2), START)
    first, other = await store.due_deliveries("oncall", START)
    assert (first.notification.status, other.notification.alert_key) == (
        AlertStatus.FIRING,
        "page-failed/ec200002",
    )
    # While the firing one waits for its retry, its resolved one waits behind it.
    await store.postpone_delivery(first.id, START + timedelta(seconds=30), "HTTP 503")
    assert [d.id for d in await store.due_deliveries("oncall", START)] == [other.id]
    await store.remove_delivery(other.id)
    assert await store.due_deliveries("oncall", START) == []
    assert await store.next_delivery_at("oncall") == START + timedelta(seconds=30)
    await store.remove_delivery(first.id)
    (last,) = await store.due_deliveries("oncall", START)
    assert last.notification == resolved


async def test_postpone_counts_attempts_and_keeps_the_error_head(
    store: SqliteStore, clock: FakeClock
) -> None:
    await enqueue(store, "oncall", "k1", notification(1), clock.now())
    await enqueue(store, "oncall", "k2", notification(2), clock.now())
    first, second = await store.due_deliveries("oncall", clock.now())

    await store.postpone_delivery(
        first.id, START + timedelta(seconds=30), "503 Service Unavailable"
    )
    assert [d.id for d in await store.due_deliveries("oncall", START)] == [second.id]
    assert await store.next_delivery_at("oncall") == START
    await store.remove_delivery(second.id)
    assert await store.next_delivery_at("oncall") == START + timedelta(seconds=30)

    long_error = "timeout " + "x" * 1000
    await store.postpone_delivery(first.id, START + timedelta(seconds=90), long_error)
    assert await store.due_deliveries("oncall", START + timedelta(seconds=89)) == []
    (again,) = await store.due_deliveries("oncall", START + timedelta(seconds=90))
    assert again == Delivery(
        id=first.id,
        destination="oncall",
        notification=notification(1),
        created_at=START,
        next_at=START + timedelta(seconds=90),
        attempts=2,
        last_error=long_error[:ERROR_LIMIT],
    )
    assert len(again.last_error) == 300
    assert await store.next_delivery_at("oncall") == START + timedelta(seconds=90)


async def test_remove_takes_a_delivery_out_for_good(store: SqliteStore, clock: FakeClock) -> None:
    await enqueue(store, "oncall", "k1", notification(1), clock.now())
    await enqueue(store, "oncall", "k2", notification(2), clock.now())
    first, second = await store.due_deliveries("oncall", clock.now())

    await store.remove_delivery(first.id)
    await store.remove_delivery(first.id)  # already gone: nothing happens
    await store.postpone_delivery(first.id, START, "late answer")  # gone: nothing to postpone
    assert [d.id for d in await store.due_deliveries("oncall", clock.now())] == [second.id]
    await store.remove_delivery(second.id)
    assert await store.due_deliveries("oncall", clock.now()) == []
    assert await store.next_delivery_at("oncall") is None
    assert await store.pending_deliveries() == {}

    # Ids are never reused, so a stale id can never reach a newer delivery.
    await enqueue(store, "oncall", "k3", notification(3), clock.now())
    (third,) = await store.due_deliveries("oncall", clock.now())
    assert third.id > second.id
    # A removed key may be queued again (the outbox holds what is owed, not a history).
    assert await enqueue(store, "oncall", "k1", notification(1), clock.now()) is True


async def test_pending_counts_every_queued_delivery_per_destination(
    store: SqliteStore, clock: FakeClock
) -> None:
    assert await store.pending_deliveries() == {}
    async with store.batch() as batch:
        for n in range(3):
            await batch.enqueue("oncall", f"k{n}", notification(n), clock.now())
        await batch.enqueue("slack", "k0", notification(0), clock.now())
        await batch.enqueue("am#1", "k0", notification(0), clock.now())
        await batch.enqueue("am#2", "k0", notification(0), clock.now())
    (first, *_) = await store.due_deliveries("oncall", clock.now())
    # Postponed deliveries are still pending; removed ones are not.
    await store.postpone_delivery(first.id, START + timedelta(hours=1), "429")
    (slack,) = await store.due_deliveries("slack", clock.now())
    await store.remove_delivery(slack.id)
    assert await store.pending_deliveries() == {"am#1": 1, "am#2": 1, "oncall": 3}


async def test_a_rolled_back_batch_queues_nothing_and_keeps_no_alert(
    store: SqliteStore, clock: FakeClock
) -> None:
    class Boom(Exception):
        pass

    alert = AlertRecord("page-failed/ec200001", "page-failed", "firing", START, START)
    with pytest.raises(Boom):
        async with store.batch() as batch:
            await batch.put_alert(alert)
            assert await batch.enqueue("oncall", "k1", notification(1), clock.now()) is True
            assert await batch.get_alert(alert.key) == alert
            raise Boom

    assert await store.get_alert(alert.key) is None
    assert await store.pending_deliveries() == {}
    assert await store.next_delivery_at("oncall") is None
    assert rows(store.path, "SELECT count(*) FROM outbox") == [(0,)]
    assert rows(store.path, "SELECT count(*) FROM alerts") == [(0,)]
    # The key was never queued, so the next batch queues it.
    assert await enqueue(store, "oncall", "k1", notification(1), clock.now()) is True


async def test_a_naive_time_is_refused_and_the_batch_rolls_back(store: SqliteStore) -> None:
    naive = datetime(2026, 11, 10, 12, 0)  # noqa: DTZ001
    with pytest.raises(StateError, match=r"^now: 2026-11-10T12:00:00 has no time zone"):
        async with store.batch() as batch:
            await batch.enqueue("oncall", "k1", notification(1), START)
            await batch.enqueue("oncall", "k2", notification(2), naive)
    assert await store.pending_deliveries() == {}
    with pytest.raises(StateError, match=r"^next_at: .* has no time zone"):
        await store.postpone_delivery(1, naive, "x")


async def test_a_notification_round_trips_with_unicode_and_nested_event_data(
    store: SqliteStore,
) -> None:
    cest = timezone(timedelta(hours=2))
    identity = "città-di-frosinone/" + "ä" * 300
    note = Notification(
        alert_key=identity,
        dedup_key=dedup_key(identity),
        rule="città-di-frosinone",
        status=AlertStatus.RESOLVED,
        severity=Severity.WARNING,
        summary="Spesa mensile oltre l'80 % — 412,50 €  🚨",
        description='line one\nline two\t"quoted" \\ back\u2028slash',
        resource="ec200001",
        labels={"alertname": "città-di-frosinone", "severity": "warning", "team": "运维"},
        started_at=datetime(2026, 11, 10, 14, 0, 0, 123456, tzinfo=cest),
        ended_at=START + timedelta(minutes=5),
        event={
            "type": "seeweb.action.failed",
            "key": "seeweb.action:709:failed",
            "time": "2026-11-10T14:00:01.000250+02:00",
            "resource": "ec200001",
            "data": {
                "id": 709,
                "progress": 0.5,
                "ok": False,
                "missing": None,
                "steps": [{"name": "spegnimento", "codes": [1, 2, 3]}, []],
                "$weird": {"$datetime": "not a tag"},
                "when": datetime(2026, 11, 10, 11, 59, tzinfo=UTC),
                "pair": (1, "a"),
                "nested": {"deeper": {"deepest": ["ü", {"empty": {}}]}},
            },
            "source": "actions",
        },
    )
    assert len(note.dedup_key) == 255
    await enqueue(store, "oncall", "resolved/1", note, START)

    (delivery,) = await store.due_deliveries("oncall", START)
    assert delivery.notification == note
    assert delivery.notification.started_at == note.started_at
    assert delivery.notification.ended_at == START + timedelta(minutes=5)
    data = delivery.notification.event["data"]
    assert data["$weird"] == {"$datetime": "not a tag"}
    assert data["when"] == datetime(2026, 11, 10, 11, 59, tzinfo=UTC)
    assert data["pair"] == (1, "a")
    assert isinstance(data["pair"], tuple)
    # The column holds `as_dict()` as codec JSON (tags only where plain JSON falls short).
    ((stored,),) = rows(store.path, "SELECT notification FROM outbox")
    assert decode_value(stored) == note.as_dict()
    assert json.loads(stored)["summary"] == note.summary
    assert "città" in stored  # kept as UTF-8, not \u escapes


async def test_a_reopened_store_still_holds_its_queued_deliveries(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, clock=clock)
    await store.open()
    async with store.batch() as batch:
        await batch.record_decisions(
            [Decision("r/0/k", "r", "alert", {}, Mode.ENFORCE, None, START)]
        )
        await batch.enqueue("oncall", "k1", notification(1), START)
        await batch.enqueue("oncall", "k2", notification(2), START)
    (first, second) = await store.due_deliveries("oncall", START)
    await store.postpone_delivery(first.id, START + timedelta(seconds=30), "connection reset")
    await store.close()

    again = SqliteStore(path, clock=clock)
    await again.open()
    try:
        assert await again.pending_deliveries() == {"oncall": 2}
        assert await again.due_deliveries("oncall", START) == [second]
        later = await again.due_deliveries("oncall", START + timedelta(seconds=30))
        assert [(d.id, d.attempts, d.last_error) for d in later] == [
            (first.id, 1, "connection reset"),
            (second.id, 0, ""),
        ]
        async with again.batch() as batch:
            assert await batch.enqueue("oncall", "k1", notification(1), START) is False
    finally:
        await again.close()
