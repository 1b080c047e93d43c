"""The dispatcher: per-destination queues over the outbox, retries, pace, expiry and refresh."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.clock import FakeClock
from daemon.notifications import AlertStatus, Notification, SendResult, Severity, Verdict
from daemon.notify.dispatcher import BACKOFF_MAX_S, Dispatcher
from daemon.observability.logging import get_logger
from daemon.observability.metrics import Metrics
from daemon.state import SqliteStore
from daemon.state.store import AlertRecord

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def notification(key: str = "r/ec1", status: AlertStatus = AlertStatus.FIRING) -> Notification:
    return Notification(
        alert_key=key,
        dedup_key=f"cloudpilot/{key}",
        rule=key.partition("/")[0],
        status=status,
        severity=Severity.CRITICAL,
        summary=f"{key} {status.value}",
        description="",
        resource="ec1",
        labels={"alertname": "r", "severity": "critical", "resource": "ec1"},
        started_at=T0,
        ended_at=T0 if status is AlertStatus.RESOLVED else None,
    )


@dataclass
class FakeSender:
    """A route whose answers are scripted; it records what it was sent."""

    route: str
    destinations: tuple[str, ...] = ()
    answers: list[SendResult] = field(default_factory=list)
    rate_per_s: float = float("inf")
    timeout_s: float = 5.0
    kind: str = "webhook"
    sent: list[tuple[str, Notification]] = field(default_factory=list)
    posted: list[tuple[str, list[Notification]]] = field(default_factory=list)
    hang: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    sent_one: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.destinations = self.destinations or (self.route,)

    async def send(self, destination: str, notification: Notification) -> SendResult:
        self.sent.append((destination, notification))
        self.entered.set()
        if self.hang is not None:
            await self.hang.wait()
        self.sent_one.set()
        return self.answers.pop(0) if self.answers else SendResult(Verdict.DELIVERED, "HTTP 200")

    async def post_alerts(
        self, destination: str, notifications: Sequence[Notification]
    ) -> SendResult:
        self.posted.append((destination, list(notifications)))
        return SendResult(Verdict.DELIVERED, "HTTP 200")


@dataclass
class Rig:
    store: SqliteStore
    clock: FakeClock
    metrics: Metrics
    make: Callable[..., Dispatcher]

    async def enqueue(self, destination: str, *items: Notification) -> None:
        async with self.store.batch() as batch:
            for item in items:
                key = f"{item.alert_key}/{item.status.value}"
                await batch.enqueue(destination, key, item, self.clock.now())

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock(T0)
    store = SqliteStore(tmp_path / "state.db", clock=clock)
    await store.open()
    metrics = Metrics(CollectorRegistry())

    def make(*senders: FakeSender, **options: object) -> Dispatcher:
        return Dispatcher(
            store=store,
            senders={sender.route: sender for sender in senders},
            metrics=metrics,
            clock=clock,
            log=get_logger(),
            rng=random.Random(1),
            **options,  # type: ignore[arg-type]
        )

    try:
        yield Rig(store, clock, metrics, make)
    finally:
        await store.close()


async def test_an_accepted_delivery_leaves_the_outbox(rig: Rig) -> None:
    sender = FakeSender("oncall")
    dispatcher = rig.make(sender)
    await rig.enqueue("oncall", notification())
    assert await dispatcher.pump("oncall") is None
    assert [n.alert_key for _, n in sender.sent] == ["r/ec1"]
    assert await rig.store.pending_deliveries() == {}
    assert rig.metric("cloudpilot_notifications_total", route="oncall", outcome="delivered") == 1
    assert rig.metric("cloudpilot_notifications_queued", route="oncall") == 0


async def test_failures_are_retried_with_growing_capped_backoff(rig: Rig) -> None:
    sender = FakeSender("oncall", answers=[SendResult(Verdict.RETRY, "HTTP 503")] * 12)
    dispatcher = rig.make(sender)
    await rig.enqueue("oncall", notification())
    delays = []
    for _ in range(12):
        delay = await dispatcher.pump("oncall")
        assert delay is not None
        delays.append(delay)
        # Not due yet: nothing is sent before the backoff has passed.
        assert await dispatcher.pump("oncall") == pytest.approx(delay, abs=0.01)
        rig.clock.advance(delay)
    assert len(sender.sent) == 12
    # 1 s, doubling, at most BACKOFF_MAX_S, each drawn from the upper half (equal jitter).
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert all(later >= earlier * 0.5 for earlier, later in itertools.pairwise(delays))
    assert max(delays) <= BACKOFF_MAX_S
    assert await dispatcher.pump("oncall") is None
    assert len(sender.sent) == 13  # then it went through: nothing was lost
    assert rig.metric("cloudpilot_notifications_total", route="oncall", outcome="retried") == 12
    assert await rig.store.pending_deliveries() == {}


async def test_retry_after_is_honoured(rig: Rig) -> None:
    sender = FakeSender("oncall", answers=[SendResult(Verdict.RETRY, "HTTP 429", 120.0)])
    dispatcher = rig.make(sender)
    await rig.enqueue("oncall", notification())
    assert await dispatcher.pump("oncall") == pytest.approx(120.0)
    [delivery] = await rig.store.due_deliveries("oncall", rig.clock.now() + timedelta(hours=1))
    assert delivery.attempts == 1
    assert delivery.last_error == "HTTP 429"


async def test_a_rejected_delivery_is_dropped_and_counted(rig: Rig) -> None:
    sender = FakeSender("oncall", answers=[SendResult(Verdict.REJECTED, "HTTP 400")])
    dispatcher = rig.make(sender)
    await rig.enqueue("oncall", notification("r/a"), notification("r/b"))
    assert await dispatcher.pump("oncall") is None
    assert [n.alert_key for _, n in sender.sent] == ["r/a", "r/b"]
    assert await rig.store.pending_deliveries() == {}
    assert rig.metric("cloudpilot_notifications_total", route="oncall", outcome="rejected") == 1


async def test_a_delivery_is_given_up_after_its_limit(rig: Rig) -> None:
    sender = FakeSender("oncall", answers=[SendResult(Verdict.RETRY, "HTTP 500")] * 5)
    dispatcher = rig.make(sender, give_up_after=lambda route: 15.0)
    await rig.enqueue("oncall", notification())
    while (delay := await dispatcher.pump("oncall")) is not None:
        rig.clock.advance(delay)
    # Waits of 1, 2, 4 and 8 s at most (15 s): the fifth try is made. Five waits are at least
    # 0.5 + 1 + 2 + 4 + 8 = 15.5 s: the sixth is not.
    assert len(sender.sent) == 5
    assert rig.metric("cloudpilot_notifications_total", route="oncall", outcome="expired") == 1
    assert await rig.store.pending_deliveries() == {}


async def test_a_resolved_notification_never_overtakes_its_firing_one(rig: Rig) -> None:
    sender = FakeSender("oncall", answers=[SendResult(Verdict.RETRY, "HTTP 502")])
    dispatcher = rig.make(sender)
    await rig.enqueue("oncall", notification(), notification(status=AlertStatus.RESOLVED))
    delay = await dispatcher.pump("oncall")
    assert delay is not None
    assert [n.status for _, n in sender.sent] == [AlertStatus.FIRING]
    rig.clock.advance(delay)
    assert await dispatcher.pump("oncall") is None
    assert [n.status for _, n in sender.sent] == [
        AlertStatus.FIRING,
        AlertStatus.FIRING,
        AlertStatus.RESOLVED,
    ]


async def test_an_alert_being_retried_holds_back_only_its_own_notifications(rig: Rig) -> None:
    sender = FakeSender("oncall", answers=[SendResult(Verdict.RETRY, "HTTP 500")])
    dispatcher = rig.make(sender)
    await rig.enqueue("oncall", notification("r/a"))
    await rig.enqueue("oncall", notification("r/a", AlertStatus.RESOLVED), notification("r/b"))
    delay = await dispatcher.pump("oncall")
    assert [(n.alert_key, n.status.value) for _, n in sender.sent] == [
        ("r/a", "firing"),
        ("r/b", "firing"),
    ]
    assert delay is not None
    rig.clock.advance(delay)
    assert await dispatcher.pump("oncall") is None
    assert [(n.alert_key, n.status.value) for _, n in sender.sent[2:]] == [
        ("r/a", "firing"),
        ("r/a", "resolved"),
    ]


async def test_the_pace_limits_sends_per_destination(rig: Rig) -> None:
    slack = FakeSender("chat", rate_per_s=1.0)
    dispatcher = rig.make(slack)
    await rig.enqueue("chat", *(notification(f"r/{n}") for n in range(3)))
    assert await dispatcher.pump("chat") == pytest.approx(1.0)
    assert len(slack.sent) == 1
    rig.clock.advance(0.5)
    assert await dispatcher.pump("chat") == pytest.approx(0.5)
    rig.clock.advance(0.5)
    await dispatcher.pump("chat")
    rig.clock.advance(1.0)
    assert await dispatcher.pump("chat") is None
    assert [n.alert_key for _, n in slack.sent] == ["r/0", "r/1", "r/2"]


async def test_a_hanging_destination_delays_no_other(rig: Rig) -> None:
    stuck = FakeSender("pager", hang=asyncio.Event(), timeout_s=30.0)
    chat = FakeSender("chat")
    dispatcher = rig.make(stuck, chat)
    await rig.enqueue("pager", notification())
    await rig.enqueue("chat", notification())
    dispatcher.start()
    try:
        await asyncio.wait_for(stuck.entered.wait(), 5)
        await asyncio.wait_for(chat.sent_one.wait(), 5)
        assert [d for d, _ in chat.sent] == ["chat"]
        assert await rig.store.pending_deliveries() == {"pager": 1}
    finally:
        await dispatcher.stop(grace=0)
    # Cut off mid-send: it stays queued and goes again next time.
    assert await rig.store.pending_deliveries() == {"pager": 1}


async def test_a_sender_that_times_out_or_raises_is_retried(rig: Rig) -> None:
    slow = FakeSender("pager", hang=asyncio.Event(), timeout_s=0.01)
    dispatcher = rig.make(slow)
    await rig.enqueue("pager", notification())
    assert await dispatcher.pump("pager") is not None
    [delivery] = await rig.store.due_deliveries("pager", rig.clock.now() + timedelta(hours=1))
    assert delivery.last_error == "no answer within 0.01 s"

    class Broken(FakeSender):
        async def send(self, destination: str, notification: Notification) -> SendResult:
            raise RuntimeError("https://hooks.example.com/T000/B000/canary-path")

    broken = Broken("chat")
    dispatcher = rig.make(broken)
    await rig.enqueue("chat", notification())
    assert await dispatcher.pump("chat") is not None
    [delivery] = await rig.store.due_deliveries("chat", rig.clock.now() + timedelta(hours=1))
    assert delivery.last_error == "sender failed: RuntimeError"


async def test_a_new_dispatcher_delivers_what_an_old_one_left(rig: Rig) -> None:
    first = FakeSender("oncall", answers=[SendResult(Verdict.RETRY, "HTTP 503")])
    await rig.enqueue("oncall", notification())
    await rig.make(first).pump("oncall")
    await rig.store.close()
    await rig.store.open()
    second = FakeSender("oncall")
    rig.clock.advance(5)
    assert await rig.make(second).pump("oncall") is None
    assert [n.alert_key for _, n in second.sent] == ["r/ec1"]


async def test_refresh_sends_firing_and_recently_resolved_alerts(rig: Rig) -> None:
    am = FakeSender("oncall", destinations=("oncall#0", "oncall#1"), kind="alertmanager")
    dispatcher = rig.make(am, refresh_every={"oncall": 60.0})

    async def put(key: str, status: AlertStatus, updated: datetime, routes: list[str]) -> None:
        item = dataclasses.replace(notification(key), status=status)
        record = AlertRecord(
            key=key,
            rule="r",
            status=status.value,
            started_at=T0,
            updated_at=updated,
            data={"notification": item.as_dict(), "routes": routes},
        )
        async with rig.store.batch() as batch:
            await batch.put_alert(record)

    rig.clock.advance(3600)
    now = rig.clock.now()
    await put("r/firing", AlertStatus.FIRING, T0, ["oncall"])
    await put("r/just-resolved", AlertStatus.RESOLVED, now - timedelta(minutes=4), ["oncall"])
    await put("r/long-resolved", AlertStatus.RESOLVED, now - timedelta(minutes=6), ["oncall"])
    await put("r/elsewhere", AlertStatus.FIRING, T0, ["chat"])
    assert await dispatcher.refresh("oncall") == 2
    assert [d for d, _ in am.posted] == ["oncall#0", "oncall#1"]
    keys = {n.alert_key for n in am.posted[0][1]}
    assert keys == {"r/firing", "r/just-resolved"}
    assert rig.metric("cloudpilot_notifications_total", route="oncall", outcome="refreshed") == 2


async def test_a_refresh_in_flight_never_lands_after_the_resolve(rig: Rig) -> None:
    @dataclass
    class SlowRefresh(FakeSender):
        """An Alertmanager whose refresh POST is in flight until the test lets it land."""

        landing: asyncio.Event = field(default_factory=asyncio.Event)
        arrived: list[AlertStatus] = field(
            default_factory=list
        )  # what Alertmanager heard, in order

        async def send(self, destination: str, notification: Notification) -> SendResult:
            self.arrived.append(notification.status)
            return SendResult(Verdict.DELIVERED, "HTTP 200")

        async def post_alerts(
            self, destination: str, notifications: Sequence[Notification]
        ) -> SendResult:
            self.entered.set()
            await self.landing.wait()
            self.arrived.extend(n.status for n in notifications)
            return SendResult(Verdict.DELIVERED, "HTTP 200")

    am = SlowRefresh("am", kind="alertmanager")
    dispatcher = rig.make(am, refresh_every={"am": 60.0})
    fired = notification("r/ec1")
    record = AlertRecord(
        key=fired.alert_key,
        rule="r",
        status="firing",
        started_at=T0,
        updated_at=T0,
        data={"notification": fired.as_dict(), "routes": ["am"]},
    )
    async with rig.store.batch() as batch:
        await batch.put_alert(record)
    refresh = asyncio.create_task(dispatcher.refresh("am"))
    await am.entered.wait()  # the refresh read "firing" and its POST is on the wire
    resolved = notification("r/ec1", AlertStatus.RESOLVED)
    async with rig.store.batch() as batch:  # a poll resolves the alert meanwhile
        data = {**record.data, "notification": resolved.as_dict()}
        await batch.put_alert(dataclasses.replace(record, status="resolved", data=data))
    await rig.enqueue("am", resolved)
    pump = asyncio.create_task(dispatcher.pump("am"))
    # Bounded: were the refresh not holding the destination, the resolve would be sent at
    # once (a few SQLite calls) and land before the refresh; as it is, the pump waits.
    await asyncio.wait({pump}, timeout=0.2)
    am.landing.set()
    await refresh
    await pump
    assert am.arrived == [AlertStatus.FIRING, AlertStatus.RESOLVED]  # the resolve has the last word


async def test_a_late_firing_never_revives_a_resolved_alert_in_alertmanager(rig: Rig) -> None:
    am = FakeSender("am", kind="alertmanager", answers=[SendResult(Verdict.RETRY, "HTTP 503")])
    dispatcher = rig.make(am, refresh_every={"am": 60.0})
    fired = notification("r/ec1")
    await rig.enqueue("am", fired)
    delay = await dispatcher.pump("am")
    assert delay is not None
    # The alert resolves while its firing waits for a retry.
    resolved = notification("r/ec1", AlertStatus.RESOLVED)
    record = AlertRecord(
        key=fired.alert_key,
        rule="r",
        status="resolved",
        started_at=T0,
        updated_at=T0,
        data={"notification": resolved.as_dict(), "routes": ["am"]},
    )
    async with rig.store.batch() as batch:
        await batch.put_alert(record)
    await rig.enqueue("am", resolved)
    rig.clock.advance(delay)
    assert await dispatcher.pump("am") is None
    assert [n.status for _, n in am.sent] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert await rig.store.pending_deliveries() == {}
