"""Resident memory of `cloudpilot run` under a steady flood of actions, sampled over time.

    python -m bench.soak [--minutes 10] [--rate 20] [--sample 20]

A simulator subprocess (real speed, the default world, a CPU sample every `--metrics-step` per
server) gets `--rate` actions a second, a third of them failed, on its servers; the daemon (a
subprocess, the shipped `rules/failed-actions.yaml` with its `oncall` route a webhook in this
process, metrics polled every 10 s) alerts and resolves them. Resident memory is
read from /proc every `--sample` seconds. Prints `soak_rss_start_mb=` (after the first two
minutes, once caches and the engine's windows have filled), `soak_rss_end_mb=`,
`soak_rss_growth_pct=` between those two, `soak_rss_max_mb=`, `soak_actions=` injected and
`soak_webhook_deliveries=`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.common import running_simulator, start_daemon, write_seeweb_config
from bench.daemon import resident_mb

REPO = Path(__file__).resolve().parents[1]
SERVERS = ("ec200001", "ec200002", "ec200003")
TYPES = ("power_on", "power_off", "reboot", "create_snapshot", "rollback")
WARMUP_S = 120.0


def write_config(folder: Path, url: str, hook: str) -> Path:
    """Write a config with the shipped failed-actions rules, its `oncall` route a webhook."""
    rules = (REPO / "rules" / "failed-actions.yaml").read_text()
    tail = f"""\
[poll]
actions = "2s"
logs = "10s"
metrics = "10s"
billing = "5m"
[notifiers.oncall]
type = "webhook"
url = "{hook}"
rate = 100
"""
    return write_seeweb_config(folder, url, rules, tail)


async def flood(http: aiohttp.ClientSession, url: str, rate: float, stop: asyncio.Event) -> int:
    """Inject `rate` actions a second until `stop`; return how many were injected."""
    rng = random.Random(20261203)
    injected = 0
    started = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while injected < due:
            body = {
                "resource": rng.choice(SERVERS),
                "type": rng.choice(TYPES),
                "outcome": "failed" if rng.random() < 1 / 3 else "completed",
                "duration_s": 0,
            }
            async with http.post(f"{url}/_sim/actions", json=body) as response:
                response.raise_for_status()
            injected += 1
        await asyncio.sleep(0.05)
    return injected


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="actions a second")
    parser.add_argument("--sample", type=float, default=20.0, help="seconds between samples")
    parser.add_argument(
        "--metrics-step", default="5s", help="the simulator's CPU sample step (metrics polled 10s)"
    )
    args = parser.parse_args()
    deliveries = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal deliveries
        await request.read()
        deliveries += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            running_simulator(
                Path("default"), "--speed", "1", "--metrics-step", args.metrics_step
            ) as url,
            aiohttp.ClientSession() as http,
        ):
            config = write_config(Path(tmp), url, f"http://127.0.0.1:{port}/hook")
            log = Path(tmp) / "daemon.log"
            daemon = await start_daemon(config, log)
            stop = asyncio.Event()
            flooding = asyncio.create_task(flood(http, url, args.rate, stop))
            started = time.monotonic()
            try:
                while (elapsed := time.monotonic() - started) < args.minutes * 60:
                    if daemon.returncode is not None:
                        tail = log.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"the daemon exited {daemon.returncode}:\n{tail}")
                    samples.append((elapsed, resident_mb(daemon.pid)))
                    print(f"# {elapsed:6.0f} s  {samples[-1][1]:.1f} MB", file=sys.stderr)
                    await asyncio.sleep(args.sample)
                samples.append((time.monotonic() - started, resident_mb(daemon.pid)))
            finally:
                stop.set()
                injected = await flooding
                if daemon.returncode is None:
                    daemon.terminate()
                    await daemon.wait()
    await runner.cleanup()
    warm = [rss for at, rss in samples if at >= WARMUP_S] or [samples[-1][1]]
    print(f"soak_rss_start_mb={warm[0]:.1f}")
    print(f"soak_rss_end_mb={warm[-1]:.1f}")
    print(f"soak_rss_growth_pct={100 * (warm[-1] - warm[0]) / warm[0]:.1f}")
    print(f"soak_rss_max_mb={max(rss for _, rss in samples):.1f}")
    print(f"soak_actions={injected}")
    print(f"soak_webhook_deliveries={deliveries}")


if __name__ == "__main__":
    asyncio.run(main())
