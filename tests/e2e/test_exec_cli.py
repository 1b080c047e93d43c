"""`cloudpilot exec` as a user meets it: a subprocess against a subprocess simulator.

The simulator runs at 60 simulated seconds per real second, so its 90 s snapshot and 60 s
power_off end within two real seconds; the guard reads provider actions every 5 real seconds,
which is what a run takes: about 10 s for a snapshot and a power_off.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER = "ec200004"
SPEED = "60"
EXEC_WITHIN_S = 40.0
POLL_EVERY_S = 0.05
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}

GUARD = """\
rules: []
guard:
  risky: [set_cores, power_off, rollback, delete_server]
  snapshot_timeout: 10m
  verify_timeout: 5m
  keep_snapshots: 3
  to: [ops]
"""

NOTIFIER = """
[notifiers.ops]
type = "webhook"
url = "http://127.0.0.1:9/cloudpilot"
"""


@dataclass
class Sim:
    """A simulator subprocess, the config it wrote, and a session to ask it with."""

    url: str
    config: Path
    http: aiohttp.ClientSession

    async def get(self, path: str) -> Any:
        async with self.http.get(f"{self.url}{path}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.post(f"{self.url}{path}", json=body) as response:
            assert response.status in (200, 201), await response.text()
            return await response.json()

    async def requests(self) -> list[dict[str, Any]]:
        """Return the provider requests served, oldest first."""
        served: list[dict[str, Any]] = await self.get("/_sim/requests")
        return served


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    config = tmp_path / "cloudpilot.toml"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "simulator", "--speed", SPEED,
        "--listen", "127.0.0.1:0", "--config-out", str(config),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("simulator listening on "), line
        (tmp_path / "rules" / "guard.yaml").write_text(GUARD)
        with config.open("a") as toml:
            toml.write(NOTIFIER)
        async with aiohttp.ClientSession() as http:
            yield Sim(line.split()[3], config, http)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def start_exec(sim: Sim, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "exec", *args, "--config", str(sim.config),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@dataclass
class Result:
    code: int
    out: str
    err: str


async def run_exec(sim: Sim, *args: str) -> Result:
    process = await start_exec(sim, *args)
    out, err = await asyncio.wait_for(process.communicate(), EXEC_WITHIN_S)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def until(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    """Await `check()` until true: the exec is a subprocess, there is no clock to inject."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {within_s:g} s")
        await asyncio.sleep(POLL_EVERY_S)


def ledger(sim: Sim) -> list[tuple[str, str, str]]:
    with sqlite3.connect(f"file:{sim.config.parent / 'state.db'}?mode=ro", uri=True) as db:
        return list(db.execute("SELECT key, state, detail FROM ledger ORDER BY created_at"))


def outbox(sim: Sim) -> list[str]:
    with sqlite3.connect(f"file:{sim.config.parent / 'state.db'}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT destination FROM outbox")]


def calls(served: list[dict[str, Any]], method: str, path: str) -> list[int]:
    """Return the positions of the requests with this method and path."""
    return [n for n, r in enumerate(served) if r["method"] == method and r["path"] == path]


SNAPSHOTS = f"/ecs/v2/servers/{SERVER}/snapshots"
ACTIONS = f"/ecs/v2/servers/{SERVER}/actions"


async def test_power_off_takes_a_snapshot_first_then_powers_off(sim: Sim) -> None:
    result = await run_exec(sim, "power_off", SERVER)

    assert result.code == 0, result.err
    assert result.out.startswith(f"power_off {SERVER}: done: "), result.out
    assert "Traceback" not in result.err
    served = await sim.requests()
    world = await sim.get("/_sim/world")
    [snapshot] = [s for s in world["snapshots"] if s["server"] == SERVER]
    assert snapshot["notes"].startswith("cloudpilot:")
    assert snapshot["status"] == "CD"
    [snapshot_action] = [
        a
        for a in world["actions"]
        if a["type"] == "create_snapshot" and a["resource"] == str(snapshot["id"])
    ]
    assert snapshot_action["status"] == "completed"
    [created] = calls(served, "POST", SNAPSHOTS)
    [powered] = calls(served, "POST", ACTIONS)
    reads = calls(served, "GET", f"/ecs/v2/actions/{snapshot_action['id']}")
    assert reads, "the snapshot's action was never read"
    assert created < reads[0] and reads[-1] < powered, served
    assert [served[n]["status"] for n in reads][-1] == 200
    server = next(s for s in world["servers"] if s["name"] == SERVER)
    assert server["status"] == "SHUTOFF"
    assert any(
        a["type"] == "power_off" and a["resource"] == SERVER and a["status"] == "completed"
        for a in world["actions"]
    )
    [(key, state, _detail)] = ledger(sim)
    assert key.startswith(f"exec/power_off/{SERVER}/") and state == "done"


async def test_a_failed_snapshot_aborts_the_power_off(sim: Sim) -> None:
    await sim.post("/_sim/faults", {"fail_actions": "create_snapshot", "outcome": "failed"})

    result = await run_exec(sim, "power_off", SERVER)

    assert result.code == 1, result.out + result.err
    assert f"power_off {SERVER}: aborted: snapshot of {SERVER} failed" in result.err
    assert "queued for ops" in result.err and "running daemon" in result.err
    served = await sim.requests()
    assert len(calls(served, "POST", SNAPSHOTS)) == 1
    assert calls(served, "POST", ACTIONS) == [], "powered off without a snapshot"
    [(_key, state, detail)] = ledger(sim)
    assert state == "aborted"
    assert "failed" in detail
    # The alert waits in the outbox for the running daemon's dispatcher.
    assert outbox(sim) == ["ops"]


async def test_dry_run_reads_the_server_and_calls_nothing_that_changes_the_cloud(
    sim: Sim,
) -> None:
    result = await run_exec(sim, "power_off", SERVER, "--dry-run")

    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"power_off {SERVER}: dry run: {SERVER} (seeweb, running) would be powered off",
        f"power_off {SERVER}: dry run: snapshot first (wait up to 600 s), then power_off, "
        "check it within 300 s, keep 3 snapshots; nothing was done",
    ]
    served = await sim.requests()
    assert [r for r in served if r["method"] in MUTATING] == []
    assert [r["path"] for r in served] == [f"/ecs/v2/servers/{SERVER}/status"] * 2
    [(_key, state, _detail)] = ledger(sim)
    assert state == "dry_run"


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (
            ("power_off", "ec999999"),
            1,
            "power_off ec999999: dry run: would fail: no such server (seeweb GET "
            "/ecs/v2/servers/ec999999/status: not found (HTTP 404",
        ),
        (
            ("power_off", "ec200007"),
            0,
            "power_off ec200007: dry run: ec200007 (seeweb, shutoff) is already powered off: "
            "nothing to do",
        ),
        (
            ("set_cores", "web-glesys-1", "--provider", "glesys", "--cores", "4"),
            1,
            "set_cores web-glesys-1: dry run: would abort: glesys takes no snapshots and the "
            "rule does not say snapshot: none (pass --no-snapshot to act without one)",
        ),
        (
            ("set_cores", "web-glesys-1", "--provider", "glesys", "--cores", "7", "--no-snapshot"),
            1,
            "set_cores web-glesys-1: dry run: would fail: web-glesys-1: 7 cores is not a size "
            "its platform (KVM) allows",
        ),
    ],
    ids=["no-such-server", "already-off", "guard-aborts", "size-not-allowed"],
)
async def test_dry_run_exits_as_the_real_run_would_saying_why(
    sim: Sim, args: tuple[str, ...], code: int, said: str
) -> None:
    result = await run_exec(sim, *args, "--dry-run")

    assert result.code == code, result.out + result.err
    assert said in result.out + result.err
    assert "Traceback" not in result.err
    served = await sim.requests()
    assert [r for r in served if r["method"] in MUTATING and "/glesys/" not in r["path"]] == []
    # Glesys reads are POSTs: only reads were sent.
    assert {r["path"] for r in served if "/glesys/" in r["path"]} <= {
        "/glesys/server/list",
        "/glesys/server/details",
        "/glesys/server/allowedarguments",
    }


async def test_an_exec_killed_mid_snapshot_resumes_without_doing_anything_twice(
    sim: Sim,
) -> None:
    first = await start_exec(sim, "power_off", SERVER)

    async def snapshot_asked() -> bool:
        return bool(calls(await sim.requests(), "POST", SNAPSHOTS))

    try:
        await until(snapshot_asked, EXEC_WITHIN_S, "the snapshot was never asked for")
        # While it lives, a second exec on the same server neither resumes nor runs its own.
        busy = await run_exec(sim, "power_off", SERVER)
        assert busy.code == 1
        assert f"another cloudpilot exec (pid {first.pid}) is working on {SERVER}" in busy.err
    finally:
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
    assert [state for _, state, _ in ledger(sim)] == ["started"]

    second = await run_exec(sim, "power_off", SERVER)

    assert second.code == 0, second.err
    assert "resuming the unfinished exec from " in second.out
    assert f"power_off {SERVER}: done: " in second.out
    served = await sim.requests()
    assert len(calls(served, "POST", SNAPSHOTS)) == 1
    assert len(calls(served, "POST", ACTIONS)) == 1
    world = await sim.get("/_sim/world")
    assert next(s for s in world["servers"] if s["name"] == SERVER)["status"] == "SHUTOFF"
    assert [state for _, state, _ in ledger(sim)] == ["done"]


async def test_usage_and_config_errors(sim: Sim, tmp_path: Path) -> None:
    unknown = await run_exec(sim, "reboot", SERVER)
    assert unknown.code == 2
    assert "power_off, power_on, set_cores, snapshot" in unknown.err
    stray = await run_exec(sim, "power_off", SERVER, "--cores", "4")
    assert stray.code == 2
    assert "--cores: not an option of this action" in stray.err
    (tmp_path / "rules" / "broken.yaml").write_text("rules:\n  - name: r\n")
    broken = await run_exec(sim, "power_off", SERVER)
    assert broken.code == 78
    assert "broken.yaml:2: rules[0].do: required" in broken.err
    assert "Traceback" not in unknown.err + stray.err + broken.err
    assert [r for r in await sim.requests() if r["method"] in MUTATING] == []
