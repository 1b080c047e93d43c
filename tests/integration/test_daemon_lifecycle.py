"""The daemon's parts start in order and stop in reverse, as one stack of contexts.

A start that fails closes what it opened (the state lock, the session, the store) and starts
nothing after the part that failed; a stop stops polls first, drains actions and notification
sends side by side within `[shutdown] grace`, and closes HTTP, the store and the lock last.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from alert_receivers import Answer, HttpReceiver
from configs import write_config
from conftest import START, SimFactory, SimHandle
from prometheus_client import CollectorRegistry

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.net import Listen
from daemon.observability.http import ListenError
from daemon.registry import load_config
from daemon.state import LedgerState, SqliteStore
from daemon.state.lock import StateInUse
from daemon.state.store import StateError

GRACE_S = 1.0

RULES = """\
rules:
  - name: call-the-hook
    on: seeweb.action.failed
    do:
      - webhook: {{url: "{url}"}}
  - name: page-the-hook
    on: seeweb.action.failed
    do:
      - alert: {{severity: critical, summary: "an action failed", to: [hook]}}
"""


class LogEvents:
    """A log sink for the daemon: it keeps each event's name and lets a test await one."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._seen: dict[str, asyncio.Event] = {}

    def seen(self, name: str) -> asyncio.Event:
        """Return the event set once `name` has been logged."""
        return self._seen.setdefault(name, asyncio.Event())

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        self.names.append(str(event["event"]))
        self.seen(str(event["event"])).set()
        raise structlog.DropEvent

    def logger(self) -> Any:
        """Return a logger whose every line comes here."""
        return structlog.wrap_logger(
            structlog.testing.CapturingLogger(),
            processors=[self],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )


@dataclass
class World:
    """The simulator, a clock in step with it, two slow receivers and the daemon's config."""

    sim: SimHandle
    clock: FakeClock
    dir: Path
    action_receiver: HeldReceiver  # where the `webhook` action posts
    alert_receiver: HeldReceiver  # the `hook` notification route

    def daemon(self, *, listen: Listen | None = None, log: LogEvents | None = None) -> Daemon:
        return Daemon(
            load_config(self.dir / "cloudpilot.toml"),
            clock=self.clock,
            registry=CollectorRegistry(),
            listen=listen or Listen("127.0.0.1", 0),
            log=log.logger() if log is not None else None,
        )

    async def fail_an_action(self, daemon: Daemon) -> None:
        """Let an action fail in the simulator and poll, so both rules decide."""
        status, _ = await self.sim.call(
            "POST",
            "/_sim/actions",
            json={
                "resource": "ec300001",
                "type": "power_off",
                "outcome": "failed",
                "duration_s": 30,
            },
        )
        assert status in (200, 201)
        await self.sim.advance(60)
        self.clock.advance(60)
        await daemon.poll_once()

    async def in_flight(self) -> None:
        """Wait until the action's request and the notification are both with their receivers."""
        await self.action_receiver.arrived.wait()
        await self.alert_receiver.arrived.wait()


class HeldReceiver(HttpReceiver):
    """A receiver that answers 204 only when released, and says when a request arrives."""

    def __init__(self) -> None:
        super().__init__(Answer(204, hang=True))
        self.arrived = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrived.set()
        return await super()._handle(request)

    def release_after(self, seconds: float) -> None:
        """Answer the held requests (and later ones at once) after `seconds` of loop time."""
        asyncio.get_running_loop().call_later(seconds, self.release)


@pytest.fixture
async def world(simulator: SimFactory, tmp_path: Path) -> AsyncIterator[World]:
    sim = await simulator("quiet")
    action_receiver = await HeldReceiver().start()
    alert_receiver = await HeldReceiver().start()
    write_config(
        tmp_path,
        seeweb=sim.url,
        rules=RULES.format(url=action_receiver.url("/action")),
        extra=(
            f'[notifiers.hook]\ntype = "webhook"\nurl = "{alert_receiver.url("/alert")}"\n'
            f"[shutdown]\ngrace = {GRACE_S}\n"
        ),
    )
    try:
        yield World(sim, FakeClock(START), tmp_path, action_receiver, alert_receiver)
    finally:
        await action_receiver.close()
        await alert_receiver.close()


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[aiohttp.ClientSession]]:
    """Record the HTTP client sessions made while the test runs."""
    made: list[aiohttp.ClientSession] = []
    real = aiohttp.ClientSession

    def recorded(*args: Any, **kwargs: Any) -> aiohttp.ClientSession:
        session = real(*args, **kwargs)
        made.append(session)
        return session

    monkeypatch.setattr(aiohttp, "ClientSession", recorded)
    yield made


def daemon_tasks() -> set[asyncio.Task[Any]]:
    """Return the running tasks whose coroutine is the daemon's own code (not the simulator's)."""
    package = Path(inspect.getfile(Daemon)).parent  # daemon/
    found = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None:
            continue
        where = Path(code.co_filename)
        if where.is_relative_to(package) and not where.is_relative_to(package / "simulator"):
            found.add(task)
    return found


async def refuses(port: int) -> bool:
    """Return whether nothing listens on 127.0.0.1:port."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def assert_closed(daemon: Daemon) -> None:
    with pytest.raises(StateError, match="not open"):
        await daemon.store.get_cursor("actions")


# --- a start that fails --------------------------------------------------------------------------


async def test_a_busy_port_closes_what_started_before_it_and_starts_nothing_after(
    world: World, sessions: list[aiohttp.ClientSession]
) -> None:
    log = LogEvents()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        daemon = world.daemon(listen=Listen("127.0.0.1", busy.getsockname()[1]), log=log)
        with pytest.raises(ListenError, match="cannot listen"):
            await daemon.start()
    # Entered before HTTP, left in reverse: the store, the session, the state lock.
    await assert_closed(daemon)
    assert [session.closed for session in sessions] == [True]
    # After HTTP: no ledger reconciled, no worker, no expiry task, no polling.
    assert "ledger_reconciling" not in log.names
    assert "daemon_started" not in log.names
    assert daemon_tasks() == set()
    assert not daemon.healthy()
    async with world.daemon() as again:
        assert again.http_port > 0
    await daemon.stop()  # after a failed start, a stop has nothing left to do


async def test_a_state_file_in_use_is_left_alone_and_the_second_daemon_opens_nothing(
    world: World, sessions: list[aiohttp.ClientSession]
) -> None:
    async with world.daemon() as first:
        second = world.daemon()
        with pytest.raises(StateInUse, match="already in use"):
            await second.start()
        await assert_closed(second)
        # The lock comes first: the second daemon made no session and opened no store.
        assert [session.closed for session in sessions] == [False]
        # The first daemon keeps its store and its HTTP endpoint.
        assert await first.store.get_cursor("actions") is None
        assert not await refuses(first.http_port)
    async with world.daemon():
        pass


# --- a stop --------------------------------------------------------------------------------------


async def test_a_stop_leaves_the_parts_in_reverse_order_of_start(world: World) -> None:
    log = LogEvents()
    daemon = world.daemon(log=log)
    await daemon.start()
    port = daemon.http_port
    url = f"http://127.0.0.1:{port}"
    await world.fail_an_action(daemon)
    await world.in_flight()

    stopping = asyncio.create_task(daemon.stop())
    await log.seen("runner_draining").wait()
    # Polls have stopped; HTTP, the store and the state lock outlast the drain.
    assert log.names.index("polling_stopped") < log.names.index("runner_draining")
    assert not daemon.healthy()
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
        assert response.status == 503  # stopping
    assert [entry.state for entry in await daemon.store.ledger(rule="call-the-hook")] == [
        LedgerState.STARTED
    ]
    with pytest.raises(StateInUse):
        await world.daemon().start()

    world.action_receiver.release()
    world.alert_receiver.release()
    await stopping
    # The action finished into a store still open; then HTTP, the store and the lock closed.
    assert log.names[-1] == "daemon_stopped"
    assert await refuses(port)
    await assert_closed(daemon)
    assert daemon_tasks() == set()  # the expiry task, the workers and the runs all ended
    async with world.daemon() as again:
        entries = await again.store.ledger(rule="call-the-hook")
        assert [entry.state for entry in entries] == [LedgerState.DONE]
    await daemon.stop()  # idempotent
    assert log.names.count("daemon_stopped") == 1


async def test_actions_and_sends_drain_side_by_side_within_the_grace(world: World) -> None:
    daemon = world.daemon()
    await daemon.start()
    await world.fail_an_action(daemon)
    await world.in_flight()

    # Each takes most of the grace: one after the other they would need more than all of it.
    world.action_receiver.release_after(0.7 * GRACE_S)
    world.alert_receiver.release_after(0.7 * GRACE_S)
    await daemon.stop()

    store = SqliteStore(world.dir / "state.db", clock=world.clock)
    await store.open()
    try:
        assert [entry.state for entry in await store.ledger(rule="call-the-hook")] == [
            LedgerState.DONE
        ]
        assert await store.next_delivery_at("hook") is None  # delivered, not left queued
    finally:
        await store.close()


async def test_actions_and_sends_that_outlast_the_grace_share_it_and_are_cut_off(
    world: World,
) -> None:
    daemon = world.daemon()
    await daemon.start()
    await world.fail_an_action(daemon)
    await world.in_flight()

    loop = asyncio.get_running_loop()
    began = loop.time()
    await daemon.stop()
    took = loop.time() - began

    # One grace for both; one after the other they would take two.
    assert 0.9 * GRACE_S <= took < 1.9 * GRACE_S
    store = SqliteStore(world.dir / "state.db", clock=world.clock)
    await store.open()
    try:
        # Both stay owed: the action is reconciled and the notification sent after a restart.
        assert [entry.state for entry in await store.ledger(rule="call-the-hook")] == [
            LedgerState.STARTED
        ]
        assert await store.next_delivery_at("hook") is not None
    finally:
        await store.close()
