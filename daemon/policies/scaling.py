"""The autoscale decision itself: pure, synchronous, shared by the daemon and the benchmark.

CPU samples are percentages of the cores the server had when each was taken. They are read as
demand in cores (percent times cores), so samples from before a resize still say how busy the server
was, and then as a percentage of the current cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from daemon.facts import CpuSample
from daemon.rules.compiled import ScalingSpec

# A sample is taken to cover the time back to the one before it, up to this long: a longer gap
# is missing data, not evidence that the load held.
MAX_SAMPLE_COVER = timedelta(minutes=15)
# Samples older than this say nothing about the load now.
STALE_AFTER = timedelta(minutes=20)
DAY = timedelta(days=1)

Direction = Literal["up", "down", "hold"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy wants for one server now: a target and the reason, in words."""

    current: int
    target: int
    direction: Direction
    reason: str
    cpu_percent: float | None = None
    wanted: Direction = "hold"
    """Where the load alone points, before cooldown, caps, windows and sizes had their say."""
    missing: str | None = None
    """Why the samples could not be judged (`no_cpu_samples`, `cpu_samples_stale`), if so."""

    @property
    def resize(self) -> bool:
        """Return whether the verdict changes the cores."""
        return self.target != self.current


def percent_of(sample: CpuSample, cores: int) -> float:
    """Return what a sample's load is as a percentage of `cores`, capped at 100."""
    demand = sample.percent / 100.0 * (sample.cores or cores)
    return min(100.0, 100.0 * demand / cores)


def demand_of(sample: CpuSample, cores: int) -> float:
    """Return a sample's load in cores."""
    return sample.percent / 100.0 * (sample.cores or cores)


def held_since(
    samples: Sequence[CpuSample], cores: int, test: Callable[[float], bool]
) -> datetime | None:
    """Return since when the newest samples have all met `test`, or None if the newest fails."""
    first: CpuSample | None = None
    before: CpuSample | None = None
    for sample in reversed(samples):
        if not test(percent_of(sample, cores)):
            before = sample
            break
        first = sample
    if first is None:
        return None
    if before is None:
        return first.time
    return first.time - min(first.time - before.time, MAX_SAMPLE_COVER)


def _elapsed(seconds: float) -> str:
    """Return a time run so far as people say it: `40s`, `4m`, `1h05m` (rounded down)."""
    whole = int(max(seconds, 0))
    if whole < 60:
        return f"{whole}s"
    hours, minutes = divmod(whole // 60, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


def _fmt(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def clamp_target(spec: ScalingSpec, current: int, wanted: int, sizes: Sequence[int] | None) -> int:
    """Return the size to move to: `wanted` within min/max cores and the provider's sizes."""
    lo, hi = spec.min_cores, spec.max_cores
    wanted = max(lo, min(hi, wanted))
    if sizes is None:
        return wanted
    allowed = sorted({size for size in sizes if lo <= size <= hi})
    if wanted > current:
        bigger = [size for size in allowed if size > current]
        at_least = [size for size in bigger if size >= wanted]
        return at_least[0] if at_least else (bigger[-1] if bigger else current)
    if wanted < current:
        smaller = [size for size in allowed if size < current]
        at_most = [size for size in smaller if size <= wanted]
        return at_most[-1] if at_most else (smaller[0] if smaller else current)
    return current


def decide(
    spec: ScalingSpec,
    samples: Sequence[CpuSample],
    current: int,
    now: datetime,
    resizes: Sequence[datetime] = (),
    sizes: Sequence[int] | None = None,
) -> Verdict:
    """Return the verdict for one server from its CPU samples (oldest first) and past resizes."""
    if not samples:
        return Verdict(current, current, "hold", "no CPU samples yet", missing="no_cpu_samples")
    latest = samples[-1]
    cpu = round(percent_of(latest, current), 1)

    direction: Direction = "hold"

    def hold(reason: str) -> Verdict:
        return Verdict(current, current, "hold", reason, cpu, direction)

    if now - latest.time > STALE_AFTER:
        return Verdict(
            current,
            current,
            "hold",
            f"the newest CPU sample is from {latest.time.isoformat()}: too old to act on",
            cpu,
            missing="cpu_samples_stale",
        )
    up, down = spec.up, spec.down
    since = held_since(samples, current, lambda pct: pct > up.percent)
    if since is not None and (now - since).total_seconds() >= up.for_s:
        direction = "up"
        wanted = current + up.step
        why = f"CPU above {up.percent:g}% for {_fmt(up.for_s)} (now {cpu:g}% of {current} cores)"
    elif since is not None:
        # A run under way, not yet as long as `for`: say how far along it is.
        held = _elapsed((now - since).total_seconds())
        return hold(
            f"CPU {cpu:g}% of {current} cores: above {up.percent:g}% for {held} of {_fmt(up.for_s)}"
        )
    else:
        since = held_since(samples, current, lambda pct: pct < down.percent)
        if since is None:
            return hold(f"CPU {cpu:g}% of {current} cores: within thresholds")
        if (now - since).total_seconds() < down.for_s:
            held = _elapsed((now - since).total_seconds())
            return hold(
                f"CPU {cpu:g}% of {current} cores: below {down.percent:g}% for {held} "
                f"of {_fmt(down.for_s)}"
            )
        direction = "down"
        wanted = current - down.step
        why = (
            f"CPU below {down.percent:g}% for {_fmt(down.for_s)} (now {cpu:g}% of {current} cores)"
        )
    target = clamp_target(spec, current, wanted, sizes)
    if target == current:
        edge = f"max_cores {spec.max_cores}" if direction == "up" else f"min_cores {spec.min_cores}"
        return hold(f"{why}, but already at {edge} or the nearest size the provider offers")
    if direction == "down":
        # No flapping: the smaller size must have carried the window's load below `up`.
        # The run itself: the sample just before it (at `since`) is the one above `down`.
        window = [s for s in samples if s.time >= since and percent_of(s, current) < down.percent]
        peak = max(demand_of(s, current) for s in window)
        if 100.0 * peak / target >= up.percent:
            return hold(
                f"{why}, but {target} cores would have reached {100.0 * peak / target:.0f}% "
                f"(up.above {up.percent:g}%)"
            )
    last = max(resizes, default=None)
    if last is not None and (now - last).total_seconds() < spec.cooldown_s:
        until = last + timedelta(seconds=spec.cooldown_s)
        return hold(f"{why}, but cooling down until {until.isoformat()}")
    recent = sum(1 for at in resizes if now - at < DAY)
    if recent >= spec.max_resizes_per_day:
        return hold(f"{why}, but {recent} resizes in the last 24 h (max_resizes_per_day)")
    if not spec.windows.open_at(now):
        emergency = spec.emergency_above
        if not (direction == "up" and emergency is not None and cpu > emergency):
            return hold(f"{why}, but outside the resize windows")
        why += f"; emergency: above {emergency:g}% outside the resize windows"
    return Verdict(current, target, direction, why, cpu, direction)
