"""What a Prometheus scrape of /metrics costs at 1k, 3k and 10k servers.

The per-object gauges are read from state at scrape time (daemon/observability/collector.py), so
a scrape walks the servers in facts and the autoscale verdicts. Each size is built the way the
daemon builds it: Glesys servers listed through `GlesysSource` (a fake client, no network: cores
and a CPU sample each), then three autoscale rules (`web-*`, `api-*`, `db-*`, a third of the
servers each) evaluated once. Then `generate_latest(registry)`, what the /metrics handler runs,
is timed: the median of `--repeat` scrapes.

    .venv/bin/python -m bench.scrape [--sizes 1000,3000,10000] [--repeat 21]

For comparison, the same series are also set on plain `Gauge`s (what the daemon did before: set
as things changed, removed by hand) and that registry is scraped: `scrape_ms_<servers>_gauges=`.

Prints `scrape_ms_<servers>=` (median), `scrape_series_<servers>=` (samples of the state
gauges), `scrape_us_per_series_<servers>=` and `scrape_kb_<servers>=` (exposition size).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from daemon.clock import FakeClock
from daemon.facts import Facts
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.policies.autoscale import AutoscalePolicy
from daemon.providers.glesys.client import (
    GlesysAllowedArguments,
    GlesysClient,
    GlesysServerSummary,
    GlesysStatus,
)
from daemon.providers.glesys.source import GlesysSource
from daemon.registry import BUILTIN, vocabulary
from daemon.rules.loader import load_rules

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
ROLES = ("web", "api", "db")
RULES = "rules:\n" + "".join(
    f"""\
  - name: {role}
    autoscale:
      provider: glesys
      servers: {{name: "{role}-*"}}
      up: {{above: 85, for: 10m}}
      down: {{below: 35, for: 15m}}
      max_cores: 8
      snapshot: none
"""
    for role in ROLES
)


class FakeGlesys:
    """Answers the Glesys source's calls for `servers` servers, each with 2-8 cores."""

    def __init__(self, servers: int) -> None:
        self.names = [f"{ROLES[n % 3]}-{n:05d}" for n in range(servers)]

    async def list_servers(self) -> list[GlesysServerSummary]:
        return [
            GlesysServerSummary(serverid=f"wps{n:06d}", hostname=name, platform="KVM")
            for n, name in enumerate(self.names)
        ]

    async def allowed_arguments(self) -> GlesysAllowedArguments:
        return GlesysAllowedArguments()

    async def server_status(self, serverid: str) -> GlesysStatus:
        n = int(serverid[3:])
        cores = 2 + n % 7
        return GlesysStatus.model_validate(
            {"state": "running", "cpu": {"usage": cores * (n % 100) / 100, "max": cores}}
        )


def state(servers: int, rules_file: Path) -> Metrics:
    """Return the metrics of a daemon that has polled `servers` servers and judged them."""
    metrics, facts, clock = Metrics(CollectorRegistry()), Facts(), FakeClock(T0)
    source = GlesysSource(
        cast(GlesysClient, FakeGlesys(servers)), facts, clock, metrics=metrics, concurrency=64
    )
    asyncio.run(source.poll(None))
    policy = AutoscalePolicy(
        facts=facts,
        metrics=metrics,
        problems=Problems(metrics=metrics, clock=clock),
        providers=BUILTIN.traits,
    )
    policy.replace_rules(load_rules([rules_file], vocabulary()))
    policy.evaluate("glesys", T0)
    return metrics


def as_set_gauges(metrics: Metrics) -> CollectorRegistry:
    """Return a registry holding the state gauges' current series as set `Gauge`s."""
    registry = CollectorRegistry()
    for family in metrics.state.collect():
        if not family.samples:
            continue
        labelnames = list(family.samples[0].labels)
        gauge = Gauge(family.name, family.documentation, labelnames, registry=registry)
        for sample in family.samples:
            gauge.labels(*sample.labels.values()).set(sample.value)
    return registry


def median_scrape(registry: CollectorRegistry, repeat: int) -> tuple[float, bytes]:
    """Return the median seconds `generate_latest` took over `repeat` runs, and its text."""
    timings = []
    text = b""
    for _ in range(repeat):
        start = time.perf_counter()
        text = generate_latest(registry)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rules_file = Path(folder) / "rules.yaml"
        rules_file.write_text(RULES)
        for servers in (int(size) for size in args.sizes.split(",")):
            metrics = state(servers, rules_file)
            series = sum(
                len(family.samples) for family in metrics.state.collect() if family.samples
            )
            median, text = median_scrape(metrics.registry, args.repeat)
            before, _ = median_scrape(as_set_gauges(metrics), args.repeat)
            print(f"scrape_ms_{servers}={median * 1000:.1f}")
            print(f"scrape_ms_{servers}_gauges={before * 1000:.1f}")
            print(f"scrape_series_{servers}={series}")
            print(f"scrape_us_per_series_{servers}={median * 1e6 / series:.2f}")
            print(f"scrape_kb_{servers}={len(text) / 1024:.0f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
