"""Budgets end to end: the daemon in process against the simulator's budget-overrun scenario.

The scenario starts on 2026-11-10 with about 430 EUR spent, bills 6 hours late, and burns faster
as GPU pods start. Time is a LinkedClock: each step moves the simulated cloud an hour on, polls
every source once, delivers what was queued to a webhook receiver and lets actions finish.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from alert_receivers import HttpReceiver, hook_fixture  # noqa: F401
from conftest import SimFactory, SimHandle, linked_daemon

from daemon.app import Daemon
from daemon.approve import approve_with
from daemon.registry import load_config
from daemon.state.store import LedgerState

HOUR = 3600.0
BUDGET_RULE = """\
rules:
  - name: overrun
    budget:
      scope: {{account: true}}
      cap: 500
      warn_at: [50, 80, 100]
      to: [hook]
{steps}"""
EXPENDABLE = {"ec600003", "ec600004"}
SERVERS = {"ec600001", "ec600002", "ec600003", "ec600004", "ec600005"}


async def overrun(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver, rules: str
) -> tuple[SimHandle, Daemon]:
    sim = await simulator("budget-overrun")
    daemon = linked_daemon(sim, tmp_path, rules, k8sgpu=True, hook_url=hook.url("/hook"))
    return sim, daemon


async def hourly(daemon: Daemon, *, hours: int) -> None:
    """Each hour: move time on, poll every source, deliver what was queued, finish actions."""
    for _ in range(hours):
        daemon.clock.advance(HOUR)  # type: ignore[attr-defined]
        await daemon.poll_once()
        await daemon.runner.wait_idle()
        await daemon.dispatcher.pump("hook")


def webhook_alerts(hook: HttpReceiver) -> list[dict[str, Any]]:
    """Return the budget alerts the webhook received, oldest first."""
    return [request.json()["alert"] for request in hook.requests]


def mutations(requests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (r["method"], r["path"])
        for r in requests
        if r["method"] in ("POST", "PUT", "DELETE")
        and not r["path"].startswith("/_sim")
        and not r["path"].endswith("/login/")
    ]


async def test_warnings_come_once_each_and_the_forecast_first(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    _, daemon = await overrun(simulator, tmp_path, hook, BUDGET_RULE.format(steps=""))
    async with daemon:
        await hourly(daemon, hours=40)
        view = daemon.budgets.views["overrun"]
    alerts = webhook_alerts(hook)
    fired = [(a["labels"]["spend"], a["labels"]["threshold"]) for a in alerts]
    # At start 86% is spent (50 and 80 passed at once: one alert naming 80) and the forecast
    # is past the cap; actual spend passes the cap about 29 hours later.
    assert fired == [("actual", "80"), ("forecast", "100"), ("actual", "100")]
    times = [a["started_at"] for a in alerts]
    assert times[1] < times[2]
    assert len({a["alert_key"] for a in alerts}) == 3
    assert all(a["status"] == "firing" for a in alerts)
    assert view.spend is not None and view.spend.percent(500) > 100


async def test_estimate_tracks_true_spend_with_a_six_hour_bill_lag(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim, daemon = await overrun(simulator, tmp_path, hook, BUDGET_RULE.format(steps=""))
    worst = 0.0
    async with daemon:
        for _ in range(30):
            await hourly(daemon, hours=1)
            _, world = await sim.call("GET", "/_sim/world")
            money = world["money"]
            truth = money["month_to_date"]["total"]
            lag = truth - money["billed_month_to_date"]["total"]
            spend = daemon.budgets.views["overrun"].spend
            assert spend is not None
            assert lag > 0  # the bill really is behind
            worst = max(worst, abs(spend.estimated - truth) / truth)
        error = daemon.metrics.registry.get_sample_value(
            "cloudpilot_budget_estimate_error_euros", {"budget": "overrun"}
        )
    assert worst < 0.05
    assert error is not None


DRY_STEPS = """\
      enforce:
        - {at: 100, block_scale_up: true}
        - {at: 105, power_off: {servers: {notes: "*expendable*"}}}
"""


async def test_dry_run_lists_the_servers_and_touches_none(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim, daemon = await overrun(simulator, tmp_path, hook, BUDGET_RULE.format(steps=DRY_STEPS))
    async with daemon:
        await hourly(daemon, hours=40)
        view = daemon.budgets.views["overrun"]
        entries = await daemon.store.ledger(rule="overrun")
    (step,) = [s for s in view.steps if s.step.kind == "power_off"]
    assert step.in_force
    dry = [e for e in entries if e.decision.action == "power_off"]
    assert {e.decision.params["server"] for e in dry} == EXPENDABLE
    assert {e.state for e in dry} == {LedgerState.DRY_RUN}
    assert mutations(await sim.requests()) == []
    _, world = await sim.call("GET", "/_sim/world")
    assert {s["name"] for s in world["servers"] if s["status"] == "RUNNING"} >= SERVERS


async def test_a_step_switched_from_dry_run_to_enforce_acts_on_the_next_poll(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    # The documented workflow: run the step in dry run, read what it would do, then enforce.
    sim, daemon = await overrun(simulator, tmp_path, hook, BUDGET_RULE.format(steps=DRY_STEPS))
    async with daemon:
        await hourly(daemon, hours=40)
        dry = mutations(await sim.requests())
        enforced = DRY_STEPS.replace('*expendable*"}}}', '*expendable*"}}, mode: enforce}')
        (tmp_path / "rules" / "rules.yaml").write_text(BUDGET_RULE.format(steps=enforced))
        assert await daemon.reload_rules()
        await hourly(daemon, hours=1)
        entries = await daemon.store.ledger(rule="overrun")
    offs = [e for e in entries if e.decision.action == "power_off"]
    assert dry == []
    # The dry-run decisions stay as they were; the enforced ones are new, and were carried out.
    by_mode = {
        mode: {e.decision.params["server"] for e in offs if e.decision.mode.value == mode}
        for mode in ("dry_run", "enforce")
    }
    assert by_mode == {"dry_run": EXPENDABLE, "enforce": EXPENDABLE}
    assert {e.state for e in offs if e.decision.mode.value == "enforce"} == {LedgerState.DONE}
    touched = {path.split("/")[4] for _, path in mutations(await sim.requests())}
    assert touched == EXPENDABLE


ENFORCE_STEPS = """\
      enforce:
        - {at: 100, block_scale_up: true, mode: enforce}
        - {at: 105, power_off: {servers: {notes: "*expendable*"}}, mode: enforce}
  - name: web
    autoscale:
      provider: seeweb
      servers: {notes: "web-*"}
      up: {above: 75, for: 15m}
      down: {below: 20, for: 2h}
      max_cores: 8
      to: [hook]
"""


async def test_enforce_snapshots_then_powers_off_the_expendable_only(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim, daemon = await overrun(simulator, tmp_path, hook, BUDGET_RULE.format(steps=ENFORCE_STEPS))
    async with daemon:
        await hourly(daemon, hours=32)  # spend passes the cap (100%) after about 29 hours
        await sim.call("POST", "/_sim/demand", json={"server": "ec600005", "cores": 2})
        await hourly(daemon, hours=8)
        verdict = daemon.autoscale.verdicts[("web", "ec600005")]
    changes = mutations(await sim.requests())
    touched = {path.split("/")[4] for _, path in changes if path.startswith("/ecs/v2/servers/")}
    assert touched == EXPENDABLE
    for server in sorted(EXPENDABLE):
        mine = [path for _, path in changes if f"/servers/{server}/" in path]
        assert mine[0].endswith("/snapshots") and mine[-1].endswith("/actions"), mine
    _, world = await sim.call("GET", "/_sim/world")
    status = {s["name"]: s["status"] for s in world["servers"]}
    assert {name for name, state in status.items() if state == "SHUTOFF"} == EXPENDABLE
    assert "budget says no" in verdict.verdict.reason and "overrun" in verdict.verdict.reason
    assert not [a for a in webhook_alerts(hook) if a["rule"] == "web"]
    assert changes == [
        ("POST", f"/ecs/v2/servers/{server}/{what}")
        for server in sorted(EXPENDABLE)
        for what in ("snapshots", "actions")
    ]


async def test_a_restart_repeats_no_warning_and_no_enforcement(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    _, daemon = await overrun(simulator, tmp_path, hook, BUDGET_RULE.format(steps=DRY_STEPS))
    async with daemon:
        await hourly(daemon, hours=36)
        before = await daemon.store.ledger(rule="overrun")
    sent = len(hook.requests)
    again = Daemon(
        load_config(tmp_path / "cloudpilot.toml"),
        clock=daemon.clock,
        registry=None,
    )
    async with again:
        await hourly(again, hours=2)
        after = await again.store.ledger(rule="overrun")
    assert sent >= 3
    assert len(hook.requests) == sent
    assert sorted(e.key for e in after) == sorted(e.key for e in before)


MONTH_END = """\
name: month-end
description: One big server running into December.
seed: 7
start: "2026-11-30T12:00:00Z"
pricing:
  billing_lag: 2h
servers:
  - {name: ec700001, plan: ECS6, notes: big, age: 40d, demand: {kind: constant, cores: 2}}
"""


async def test_the_month_rollover_resolves_and_resets_warnings(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim = await simulator(MONTH_END)
    rules = BUDGET_RULE.format(steps="").replace("cap: 500", "cap: 80")
    rules = rules.replace("[50, 80, 100]", "[50, 100]")
    daemon = linked_daemon(sim, tmp_path, rules, hook_url=hook.url("/hook"))
    async with daemon:
        await hourly(daemon, hours=3)  # November: about 88 EUR of an 80 EUR cap
        november = list(webhook_alerts(hook))
        await hourly(daemon, hours=12)  # into December
    alerts = webhook_alerts(hook)
    assert [(a["status"], a["resource"]) for a in november] == [("firing", "2026-11/actual/100")]
    assert sorted((a["status"], a["resource"]) for a in alerts[1:]) == [
        # December starts again: 0.125 EUR/h for 31 days heads past the 80 EUR cap.
        ("firing", "2026-12/forecast/100"),
        ("resolved", "2026-11/actual/100"),
    ]


async def test_no_step_acts_without_a_bill_or_on_a_stale_one(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim = await simulator("budget-overrun")
    prices = (
        '[budget]\ngpu_prices = {"seeweb-nvidia-1xa100" = 2.2, "seeweb-nvidia-2xa6000" = 1.62}\n'
    )
    rules = BUDGET_RULE.format(steps=DRY_STEPS)
    daemon = linked_daemon(
        sim, tmp_path, rules, k8sgpu=True, hook_url=hook.url("/hook"), extra=prices
    )
    fault = {"path": "/ecs/v2/billing", "status": 500, "rate": 1}
    await sim.call("POST", "/_sim/faults", json=fault)
    async with daemon:
        await hourly(daemon, hours=2)
        missing = daemon.budgets.views["overrun"]
        await sim.call("DELETE", "/_sim/faults")
        await hourly(daemon, hours=28)  # about 102% of the cap: under the 105% step
        await sim.call("POST", "/_sim/faults", json=fault)
        await hourly(daemon, hours=8)  # past 105% by the estimate, on a bill 8 hours old
        stale = daemon.budgets.views["overrun"]
        held = await daemon.store.ledger(rule="overrun")
        await sim.call("DELETE", "/_sim/faults")
        await hourly(daemon, hours=1)
        acted = await daemon.store.ledger(rule="overrun")
    assert missing.spend is None and "no complete bill for 2026-11" in missing.note
    assert stale.spend is not None and stale.spend.percent(500) > 105
    assert "stale" in stale.note
    assert [e for e in held if e.decision.action == "power_off"] == []
    offs = {e.decision.params["server"] for e in acted if e.decision.action == "power_off"}
    assert offs == EXPENDABLE


APPROVAL_STEPS = """\
      enforce:
        - at: 105
          power_off: {servers: {notes: "*expendable*"}}
          mode: enforce
          approval: {timeout: 2h}
"""


async def waiting_records(daemon: Daemon) -> list[Any]:
    records = await daemon.store.budgets(scope_prefix="approval:")
    return [r for r in records if r.data["state"] == "waiting"]


async def test_an_approved_step_acts_and_an_unanswered_one_expires(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim, daemon = await overrun(simulator, tmp_path, hook, BUDGET_RULE.format(steps=APPROVAL_STEPS))
    async with daemon:
        await hourly(daemon, hours=36)
        before = mutations(await sim.requests())
        waiting = {r.data["target"]: r.data["id"] for r in await waiting_records(daemon)}
        chosen = waiting["ec600003"]
        out, err = io.StringIO(), io.StringIO()
        code = await approve_with(
            daemon.store, chosen, reject=False, clock=daemon.clock, out=out, err=err
        )
        await hourly(daemon, hours=3)  # the other request times out after 2 h
        records = {
            r.data["id"]: r.data for r in await daemon.store.budgets(scope_prefix="approval:")
        }
    asked = [a for a in webhook_alerts(hook) if "approval" in a["labels"]]
    ids = {a["labels"]["approval"]: a for a in asked if a["status"] == "firing"}
    assert code == 0, err.getvalue()
    assert set(waiting) == EXPENDABLE and set(ids) == set(waiting.values())
    assert before == []
    assert f"cloudpilot approve {chosen}" in ids[chosen]["summary"]
    assert mutations(await sim.requests()) == [
        ("POST", "/ecs/v2/servers/ec600003/snapshots"),
        ("POST", "/ecs/v2/servers/ec600003/actions"),
    ]
    (other,) = set(ids) - {chosen}
    assert records[chosen]["state"] == "acted"
    assert records[other]["state"] == "expired"
    resolved = {
        a["labels"].get("approval") for a in webhook_alerts(hook) if a["status"] == "resolved"
    }
    assert resolved == set(ids)
