"""Shared fixtures: an in-process simulator on a real socket, with frozen simulated time."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from configs import TOKEN, write_config
from prometheus_client import CollectorRegistry

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.registry import load_config
from daemon.simulator.app import create_app
from daemon.simulator.http import Simulation
from daemon.simulator.linked import LinkedClock as SimLinkedClock
from daemon.simulator.scenario import Scenario, load_scenario_file, parse_scenario
from daemon.state import SqliteStore

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


@dataclass
class SimHandle:
    """A running simulator and a session that speaks to it."""

    sim: Simulation
    url: str
    session: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
        auth: bool = True,
    ) -> tuple[int, Any]:
        """Send a request and return the status and the decoded JSON body (or text)."""
        all_headers = {"X-APITOKEN": TOKEN} if auth and path.startswith("/ecs/") else {}
        all_headers.update(headers or {})
        async with self.session.request(
            method, self.url + path, json=json, data=data, headers=all_headers
        ) as response:
            text = await response.text()
            try:
                return response.status, await response.json(content_type=None)
            except ValueError:
                return response.status, text

    async def advance(self, seconds: float) -> None:
        """Move simulated time forward through the control surface."""
        status, _ = await self.call("POST", "/_sim/advance", json={"seconds": seconds})
        assert status == 200

    async def requests(self) -> list[dict[str, Any]]:
        """Return the simulator's request log."""
        _, log = await self.call("GET", "/_sim/requests")
        assert isinstance(log, list)
        return log


SimFactory = Callable[..., Awaitable[SimHandle]]


class LinkedClock(SimLinkedClock):
    """The daemon's LinkedClock, built from a test's simulator handle."""

    def __init__(self, handle: SimHandle) -> None:
        super().__init__(handle.sim)


def scenario_from(source: str | Scenario) -> Scenario:
    """Return a scenario from YAML text, a shipped scenario's name, or a Scenario."""
    if isinstance(source, Scenario):
        return source
    if "\n" in source or ":" in source:
        return parse_scenario(source, "<test>")
    return load_scenario_file(Path(source))


@pytest.fixture
async def simulator() -> AsyncIterator[SimFactory]:
    """Start simulators on demand: `await simulator("default")` or with scenario YAML."""
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        source: str | Scenario = "default", *, start: datetime | None = START, **options: Any
    ) -> SimHandle:
        scenario = scenario_from(source)
        if start is not None and scenario.start is None:
            scenario = scenario.model_copy(update={"start": start})
        sim = Simulation(scenario, speed=0, **options)
        server = TestServer(create_app(sim), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        session = aiohttp.ClientSession()
        sessions.append(session)
        return SimHandle(sim, str(server.make_url("")).rstrip("/"), session)

    yield start
    for session in sessions:
        await session.close()
    for server in servers:
        await server.close()


def key_mismatches(
    golden: Any,
    actual: Any,
    path: str = "$",
    *,
    may_be_empty: frozenset[str] = frozenset(),
    may_be_null: frozenset[str] = frozenset(),
) -> list[str]:
    """Return where `actual` has another key structure than `golden`, one line per difference.

    Objects must have the same key set; every item of a list is compared with the golden's first
    item; scalars of any type (including null) match each other. An empty list cannot be checked,
    so it is a mismatch unless its path is in `may_be_empty`; null where the golden has an object
    is one unless its path is in `may_be_null`.
    """
    if actual is None and path in may_be_null:
        return []
    options = {"may_be_empty": may_be_empty, "may_be_null": may_be_null}
    if isinstance(golden, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__}"]
        problems = []
        missing = sorted(golden.keys() - actual.keys())
        extra = sorted(actual.keys() - golden.keys())
        if missing:
            problems.append(f"{path}: missing keys {missing}")
        if extra:
            problems.append(f"{path}: unexpected keys {extra}")
        for key in sorted(golden.keys() & actual.keys()):
            problems += key_mismatches(golden[key], actual[key], f"{path}.{key}", **options)
        return problems
    if isinstance(golden, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {type(actual).__name__}"]
        if not golden:
            return []
        if not actual and path not in may_be_empty:
            return [f"{path}: empty, so its items cannot be checked"]
        problems = []
        for index, item in enumerate(actual):
            problems += [
                p.replace(f"{path}[]", f"{path}[{index}]", 1)
                for p in key_mismatches(golden[0], item, f"{path}[]", **options)
            ]
        return problems
    if isinstance(actual, dict | list):
        return [f"{path}: expected a scalar, got {type(actual).__name__}"]
    return []


def linked_daemon(
    sim: SimHandle,
    tmp_path: Path,
    rules: str,
    *,
    glesys: bool = False,
    k8sgpu: bool = False,
    clock: FakeClock | None = None,
    seed: int = 5,
    hook_url: str = "http://127.0.0.1:9/hook",
    extra: str = "",
    provider_options: Mapping[str, str] | None = None,
) -> Daemon:
    """Return a daemon on the simulator with these rules, a `hook` route, and a LinkedClock."""
    config = write_config(
        tmp_path,
        seeweb=sim.url,
        glesys=f"{sim.url}/glesys" if glesys else None,
        k8sgpu=sim.url if k8sgpu else None,
        rules=rules,
        extra=f'[notifiers.hook]\ntype = "webhook"\nurl = "{hook_url}"\n{extra}',
        provider_options=provider_options,
    )
    return Daemon(
        load_config(config),
        clock=clock or LinkedClock(sim),
        registry=CollectorRegistry(),
        rng=random.Random(seed),
    )


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at START; a test module may give its own."""
    return FakeClock(START)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    """An open SQLite store in the test's folder, on the `clock` fixture."""
    store = SqliteStore(tmp_path / "state.db", clock=clock)
    await store.open()
    yield store
    await store.close()


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read a state file on a connection of its own, as another process would."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()
