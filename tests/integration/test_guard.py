"""The snapshot guard end to end: the daemon in process against the simulator.

A failed health check on a server makes a rule power it off. The guard must snapshot the server,
wait for the snapshot's action to complete, and only then power it off; a failed snapshot stops
everything and fires an alert; old snapshots of its own are deleted, nobody else's. Time is a
LinkedClock: the guard's waits move the simulated cloud, so nothing waits for real time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import SimFactory, SimHandle, linked_daemon

from daemon.actions.server import intent_tag
from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.policies.guard import guard_alert_key
from daemon.state.store import LedgerState

SERVER = "ec300003"

RULES = """\
rules:
  - name: stop-unhealthy
    on: seeweb.action.failed
    match: {data.type: health_check}
    do:
      - power_off: {}
      - alert:
          severity: warning
          summary: "{{ event.resource }} failed its health check"
          to: [hook]

guard:
  risky: [power_off]
  snapshot_timeout: 10m
  verify_timeout: 5m
  keep_snapshots: 2
"""


def setup(
    sim: SimHandle, tmp_path: Path, rules: str = RULES, *, clock: FakeClock | None = None
) -> Daemon:
    return linked_daemon(sim, tmp_path, rules, clock=clock)


async def health_check_fails(sim: SimHandle, daemon: Daemon) -> None:
    """Let a health check fail on the server and poll, so the rule decides to power it off."""
    status, _ = await sim.call(
        "POST",
        "/_sim/actions",
        json={"resource": SERVER, "type": "health_check", "outcome": "failed", "duration_s": 10},
    )
    assert status == 200
    await sim.advance(30)
    daemon.clock.advance(30)  # type: ignore[attr-defined]
    await daemon.poll_once()
    await daemon.runner.wait_idle()


async def world(sim: SimHandle) -> dict[str, Any]:
    status, body = await sim.call("GET", "/_sim/world")
    assert status == 200
    return dict(body)


def mutations(log: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in log if r["method"] != "GET"]


async def power_off_entry(daemon: Daemon) -> Any:
    entries = [
        e
        for e in await daemon.store.ledger(rule="stop-unhealthy")
        if e.decision.action == "power_off"
    ]
    assert len(entries) == 1
    return entries[0]


async def test_power_off_waits_for_a_completed_snapshot(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator("quiet")
    async with setup(sim, tmp_path) as daemon:
        await health_check_fails(sim, daemon)
        log = await sim.requests()
        entry = await power_off_entry(daemon)
        guard_alert = await daemon.store.get_alert(guard_alert_key(SERVER))
    snapshot_post = f"/ecs/v2/servers/{SERVER}/snapshots"
    action_post = f"/ecs/v2/servers/{SERVER}/actions"
    paths = [(r["method"], r["path"]) for r in log]
    first = paths.index(("POST", snapshot_post))
    power_off = paths.index(("POST", action_post))
    assert first < power_off
    assert [m for m in mutations(log) if m[1].startswith(f"/ecs/v2/servers/{SERVER}")] == [
        ("POST", snapshot_post),
        ("POST", action_post),
    ]
    state = await world(sim)
    (snapshot,) = [s for s in state["snapshots"] if s["server"] == SERVER]
    assert snapshot["notes"] == intent_tag(entry.decision.key)
    (snapshot_action,) = [
        a
        for a in state["actions"]
        if a["type"] == "create_snapshot" and a["resource"] == str(snapshot["id"])
    ]
    polls = [
        r
        for r in log[first:power_off]
        if r["method"] == "GET" and r["path"] == f"/ecs/v2/actions/{snapshot_action['id']}"
    ]
    # Read again and again until it completed (90 simulated seconds), and only then powered off.
    assert len(polls) >= 2
    assert snapshot_action["status"] == "completed"
    assert polls[-1]["t"] >= log[first]["t"]
    assert entry.state is LedgerState.DONE
    assert f"after snapshot {snapshot['id']}" in entry.detail
    (server,) = [s for s in state["servers"] if s["name"] == SERVER]
    assert server["status"] == "SHUTOFF"
    assert guard_alert is None


async def test_a_failed_snapshot_aborts_the_power_off_and_fires_an_alert(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator("quiet")
    status, _ = await sim.call(
        "POST", "/_sim/faults", json={"fail_actions": "create_snapshot", "outcome": "error"}
    )
    assert status == 200
    async with setup(sim, tmp_path) as daemon:
        await health_check_fails(sim, daemon)
        log = await sim.requests()
        entry = await power_off_entry(daemon)
        alert = await daemon.store.get_alert(guard_alert_key(SERVER))
    assert ("POST", f"/ecs/v2/servers/{SERVER}/snapshots") in mutations(log)
    assert ("POST", f"/ecs/v2/servers/{SERVER}/actions") not in mutations(log)
    assert entry.state is LedgerState.ABORTED
    assert "snapshot of ec300003 failed" in entry.detail
    assert "'error'" in entry.detail
    assert alert is not None and alert.status == "firing"
    summary = alert.data["notification"]["summary"]
    assert summary == "power_off on ec300003 aborted"
    assert alert.data["routes"] == ["hook"]  # the rule's alert route
    (server,) = [s for s in (await world(sim))["servers"] if s["name"] == SERVER]
    assert server["status"] == "RUNNING"


async def test_a_snapshot_that_never_completes_times_out(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator("quiet")
    # A clock not linked to the simulator: the guard waits, the cloud does not move on.
    frozen = FakeClock(sim.sim.world.now)
    async with setup(sim, tmp_path, clock=frozen) as daemon:
        await health_check_fails(sim, daemon)
        entry = await power_off_entry(daemon)
        alert = await daemon.store.get_alert(guard_alert_key(SERVER))
    assert entry.state is LedgerState.ABORTED
    assert "still in progress after 600 s" in entry.detail
    assert alert is not None and alert.status == "firing"
    assert ("POST", f"/ecs/v2/servers/{SERVER}/actions") not in mutations(await sim.requests())
    # It gave up at the bound, not sooner or much later.
    assert 600 <= sum(frozen.sleeps) <= 610


async def test_retention_deletes_only_its_own_old_snapshots(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator("quiet")
    ecs = f"/ecs/v2/servers/{SERVER}/snapshots"
    status, manual = await sim.call(
        "POST", ecs, json={"description": "by hand", "notes": "keep me"}
    )
    assert status in (200, 201)
    await sim.advance(120)  # one snapshot at a time: the first must complete
    status, tagged = await sim.call(
        "POST",
        ecs,
        json={"description": "pinned", "notes": "cloudpilot:pinned", "protected": True},
    )
    assert status in (200, 201)
    await sim.advance(120)
    async with setup(sim, tmp_path) as daemon:
        for _ in range(4):
            await health_check_fails(sim, daemon)
            # Power it back on, as a person would, so the next check has something to stop.
            await sim.call(
                "POST",
                "/_sim/actions",
                json={
                    "resource": SERVER,
                    "type": "power_on",
                    "outcome": "completed",
                    "duration_s": 5,
                },
            )
            daemon.clock.advance(3600)  # type: ignore[attr-defined]
        entries = [
            e
            for e in await daemon.store.ledger(rule="stop-unhealthy")
            if e.decision.action == "power_off"
        ]
    assert [e.state for e in entries] == [LedgerState.DONE] * 4
    left = {
        s["id"]: s
        for s in (await world(sim))["snapshots"]
        if s["server"] == SERVER and s["status"] != "DD"
    }
    own = [s for s in left.values() if s["notes"].startswith("cloudpilot:") and not s["protected"]]
    assert len(own) == 2  # keep_snapshots
    newest = sorted(intent_tag(e.decision.key) for e in entries[:2])  # ledger is newest first
    assert sorted(s["notes"] for s in own) == newest
    assert manual["snapshot"]["id"] in left  # not ours: never deleted
    assert tagged["snapshot"]["id"] in left  # protected: never deleted
    deletes = [m for m in mutations(await sim.requests()) if m[0] == "DELETE"]
    assert len(deletes) == 2


@pytest.mark.parametrize("mode", ["dry_run"])
async def test_dry_run_takes_no_snapshot(simulator: SimFactory, tmp_path: Path, mode: str) -> None:
    sim = await simulator("quiet")
    rules = RULES.replace(
        "  - name: stop-unhealthy\n", f"  - name: stop-unhealthy\n    mode: {mode}\n"
    )
    async with setup(sim, tmp_path, rules) as daemon:
        await health_check_fails(sim, daemon)
    assert [m for m in mutations(await sim.requests()) if m[1].startswith("/ecs/v2/servers")] == []


async def test_a_power_off_decided_at_startup_waits_for_every_source_s_first_poll(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator("quiet")
    async with setup(sim, tmp_path) as daemon:
        status, _ = await sim.call(
            "POST",
            "/_sim/actions",
            json={"resource": SERVER, "type": "health_check", "outcome": "failed", "duration_s": 1},
        )
        assert status == 200
        daemon.clock.advance(5)  # type: ignore[attr-defined]
        # Only the actions source has polled: it sees the failure, and the rule decides.
        assert await daemon.scheduler.jobs["actions"].tick()
        held_first = daemon.runner.held
        # Every source polls, but billing fails: still held.
        await sim.call("POST", "/_sim/faults", json={"path": "/ecs/v2/billing", "status": 500})
        daemon.clock.advance(5)  # type: ignore[attr-defined]
        await daemon.poll_once()
        held_then = daemon.runner.held
        before = mutations(await sim.requests())
        await sim.call("DELETE", "/_sim/faults")
        daemon.clock.advance(3600)  # type: ignore[attr-defined]  # past billing's back-off
        await daemon.poll_once()
        await daemon.runner.wait_idle()
        entry = await power_off_entry(daemon)
        after = mutations(await sim.requests())

    assert (held_first, held_then) == (1, 1)
    assert before == []  # neither a snapshot nor a power-off yet
    assert after == [
        ("POST", f"/ecs/v2/servers/{SERVER}/snapshots"),
        ("POST", f"/ecs/v2/servers/{SERVER}/actions"),
    ]
    assert entry.state is LedgerState.DONE
