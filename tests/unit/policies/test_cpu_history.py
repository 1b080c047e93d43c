"""The CPU history kept per server is what the autoscale rules read, not a fixed day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from daemon.clock import FakeClock
from daemon.facts import CpuSample, Facts
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.policies.autoscale import AutoscalePolicy
from daemon.registry import BUILTIN, vocabulary
from daemon.rules.compiled import RuleSet
from daemon.rules.loader import load_rules

T0 = datetime(2026, 11, 10, tzinfo=UTC)
RULES = """\
rules:
  - name: web
    autoscale:
      provider: glesys
      up: {above: 75, for: 10m}
      down: {below: 40, for: 2h}
      max_cores: 4
      snapshot: none
"""


def load_text(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return load_rules([path], vocabulary())


def policy(facts: Facts) -> AutoscalePolicy:
    metrics = Metrics(CollectorRegistry())
    problems = Problems(metrics=metrics, clock=FakeClock(T0))
    return AutoscalePolicy(
        facts=facts, metrics=metrics, problems=problems, providers=BUILTIN.traits
    )


def fill(facts: Facts, hours: int) -> None:
    """Add five-minute samples for `hours` hours to one server."""
    for n in range(hours * 12):
        facts.add_cpu("glesys", "web1", CpuSample(T0 + timedelta(minutes=5 * n), 50.0, 2))


def test_the_history_reaches_the_longest_for_plus_an_hour(tmp_path: Path) -> None:
    facts = Facts()
    policy(facts).replace_rules(load_text(tmp_path, RULES))
    fill(facts, 24)
    window = list(facts.cpu[("glesys", "web1")])
    assert window[-1].time - window[0].time == timedelta(hours=3)  # 2h `for` + 1h
    assert len(window) == 37


def test_without_autoscale_rules_an_hour_is_kept_and_a_reload_trims_at_once(
    tmp_path: Path,
) -> None:
    facts = Facts()
    autoscale = policy(facts)
    autoscale.replace_rules(load_text(tmp_path, RULES))
    fill(facts, 24)
    autoscale.replace_rules(load_text(tmp_path, "rules: []\n"))
    window = list(facts.cpu[("glesys", "web1")])
    assert window[-1].time - window[0].time == timedelta(hours=1)
