"""A backlog bigger than one poll's page bound is caught up over the next polls: nothing skipped.

The daemon runs in process against the simulator and a webhook receiver. It polls once, stops,
and while it is down 3,000 actions are recorded, 300 of them failed: far more than one poll
reads (20 pages of 50). Started again, it must page every failed action exactly once.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from alert_receivers import HttpReceiver, hook_fixture  # noqa: F401
from conftest import LinkedClock, SimFactory, SimHandle, linked_daemon
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from daemon.app import Daemon
from daemon.registry import load_config
from daemon.state.store import LedgerState

# One alert per failed action: the identity is the action's id.
RULES = """\
rules:
  - name: failed-actions
    on: seeweb.action.failed
    throttle: {once_within: 1m, group_by: [data.id]}
    do:
      - alert:
          severity: critical
          summary: "{{ event.data.type }} {{ event.data.status }} on {{ event.resource }}"
          to: [hook]
"""


async def poll(daemon: Daemon, polls: int) -> None:
    """Poll every source `polls` times, a minute apart, delivering what each poll queued."""
    for _ in range(polls):
        daemon.clock.advance(60)  # type: ignore[attr-defined]
        await daemon.poll_once()
        await daemon.runner.wait_idle()
        await daemon.dispatcher.pump("hook")


def record_actions(sim: SimHandle, count: int, failed_every: int) -> set[int]:
    """Record `count` finished actions on the world's servers; return the ids of the failed."""
    world = sim.sim.world
    names = [s.name for s in world.live_servers()]
    rng = random.Random(3000)
    failed: set[int] = set()
    for n in range(count):
        outcome = "failed" if n % failed_every == failed_every - 1 else "completed"
        action = world.start_action(
            rng.choice(names), rng.choice(["power_on", "power_off"]), duration_s=0, outcome=outcome
        )
        if outcome == "failed":
            failed.add(action.id)
    world.sync()
    return failed


def daemon_on(sim: SimHandle, tmp_path: Path, hook: HttpReceiver) -> Daemon:
    daemon: Daemon = linked_daemon(sim, tmp_path, RULES, hook_url=hook.url("/hook"))
    return daemon


def restart(daemon: Daemon, sim: SimHandle) -> Daemon:
    """Return a new daemon on the same config and state file, as after a restart."""
    return Daemon(
        load_config(daemon.config.path),
        clock=LinkedClock(sim),
        registry=CollectorRegistry(),
        rng=random.Random(9),
    )


async def test_a_restart_with_3000_new_actions_pages_every_failure_exactly_once(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim = await simulator("quiet")
    async with daemon_on(sim, tmp_path, hook) as daemon:
        await poll(daemon, 1)
    before = len(hook.requests)

    failed = record_actions(sim, 3000, failed_every=10)  # while the daemon is down
    with capture_logs() as logs:
        async with restart(daemon, sim) as again:
            await poll(again, 5)
            while (wait := await again.dispatcher.pump("hook")) is not None:
                again.clock.advance(wait)  # type: ignore[attr-defined]  # the route's pace
            ledger = await again.store.ledger(rule="failed-actions", limit=1000)

    paged = Counter(
        request.json()["alert"]["event"]["data"]["id"] for request in hook.requests[before:]
    )
    assert len(failed) == 300
    # Each failed action made one decision, and one delivery of it reached the receiver.
    assert len(ledger) == 300 and all(e.state is LedgerState.DONE for e in ledger)
    decided = sorted(int(e.decision.event.data["id"]) for e in ledger if e.decision.event)
    assert decided == sorted(failed)
    assert set(paged) == failed and set(paged.values()) == {1}
    backlog = [e for e in logs if e["event"] == "source_backlog" and e["source"] == "actions"]
    assert len(backlog) >= 2  # the page bound spread the backlog over several polls
    assert [e for e in logs if e["event"] == "source_gap"] == []
