"""`cloudpilot plan` and `cloudpilot run` decide the same on the same world.

Both build their policies in `daemon/pipeline.py`. Here the simulator's world is read once by
`plan` and once by a daemon, at the same simulated instant, and what each decided is compared:
every resize and recommendation (rule, server, cores from and to), and every server held with
its reason.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from conftest import SimFactory, linked_daemon
from test_real_catalogue import SEEWEB_RULE

from daemon.clock import FakeClock
from daemon.plan import run_plan
from daemon.registry import load_config

WORLD = """\
name: plan-matches-run
seed: 3
servers:
  - {name: ec700001, plan: ECS1, notes: web-linux, demand: {kind: constant, cores: 0.95}}
  - {name: ec700002, plan: ECS2W, os: windows-2022, notes: web-windows,
     demand: {kind: constant, cores: 1.9}}
  - {name: ec700003, plan: eCS1HM, notes: web-memory, demand: {kind: constant, cores: 3.9}}
  - {name: ec700004, plan: ECS1GPU6, notes: web-gpu, demand: {kind: constant, cores: 3.9}}
  - {name: ec700005, plan: ECS2, notes: web-quiet, demand: {kind: constant, cores: 0.5}}
glesys:
  - serverid: kvm4000001
    hostname: web-glesys-1
    cpucores: 2
    demand: {kind: constant, cores: 1.9}
"""

# The Seeweb rule of the real-catalogue tests, and a Glesys one beside it.
RULES = (
    SEEWEB_RULE
    + """\
  - name: glesys-web
    autoscale:
      provider: glesys
      servers: {name: "web-*"}
      up: {above: 75, for: 10m, step: 1}
      down: {below: 40, for: 30m, step: 1}
      min_cores: 2
      max_cores: 4
      snapshot: none
      to: [hook]
"""
)

DECIDED = re.compile(r"^(resize|recommend) (\S+) (\S+): (\d+) -> (\d+) cores")
HELD = re.compile(r"^hold (\S+) (\S+): (\d+) cores: (.*)$")
BLOCKED = re.compile(r"^blocked (\S+) (\S+): (\S+): ")


async def test_plan_and_run_decide_the_same_on_one_world(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator(WORLD, metrics_step_s=60)
    daemon = linked_daemon(sim, tmp_path, RULES, glesys=True)
    clock = daemon.clock
    assert isinstance(clock, FakeClock)
    clock.advance(15 * 60)  # the world runs 15 minutes; Seeweb's metrics keep its history

    out = io.StringIO()
    assert await run_plan(load_config(tmp_path / "cloudpilot.toml"), clock=clock, out=out) == 0
    lines = out.getvalue().splitlines()
    planned = {m.groups() for line in lines if (m := DECIDED.match(line))}
    plan_held = {m.groups() for line in lines if (m := HELD.match(line))}
    plan_blocked = {m.groups() for line in lines if (m := BLOCKED.match(line))}

    async with daemon:  # the same instant: the clock has not moved since plan read the world
        await daemon.poll_once()
        await daemon.runner.wait_idle()
        entries = [
            e for rule in ("web", "glesys-web") for e in await daemon.store.ledger(rule=rule)
        ]
        status = daemon.status()

    decided = set()
    for entry in entries:
        event = entry.decision.event
        assert event is not None
        kind = "resize" if entry.decision.action == "set_cores" else "recommend"
        data = event.data
        decided.add(
            (
                kind,
                entry.decision.rule,
                data["server"],
                str(data["current_cores"]),
                str(data["target_cores"]),
            )
        )
    verdicts = status["autoscale"]
    run_held = {
        (v["rule"], v["server"], str(v["current_cores"]), v["reason"])
        for v in verdicts
        if v["direction"] == "hold" and "blocked" not in v
    }
    run_blocked = {(h["rule"], h["subject"], h["reason"]) for h in status["problems"]["blocked"]}

    # Something of each kind is compared: advice, servers held and a server blocked.
    assert ("recommend", "web", "ec700002", "2", "4") in planned
    assert any(rule == "glesys-web" for rule, *_ in plan_held)
    assert ("web", "ec700004", "no_cpu_samples") in plan_blocked
    assert decided == planned
    assert run_held == plan_held
    assert run_blocked == plan_blocked
