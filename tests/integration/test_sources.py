"""Every source against the in-process simulator: what it emits, what it remembers, what it sets.

The simulator's time moves with `h.advance`; the sources read a FakeClock that the tests move in
step (`Rig.advance` does both). Between polls the cursor goes through `json.dumps`/`json.loads`,
as it does through the store, so every test also shows that a restart loses nothing.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from conftest import START, SimFactory, SimHandle
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture
from test_clients_vs_sim import (
    API_KEY,
    PASSWORD,
    assert_no_secret,
    fake_clock,
    glesys,
    k8sgpu,
    seeweb,
    sim_ok,
)

from daemon.client.base import ClientSettings
from daemon.clock import FakeClock
from daemon.facts import Facts
from daemon.models import Event
from daemon.observability.metrics import Metrics
from daemon.providers.glesys.source import GlesysSource
from daemon.providers.k8sgpu.source import K8sGpuSource
from daemon.providers.seeweb.sources.actions import ActionsSource
from daemon.providers.seeweb.sources.billing import BillingSource
from daemon.providers.seeweb.sources.logs import LogsSource
from daemon.providers.seeweb.sources.metrics import MetricsSource
from daemon.registry import vocabulary
from daemon.simulator.ecs import server_bills, snapshot_bills, template_bills
from daemon.simulator.http import Credentials
from daemon.simulator.k8sgpu import billing_lines
from daemon.simulator.world import month_bounds
from daemon.sources.base import Source
from daemon.sources.scheduler import SourceJob
from daemon.state.store import Cursor


@dataclass
class Rig:
    """A simulator, the sources' clock, facts and metrics, and a cursor kept as JSON text."""

    h: SimHandle
    clock: FakeClock = field(default_factory=fake_clock)
    facts: Facts = field(default_factory=Facts)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    stored: dict[str, str] = field(default_factory=dict)
    keys: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.registry)

    async def poll(self, source: Source) -> list[Event]:
        """Poll with the stored cursor, check the new one is JSON, store it, count the keys."""
        text = self.stored.get(source.name)
        cursor: Cursor | None = json.loads(text) if text is not None else None
        events, after = await source.poll(cursor)
        self.stored[source.name] = json.dumps(after)
        self.keys.update(e.key for e in events)
        for event in events:
            assert event.source == source.name
            assert event.time.tzinfo is not None
            json.dumps(dict(event.data))
            # What `cloudpilot check` and `schema` know of events is what sources emit.
            entry = vocabulary().events.find(event.type)
            assert entry is not None, f"{event.type} is in no provider's events.py"
            assert set(event.data) <= set(entry.fields), (event.type, set(event.data))
        return events

    async def advance(self, seconds: float) -> None:
        """Move simulated time and the sources' clock together."""
        await self.h.advance(seconds)
        self.clock.advance(seconds)

    def cursor(self, name: str) -> Any:
        """Return a source's stored cursor."""
        return json.loads(self.stored[name])

    def gauge(self, name: str, **labels: str) -> float | None:
        """Return a sample's value from the registry."""
        return self.registry.get_sample_value(name, labels)

    def duplicates(self) -> list[str]:
        """Return the event keys emitted more than once."""
        return [key for key, count in self.keys.items() if count > 1]


async def start(simulator: SimFactory, source: str = "default", **options: Any) -> SimHandle:
    """Start a simulator that accepts only the canary credentials."""
    credentials = Credentials(api_token=API_KEY, password=PASSWORD)
    return await simulator(source, credentials=credentials, **options)


def by_type(events: Sequence[Event]) -> dict[str, list[Event]]:
    """Group events by type."""
    grouped: dict[str, list[Event]] = {}
    for event in events:
        grouped.setdefault(event.type, []).append(event)
    return grouped


async def inject(h: SimHandle, resource: str, kind: str, outcome: str, duration_s: float) -> int:
    """Start an action in the simulator as if from the panel; return its id."""
    answer = await sim_ok(
        h,
        "POST",
        "/_sim/actions",
        {"resource": resource, "type": kind, "outcome": outcome, "duration_s": duration_s},
    )
    action_id: int = answer["action"]["id"]
    return action_id


# -- actions -------------------------------------------------------------------------------------


async def test_first_poll_reports_history_with_error_as_failed(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator))
    events = await rig.poll(ActionsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock))

    world = {a.id: a for a in rig.h.sim.world.actions}
    assert world, "the default world has a history of actions"
    started = {e.data["id"] for e in events if e.type == "seeweb.action.started"}
    assert started == set(world)
    failed = {e.data["id"]: e.data["status"] for e in events if e.type == "seeweb.action.failed"}
    expected = {a.id: a.status for a in world.values() if a.status in ("failed", "error")}
    assert failed == expected
    assert "error" in failed.values(), "an action ending `error` is reported as failed"
    completed = {e.data["id"] for e in events if e.type == "seeweb.action.completed"}
    assert completed == {a.id for a in world.values() if a.status == "completed"}
    # `below`: how many actions are listed at or below the mark, where the next poll resumes.
    assert rig.cursor("actions") == {
        "high_water": max(world),
        "below": len(world),
        "open": {},
        "stuck": [],
    }
    assert await rig.poll(ActionsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock)) == []


async def test_actions_end_completed_failed_or_error(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator))
    source = ActionsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock)
    await rig.poll(source)
    ok = await inject(rig.h, "ec200001", "power_off", "completed", 60)
    bad = await inject(rig.h, "ec200002", "power_on", "failed", 60)
    err = await inject(rig.h, "ec200003", "rollback", "error", 60)

    first = await rig.poll(source)
    assert [(e.type, e.key) for e in first] == [
        ("seeweb.action.started", f"seeweb.action:{ok}:started"),
        ("seeweb.action.started", f"seeweb.action:{bad}:started"),
        ("seeweb.action.started", f"seeweb.action:{err}:started"),
    ]
    assert first[0].resource == "ec200001"
    assert first[0].time == START
    assert first[0].data == {
        "id": ok,
        "type": "power_off",
        "status": "in-progress",
        "user": first[0].data["user"],
        "resource": "ec200001",
        "resource_type": "ECS",
        "created_at": START.isoformat(),
        "started_at": START.isoformat(),
        "completed_at": None,
        "progress": 0,
    }
    assert rig.cursor("actions")["open"].keys() == {str(ok), str(bad), str(err)}

    await rig.advance(30)
    assert await rig.poll(source) == [], "nothing ended yet"

    await rig.advance(31)
    ended = await rig.poll(source)
    assert {(e.type, e.key, e.data["status"]) for e in ended} == {
        ("seeweb.action.completed", f"seeweb.action:{ok}:completed", "completed"),
        ("seeweb.action.failed", f"seeweb.action:{bad}:failed", "failed"),
        ("seeweb.action.failed", f"seeweb.action:{err}:failed", "error"),
    }
    assert all(e.time == START + timedelta(seconds=60) for e in ended)
    assert all(e.data["completed_at"] == ended[0].time.isoformat() for e in ended)
    assert rig.cursor("actions")["open"] == {}
    assert await rig.poll(source) == []
    assert rig.duplicates() == []


async def test_stuck_action_is_reported_once_then_ends(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator))
    source = ActionsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock, stuck_after=3600)
    await rig.poll(source)
    slow = await inject(rig.h, "ec200004", "power_off", "completed", 7200)
    assert [e.type for e in await rig.poll(source)] == ["seeweb.action.started"]

    await rig.advance(3599)
    assert await rig.poll(source) == [], "not stuck before the threshold"

    await rig.advance(2)
    stuck = await rig.poll(source)
    assert [(e.type, e.key) for e in stuck] == [
        ("seeweb.action.stuck", f"seeweb.action:{slow}:stuck")
    ]
    assert stuck[0].data["status"] == "in-progress"
    assert stuck[0].data["in_progress_s"] == 3601
    assert stuck[0].time == rig.clock.now()
    assert rig.cursor("actions")["stuck"] == [str(slow)]

    # A fresh source (a restart) with the stored cursor does not report it again.
    restarted = ActionsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock, stuck_after=3600)
    await rig.advance(600)
    assert await rig.poll(restarted) == []

    await rig.advance(3000)
    assert [e.key for e in await rig.poll(restarted)] == [f"seeweb.action:{slow}:completed"]
    assert rig.cursor("actions")["open"] == {}
    assert rig.cursor("actions")["stuck"] == []
    assert rig.duplicates() == []


async def test_no_duplicate_keys_over_many_polls(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator))
    source = ActionsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock, stuck_after=120)
    injected: list[int] = []
    for round_ in range(12):
        injected.append(
            await inject(
                rig.h,
                f"ec20000{round_ % 5 + 1}",
                "rollback",
                ("completed", "failed", "error")[round_ % 3],
                (0, 45, 90, 200)[round_ % 4],
            )
        )
        await rig.poll(source)
        await rig.advance(50)
    await rig.advance(600)
    await rig.poll(source)

    assert rig.duplicates() == []
    for action_id in injected:
        assert f"seeweb.action:{action_id}:started" in rig.keys
        ended = [
            k
            for k in rig.keys
            if k.startswith(f"seeweb.action:{action_id}:") and k.endswith((":completed", ":failed"))
        ]
        assert len(ended) == 1
    # The 200 s actions outlived the 120 s threshold while polled; the shorter ones never did,
    # and the last one had ended by the next poll.
    assert {k for k in rig.keys if k.endswith(":stuck")} == {
        f"seeweb.action:{a}:stuck" for i, a in enumerate(injected[:-1]) if i % 4 == 3
    }
    assert rig.cursor("actions") == {
        "high_water": max(a.id for a in rig.h.sim.world.actions),
        "below": len(rig.h.sim.world.actions),
        "open": {},
        "stuck": [],
    }


async def test_action_missing_from_the_api_is_dropped(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator))
    source = ActionsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock)
    await rig.poll(source)
    cursor = rig.cursor("actions")
    cursor["open"]["999999"] = START.isoformat()
    rig.stored["actions"] = json.dumps(cursor)
    assert await rig.poll(source) == []
    assert rig.cursor("actions")["open"] == {}


# -- logs ----------------------------------------------------------------------------------------

LOG_SCENARIO = """
name: logs
servers:
  - {name: ec300001, plan: ECS1}
logs:
  - {action: Login, actor: demo, ip_address: 198.51.100.10, ago: 1h}
timeline:
  - {at: 5m, log: {action: Power Off, actor: demo, target_type: Server, target: ec300001}}
"""


async def test_logs_new_lines_only(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator, LOG_SCENARIO))
    source = LogsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock)
    first = await rig.poll(source)
    assert [(e.type, e.key, e.resource) for e in first] == [("seeweb.log", "seeweb.log:1", "demo")]
    assert first[0].time == START - timedelta(hours=1)
    assert first[0].data["action"] == "Login"
    assert first[0].data["ip_address"] == "198.51.100.10"
    assert first[0].data["created_at"] == first[0].time.isoformat()
    assert await rig.poll(source) == []

    await rig.advance(300)
    second = await rig.poll(source)
    assert [(e.key, e.resource, e.data["action"]) for e in second] == [
        ("seeweb.log:2", "ec300001", "Power Off")
    ]
    assert second[0].data["target_type"] == "Server"
    assert rig.cursor("logs") == {"high_water": 2, "below": 2}


# -- metrics -------------------------------------------------------------------------------------

STEP = 60
NO_METRICS = {"ec200006", "ec200007"}  # a GPU plan and a v1 server


async def test_metrics_new_samples_only_as_percent(simulator: SimFactory) -> None:
    rig = Rig(await start_with_step(simulator))
    source = MetricsSource(seeweb(rig.h, rig.clock), rig.facts, rig.clock, metrics=rig.metrics)
    world = rig.h.sim.world

    first = await rig.poll(source)
    with_metrics = sorted(set(world.servers) - NO_METRICS)
    assert sorted({e.resource for e in first}) == with_metrics
    assert Counter(e.resource for e in first) == dict.fromkeys(with_metrics, 12)
    for event in first:
        server = world.servers[event.resource]
        expected = world.cpu_percent(server, event.time, sample=True)
        assert event.type == "seeweb.server.cpu"
        assert event.key == f"seeweb.cpu:{event.resource}:{event.time.isoformat()}"
        assert event.data["cpu_percent"] == pytest.approx(expected, abs=0.01)
        assert event.data["cores"] == world.plan(server.plan).cpu
        assert event.data["server"] == event.resource

    # ec200003 is an ECS3 (4 cores) with a constant demand of 3.6 cores: 90 %.
    assert rig.gauge("cloudpilot_server_cpu_ratio", provider="seeweb", server="ec200003") == (
        pytest.approx(0.9)
    )
    assert rig.gauge("cloudpilot_server_cores", provider="seeweb", server="ec200003") == 4
    assert rig.gauge("cloudpilot_server_cpu_ratio", provider="seeweb", server="ec200006") is None
    assert rig.gauge("cloudpilot_server_cores", provider="seeweb", server="ec200006") == 4  # L4

    # Facts: every listed server, and a CPU window for those with metrics.
    assert {name for (_, name) in rig.facts.servers} == set(world.servers)
    fact = rig.facts.servers[("seeweb", "ec200003")]
    assert (fact.plan, fact.cores, fact.group, fact.notes) == ("ECS3", 4, "eg100002", "db-primary")
    assert len(rig.facts.cpu[("seeweb", "ec200003")]) == 12
    assert ("seeweb", "ec200007") not in rig.facts.cpu

    assert await rig.poll(source) == [], "no new sample without time passing"

    await sim_ok(rig.h, "POST", "/_sim/demand", {"server": "ec200005", "cores": 3})
    await rig.advance(2 * STEP)
    second = await rig.poll(source)
    assert Counter(e.resource for e in second) == dict.fromkeys(with_metrics, 2)
    latest = max((e for e in second if e.resource == "ec200005"), key=lambda e: e.time)
    assert latest.data["cpu_percent"] == pytest.approx(75.0)  # 3 of the eCS4's 4 cores
    assert rig.gauge("cloudpilot_server_cpu_ratio", provider="seeweb", server="ec200005") == (
        pytest.approx(0.75)
    )
    assert len(rig.facts.cpu[("seeweb", "ec200005")]) == 14
    assert rig.duplicates() == []
    assert rig.cursor("metrics")["last"]["ec200005"] == latest.time.isoformat()


async def test_metrics_selects_servers_by_glob(simulator: SimFactory) -> None:
    rig = Rig(await start_with_step(simulator))
    source = MetricsSource(
        seeweb(rig.h, rig.clock),
        rig.facts,
        rig.clock,
        metrics=rig.metrics,
        servers=["ec20000[12]", "ec200006"],
    )
    events = await rig.poll(source)
    assert {e.resource for e in events} == {"ec200001", "ec200002"}
    assert rig.gauge("cloudpilot_server_cores", provider="seeweb", server="ec200003") is None
    assert set(rig.cursor("metrics")["last"]) == {"ec200001", "ec200002"}
    requested = {r["path"] for r in await rig.h.requests()}
    assert "/ecs/v2/servers/ec200003/metrics" not in requested
    assert "/ecs/v2/servers/ec200006/metrics" in requested  # asked, and skipped quietly


async def start_with_step(simulator: SimFactory) -> SimHandle:
    """Start the default world with metrics samples STEP seconds apart."""
    return await start(simulator, metrics_step_s=STEP)


# -- k8sgpu --------------------------------------------------------------------------------------

GPU_SCENARIO = """
name: gpu
seed: 3
clusters:
  - {name: skg00018, label: lab}
  - {name: skg100004, label: prod}
pods:
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xa6000, name: trainer-a, age: 2h}
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xa6000, name: trainer-b, age: 2h}
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xl4, name: infer-b, age: 1h}
timeline:
  - {at: 10m, pod_end: {pod: infer-b, failed: true}}
  - {at: 10m, pod_end: {pod: trainer-b, failed: false}}
  - {at: 11m, pod_start: {cluster: skg100004, runtime_class: seeweb-nvidia-1xa100, name: infer-d}}
"""


async def test_k8sgpu_events_pods_and_gauges(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator, GPU_SCENARIO))
    source = K8sGpuSource(k8sgpu(rig.h, rig.clock), rig.facts, rig.clock, metrics=rig.metrics)
    world = rig.h.sim.world
    pods = {p.remote_name: p for p in world.pods.values()}

    first = await rig.poll(source)
    assert sorted(e.type for e in first) == ["k8sgpu.event.started"] * 3
    event = next(e for e in first if e.resource == pods["infer-b"].uuid)
    gpu_event = next(g for g in world.gpu_events if g.pod.remote_name == "infer-b")
    assert event.key == f"k8sgpu.event:{gpu_event.id}"
    assert event.time == START - timedelta(hours=1)
    assert event.data["cluster"] == "skg00018"
    assert event.data["runtime_class"] == "seeweb-nvidia-1xl4"
    assert event.data["event_type"] == "started"

    def pods_gauge(cluster: str, runtime_class: str) -> float | None:
        return rig.gauge("cloudpilot_k8sgpu_pods", cluster=cluster, runtime_class=runtime_class)

    assert pods_gauge("skg00018", "seeweb-nvidia-1xa6000") == 2
    assert pods_gauge("skg00018", "seeweb-nvidia-1xl4") == 1
    assert rig.facts.pods_online() == {
        ("skg00018", "seeweb-nvidia-1xa6000"): 2,
        ("skg00018", "seeweb-nvidia-1xl4"): 1,
    }
    assert await rig.poll(source) == []

    await rig.advance(11 * 60)
    second = await rig.poll(source)
    assert sorted((e.type, e.resource) for e in second) == sorted(
        [
            ("k8sgpu.event.terminated", pods["infer-b"].uuid),
            ("k8sgpu.event.terminated", pods["trainer-b"].uuid),
            (
                "k8sgpu.event.started",
                next(p.uuid for p in world.pods.values() if p.remote_name == "infer-d"),
            ),
            ("k8sgpu.pod.failed", pods["infer-b"].uuid),
            ("k8sgpu.pod.terminated", pods["infer-b"].uuid),
            ("k8sgpu.pod.terminated", pods["trainer-b"].uuid),
        ]
    )
    failed = next(e for e in second if e.type == "k8sgpu.pod.failed")
    uuid = pods["infer-b"].uuid
    assert failed.key == f"k8sgpu.pod:{uuid}:failed"
    assert failed.time == START + timedelta(minutes=10)
    assert failed.data == {
        "uuid": uuid,
        "cluster": "skg00018",
        "name": "infer-b",
        "status": "terminated",
        "runtime_class": "seeweb-nvidia-1xl4",
    }
    assert pods_gauge("skg00018", "seeweb-nvidia-1xa6000") == 1
    assert pods_gauge("skg00018", "seeweb-nvidia-1xl4") == 0, "a group that emptied reads 0"
    assert pods_gauge("skg100004", "seeweb-nvidia-1xa100") == 1
    assert rig.facts.pods[uuid].failed and not rig.facts.pods[uuid].online

    assert await rig.poll(source) == [], "a failed pod is reported once"
    assert rig.cursor("k8sgpu")["failed"] == [uuid]
    assert rig.duplicates() == []


# -- billing -------------------------------------------------------------------------------------


async def test_billing_month_to_date_by_scope(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator))
    source = BillingSource(
        seeweb(rig.h, rig.clock),
        rig.facts,
        rig.clock,
        metrics=rig.metrics,
        k8sgpu=k8sgpu(rig.h, rig.clock),
    )
    world = rig.h.sim.world
    lo, hi = month_bounds(START.year, START.month)

    events = await rig.poll(source)
    rows = server_bills(world, START.year, START.month, lo, hi)
    seeweb_total = round(
        sum(r["cost"] for r in rows)
        + sum(r["cost"] for r in template_bills(world, START.year, START.month, lo, hi))
        + snapshot_bills(world, START.year, START.month, lo, hi)["total_cost"],
        2,
    )
    gpu_total = round(sum(p["cost"] for p in billing_lines(world, START.year, START.month)), 2)
    assert seeweb_total > 0 and gpu_total > 0

    updated = {e.type: e for e in events}
    assert set(updated) == {"seeweb.billing.updated", "k8sgpu.billing.updated"}
    seeweb_event = updated["seeweb.billing.updated"]
    assert seeweb_event.data["month"] == "2026-11"
    assert seeweb_event.data["total"] == seeweb_total
    assert seeweb_event.data["billed_until"] == world.billed_until().isoformat()
    assert seeweb_event.key.startswith("seeweb.billing:2026-11:")
    assert updated["k8sgpu.billing.updated"].data["total"] == gpu_total

    def cost(scope: str) -> float | None:
        return rig.gauge("cloudpilot_month_to_date_cost_euros", scope=scope)

    assert cost("account") == pytest.approx(seeweb_total + gpu_total)
    row = next(r for r in rows if r["name"] == "ec200003")
    assert cost("server:ec200003") == pytest.approx(row["cost"])
    group = sum(r["cost"] for r in rows if r["group"] == "eg100001")
    assert cost("group:eg100001") == pytest.approx(group)
    assert cost("k8sgpu:skg00018") is not None and cost("k8sgpu:skg00018") > 0  # type: ignore[operator]
    assert rig.facts.month_cost["account"].euros == pytest.approx(seeweb_total + gpu_total)
    assert rig.facts.month_cost["account"].month == "2026-11"

    assert await rig.poll(source) == [], "an unchanged bill says nothing"

    await rig.advance(3 * 3600)
    later = await rig.poll(source)
    assert {e.type for e in later} == {"seeweb.billing.updated", "k8sgpu.billing.updated"}
    grown = next(e for e in later if e.type == "seeweb.billing.updated")
    assert grown.data["total"] > seeweb_total
    assert grown.data["previous_total"] == seeweb_total
    assert grown.key != seeweb_event.key
    assert rig.duplicates() == []


async def test_billing_without_k8sgpu_and_month_rollover(simulator: SimFactory) -> None:
    h = await start(simulator, start=datetime(2026, 11, 30, 22, 0, tzinfo=UTC))
    rig = Rig(h, clock=FakeClock(datetime(2026, 11, 30, 22, 0, tzinfo=UTC)))
    source = BillingSource(seeweb(h, rig.clock), rig.facts, rig.clock, metrics=rig.metrics)
    first = await rig.poll(source)
    assert [e.type for e in first] == ["seeweb.billing.updated"]
    assert not any(scope.startswith("k8sgpu:") for scope in rig.facts.month_cost)

    await rig.advance(3 * 3600)  # now 2026-12-01 01:00: December's bill is still empty
    december = await rig.poll(source)
    assert [(e.data["month"], e.data["total"]) for e in december] == [("2026-12", 0.0)]
    assert rig.facts.month_cost["account"].month == "2026-12"
    assert rig.gauge("cloudpilot_month_to_date_cost_euros", scope="account") == 0.0


# -- glesys --------------------------------------------------------------------------------------


async def test_glesys_cpu_per_server_per_poll(simulator: SimFactory) -> None:
    rig = Rig(await start(simulator))
    source = GlesysSource(glesys(rig.h, rig.clock), rig.facts, rig.clock, metrics=rig.metrics)
    rig.clock.advance(0.4)  # the key's time is rounded down to the second
    events = await rig.poll(source)
    world = rig.h.sim.world
    assert sorted(e.data["serverid"] for e in events) == ["kvm1000001", "kvm1000002"]
    for event in events:
        server = world.glesys[event.data["serverid"]]
        used, cores = world.glesys_cpu(server, START)
        assert event.type == "glesys.server.cpu"
        assert event.key == f"glesys.cpu:{server.serverid}:{START.isoformat()}"
        assert event.resource == event.data["server"] == server.hostname
        assert event.data["cores"] == cores
        assert event.data["cpu_percent"] == pytest.approx(100 * used / cores, abs=0.01)
        assert rig.gauge("cloudpilot_server_cores", provider="glesys", server=server.hostname) == (
            cores
        )
    # api-glesys-2: a constant 1.2 cores of 4.
    assert rig.gauge("cloudpilot_server_cpu_ratio", provider="glesys", server="api-glesys-2") == (
        pytest.approx(0.3)
    )
    fact = rig.facts.servers[("glesys", "api-glesys-2")]
    assert (fact.id, fact.cores, fact.status) == ("kvm1000002", 4, "running")
    assert rig.cursor("glesys") == {}

    await rig.advance(60)
    again = await rig.poll(source)
    assert len(again) == 2 and rig.duplicates() == []
    assert len(rig.facts.cpu[("glesys", "api-glesys-2")]) == 2


# -- a job over a real source --------------------------------------------------------------------


async def test_job_fails_backs_off_and_recovers_without_losing_events(
    simulator: SimFactory,
) -> None:
    rig = Rig(await start(simulator))
    once = ClientSettings(requests_per_second=None, max_attempts=1)
    source = ActionsSource(seeweb(rig.h, rig.clock, settings=once), rig.facts, rig.clock)
    logs = LogCapture()
    log = structlog.wrap_logger(
        None, processors=[logs], wrapper_class=structlog.make_filtering_bound_logger(0)
    )
    batches: list[list[Event]] = []

    async def cursor_of(name: str) -> Cursor | None:
        text = rig.stored.get(name)
        return json.loads(text) if text is not None else None

    async def sink(name: str, events: list[Event], cursor: Cursor) -> None:
        batches.append(events)
        rig.stored[name] = json.dumps(cursor)

    job = SourceJob(
        source,
        interval=30,
        cursor_of=cursor_of,
        sink=sink,
        facts=rig.facts,
        metrics=rig.metrics,
        clock=rig.clock,
        log=log,
        rng=random.Random(3),
    )
    assert await job.tick() is True
    fault = {"path": "/ecs/v2/actions", "status": 503, "rate": 1}
    await sim_ok(rig.h, "POST", "/_sim/faults", fault)
    failed = await inject(rig.h, "ec200002", "power_on", "failed", 0)

    assert await job.tick() is False
    assert rig.gauge("cloudpilot_poll_errors_total", source="actions") == 1
    assert rig.gauge("cloudpilot_source_up", source="actions") == 0
    [entry] = [e for e in logs.entries if e["event"] == "source_failed"]
    assert "503" in entry["error"] and "/ecs/v2/actions" in entry["error"]
    assert_no_secret(json.dumps(entry, default=str))

    await sim_ok(rig.h, "DELETE", "/_sim/faults")
    served = len(await rig.h.requests())
    assert await job.tick() is False, "backing off"
    assert len(await rig.h.requests()) == served, "no request while backing off"

    assert job.retry_at is not None
    rig.clock.advance(job.retry_at - rig.clock.monotonic())
    assert await job.tick() is True
    assert [e.key for e in batches[-1]] == [
        f"seeweb.action:{failed}:started",
        f"seeweb.action:{failed}:failed",
    ]
    assert [e["event"] for e in logs.entries] == ["source_failed", "source_recovered"]
    assert rig.facts.polled_at["actions"] == rig.clock.now()
