"""Cloudpilot's own programs as subprocesses, and free ports to point them at."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@asynccontextmanager
async def simulator(*, speed: str) -> AsyncIterator[str]:
    """Run `cloudpilot simulator` (quiet scenario) on a free port; yield its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "simulator",
        "--listen", "127.0.0.1:0", "--scenario", "quiet", "--speed", speed,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    assert line.startswith("simulator listening on "), line
    try:
        yield line.split()[3]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def start_daemon(config: Path, log: Path) -> asyncio.subprocess.Process:
    """Start `cloudpilot run --config CONFIG`, appending its output to `log`."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "run", "--config", str(config),
            cwd=REPO, stdout=out, stderr=out,
        )  # fmt: skip
