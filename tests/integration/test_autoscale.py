"""Autoscale end to end: the daemon in process against the simulator's CPU-surge scenario.

Glesys servers are resized in place (`server/edit` with `cpucores`, checked through
`server/details`); Seeweb servers get a recommendation naming a plan and its price difference,
and no resize call. Time is a LinkedClock: each poll moves the simulated cloud a minute on.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from conftest import SimFactory, SimHandle, linked_daemon

from daemon.app import Daemon
from daemon.models import Decision, Event, Mode
from daemon.state.store import LedgerState

GLESYS_RULE = """\
  - name: glesys-web
    autoscale:
      provider: glesys
      servers: {name: "web-*"}
      up: {above: 75, for: 10m, step: 1}
      down: {below: 40, for: 30m, step: 1}
      min_cores: 2
      max_cores: 4
      cooldown: 20m
      max_resizes_per_day: 6
      snapshot: none
      to: [hook]
"""

SEEWEB_RULE = """\
  - name: seeweb-web
    autoscale:
      provider: seeweb
      servers: {notes: "web-*"}
      up: {above: 75, for: 15m, step: 1}
      down: {below: 30, for: 2h, step: 1}
      min_cores: 1
      max_cores: 8
      cooldown: 6h
      to: [hook]
"""


OSCILLATING = """\
name: oscillating
description: A Glesys web server whose load swings across its up threshold all day.
seed: 5
glesys:
  - serverid: kvm4000001
    hostname: web-glesys-1
    cpucores: 2
    demand: {kind: sine, base: 1.6, amplitude: 1.2, period: 40m}
"""


def setup(sim: SimHandle, tmp_path: Path, rules: str) -> Daemon:
    return linked_daemon(sim, tmp_path, "rules:\n" + rules, glesys=True, seed=3)


async def run_for(daemon: Daemon, minutes: int, *, every_s: float = 60.0) -> None:
    """Poll once per interval for `minutes`, letting each poll's actions finish."""
    for _ in range(int(minutes * 60 / every_s)):
        daemon.clock.advance(every_s)  # type: ignore[attr-defined]
        await daemon.poll_once()
        await daemon.runner.wait_idle()


async def glesys_server(sim: SimHandle, name: str) -> dict[str, Any]:
    status, world = await sim.call("GET", "/_sim/world")
    assert status == 200
    (server,) = [s for s in world["servers"] if s["name"] == name]
    return dict(server)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_glesys_cores_follow_the_surge_in_place(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator("cpu-surge")
    start = sim.sim.world.now
    async with setup(sim, tmp_path, GLESYS_RULE) as daemon:
        await run_for(daemon, 180)
        entries = await daemon.store.ledger(rule="glesys-web")
        status = daemon.status()
    server = await glesys_server(sim, "web-glesys-1")
    history = [(at(t), cores) for t, cores in server["cores_history"]]
    cores = [c for _, c in history]
    # Up to 3, then (after the cooldown) 4, the maximum; back down after the load ended.
    assert cores[:3] == [2, 3, 4]
    assert max(cores) == 4 and min(cores) >= 2
    assert cores[-1] == 2
    edits = [r for r in await sim.requests() if r["path"] == "/glesys/server/edit"]
    first_edit = at(edits[0]["t"])
    surge = start.replace(microsecond=0)
    # The surge starts at 10m; up.for is 10m; one poll is 1m (plus the edit's own reads).
    assert (first_edit - surge).total_seconds() <= (10 + 10 + 1) * 60 + 30
    # Down only after the load fell at 70m and the 30m below-threshold window passed (a sample
    # counts from the one before it, so one poll of the window may lie before the fall).
    down = [t for (t, c), (_, before) in zip(history[1:], history, strict=False) if c < before]
    assert down and all((t - surge).total_seconds() >= (70 + 30 - 1) * 60 for t in down)
    # And never two resizes inside the 20m cooldown.
    changes = [t for t, _ in history[1:]]
    assert all((b - a).total_seconds() >= 20 * 60 for a, b in itertools.pairwise(changes))
    assert [r for r in await sim.requests() if r["path"] == "/glesys/server/details"]
    assert all(e.state is LedgerState.DONE for e in entries)
    assert {e.decision.action for e in entries} == {"set_cores"}
    # The other Glesys server does not match web-* and is left alone.
    assert (await glesys_server(sim, "api-glesys-2"))["resizes"] == 0
    verdicts = {v["server"]: v for v in status["autoscale"]}
    assert verdicts["web-glesys-1"]["current_cores"] == 2
    assert "reason" in verdicts["web-glesys-1"]


async def test_oscillating_load_stays_within_the_daily_cap(
    simulator: SimFactory, tmp_path: Path
) -> None:
    # Around the up threshold of 2 cores, swinging every 40 minutes for a whole day.
    sim = await simulator(OSCILLATING)
    rules = GLESYS_RULE.replace("cooldown: 20m", "cooldown: 15m").replace(
        "max_resizes_per_day: 6", "max_resizes_per_day: 3"
    )
    async with setup(sim, tmp_path, rules) as daemon:
        await run_for(daemon, 24 * 60, every_s=300)
    server = await glesys_server(sim, "web-glesys-1")
    assert 1 <= server["resizes"] <= 3


async def test_seeweb_gets_a_recommendation_and_no_resize(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator("cpu-surge", metrics_step_s=60)
    async with setup(sim, tmp_path, SEEWEB_RULE) as daemon:
        await run_for(daemon, 40)
        alert = await daemon.store.get_alert("seeweb-web/ec500001")
        gauge = daemon.metrics.registry.get_sample_value(
            "cloudpilot_autoscale_recommended_cores", {"server": "ec500001", "plan": "eCS3"}
        )
        delta = daemon.metrics.registry.get_sample_value(
            "cloudpilot_autoscale_recommended_price_difference_euros",
            {"server": "ec500001", "plan": "eCS3"},
        )
        # The load ends at 70m; the advice is withdrawn once it is back within thresholds.
        await run_for(daemon, 40)
        after = await daemon.store.get_alert("seeweb-web/ec500001")
    assert alert is not None and alert.status == "firing"
    summary = alert.data["notification"]["summary"]
    # The server says ECS2, the plan list eCS2: the same plan, 23 EUR; eCS3 costs 35.
    assert summary == "ec500001: move from eCS2 (2 cores) to eCS3 (4 cores), +12.00 EUR/month"
    assert alert.data["notification"]["labels"]["plan"] == "eCS3"
    assert gauge == 4.0
    assert delta == 12.0
    log = await sim.requests()
    assert any(r["path"] == "/ecs/v2/plans" for r in log)
    # Seeweb cannot resize: nothing but reads went to the ECS API.
    assert [
        r for r in log if r["path"].startswith("/ecs/v2/servers") and r["method"] != "GET"
    ] == []
    assert after is not None and after.status == "resolved"


LONG_REBOOT = """\
name: long-reboot
seed: 31
glesys_reboot: 90s
glesys:
  - {serverid: kvm3000001, hostname: web-glesys-1, cpucores: 2,
     demand: {kind: constant, cores: 0.8}}
"""


async def test_a_resize_resumed_inside_the_reboot_lock_is_not_sent_again(
    simulator: SimFactory, tmp_path: Path
) -> None:
    # A daemon was killed right after its `server/edit`: the ledger says started, and Glesys is
    # rebooting the server into its new cores. The restart must wait the lock out, see the cores
    # and finish, not send the edit again (which Glesys refuses while locked).
    sim = await simulator(LONG_REBOOT)
    daemon = setup(sim, tmp_path, GLESYS_RULE)
    event = Event(
        type="autoscale.resize",
        key="autoscale.resize:glesys:web-glesys-1:before-the-kill",
        time=daemon.clock.now(),
        resource="web-glesys-1",
        data={"server": "web-glesys-1", "current_cores": 2, "target_cores": 3},
        source="autoscale",
    )
    decision = Decision(
        key="glesys-web/set_cores/before-the-kill",
        rule="glesys-web",
        action="set_cores",
        params={"server": "web-glesys-1", "provider": "glesys", "cores": 3, "snapshot": "none"},
        mode=Mode.ENFORCE,
        event=event,
        time=daemon.clock.now(),
    )
    await daemon.store.open()
    async with daemon.store.batch() as batch:
        await batch.record_decisions([decision])
    await daemon.store.mark_started(decision.key, daemon.clock.now())
    await daemon.store.close()
    status, _ = await sim.call(
        "POST",
        "/glesys/server/edit",
        json={"serverid": "kvm3000001", "cpucores": 3},
        headers={"Authorization": aiohttp.encode_basic_auth("cl12345", "simulator-token")},
    )
    assert status == 200  # the edit the killed daemon sent: the server is now locked

    async with daemon:
        await run_for(daemon, 2)  # the first polls come while Glesys still reboots it
        entry = await daemon.store.get_entry(decision.key)
    edits = [r for r in await sim.requests() if r["path"] == "/glesys/server/edit"]
    server = await glesys_server(sim, "web-glesys-1")

    assert len(edits) == 1 and edits[0]["status"] == 200  # only the killed daemon's
    assert entry is not None and entry.state is LedgerState.DONE
    assert [cores for _, cores in server["cores_history"]] == [2, 3]
