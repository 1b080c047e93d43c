"""What the benchmarks share: a simulator subprocess on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

LISTENING = re.compile(r"simulator listening on (http://\S+)")


@contextlib.asynccontextmanager
async def running_simulator(
    scenario: Path, *extra: str, startup_timeout: float = 120.0
) -> AsyncIterator[str]:
    """Start `cloudpilot simulator` on a free port, yield its URL, and stop it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "simulator",
        "--listen",
        "127.0.0.1:0",
        "--scenario",
        str(scenario),
        *extra,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), startup_timeout)
        match = LISTENING.search(line.decode())
        if match is None:
            raise RuntimeError(f"simulator did not start: {line!r}")
        yield match.group(1)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def write_seeweb_config(folder: Path, url: str, rules: str, tail: str) -> Path:
    """Write `folder/cloudpilot.toml` for a daemon on the simulator at `url`, and its files.

    `rules` goes to `rules/rules.yaml`, the ECS token to `seeweb-token`; `tail` is TOML added
    after the `[seeweb]` section: the `[poll]` intervals, notifiers and anything else.
    """
    (folder / "rules").mkdir()
    (folder / "rules" / "rules.yaml").write_text(rules)
    (folder / "seeweb-token").write_text("simulator-token\n")
    config = folder / "cloudpilot.toml"
    config.write_text(
        f"""\
rules = ["rules/"]
[http]
listen = "127.0.0.1:0"
[state]
path = "state.db"
[seeweb]
url = "{url}"
token_file = "seeweb-token"
{tail}"""
    )
    return config


async def start_daemon(config: Path, log: Path) -> asyncio.subprocess.Process:
    """Start `cloudpilot run --config CONFIG` in the config's folder, its output to `log`."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "run", "--config", str(config),
            cwd=config.parent, stdout=out, stderr=out,
        )  # fmt: skip
