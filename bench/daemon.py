"""The daemon as systemd runs it: time from exec to READY=1, and resident memory when idle.

    python -m bench.daemon [--runs 5] [--idle 20]

Prints `daemon_ready_seconds=` (median over runs), `daemon_ready_max_seconds=` and
`daemon_idle_rss_mb=` (after `--idle` seconds of polling the simulator's default world).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import running_simulator

RULES = """\
rules:
  - name: failed-actions
    on: seeweb.action.failed
    do:
      - log: {message: an action failed}
"""


def write_config(folder: Path, url: str) -> Path:
    """Write a config for the simulator at `url` with every source enabled."""
    (folder / "rules").mkdir()
    (folder / "rules" / "rules.yaml").write_text(RULES)
    for name, value in (
        ("seeweb-token", "simulator-token"),
        ("k8sgpu-password", "demo"),
        ("glesys-key", "simulator-token"),
    ):
        (folder / name).write_text(value + "\n")
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
[k8sgpu]
url = "{url}"
username = "demo"
password_file = "k8sgpu-password"
[glesys]
url = "{url}/glesys"
project = "cl12345"
key_file = "glesys-key"
[poll]
actions = "5s"
logs = "5s"
metrics = "10s"
k8sgpu = "5s"
billing = "30s"
glesys = "5s"
"""
    )
    return config


def resident_mb(pid: int) -> float:
    """Return a process's resident set size in MiB, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return kb / 1024


async def one_run(config: Path, idle_s: float) -> tuple[float, float | None]:
    """Start the daemon with a notify socket; return seconds to READY=1 and RSS in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "notify"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(path))
        notify.setblocking(False)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon",
            "run",
            "--config",
            str(config),
            env={"NOTIFY_SOCKET": str(path), "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            while True:
                message = await asyncio.wait_for(loop.sock_recv(notify, 4096), 30)
                if b"READY=1" in message:
                    ready = time.perf_counter() - started
                    break
            rss = None
            if idle_s > 0:
                await asyncio.sleep(idle_s)
                rss = resident_mb(process.pid)
        finally:
            process.terminate()
            await process.wait()
            notify.close()
    return ready, rss


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        async with running_simulator(
            Path("default"), "--speed", "1", "--metrics-step", "5s"
        ) as url:
            config = write_config(Path(tmp), url)
            readies = []
            rss: float | None = None
            for run in range(args.runs):
                ready, measured = await one_run(config, args.idle if run == 0 else 0)
                readies.append(ready)
                rss = rss if measured is None else measured
    print(f"daemon_ready_seconds={statistics.median(readies):.3f}")
    print(f"daemon_ready_max_seconds={max(readies):.3f}")
    if rss is not None:
        print(f"daemon_idle_rss_mb={rss:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
