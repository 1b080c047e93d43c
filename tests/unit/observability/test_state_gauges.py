"""Per-object gauges are read from state at scrape time: what is gone has no series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.client.records import MetricSample, Server
from daemon.clock import FakeClock
from daemon.facts import CpuSample, Facts, ServerFact
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.policies.autoscale import AutoscalePolicy
from daemon.providers.seeweb.client import SeewebClient
from daemon.providers.seeweb.sources.metrics import MetricsSource
from daemon.registry import BUILTIN, vocabulary
from daemon.rules.loader import load_rules

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)

# The gauges as they were declared with `Gauge(...)` before they were read from state: name,
# help text and label names must not change (dashboards, alerts and the docs name them).
BEFORE = {
    ("cloudpilot_alerts_firing", "Alerts firing now, by rule.", ("rule",)),
    ("cloudpilot_server_cores", "Cores of a watched server.", ("provider", "server")),
    (
        "cloudpilot_server_cpu_ratio",
        "CPU use of a watched server as a share of its cores (0 to 1), latest sample.",
        ("provider", "server"),
    ),
    (
        "cloudpilot_month_to_date_cost_euros",
        "Spend in the current calendar month, by budget scope.",
        ("scope",),
    ),
    (
        "cloudpilot_autoscale_current_cores",
        "Cores of a server an autoscale rule watches, as its last decision saw them.",
        ("rule", "server"),
    ),
    (
        "cloudpilot_autoscale_target_cores",
        "Cores an autoscale rule wants for a server (equal to current when it holds).",
        ("rule", "server"),
    ),
    (
        "cloudpilot_autoscale_recommended_cores",
        "Cores recommended for a server its provider cannot resize, with that plan.",
        ("server", "plan"),
    ),
    (
        "cloudpilot_autoscale_recommended_price_difference_euros",
        "Monthly price of the recommended plan minus the current plan's.",
        ("server", "plan"),
    ),
    (
        "cloudpilot_policy_blocked",
        "Servers (or other subjects) a rule cannot decide for because data it needs is missing "
        "or odd, by rule and reason; /status says which and why.",
        ("rule", "reason"),
    ),
    (
        "cloudpilot_budget_spend_euros",
        "A budget's spend this month: billed, estimated (billed plus the use since the bill) "
        "and forecast to month end.",
        ("budget", "kind"),
    ),
    ("cloudpilot_budget_cap_euros", "A budget's monthly cap.", ("budget",)),
    (
        "cloudpilot_budget_ratio",
        "A budget's estimated month-to-date spend divided by its cap.",
        ("budget",),
    ),
    (
        "cloudpilot_budget_burn_rate_euros_per_hour",
        "What a budget's scope costs per hour now, as the estimate counts it.",
        ("budget",),
    ),
    (
        "cloudpilot_budget_estimate_error_euros",
        "At the last bill: the estimate for the hours it newly covered minus their bill.",
        ("budget",),
    ),
}
# Gauges read from state that came later: new series, so nothing to keep the same.
ADDED = {
    (
        "cloudpilot_sweep_remaining_servers",
        "Watched servers the last sweep of a source did not reach for lack of time (read first by "
        "the next); above 0 on every poll means the provider's rate is too low.",
        ("source",),
    ),
    (
        "cloudpilot_watched_servers",
        "Servers a source watches (their cores and CPU are polled), by provider.",
        ("provider",),
    ),
    (
        "cloudpilot_watched_cpu_ratio_mean",
        "Mean over the watched servers with samples of their latest CPU share (0 to 1).",
        ("provider",),
    ),
}


def scrape(metrics: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Return every series of the exposition, by family name, as Prometheus would read it."""
    text = generate_latest(metrics.registry).decode()
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def series(metrics: Metrics, name: str) -> dict[tuple[str, ...], float]:
    """Return one family's series as label values (in label-name order) → value."""
    return {tuple(v for _, v in labels): value for labels, value in scrape(metrics)[name].items()}


# --- the collector -------------------------------------------------------------------------------


def test_the_state_gauges_keep_their_names_help_and_labels() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.read_from(
        lambda: [(gauge, ("x",) * len(gauge.labelnames), 1.0) for gauge in metrics.state.gauges]
    )
    text = generate_latest(metrics.registry).decode()

    scraped = {
        (family.name, family.documentation, tuple(sorted(family.samples[0].labels)))
        for family in text_string_to_metric_families(text)
        if family.type == "gauge" and family.name in {name for name, _, _ in BEFORE}
    }
    assert scraped == {(name, doc, tuple(sorted(labels))) for name, doc, labels in BEFORE}
    declared = {(g.name, g.documentation, g.labelnames) for g in metrics.state.gauges}
    assert declared == BEFORE | ADDED


def test_a_gauge_without_series_is_still_described_and_names_are_not_registered_twice() -> None:
    registry = CollectorRegistry()
    text = generate_latest(Metrics(registry).registry).decode()

    assert "# TYPE cloudpilot_server_cores gauge" in text
    assert "cloudpilot_server_cores{" not in text
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(registry)


def test_each_scrape_reads_the_state_as_it_is_then() -> None:
    metrics = Metrics(CollectorRegistry())
    scopes = {"account": 12.5, "group:web": 3.0}
    metrics.read_from(lambda: [(metrics.month_cost, (s,), euros) for s, euros in scopes.items()])

    assert series(metrics, "cloudpilot_month_to_date_cost_euros") == {
        ("account",): 12.5,
        ("group:web",): 3.0,
    }
    del scopes["group:web"]
    scopes["account"] = 14.0
    assert series(metrics, "cloudpilot_month_to_date_cost_euros") == {("account",): 14.0}


# --- servers, from facts -------------------------------------------------------------------------


class FakeSeeweb:
    """Answers the metrics source's two calls: the server list and each server's CPU series."""

    def __init__(self) -> None:
        self.servers: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self.now = T0

    async def list_servers(self) -> list[Server]:
        """Return the servers, each with its cores."""
        return [
            Server.model_validate({"name": name, "plan_size": {"core": cores}})
            for name, cores in self.servers.items()
        ]

    async def server_cpu(self, name: str) -> tuple[MetricSample, ...]:
        """Return one CPU sample taken now, as a percentage."""
        return () if name not in self.cpu else (MetricSample(t=self.now, value=self.cpu[name]),)


async def test_a_server_that_leaves_the_listing_leaves_the_scrape() -> None:
    metrics, facts, clock, client = (
        Metrics(CollectorRegistry()),
        Facts(),
        FakeClock(T0),
        FakeSeeweb(),
    )
    source = MetricsSource(
        cast(SeewebClient, client), facts, clock, metrics=metrics, servers=["ec*"]
    )
    client.servers = {"ec1": 2, "ec2": 4, "db1": 8}
    client.cpu = {"ec1": 50.0, "ec2": 25.0}
    await source.poll(None)

    assert series(metrics, "cloudpilot_server_cores") == {
        ("seeweb", "ec1"): 2,
        ("seeweb", "ec2"): 4,  # db1 is listed but not watched
    }
    assert series(metrics, "cloudpilot_server_cpu_ratio") == {
        ("seeweb", "ec1"): 0.5,
        ("seeweb", "ec2"): 0.25,
    }

    del client.servers["ec2"]
    client.now = T0 + timedelta(minutes=5)
    client.cpu["ec1"] = 75.0
    await source.poll(None)

    assert series(metrics, "cloudpilot_server_cores") == {("seeweb", "ec1"): 2}
    assert series(metrics, "cloudpilot_server_cpu_ratio") == {("seeweb", "ec1"): 0.75}

    # Facts are what the scrape reads: a server they no longer hold has no series at once.
    facts.replace_servers("seeweb", [])
    assert series(metrics, "cloudpilot_server_cores") == {}
    assert series(metrics, "cloudpilot_server_cpu_ratio") == {}


# --- autoscale verdicts --------------------------------------------------------------------------

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


def autoscaled(tmp_path: Path, *servers: str) -> tuple[AutoscalePolicy, Metrics, Facts]:
    """Return an autoscale policy that has judged `servers` (2 cores, 50 % CPU for an hour)."""
    metrics, facts = Metrics(CollectorRegistry()), Facts()
    policy = AutoscalePolicy(
        facts=facts,
        metrics=metrics,
        problems=Problems(metrics=metrics, clock=FakeClock(T0)),
        providers=BUILTIN.traits,
    )
    (tmp_path / "rules.yaml").write_text(RULES)
    policy.replace_rules(load_rules([tmp_path / "rules.yaml"], vocabulary()))
    facts.replace_servers(
        "glesys", [ServerFact("glesys", name, name, T0, cores=2) for name in servers]
    )
    for name in servers:
        for minute in range(0, 60, 5):
            facts.add_cpu("glesys", name, CpuSample(T0 + timedelta(minutes=minute), 50.0, 2))
    policy.evaluate("glesys", T0 + timedelta(hours=1))
    return policy, metrics, facts


def test_a_rule_removed_on_reload_loses_its_series(tmp_path: Path) -> None:
    policy, metrics, _ = autoscaled(tmp_path, "web1", "web2")
    assert series(metrics, "cloudpilot_autoscale_current_cores") == {
        ("web", "web1"): 2,
        ("web", "web2"): 2,
    }
    assert series(metrics, "cloudpilot_autoscale_target_cores") == {
        ("web", "web1"): 2,
        ("web", "web2"): 2,
    }

    (tmp_path / "empty.yaml").write_text("rules: []\n")
    policy.replace_rules(load_rules([tmp_path / "empty.yaml"], vocabulary()))

    assert series(metrics, "cloudpilot_autoscale_current_cores") == {}
    assert series(metrics, "cloudpilot_autoscale_target_cores") == {}


def test_a_server_the_rule_no_longer_sees_loses_its_series(tmp_path: Path) -> None:
    policy, metrics, facts = autoscaled(tmp_path, "web1", "web2")
    facts.replace_servers("glesys", [facts.servers[("glesys", "web1")]])
    policy.evaluate("glesys", T0 + timedelta(hours=1, minutes=1))

    assert series(metrics, "cloudpilot_autoscale_current_cores") == {("web", "web1"): 2}
    assert set(policy.verdicts) == {("web", "web1")}


async def test_per_server_series_off_leaves_the_provider_totals() -> None:
    metrics, facts, clock, client = (
        Metrics(CollectorRegistry()),
        Facts(),
        FakeClock(T0),
        FakeSeeweb(),
    )
    metrics.per_server = False
    source = MetricsSource(
        cast(SeewebClient, client), facts, clock, metrics=metrics, servers=["ec*"]
    )
    client.servers = {"ec1": 2, "ec2": 4, "ec3": 1, "db1": 8}
    client.cpu = {"ec1": 50.0, "ec2": 25.0}
    await source.poll(None)

    families = scrape(metrics)
    labelled = [
        name
        for name, samples in families.items()
        if any("server" in dict(labels) for labels in samples)
    ]
    assert labelled == []
    assert series(metrics, "cloudpilot_watched_servers") == {("seeweb",): 3}
    assert series(metrics, "cloudpilot_watched_cpu_ratio_mean") == {("seeweb",): 0.375}
    # On (the default), the same poll gives both.
    metrics.per_server = True
    assert series(metrics, "cloudpilot_server_cores") == {
        ("seeweb", "ec1"): 2,
        ("seeweb", "ec2"): 4,
        ("seeweb", "ec3"): 1,
    }
    assert series(metrics, "cloudpilot_watched_servers") == {("seeweb",): 3}
