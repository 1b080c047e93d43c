"""Replay two weeks of CPU demand through three autoscale policies and compare what they cost.

The traces come from `bench/traces.py` (cores of demand every 5 minutes for 14 days). Each is
replayed through:

- `glesys_script`: Glesys's sample autoscale script: every 5 minutes, one core more if the
  15-minute load (the mean demand of the last three steps, uncapped) is at least the cores, else
  one less down to 1;
- `cloudpilot`: the real `decide()` with the `glesys-web-autoscale` rule's settings from
  `rules/autoscale.yaml`, fed a CPU sample per step (percent of the current cores, capped at 100)
  and its own past resizes; a resize takes effect from the next step (the reboot);
- `oracle`: knowing each step's demand, the fewest cores that keep CPU at or under 70%.

Per trace and policy it prints resizes, overload minutes (steps where demand is over 90% of the
cores, times 5 minutes) and core-hours, then the issue's targets: Cloudpilot resizes at most a fifth
as often as the script with no more overload, and uses at most 1.2 times the oracle's core-hours.

    .venv/bin/python -m bench.autoscale_quality [--rules rules/autoscale.yaml]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.traces import STEP, STEPS_PER_DAY, TRACES, times
from daemon.facts import CpuSample
from daemon.policies.scaling import decide
from daemon.registry import vocabulary
from daemon.rules.compiled import ScalingSpec
from daemon.rules.loader import load_rules

RULE = "glesys-web-autoscale"
RULES = Path("rules/autoscale.yaml")
START_CORES = 2
ORACLE_CPU = 0.7  # the oracle keeps CPU at or under 70%
OVERLOAD = 0.9  # a step is overloaded when demand is over 90% of the cores
SCRIPT_WINDOW = 3  # the script's 15-minute load: three 5-minute steps
STEP_MINUTES = STEP.total_seconds() / 60.0
# Cloudpilot's daemon keeps a day of CPU samples per server (daemon.facts.DEFAULT_CPU_WINDOW).
HISTORY = STEPS_PER_DAY
# Targets from the issue.
MAX_RESIZE_RATIO = 0.2
MAX_CORE_HOURS_VS_ORACLE = 1.2


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one policy did over one trace."""

    cores: tuple[int, ...]
    resizes: int
    overload_minutes: float
    core_hours: float


def outcome(demand: Sequence[float], cores: Sequence[int]) -> Outcome:
    """Return the figures for the cores a policy had at each step of a trace."""
    resizes = sum(1 for before, after in itertools.pairwise(cores) if after != before)
    overloaded = sum(1 for need, have in zip(demand, cores, strict=True) if need / have > OVERLOAD)
    return Outcome(
        cores=tuple(cores),
        resizes=resizes,
        overload_minutes=overloaded * STEP_MINUTES,
        core_hours=sum(cores) * STEP_MINUTES / 60.0,
    )


def glesys_script(demand: Sequence[float], start: int = START_CORES) -> Outcome:
    """Return what Glesys's sample script does: +1 core if the 15-min load >= cores, else -1."""
    cores = [start]
    for i in range(len(demand) - 1):
        recent = demand[max(0, i + 1 - SCRIPT_WINDOW) : i + 1]
        load = sum(recent) / len(recent)
        have = cores[-1]
        if load >= have:
            cores.append(have + 1)
        else:
            cores.append(max(1, have - 1))
    return outcome(demand, cores)


def cloudpilot(
    demand: Sequence[float],
    spec: ScalingSpec,
    moments: Sequence[datetime],
    start: int = START_CORES,
) -> Outcome:
    """Return what `decide()` does with a rule's spec, one CPU sample and one verdict per step."""
    cores = [start]
    samples: list[CpuSample] = []
    resizes: list[datetime] = []
    for i, (need, now) in enumerate(zip(demand, moments, strict=True)):
        have = cores[-1]
        samples.append(CpuSample(now, min(100.0, 100.0 * need / have), have))
        verdict = decide(spec, samples[-HISTORY:], have, now, resizes)
        if i == len(demand) - 1:
            break
        if verdict.resize:
            resizes.append(now)
            cores.append(verdict.target)
        else:
            cores.append(have)
    return outcome(demand, cores)


def oracle(demand: Sequence[float]) -> Outcome:
    """Return the fewest cores (at least 1) that keep each step's CPU at or under 70%."""
    # The small tolerance keeps float noise (1.4 / 0.7 = 1.9999…) from costing a core.
    cores = [max(1, math.ceil(need / ORACLE_CPU - 1e-9)) for need in demand]
    return outcome(demand, cores)


def glesys_spec(path: Path, name: str = RULE) -> ScalingSpec:
    """Return the spec of the autoscale rule `name` in the rule file at `path`."""
    rules = load_rules([path], vocabulary())
    for rule in rules.autoscale:
        if rule.name == name:
            return rule.spec
    raise SystemExit(f"no autoscale rule {name!r} in {path}")


def _ratio(part: float, whole: float) -> float:
    if whole:
        return part / whole
    return 0.0 if not part else math.inf


def report(name: str, demand: Sequence[float], spec: ScalingSpec) -> list[str]:
    """Return the figure lines for one trace: each policy's figures, then the targets."""
    moments = times()
    policies = {
        "glesys_script": glesys_script(demand),
        "cloudpilot": cloudpilot(demand, spec, moments),
        "oracle": oracle(demand),
    }
    lines = []
    for policy, result in policies.items():
        lines += [
            f"{name}.{policy}.resizes={result.resizes}",
            f"{name}.{policy}.overload_minutes={result.overload_minutes:g}",
            f"{name}.{policy}.core_hours={result.core_hours:.1f}",
        ]
    script, ours, best = policies["glesys_script"], policies["cloudpilot"], policies["oracle"]
    resize_ratio = _ratio(ours.resizes, script.resizes)
    vs_oracle = _ratio(ours.core_hours, best.core_hours)
    met = (
        resize_ratio <= MAX_RESIZE_RATIO
        and ours.overload_minutes <= script.overload_minutes
        and vs_oracle <= MAX_CORE_HOURS_VS_ORACLE
    )
    lines += [
        f"{name}.resize_ratio={resize_ratio:.3f}",
        f"{name}.overload_minutes_vs_script={ours.overload_minutes - script.overload_minutes:g}",
        f"{name}.core_hours_vs_oracle={vs_oracle:.3f}",
        f"{name}.targets_met={str(met).lower()}",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale_quality", description=__doc__)
    parser.add_argument("--rules", type=Path, default=RULES, help="rule file with the rule")
    parser.add_argument("--rule", default=RULE, help="name of the autoscale rule to replay")
    args = parser.parse_args(argv)
    spec = glesys_spec(args.rules, args.rule)
    met = True
    for name, make in TRACES.items():
        lines = report(name, make(), spec)
        met = met and lines[-1].endswith("=true")
        print("\n".join(lines))
    print(f"targets_met={str(met).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
