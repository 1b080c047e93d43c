"""What reading lists item by item and reporting holds cost, at 1k, 3k and 10k servers.

A `GET /ecs/v2/servers` answer in the live API's recorded shape (tests/fixtures/recorded/) is
parsed as the client parses it: strictly (no problem list: what the client did before), item by
item with no bad item, and item by item with 1% of the items in an unexpected shape (left out,
reported, the rest validated again). Then one hold per server is settled in `Problems` as the
autoscale policy does after each poll (steady state: the same holds again), and the plan
catalogue picks a plan for each server. No network: this is the parsing and bookkeeping alone.

    .venv/bin/python -m bench.listing [--sizes 1000,3000,10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from daemon.client.plans import PlanCatalogue
from daemon.client.records import ItemProblem, parse_record
from daemon.clock import FakeClock
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Hold, Problems
from daemon.providers.seeweb.client import _PlansPage, _ServersPage

RECORDED = Path(__file__).parent.parent / "tests" / "fixtures" / "recorded" / "ecs"
PLANS = ("ECS1", "eCS2", "ECS3", "eCS4", "ECS5", "eCS6", "ECS2W", "eCS1HM")


def recorded(name: str) -> Any:
    return json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))["body"]


def listing(count: int, bad_every: int | None) -> dict[str, Any]:
    """Return a server listing of `count` servers, every `bad_every`-th with a garbled name."""
    template = recorded("servers")["server"][0]
    servers = []
    for n in range(count):
        server = copy.deepcopy(template)
        server["name"] = f"ec{200000 + n:06d}"
        server["plan"] = PLANS[n % len(PLANS)]
        server["notes"] = f"web-{n}"
        if bad_every and n % bad_every == bad_every - 1:
            server["plan_size"] = {"core": ["not", "a", "number"]}
        servers.append(server)
    return {"status": "ok", "count": count, "server": servers}


def timed(call: Callable[[], object], repeat: int) -> float:
    """Return the median wall time of `call` in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(size: int, repeat: int, catalogue: PlanCatalogue) -> dict[str, str]:
    """Return the figures for a listing of `size` servers."""
    good = listing(size, None)
    mixed = listing(size, 100)
    problems: list[ItemProblem] = []

    def strict() -> None:
        parse_record(_ServersPage, good)

    def item_by_item() -> None:
        parse_record(_ServersPage, good, problems=[])

    def with_bad() -> None:
        problems.clear()
        parse_record(_ServersPage, mixed, problems=problems)

    parsed = parse_record(_ServersPage, good).servers
    registry = Problems(
        metrics=Metrics(CollectorRegistry()), clock=FakeClock(datetime(2026, 11, 1, tzinfo=UTC))
    )
    holds = [
        Hold("web", s.name, "no_cpu_samples", f"{s.name}: no CPU samples yet", "GET /x", "y")
        for s in parsed
    ]
    registry.settle("web", holds)

    def settle() -> None:
        registry.settle("web", holds)

    def choose() -> None:
        for server in parsed:
            plan = catalogue.get(server.plan)
            if plan is not None and catalogue.priced_family(plan):
                catalogue.sizes(plan)
                catalogue.choose(plan, plan.cpu + 1)

    lenient = timed(item_by_item, repeat)
    return {
        f"listing_{size}_strict_ms": f"{timed(strict, repeat) * 1000:.1f}",
        f"listing_{size}_item_by_item_ms": f"{lenient * 1000:.1f}",
        f"listing_{size}_one_percent_bad_ms": f"{timed(with_bad, repeat) * 1000:.1f}",
        f"listing_{size}_left_out": str(len(problems)),
        f"listing_{size}_per_server_us": f"{lenient / size * 1e6:.1f}",
        f"holds_{size}_settle_ms": f"{timed(settle, repeat) * 1000:.2f}",
        f"catalogue_{size}_choose_ms": f"{timed(choose, repeat) * 1000:.2f}",
    }


def main(sizes: list[int], repeat: int) -> int:
    """Print the figures for each size."""
    catalogue = PlanCatalogue(parse_record(_PlansPage, recorded("plans")).plans)
    for size in sizes:
        for name, value in measure(size, repeat, catalogue).items():
            print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sys.exit(main([int(size) for size in args.sizes.split(",")], args.repeat))
