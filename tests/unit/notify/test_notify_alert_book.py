"""The alert book: alerts fire from decisions, resolve from later events, and fill the outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.clock import FakeClock
from daemon.engine import Engine
from daemon.engine.engine import Evaluation
from daemon.facts import Facts, ServerFact
from daemon.models import Event
from daemon.notifications import AlertStatus, Notification
from daemon.notify.alerts import AlertBook
from daemon.observability.logging import get_logger
from daemon.observability.metrics import Metrics
from daemon.registry import vocabulary
from daemon.rules.compiled import RuleSet
from daemon.rules.loader import load_rules
from daemon.rules.memory import MemoryKind
from daemon.state import SqliteStore
from daemon.state.store import LedgerState

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
ROUTES = {"oncall": ("oncall",), "ha": ("ha#0", "ha#1"), "chat": ("chat",)}

RULES = """
rules:
  - name: failed-actions
    on: seeweb.action.failed
    throttle: {once_within: 30m, group_by: [resource, data.type]}
    do:
      - alert:
          severity: critical
          summary: "{{ event.data.type }} failed on {{ event.resource }} ({{ server.plan }})"
          description: "action {{ event.data.id }}"
          labels: {team: ops}
          to: [oncall, ha]
          resolve: {on: seeweb.action.completed, same: [resource, data.type]}
  - name: quiet-alerts
    on: seeweb.log
    do:
      - alert:
          summary: "{{ event.data.actor }} did {{ event.data.action }}"
          to: [chat]
          resolve: {after: 1h}
  - name: tried-first
    mode: dry_run
    on: k8sgpu.pod.failed
    do:
      - alert: {summary: "pod failed", to: [chat]}
  - name: broken-template
    on: seeweb.action.stuck
    do:
      - alert: {summary: "{{ event.data.id.nope() }}", to: [chat]}
"""


@dataclass
class Book:
    book: AlertBook
    engine: Engine
    store: SqliteStore
    clock: FakeClock
    metrics: Metrics
    woken: list[set[str]]
    taken: dict[str, list[Notification]] = field(default_factory=dict)

    async def feed(self, events: Sequence[Event]) -> list[str]:
        """Run one batch the way the daemon does; return the decisions' ledger states."""
        now = self.clock.now()
        evaluation = self.engine.plan(events, Facts(), now)
        async with self.store.batch() as batch:
            recorded = await batch.record_decisions(evaluation.decisions)
            settled = await self.book.settle(batch, events, recorded, now)
            if evaluation.put:
                await batch.put_memory(evaluation.put)
            if settled.forget:
                await batch.drop_memory(settled.forget)
        self.engine.apply(evaluation)
        self.engine.apply(Evaluation([], [], settled.forget))
        await self.book.committed(settled)
        return [
            (await self.store.get_entry(decision.key)).state.value  # type: ignore[union-attr]
            for decision in recorded
        ]

    async def queued(self, destination: str) -> list[Notification]:
        """Return every notification queued for `destination` so far, taking them as sent."""
        taken = self.taken.setdefault(destination, [])
        while due := await self.store.due_deliveries(destination, self.clock.now(), 100):
            for delivery in due:
                taken.append(delivery.notification)
                await self.store.remove_delivery(delivery.id)
        return list(taken)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def action(
    kind: str, *, id: int, at: float, resource: str = "ec200001", type: str = "power_off"
) -> Event:
    status = {"failed": "failed", "completed": "completed", "stuck": "running"}[kind]
    return Event(
        type=f"seeweb.action.{kind}",
        key=f"seeweb.action:{id}:{kind}",
        time=T0 + timedelta(seconds=at),
        resource=resource,
        data={"id": id, "type": type, "status": status},
        source="actions",
    )


def log_line(id: int, *, at: float, actor: str = "demo") -> Event:
    return Event(
        type="seeweb.log",
        key=f"seeweb.log:{id}",
        time=T0 + timedelta(seconds=at),
        resource="",
        data={"id": id, "actor": actor, "action": "Login"},
        source="logs",
    )


@pytest.fixture
async def book(tmp_path: Path) -> AsyncIterator[Book]:
    clock = FakeClock(T0 + timedelta(seconds=1))
    store = SqliteStore(tmp_path / "state.db", clock=clock)
    await store.open()
    (tmp_path / "rules.yaml").write_text(RULES)
    rules = load_rules([tmp_path / "rules.yaml"], vocabulary())
    metrics = Metrics(CollectorRegistry())
    woken: list[set[str]] = []
    facts = Facts()
    facts.servers[("seeweb", "ec200001")] = ServerFact(
        provider="seeweb", name="ec200001", id="ec200001", observed_at=T0, plan="ECS2"
    )
    alert_book = AlertBook(
        rules=rules,
        routes=ROUTES,
        store=store,
        facts=facts,
        metrics=metrics,
        clock=clock,
        log=get_logger(),
        on_queued=woken.append,
    )
    engine = Engine(rules, stale_after=3600)
    try:
        yield Book(alert_book, engine, store, clock, metrics, woken)
    finally:
        await store.close()


async def test_a_failure_queues_one_firing_notification_per_destination(book: Book) -> None:
    states = await book.feed([action("failed", id=709, at=0)])
    assert states == [LedgerState.DONE.value]
    [notification] = await book.queued("oncall")
    assert [n.alert_key for n in await book.queued("ha#0")] == [notification.alert_key]
    assert [n.alert_key for n in await book.queued("ha#1")] == [notification.alert_key]
    assert await book.queued("chat") == []
    assert notification.alert_key == "failed-actions/ec200001|power_off"
    assert notification.dedup_key == "cloudpilot/failed-actions/ec200001|power_off"
    assert notification.status is AlertStatus.FIRING
    assert notification.summary == "power_off failed on ec200001 (ECS2)"
    assert notification.description == "action 709"
    assert notification.labels == {
        "alertname": "failed-actions",
        "severity": "critical",
        "resource": "ec200001",
        "type": "power_off",
        "team": "ops",
    }
    assert notification.started_at == T0
    assert book.woken == [{"oncall", "ha#0", "ha#1"}]
    assert book.metric("cloudpilot_alerts_firing", rule="failed-actions") == 1
    assert book.metric("cloudpilot_actions_total", action="alert", outcome="done") == 1


async def test_a_repeat_while_firing_sends_nothing_new(book: Book) -> None:
    await book.feed([action("failed", id=709, at=0)])
    # Past the throttle: the rule decides again, but the alert is already firing.
    book.clock.advance(3600)
    states = await book.feed([action("failed", id=712, at=3600)])
    assert states == [LedgerState.SKIPPED.value]
    assert len(await book.queued("oncall")) == 1
    alert = await book.store.get_alert("failed-actions/ec200001|power_off")
    assert alert is not None
    assert alert.data["count"] == 2
    assert (
        book.metric("cloudpilot_alert_changes_total", rule="failed-actions", change="repeated") == 1
    )


async def test_a_later_completion_of_the_same_action_resolves_it(book: Book) -> None:
    await book.feed([action("failed", id=709, at=0)])
    book.clock.advance(600)
    # A completion of another type, or on another server, changes nothing.
    await book.feed(
        [
            action("completed", id=710, at=300, type="power_on"),
            action("completed", id=711, at=400, resource="ec200002"),
        ]
    )
    assert [n.status for n in await book.queued("oncall")] == [AlertStatus.FIRING]
    await book.feed([action("completed", id=713, at=500)])
    firing, resolved = await book.queued("oncall")
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.ended_at == T0 + timedelta(seconds=500)
    assert resolved.started_at == firing.started_at
    assert resolved.labels == firing.labels
    assert resolved.event["key"] == "seeweb.action:713:completed"
    alert = await book.store.get_alert(firing.alert_key)
    assert alert is not None and alert.status == "resolved"
    assert book.metric("cloudpilot_alerts_firing", rule="failed-actions") == 0


async def test_a_resolved_rule_reads_zero_until_a_reload_removes_it(book: Book) -> None:
    def firing() -> float | None:
        return book.metrics.registry.get_sample_value(
            "cloudpilot_alerts_firing", {"rule": "failed-actions"}
        )

    await book.feed([action("failed", id=709, at=0)])
    book.clock.advance(600)
    await book.feed([action("completed", id=713, at=500)])
    assert firing() == 0

    book.book.replace_rules(RuleSet())
    await book.book.count_firing()
    assert firing() is None


async def test_failure_and_fix_in_one_batch_arrive_in_order(book: Book) -> None:
    await book.feed([action("failed", id=709, at=0), action("completed", id=713, at=60)])
    assert [n.status for n in await book.queued("oncall")] == [
        AlertStatus.FIRING,
        AlertStatus.RESOLVED,
    ]


async def test_an_older_completion_read_late_does_not_resolve(book: Book) -> None:
    await book.feed([action("failed", id=709, at=100)])
    await book.feed([action("completed", id=700, at=50)])
    assert [n.status for n in await book.queued("oncall")] == [AlertStatus.FIRING]


async def test_resolving_forgets_the_throttle_so_the_next_failure_fires(book: Book) -> None:
    await book.feed([action("failed", id=709, at=0), action("completed", id=713, at=60)])
    assert not [
        entry
        for entry in await book.store.load_memory()
        if entry.kind is MemoryKind.THROTTLE and entry.rule == "failed-actions"
    ]
    # Within the 30-minute throttle of the first failure, and still a new alert.
    states = await book.feed([action("failed", id=714, at=120)])
    assert states == [LedgerState.DONE.value]
    statuses = [n.status for n in await book.queued("oncall")]
    assert statuses == [AlertStatus.FIRING, AlertStatus.RESOLVED, AlertStatus.FIRING]


async def test_resolve_after_ends_a_quiet_alert(book: Book) -> None:
    await book.feed([log_line(1, at=0)])
    book.clock.advance(1800)
    assert await book.book.expire() == 0
    book.clock.advance(1801)
    assert await book.book.expire() == 1
    firing, resolved = await book.queued("chat")
    assert (firing.status, resolved.status) == (AlertStatus.FIRING, AlertStatus.RESOLVED)
    assert resolved.ended_at == book.clock.now()
    assert await book.book.expire() == 0


async def test_dry_run_alerts_queue_nothing(book: Book) -> None:
    event = Event(
        type="k8sgpu.pod.failed",
        key="k8sgpu.pod:p1:failed",
        time=T0,
        resource="p1",
        data={"uuid": "p1"},
    )
    assert await book.feed([event]) == [LedgerState.DRY_RUN.value]
    assert await book.queued("chat") == []


async def test_a_template_that_fails_still_alerts_with_a_plain_summary(book: Book) -> None:
    await book.feed([action("stuck", id=709, at=0)])
    [notification] = await book.queued("chat")
    assert notification.summary == "broken-template: seeweb.action.stuck on ec200001"
    assert book.metric("cloudpilot_alert_template_errors_total", rule="broken-template") == 1


async def test_identities_longer_than_pagerduty_allows_are_hashed(book: Book) -> None:
    long_resource = "x" * 400
    await book.feed([action("failed", id=709, at=0, resource=long_resource)])
    [notification] = await book.queued("oncall")
    assert len(notification.dedup_key) == 255
    assert notification.dedup_key.startswith("cloudpilot/failed-actions/xxx")
    again = await book.feed([action("failed", id=710, at=10, resource=long_resource + "y")])
    assert again == [LedgerState.DONE.value]
    keys = {n.dedup_key for n in await book.queued("oncall")}
    assert len(keys) == 2 and all(len(key) <= 255 for key in keys)


def test_routes_must_exist(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    rules = load_rules([tmp_path / "rules.yaml"], vocabulary())
    clock = FakeClock(T0)
    alert_book = AlertBook(
        rules=RuleSet(),
        routes={"oncall": ("oncall",)},
        store=SqliteStore(tmp_path / "unused.db", clock=clock),
        facts=Facts(),
        metrics=Metrics(CollectorRegistry()),
        clock=clock,
        log=get_logger(),
    )
    problems: list[Any] = alert_book.unknown_routes(rules)
    assert problems == [
        f"{tmp_path}/rules.yaml:3: rules[0].do[0].alert.to: unknown route 'ha' (known: oncall)",
        f"{tmp_path}/rules.yaml:14: rules[1].do[0].alert.to: unknown route 'chat' (known: oncall)",
        f"{tmp_path}/rules.yaml:21: rules[2].do[0].alert.to: unknown route 'chat' (known: oncall)",
        f"{tmp_path}/rules.yaml:26: rules[3].do[0].alert.to: unknown route 'chat' (known: oncall)",
    ]


async def test_a_second_firing_at_the_same_second_is_queued_too(book: Book) -> None:
    # Provider times have a second's resolution: a re-fire may start when the last one did.
    await book.feed([action("failed", id=709, at=0), action("completed", id=713, at=0)])
    await book.feed([action("failed", id=714, at=0)])
    statuses = [n.status for n in await book.queued("oncall")]
    assert statuses == [AlertStatus.FIRING, AlertStatus.RESOLVED, AlertStatus.FIRING]
