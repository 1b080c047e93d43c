"""Under steady events the daemon's memory of them stops growing: what it keeps is bounded.

Six simulated hours of a steady stream of actions, a fifth of them failed, and CPU samples
every minute, polled every ten minutes with the shipped failed-actions rules and an autoscale
rule. The engine's timing memory (throttle windows per action id) and the servers' CPU history
reach a level in the first hours and hold it: at hour four and at hour six they are within the
bound their windows set. (RSS over time is measured by `bench/soak.py`.)
"""

from __future__ import annotations

import random
from pathlib import Path

from alert_receivers import HttpReceiver, hook_fixture  # noqa: F401
from conftest import SimFactory, SimHandle, linked_daemon

from daemon.app import Daemon

REPO = Path(__file__).resolve().parents[2]
EXTRA = """
  - name: each-failure
    on: seeweb.action.failed
    throttle: {once_within: 1h, group_by: [data.id]}
    do: [{log: {message: failed}}]
  - name: web
    autoscale:
      provider: seeweb
      up: {above: 75, for: 15m}
      down: {below: 30, for: 1h}
      max_cores: 8
      to: [hook]
"""
PER_POLL = 60  # actions every ten minutes


def rules() -> str:
    """Return the shipped failed-actions rules, paging the test's `hook` route, and EXTRA."""
    shipped = (REPO / "rules" / "failed-actions.yaml").read_text()
    return shipped.replace("to: [oncall]", "to: [hook]") + EXTRA


def record(sim: SimHandle, rng: random.Random) -> None:
    world = sim.sim.world
    names = [s.name for s in world.live_servers()]
    for _ in range(PER_POLL):
        outcome = "failed" if rng.random() < 0.2 else "completed"
        kind = rng.choice(["power_on", "reboot", "create_snapshot"])
        world.start_action(rng.choice(names), kind, duration_s=0, outcome=outcome)
    world.sync()


async def hours(daemon: Daemon, sim: SimHandle, rng: random.Random, count: int) -> None:
    for _ in range(count * 6):
        record(sim, rng)
        daemon.clock.advance(600)  # type: ignore[attr-defined]
        await daemon.poll_once()
        await daemon.runner.wait_idle()
        while (wait := await daemon.dispatcher.pump("hook")) is not None:
            daemon.clock.advance(wait)  # type: ignore[attr-defined]


def held(daemon: Daemon) -> dict[str, int]:
    return {
        "engine_memory": len(daemon.engine.memory),
        "cpu_samples": sum(len(window) for window in daemon.facts.cpu.values()),
        "longest_cpu_window": max((len(window) for window in daemon.facts.cpu.values()), default=0),
        "servers": len(daemon.facts.servers),
    }


async def test_steady_events_reach_a_level_and_hold_it(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim = await simulator("default", metrics_step_s=60)
    daemon = linked_daemon(sim, tmp_path, rules(), hook_url=hook.url("/hook"))
    rng = random.Random(6)
    async with daemon:
        await hours(daemon, sim, rng, 4)
        at_four = held(daemon)
        await hours(daemon, sim, rng, 2)
        at_six = held(daemon)
    # Throttle windows per action id: kept for the window (1h) and the staleness limit (1h),
    # pruned hourly, so at most three hours of failures, whatever the hours run.
    failed_per_hour = 6 * PER_POLL * 0.2
    for level in (at_four, at_six):
        assert failed_per_hour < level["engine_memory"] <= 3 * failed_per_hour * 1.3 + 50
    # CPU history: the longest `for` (1h) and an hour, per server, at hour four as at six.
    assert at_six["cpu_samples"] == at_four["cpu_samples"]
    assert at_six["longest_cpu_window"] == at_four["longest_cpu_window"] == 121  # 2 h of minutes
    assert len(hook.requests) > 50  # the stream did alert all along
