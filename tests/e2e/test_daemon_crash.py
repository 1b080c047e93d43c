"""`cloudpilot run` as a subprocess, killed with SIGKILL at random points while it works.

After every restart the database must be intact, and in the end every event must have been
decided exactly once: no ledger key missing, none twice, every webhook delivery keyed by its
decision.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from configs import write_config
from processes import free_port, simulator, start_daemon

ROUNDS = 4
ACTIONS_PER_ROUND = 25
DEADLINE_S = 40.0

RULES = """\
rules:
  - name: failed
    on: seeweb.action.failed
    do:
      - webhook: {{url: "{url}"}}
  - name: every-action
    on: "seeweb.action.*"
    do:
      - log: {{message: action seen}}
"""


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    async with simulator(speed="0") as url:
        yield url


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)  # a subprocess: there is no clock to inject
    raise AssertionError("the daemon never became ready")


def ledger(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [(key, state) for key, state in db.execute("SELECT key, state FROM ledger")]


def attempts(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {key: int(n) for key, n in db.execute("SELECT key, attempts FROM ledger")}


def integrity(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


async def test_sigkill_mid_batch_loses_nothing_and_decides_nothing_twice(
    simulator_url: str, tmp_path: Path
) -> None:
    deliveries: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        deliveries.append(request.headers["Idempotency-Key"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server()

    port = free_port()
    config = write_config(
        tmp_path,
        seeweb=simulator_url,
        rules=RULES.format(url=receiver.make_url("/hook")),
        listen=f"127.0.0.1:{port}",
        stale_after="30d",
        extra='[poll]\nactions = "100ms"\n',
    )
    db = tmp_path / "state.db"
    log = tmp_path / "daemon.log"
    rng = random.Random(7)
    injected: list[tuple[int, str]] = []

    async with aiohttp.ClientSession() as http:
        for round_ in range(ROUNDS):
            daemon = await start_daemon(config, log)
            await wait_ready(http, f"http://127.0.0.1:{port}/readyz")
            for n in range(ACTIONS_PER_ROUND):
                outcome = "failed" if n % 3 == 0 else "completed"
                async with http.post(
                    f"{simulator_url}/_sim/actions",
                    json={"resource": "ec300001", "type": "power_on", "outcome": outcome,
                          "duration_s": 1},
                ) as response:  # fmt: skip
                    assert response.status in (200, 201)
                    injected.append((int((await response.json())["action"]["id"]), outcome))
            async with http.post(f"{simulator_url}/_sim/advance", json={"seconds": 2}) as response:
                assert response.status == 200
            # The kill lands at a random moment of the polls that follow: often inside a batch.
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            os.kill(daemon.pid, signal.SIGKILL)
            await daemon.wait()
            assert integrity(db) == "ok", f"round {round_}"

        expected = {f"every-action/0/seeweb.action:{id_}:started" for id_, _ in injected}
        expected |= {f"every-action/0/seeweb.action:{id_}:{out}" for id_, out in injected}
        hooks = {f"failed/0/seeweb.action:{id_}:failed" for id_, out in injected if out == "failed"}
        expected |= hooks

        daemon = await start_daemon(config, log)
        await wait_ready(http, f"http://127.0.0.1:{port}/readyz")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while loop.time() < deadline:
            done = {key for key, state in ledger(db) if state == "done"}
            if expected <= done:
                break
            await asyncio.sleep(0.1)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 20) == 0

    await receiver.close()
    entries = ledger(db)
    ours = sorted(key for key, _ in entries if key in expected)
    assert ours == sorted(expected), "an event was lost"
    assert {state for key, state in entries if key in expected} == {"done"}
    assert set(deliveries) == hooks
    # A webhook is sent again only when a kill cut its run short (a second recorded attempt),
    # and then with the same Idempotency-Key: never a second decision for one event.
    tries = attempts(db)
    assert all(Counter(deliveries)[key] <= tries[key] for key in hooks), Counter(deliveries)
    assert integrity(db) == "ok"
