"""Memory held by the servers' CPU history at 1,000, 3,000 and 10,000 servers.

    python -m bench.cpu_history

Each server gets a day of five-minute samples (Seeweb's metrics step) with varied load, through
`Facts.add_cpu` as the metrics source adds them, once with the shipped `rules/autoscale.yaml` in
force (the history its rules read: their longest `for` plus an hour) and once with a 24-hour
window (what was kept before). Prints `cpu_history_mb_<servers>_<window>=` (traced allocations
after the day, in MiB) and `cpu_history_kb_per_server_<window>=` at 10,000 servers.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.facts import CpuSample, Facts
from daemon.policies.autoscale import cpu_history_needed
from daemon.registry import vocabulary
from daemon.rules.loader import load_rules

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 10, tzinfo=UTC)
STEP = timedelta(minutes=5)
SAMPLES_PER_DAY = 288


def held_mb(servers: int, window: timedelta) -> float:
    """Return the MiB the CPU history of `servers` servers holds after a day of samples."""
    rng = random.Random(servers)
    gc.collect()
    tracemalloc.start()
    facts = Facts()
    facts.keep_cpu_for(window)
    for n in range(SAMPLES_PER_DAY):
        at = T0 + n * STEP
        for index in range(servers):
            cores = 2 + index % 7
            facts.add_cpu("seeweb", f"ec{index:06d}", CpuSample(at, rng.uniform(2, 98), cores))
    gc.collect()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del facts
    return size / (1 << 20)


def main() -> None:
    rules = load_rules([REPO / "rules" / "autoscale.yaml"], vocabulary())
    windows = {"rules": cpu_history_needed(rules.autoscale), "24h": timedelta(hours=24)}
    for name, window in windows.items():
        for servers in (1_000, 3_000, 10_000):
            mb = held_mb(servers, window)
            print(f"cpu_history_mb_{servers}_{name}={mb:.1f}")
        print(f"cpu_history_kb_per_server_{name}={mb * 1024 / 10_000:.2f}")
    hours = windows["rules"].total_seconds() / 3600
    print(f"cpu_history_window_hours_rules={hours:g}")


if __name__ == "__main__":
    main()
