"""`cloudpilot simulator` as a subprocess: it starts, announces its URL, serves, stops cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from daemon.simulator.scenario import shipped_scenarios

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 30.0
STOP_S = 5.0
LISTENING = re.compile(r"^simulator listening on (http://127\.0\.0\.1:(\d+))\b")

Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start `python -m daemon simulator ...` processes; kill any still running at teardown."""
    started: list[asyncio.subprocess.Process] = []

    async def run(*args: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon",
            "simulator",
            *args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), timeout=STOP_S)


async def announced_url(process: asyncio.subprocess.Process) -> str:
    """Read stdout until the simulator announces where it listens, and return the URL."""
    assert process.stdout is not None

    async def first_match() -> str:
        assert process.stdout is not None
        seen: list[str] = []
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"simulator exited before listening; stdout: {seen}")
            seen.append(line)
            match = LISTENING.match(line)
            if match:
                return match.group(1)

    return await asyncio.wait_for(first_match(), timeout=STARTUP_S)


@pytest.mark.parametrize("scenario", [None, *shipped_scenarios()])
async def test_the_simulator_serves_each_scenario_and_stops_on_sigterm(
    spawn: Spawn, tmp_path: Path, scenario: str | None
) -> None:
    config = tmp_path / "cloudpilot.toml"
    args = ["--listen", "127.0.0.1:0", "--config-out", str(config)]
    if scenario is not None:
        args += ["--scenario", scenario]
    process = await spawn(*args)
    url = await announced_url(process)
    assert not url.endswith(":0")

    token_file = tmp_path / "seeweb-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text(encoding="utf-8").strip()
    assert token == "simulator-token"
    assert f'url = "{url}"' in config.read_text(encoding="utf-8")

    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{url}/ecs/v2/servers", headers={"X-APITOKEN": token}) as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "ok"
    assert body["count"] == len(body["server"])

    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=STOP_S) == 0


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait for a process that should exit by itself; return its exit code and stderr."""
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=STARTUP_S)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_a_missing_scenario_file_exits_78_with_a_message(spawn: Spawn) -> None:
    process = await spawn("--listen", "127.0.0.1:0", "--scenario", "/nonexistent.yaml")
    code, stderr = await finished(process)
    assert code == 78
    assert "cloudpilot simulator: /nonexistent.yaml: cannot read" in stderr


async def test_a_bad_listen_address_exits_2(spawn: Spawn) -> None:
    process = await spawn("--listen", "nonsense")
    code, stderr = await finished(process)
    assert code == 2
    assert "expected HOST:PORT, got 'nonsense'" in stderr


async def test_a_scenario_with_a_missing_trace_exits_78(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "traced.yaml"
    path.write_text(
        "name: traced\nservers:\n"
        "  - {name: ec1, plan: ECS2, demand: {kind: trace, path: missing.csv}}\n",
        encoding="utf-8",
    )
    process = await spawn("--listen", "127.0.0.1:0", "--scenario", str(path))
    code, stderr = await finished(process)
    assert code == 78
    assert "missing.csv" in stderr
    assert "Traceback" not in stderr
