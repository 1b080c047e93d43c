"""A real Alertmanager receives the shipped failed-actions alert, and sees it resolve.

Debian's `prometheus-alertmanager` runs on a free loopback port; `make test` installs it with
apt-get when it is missing (.ci/ensure-packages). Alertmanager judges `endsAt` by its own clock,
so the simulated world starts three minutes before real time and moves a minute at a time.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from alert_receivers import alertmanager_process
from configs import write_config
from conftest import SimFactory, SimHandle
from prometheus_client import CollectorRegistry

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.registry import load_config

REPO = Path(__file__).resolve().parents[2]
READY_WITHIN_S = 30.0


@dataclass
class Alertmanager:
    url: str
    session: aiohttp.ClientSession

    async def alerts(self) -> list[dict[str, Any]]:
        """Return the alerts Alertmanager holds as active (resolved ones are left out)."""
        async with self.session.get(f"{self.url}/api/v2/alerts") as response:
            assert response.status == 200
            body = await response.json()
        assert isinstance(body, list)
        return body


@pytest.fixture
def alertmanager_url(tmp_path: Path) -> Iterator[str]:
    with alertmanager_process(tmp_path) as url:
        yield url


@pytest.fixture
async def alertmanager(alertmanager_url: str) -> AsyncIterator[Alertmanager]:
    async with aiohttp.ClientSession() as session:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WITHIN_S
        while True:
            # Waiting for another program to start listening, not for Cloudpilot's behaviour.
            try:
                async with session.get(f"{alertmanager_url}/-/ready") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            if loop.time() > deadline:
                pytest.fail(f"Alertmanager did not become ready within {READY_WITHIN_S:g} s")
            await asyncio.sleep(0.05)
        yield Alertmanager(alertmanager_url, session)


@dataclass
class World:
    sim: SimHandle
    clock: FakeClock
    config: Path

    async def advance(self, seconds: float) -> None:
        await self.sim.advance(seconds)
        self.clock.advance(seconds)

    async def action(self, outcome: str) -> None:
        status, _ = await self.sim.call(
            "POST",
            "/_sim/actions",
            json={
                "resource": "ec300001",
                "type": "power_off",
                "outcome": outcome,
                "duration_s": 30,
            },
        )
        assert status in (200, 201)


@pytest.fixture
async def world(simulator: SimFactory, alertmanager: Alertmanager, tmp_path: Path) -> World:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    sim = await simulator("quiet", start=start)
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(REPO / "rules" / "failed-actions.yaml", rules)
    config = write_config(
        tmp_path,
        seeweb=sim.url,
        extra=f'[poll]\nactions = "1m"\n[notifiers.oncall]\ntype = "alertmanager"\n'
        f'url = "{alertmanager.url}"\n',
    )
    return World(sim, FakeClock(start), config)


async def test_a_failed_action_fires_in_alertmanager_and_resolves_after_a_retry(
    world: World, alertmanager: Alertmanager
) -> None:
    registry = CollectorRegistry()
    async with Daemon(load_config(world.config), clock=world.clock, registry=registry) as daemon:
        await daemon.poll_once()
        await world.action("failed")
        await world.advance(60)  # one poll interval: the action fails 30 s in
        await daemon.poll_once()
        await daemon.dispatcher.pump("oncall")

        [alert] = await alertmanager.alerts()
        assert alert["labels"] == {
            "alertname": "failed-actions",
            "severity": "critical",
            "resource": "ec300001",
            "type": "power_off",
            "team": "ops",
        }
        assert alert["annotations"]["summary"] == "power_off failed on ec300001"
        assert alert["status"]["state"] == "active"
        fired_at = datetime.fromisoformat(alert["startsAt"])
        assert world.clock.now() - timedelta(seconds=60) <= fired_at <= world.clock.now()
        # The refresh sends the same label set again: still one alert, not a second one.
        assert await daemon.dispatcher.refresh("oncall") == 1
        assert len(await alertmanager.alerts()) == 1

        await world.action("completed")  # someone retries the power_off, and it works
        await world.advance(60)
        await daemon.poll_once()
        await daemon.dispatcher.pump("oncall")
        assert await alertmanager.alerts() == []

    delivered = registry.get_sample_value(
        "cloudpilot_notifications_total", {"route": "oncall", "outcome": "delivered"}
    )
    assert delivered == 2.0
