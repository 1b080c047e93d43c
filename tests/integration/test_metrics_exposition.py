"""Every metric family the daemon promises, rendered and checked by `promtool check metrics`."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon import __version__
from daemon.observability.metrics import Metrics

# The sample names each promised family must carry, with one label set it was given below.
REQUIRED = {
    "cloudpilot_poll_duration_seconds_bucket": {"source": "actions", "le": "0.5"},
    "cloudpilot_poll_errors_total": {"source": "actions"},
    "cloudpilot_api_requests_total": {
        "provider": "seeweb",
        "endpoint": "/ecs/v2/actions",
        "code": "200",
    },
    "cloudpilot_events_total": {"type": "seeweb.action.failed"},
    "cloudpilot_rule_matches_total": {"rule": "page-failed-actions"},
    "cloudpilot_decisions_total": {"rule": "page-failed-actions", "mode": "enforce"},
    "cloudpilot_actions_total": {"action": "alert", "outcome": "ok"},
    "cloudpilot_last_successful_poll_timestamp_seconds": {"source": "actions"},
    "cloudpilot_rules_loaded": {},
    "cloudpilot_build_info": {"version": __version__},
    "cloudpilot_server_cores": {"provider": "glesys", "server": "wps123456"},
    "cloudpilot_server_cpu_ratio": {"provider": "seeweb", "server": "ec200001"},
    "cloudpilot_k8sgpu_pods": {"cluster": "skg00018", "runtime_class": "nvidia-l4"},
    "cloudpilot_month_to_date_cost_euros": {"scope": "account"},
}


def populated() -> Metrics:
    metrics = Metrics(CollectorRegistry())
    metrics.poll_duration.labels("actions").observe(0.3)
    metrics.poll_errors.labels("actions").inc()
    metrics.last_poll_success.labels("actions").set(1_794_312_000)
    metrics.source_up.labels("actions").set(1)
    metrics.observe_request("seeweb", "/ecs/v2/actions", "200", 0.12)
    metrics.observe_request("glesys", "/server/status", "timeout", 10.0)
    metrics.events.labels("seeweb.action.failed").inc()
    metrics.events_stale.labels("seeweb.action.failed").inc()
    metrics.rule_matches.labels("page-failed-actions").inc()
    metrics.decisions.labels("page-failed-actions", "enforce").inc()
    metrics.decisions.labels("monthly-cap", "dry_run").inc()
    metrics.rule_errors.labels("page-failed-actions").inc()
    metrics.rules_loaded.set(3)
    metrics.rule_reloads.labels("ok").inc()
    metrics.actions.labels("alert", "ok").inc()
    metrics.action_duration.labels("alert").observe(0.4)
    metrics.ledger_open.set(0)
    metrics.gpu_pods.labels("skg00018", "nvidia-l4").set(2)
    # The per-object gauges are read from state at scrape time: a reader stands in for it.
    metrics.read_from(
        lambda: [
            (metrics.server_cores, ("glesys", "wps123456"), 4),
            (metrics.server_cpu, ("seeweb", "ec200001"), 0.42),
            (metrics.month_cost, ("account",), 123.45),
        ]
    )
    return metrics


def test_every_required_family_is_exposed_with_its_labels() -> None:
    text = generate_latest(populated().registry).decode()

    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    for name, labels in REQUIRED.items():
        matching = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
        assert matching, f"no sample {name}{labels} in the exposition"
    cost = next(s for s in samples if s.name == "cloudpilot_month_to_date_cost_euros")
    assert cost.value == 123.45


def test_promtool_finds_nothing_to_report() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI: `make test` installs it (package prometheus)")
        pytest.skip("promtool is not installed (Debian/Ubuntu package: prometheus)")
    text = generate_latest(populated().registry)

    result = subprocess.run(  # noqa: S603 - a fixed tool and arguments
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )

    report = (result.stdout + result.stderr).decode()
    assert (result.returncode, report) == (0, "")
