"""Requests per second the simulator serves with 10,000 servers: action lists and server metrics.

The simulator runs as its own process (`cloudpilot simulator`), as in the demo and e2e tests, and
this process drives it with a fixed number of concurrent connections over loopback.

    .venv/bin/python -m bench.simulator [--servers 10000] [--actions 5000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import running_simulator

TOKEN = {"X-APITOKEN": "simulator-token"}


def scenario(servers: int, actions: int) -> str:
    """Return scenario YAML with many servers and a long action history."""
    lines = [
        "name: bench",
        "seed: 5",
        f"generate: {{count: {servers}, plan: ECS2,"
        " demand: {kind: sine, base: 1, amplitude: 0.5}}",
        "history:",
    ]
    for i in range(actions):
        outcome = "failed" if i % 100 == 0 else "completed"
        lines.append(
            f"  - {{resource: ec{200001 + i % servers:06d}, type: power_on,"
            f" outcome: {outcome}, ago: {actions - i}m, duration: 30s}}"
        )
    return "\n".join(lines) + "\n"


async def hammer(
    session: aiohttp.ClientSession, urls: list[str], concurrency: int
) -> tuple[float, list[float], int]:
    """Fetch every URL with `concurrency` workers; return seconds, latencies and errors."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while not queue.empty():
            url = queue.get_nowait()
            started = time.perf_counter()
            async with session.get(url, headers=TOKEN) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, errors


def report(name: str, seconds: float, latencies: list[float], errors: int) -> None:
    """Print one `name=value` line per figure."""
    ordered = sorted(latencies)
    print(f"{name}_rps={len(latencies) / seconds:.0f}")
    print(f"{name}_p50_ms={statistics.median(ordered) * 1000:.2f}")
    print(f"{name}_p99_ms={ordered[int(len(ordered) * 0.99) - 1] * 1000:.2f}")
    print(f"{name}_errors={errors}")


async def main(servers: int, actions: int, requests: int, concurrency: int) -> int:
    """Run the benchmark and print its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(scenario(servers, actions), encoding="utf-8")
        started = time.perf_counter()
        async with running_simulator(path) as url, aiohttp.ClientSession() as session:
            print(f"sim_startup_seconds={time.perf_counter() - started:.2f}")
            print(f"servers={servers}")
            print(f"actions={actions}")
            # Warm up: the first request of each kind pays for imports and caches.
            await hammer(session, [f"{url}/ecs/v2/actions"] * 20, 2)
            listed = [f"{url}/ecs/v2/actions?start={(i * 50) % actions}" for i in range(requests)]
            metrics = [
                f"{url}/ecs/v2/servers/ec{200001 + (i * 7919) % servers:06d}/metrics"
                for i in range(requests)
            ]
            # One connection shows the time a request takes; several show the throughput.
            report("sim_actions_serial", *await hammer(session, listed[: requests // 3], 1))
            report("sim_actions", *await hammer(session, listed, concurrency))
            report("sim_metrics_serial", *await hammer(session, metrics[: requests // 3], 1))
            report("sim_metrics", *await hammer(session, metrics, concurrency))
            # The whole server list is one large answer (all servers' records): fewer requests.
            report(
                "sim_servers_list_serial", *await hammer(session, [f"{url}/ecs/v2/servers"] * 20, 1)
            )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--actions", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.servers, args.actions, args.requests, args.concurrency)))
