"""The daemon in process against the simulator, on a fake clock kept in step with simulated time."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from configs import write_config
from conftest import START, SimFactory, SimHandle
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from daemon.app import Daemon, run
from daemon.clock import FakeClock
from daemon.net import Listen
from daemon.registry import load_config
from daemon.state import LedgerState, SqliteStore

FAILED_ACTION_RULES = """\
rules:
  - name: page-failed-actions
    on: seeweb.action.failed
    do:
      - webhook: {{url: "{url}"}}
"""


@dataclass
class Receiver:
    """A webhook receiver on loopback that keeps every delivery."""

    url: str
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver(url="")

    async def hook(request: web.Request) -> web.Response:
        got.deliveries.append(await request.json())
        got.keys.append(request.headers.get("Idempotency-Key", ""))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    got.url = str(server.make_url("/hook"))
    yield got
    await server.close()


@dataclass
class World:
    """The simulator, the fake clock in step with it, and a config for the daemon."""

    sim: SimHandle
    clock: FakeClock
    config_path: Path
    rules_dir: Path

    async def advance(self, seconds: float) -> None:
        await self.sim.advance(seconds)
        self.clock.advance(seconds)

    async def fail_action(self, resource: str, *, outcome: str = "failed") -> None:
        status, _ = await self.sim.call(
            "POST",
            "/_sim/actions",
            json={"resource": resource, "type": "power_off", "outcome": outcome, "duration_s": 30},
        )
        assert status in (200, 201)

    def daemon(self, registry: CollectorRegistry | None = None) -> Daemon:
        return Daemon(
            load_config(self.config_path),
            clock=self.clock,
            registry=registry or CollectorRegistry(),
        )


@pytest.fixture
async def world(simulator: SimFactory, receiver: Receiver, tmp_path: Path) -> World:
    sim = await simulator("quiet")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "failed.yaml").write_text(FAILED_ACTION_RULES.format(url=receiver.url))
    config = write_config(tmp_path, seeweb=sim.url)
    return World(sim=sim, clock=FakeClock(START), config_path=config, rules_dir=rules)


async def settle(daemon: Daemon) -> None:
    """Wait until the runner has carried out everything submitted so far."""
    await daemon.runner.wait_idle()


async def test_a_failed_action_is_delivered_exactly_once_across_a_restart(
    world: World, receiver: Receiver
) -> None:
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        await daemon.poll_once()
        await world.fail_action("ec300001")
        await world.advance(60)
        await daemon.poll_once()
        await settle(daemon)
        await world.advance(60)
        await daemon.poll_once()
        await settle(daemon)
    assert len(receiver.deliveries) == 1
    delivered = receiver.deliveries[0]
    assert delivered["rule"] == "page-failed-actions"
    assert delivered["event"]["type"] == "seeweb.action.failed"
    assert delivered["event"]["resource"] == "ec300001"
    counted = {
        "cloudpilot_events_total": {"type": "seeweb.action.failed"},
        "cloudpilot_rule_matches_total": {"rule": "page-failed-actions"},
        "cloudpilot_decisions_total": {"rule": "page-failed-actions", "mode": "enforce"},
        "cloudpilot_actions_total": {"action": "webhook", "outcome": "done"},
    }
    for name, labels in counted.items():
        assert registry.get_sample_value(name, labels) == 1.0, name

    async with world.daemon() as daemon:
        await daemon.poll_once()
        await world.advance(60)
        await daemon.poll_once()
        await settle(daemon)
    assert len(receiver.deliveries) == 1
    assert receiver.keys == [delivered["decision_key"]]

    store = SqliteStore(world.config_path.parent / "state.db")
    await store.open()
    try:
        entries = await store.ledger(rule="page-failed-actions")
    finally:
        await store.close()
    assert [entry.state for entry in entries] == [LedgerState.DONE]


async def test_an_action_ending_in_error_counts_as_failed(world: World, receiver: Receiver) -> None:
    async with world.daemon() as daemon:
        await daemon.poll_once()
        await world.fail_action("ec300002", outcome="error")
        await world.advance(60)
        await daemon.poll_once()
        await settle(daemon)
    assert len(receiver.deliveries) == 1
    event = receiver.deliveries[0]["event"]
    assert event["type"] == "seeweb.action.failed"
    assert event["data"]["status"] == "error"


async def test_stale_events_lead_to_no_decision(world: World, receiver: Receiver) -> None:
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        await daemon.poll_once()
        await world.fail_action("ec300001")
        # The daemon hears of the failure only two hours after it happened (stale_after is 1h).
        await world.advance(2 * 3600)
        await daemon.poll_once()
        await settle(daemon)
        await world.advance(60)
        await daemon.poll_once()
        await settle(daemon)
    assert receiver.deliveries == []
    stale = registry.get_sample_value(
        "cloudpilot_events_stale_total", {"type": "seeweb.action.failed"}
    )
    assert stale == 1.0


BROKEN = {
    "syntax": (
        "rules:\n  - name: broken\n    on: [\n",
        "broken.yaml:4: yaml: invalid YAML: while parsing a flow node",
    ),
    # Computed, this would hold the reload (and /healthz with it) for minutes.
    "template-bomb": (
        "rules:\n  - name: bomb\n    on: seeweb.action.failed\n"
        "    do:\n      - alert: {summary: '{{ 9**99999999 }}', to: [oncall]}\n",
        "broken.yaml:5: rules[0].do[0].alert.summary: cannot be rendered safely",
    ),
}


@pytest.mark.parametrize("broken", BROKEN)
async def test_a_bad_rule_file_on_reload_keeps_the_old_rules(
    world: World, receiver: Receiver, broken: str
) -> None:
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        await daemon.poll_once()
        source, reason = BROKEN[broken]
        (world.rules_dir / "broken.yaml").write_text(source)
        with capture_logs() as logs:
            assert await daemon.reload_rules() is False
        [failed] = [entry for entry in logs if entry["event"] == "rules_reload_failed"]
        assert reason in failed["error"], failed
        assert [rule.name for rule in daemon.engine.rules.rules] == ["page-failed-actions"]
        await world.fail_action("ec300003")
        await world.advance(60)
        await daemon.poll_once()
        await settle(daemon)
    assert len(receiver.deliveries) == 1
    assert registry.get_sample_value("cloudpilot_rule_reloads_total", {"result": "error"}) == 1.0
    assert registry.get_sample_value("cloudpilot_rules_loaded") == 1.0


async def test_a_good_reload_replaces_the_rules(world: World, receiver: Receiver) -> None:
    async with world.daemon() as daemon:
        await daemon.poll_once()
        (world.rules_dir / "failed.yaml").write_text(
            "rules:\n  - name: only-log\n    on: seeweb.action.failed\n"
            "    do:\n      - log: {message: failed}\n"
        )
        assert await daemon.reload_rules() is True
        await world.fail_action("ec300003")
        await world.advance(60)
        await daemon.poll_once()
        await settle(daemon)
    assert receiver.deliveries == []


async def test_timing_memory_past_its_window_is_pruned_hourly(world: World) -> None:
    (world.rules_dir / "failed.yaml").write_text(
        "rules:\n  - name: throttled\n    on: seeweb.action.failed\n"
        "    throttle: {once_within: 10m}\n    do:\n      - log: {message: failed}\n"
    )
    store = SqliteStore(world.config_path.parent / "state.db")
    async with world.daemon() as daemon:
        await daemon.poll_once()
        await world.fail_action("ec300003")
        await world.advance(60)
        await daemon.poll_once()
        await settle(daemon)
        assert [entry.rule for entry in daemon.engine.memory] == ["throttled"]
        # Past the window plus stale_after (1 h), and past the hourly prune.
        await world.advance(2 * 3600)
        await daemon.poll_once()
        assert daemon.engine.memory == []
    await store.open()
    try:
        assert await store.load_memory() == []
    finally:
        await store.close()


async def test_sigterm_stops_the_daemon_cleanly(world: World) -> None:
    config = load_config(world.config_path)
    ready = asyncio.Event()

    class Notifier:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def ready(self) -> None:
            self.sent.append("READY=1")
            ready.set()

        def stopping(self) -> None:
            self.sent.append("STOPPING=1")

        def reloading(self) -> None:
            self.sent.append("RELOADING=1")

        def watchdog(self) -> None:
            self.sent.append("WATCHDOG=1")

        def status(self, text: str) -> None:
            self.sent.append(f"STATUS={text}")

        def watchdog_interval(self) -> float | None:
            return None

        enabled = True

    notifier = Notifier()
    before = asyncio.all_tasks()
    task = asyncio.create_task(
        run(config, clock=world.clock, notifier=notifier, registry=CollectorRegistry())  # type: ignore[arg-type]
    )
    await asyncio.wait_for(ready.wait(), 10)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 10) == 0
    # The status line is sent once the loop runs: before any poll has ended, or after one.
    assert notifier.sent[0] == "READY=1"
    assert notifier.sent[-2:] == ["STOPPING=1", "STATUS=stopping"]
    assert all(line.startswith("STATUS=") for line in notifier.sent[1:-2])
    leftover = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert leftover == set()


async def test_readyz_turns_ready_after_the_first_poll(world: World) -> None:
    import aiohttp

    async with world.daemon() as daemon, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{daemon.http_port}"
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503
        await daemon.poll_once()
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
        for family in (
            "cloudpilot_poll_duration_seconds",
            "cloudpilot_api_requests_total",
            "cloudpilot_last_successful_poll_timestamp_seconds",
            "cloudpilot_rules_loaded",
            "cloudpilot_build_info",
            "cloudpilot_server_cores",
        ):
            assert family in text, family


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])  # noqa: S104
async def test_listening_beyond_loopback_warns_naming_what_is_exposed(
    world: World, host: str, warned: bool
) -> None:
    daemon = Daemon(
        load_config(world.config_path),
        clock=world.clock,
        registry=CollectorRegistry(),
        listen=Listen(host, 0),
    )
    with capture_logs() as logs:
        async with daemon:
            pass
    exposed = [
        (entry["log_level"], entry["listen"].rpartition(":")[0], entry["endpoints"])
        for entry in logs
        if entry["event"] == "http_exposed"
    ]
    endpoints = ["/healthz", "/metrics", "/readyz", "/status"]
    assert exposed == ([("warning", host, endpoints)] if warned else [])
