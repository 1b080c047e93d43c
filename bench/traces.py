"""Generate two weeks of CPU demand, in cores, for the autoscale quality benchmark.

Each trace is 4032 values, one per 5 minutes over 14 days from a Monday at 00:00 UTC, drawn with
a fixed seed so every run sees the same load:

- `steady`: about 1.2 cores, wandering slowly, with a little jitter;
- `daily`: a web server's day, quiet at night (~0.4 cores) and busy in the afternoon (~3 cores),
  quieter at the weekend;
- `spikes`: a light baseline (~0.6 cores) with a few bursts a day of 1.5 to 3 extra cores, each
  15 to 60 minutes long;
- `noise`: noise oscillating around the capacity of one core (1.0 cores of demand).

    .venv/bin/python -m bench.traces
"""

from __future__ import annotations

import math
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

STEP = timedelta(minutes=5)
DAYS = 14
STEPS_PER_DAY = int(timedelta(days=1) / STEP)
STEPS = DAYS * STEPS_PER_DAY
START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday
FLOOR = 0.05  # an idle server still does something

Trace = tuple[float, ...]


def times() -> list[datetime]:
    """Return the time of each step of a trace."""
    return [START + i * STEP for i in range(STEPS)]


def _floor(value: float) -> float:
    return round(max(FLOOR, value), 4)


def steady(seed: int = 1) -> Trace:
    """Return a steady load of about 1.2 cores with a slow wander and some jitter."""
    rng = random.Random(seed)
    wander = 0.0
    values = []
    for _ in range(STEPS):
        wander = 0.95 * wander + rng.gauss(0.0, 0.02)
        values.append(_floor(1.2 + wander + rng.gauss(0.0, 0.05)))
    return tuple(values)


def daily(seed: int = 2) -> Trace:
    """Return a daily cycle: ~0.4 cores at 04:00, ~3 at 16:00, 40% less busy at weekends."""
    rng = random.Random(seed)
    values = []
    for i, moment in enumerate(times()):
        hour = (i % STEPS_PER_DAY) / STEPS_PER_DAY * 24.0
        shape = (1.0 - math.cos(2.0 * math.pi * (hour - 4.0) / 24.0)) / 2.0
        busy = 2.6 * shape * (0.6 if moment.weekday() >= 5 else 1.0)
        values.append(_floor((0.4 + busy) * (1.0 + rng.gauss(0.0, 0.08))))
    return tuple(values)


def spikes(seed: int = 3) -> Trace:
    """Return a ~0.6-core baseline with about 3 bursts a day of +1.5 to +3 cores, 15-60 min."""
    rng = random.Random(seed)
    extra = [0.0] * STEPS
    for start in range(STEPS):
        if rng.random() < 3.0 / STEPS_PER_DAY:
            height = rng.uniform(1.5, 3.0)
            for i in range(start, min(STEPS, start + rng.randint(3, 12))):
                extra[i] = max(extra[i], height)
    return tuple(_floor(0.6 + rng.gauss(0.0, 0.08) + more) for more in extra)


def noise(seed: int = 4) -> Trace:
    """Return noise around 1.0 cores: the capacity of one core, crossed up and down all day."""
    rng = random.Random(seed)
    return tuple(_floor(1.0 + rng.gauss(0.0, 0.25)) for _ in range(STEPS))


TRACES: dict[str, Callable[[], Trace]] = {
    "steady": steady,
    "daily": daily,
    "spikes": spikes,
    "noise": noise,
}


def summary(name: str, trace: Sequence[float]) -> str:
    """Return one line about a trace: its name, steps, mean and max demand in cores."""
    return (
        f"{name}: steps={len(trace)} mean={statistics.fmean(trace):.3f}"
        f" min={min(trace):.3f} max={max(trace):.3f}"
    )


def main() -> int:
    """Print a summary of every trace."""
    for name, make in TRACES.items():
        print(summary(name, make()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
