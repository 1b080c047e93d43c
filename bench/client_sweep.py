"""How long the Seeweb client takes to read the metrics of 10,000 servers under a 200 req/s cap.

The simulator runs as its own process; the client's own rate limiter and concurrency cap pace
the sweep, so the figure to expect is servers / cap seconds, and anything above it is overhead.

    .venv/bin/python -m bench.client_sweep [--servers 10000] [--rate 200] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import running_simulator
from daemon.client.base import ClientSettings
from daemon.client.errors import ProviderError
from daemon.clock import SystemClock
from daemon.providers.seeweb.client import SeewebClient
from daemon.secret import Secret


async def main(servers: int, rate: float, concurrency: int) -> int:
    """Run the sweep and print its figures."""
    scenario = (
        "name: sweep\n"
        f"generate: {{count: {servers}, plan: ECS2, demand: {{kind: constant, cores: 1}}}}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.yaml"
        path.write_text(scenario, encoding="utf-8")
        async with running_simulator(path) as url, aiohttp.ClientSession() as session:
            settings = ClientSettings(
                requests_per_second=rate, burst=int(rate), max_concurrency=concurrency
            )
            client = SeewebClient(
                session,
                url,
                clock=SystemClock(),
                token=Secret("simulator-token"),
                settings=settings,
            )
            names = [s.name for s in await client.list_servers()]
            errors = 0
            samples = 0

            async def read(name: str) -> None:
                nonlocal errors, samples
                try:
                    metrics = await client.server_metrics(name)
                except ProviderError:
                    errors += 1
                else:
                    samples += len(metrics.cpu)

            started = time.perf_counter()
            await asyncio.gather(*(read(name) for name in names))
            seconds = time.perf_counter() - started
    print(f"servers={len(names)}")
    print(f"rate_cap_rps={rate:g}")
    print(f"client_sweep_seconds={seconds:.1f}")
    print(f"client_sweep_rps={len(names) / seconds:.1f}")
    print(f"client_sweep_ideal_seconds={len(names) / rate:.1f}")
    print(f"client_sweep_cpu_samples={samples}")
    print(f"client_sweep_errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.servers, args.rate, args.concurrency)))
