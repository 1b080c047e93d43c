"""What the daemon does when a provider asks it to wait, or answers too much: nothing is lost.

The daemon runs in process against the simulator and a webhook receiver, on a clock linked to
the simulator's. A Retry-After longer than `[providers] max_retry_after` ends the poll, keeps
the source's cursor, and the next poll waits for it; an answer larger than
`[providers] max_response` fails the poll naming the endpoint. Either way, an action that failed
meanwhile is paged once the provider answers as it should.
"""

from __future__ import annotations

from pathlib import Path

from alert_receivers import HttpReceiver, hook_fixture  # noqa: F401
from conftest import SimFactory, SimHandle, linked_daemon
from structlog.testing import capture_logs

from daemon.app import Daemon

RULES = """\
rules:
  - name: failed-actions
    on: seeweb.action.failed
    throttle: {once_within: 1m, group_by: [data.id]}
    do:
      - alert: {severity: critical, summary: "{{ event.data.type }} failed", to: [hook]}
"""
ACTIONS = "/ecs/v2/actions"


async def poll(daemon: Daemon, seconds: float) -> None:
    """Let `seconds` pass, poll every source, and deliver what the poll queued."""
    daemon.clock.advance(seconds)  # type: ignore[attr-defined]
    await daemon.poll_once()
    await daemon.runner.wait_idle()
    await daemon.dispatcher.pump("hook")


async def action_reads(sim: SimHandle) -> list[int]:
    return [r["status"] for r in await sim.requests() if r["path"] == ACTIONS]


def fail_one(sim: SimHandle) -> int:
    world = sim.sim.world
    action = world.start_action("ec300001", "reboot", duration_s=0, outcome="failed")
    world.sync()
    return action.id


def paged(hook: HttpReceiver) -> list[int]:
    return [r.json()["alert"]["event"]["data"]["id"] for r in hook.requests]


async def test_a_long_retry_after_defers_the_next_poll_and_loses_nothing(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim = await simulator("quiet")
    daemon = linked_daemon(sim, tmp_path, RULES, hook_url=hook.url("/hook"))
    async with daemon:
        await poll(daemon, 60)
        status, _ = await sim.call(
            "POST", "/_sim/faults", json={"path": ACTIONS, "status": 429, "retry_after": 1800}
        )
        assert status == 200
        failed = fail_one(sim)
        with capture_logs() as logs:
            await poll(daemon, 60)
        # One request: a wait past max_retry_after (10 s) is not slept inside the poll.
        assert (await action_reads(sim))[-1:] == [429]
        [warning] = [entry for entry in logs if entry["event"] == "source_failed"]
        assert warning["source"] == "actions" and warning["retry_in_s"] == 1800
        assert "seeweb GET /ecs/v2/actions: rate limited (HTTP 429" in warning["error"]
        before = len(await action_reads(sim))
        for _ in range(29):  # every minute of the half hour the provider asked for
            await poll(daemon, 60)
        assert len(await action_reads(sim)) == before
        assert paged(hook) == []
        await sim.call("DELETE", "/_sim/faults")
        await poll(daemon, 60)
    assert (await action_reads(sim))[before:] == [200]
    assert paged(hook) == [failed]


async def test_an_answer_past_max_response_fails_the_poll_naming_the_endpoint(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim = await simulator("quiet")
    daemon = linked_daemon(
        sim,
        tmp_path,
        RULES,
        hook_url=hook.url("/hook"),
        extra='[providers]\nmax_response = "64KiB"\n',
    )
    async with daemon:
        await poll(daemon, 60)
        status, _ = await sim.call(
            "POST", "/_sim/faults", json={"path": ACTIONS, "pad_bytes": 64 * 1024}
        )
        assert status == 200
        failed = fail_one(sim)
        with capture_logs() as logs:
            await poll(daemon, 60)
        [warning] = [entry for entry in logs if entry["event"] == "source_failed"]
        assert warning["source"] == "actions"
        assert warning["error"] == (
            "seeweb GET /ecs/v2/actions: answer larger than 64 KiB (HTTP 200); "
            "[providers] max_response sets the limit"
        )
        errors = daemon.metrics.registry.get_sample_value(
            "cloudpilot_poll_errors_total", {"source": "actions"}
        )
        assert errors == 1
        assert paged(hook) == []
        await sim.call("DELETE", "/_sim/faults")
        await poll(daemon, 600)  # past the back-off
    assert paged(hook) == [failed]
