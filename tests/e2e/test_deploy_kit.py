"""The monitoring kit in deploy/: Prometheus's config and alerts, Alertmanager's routes.

promtool and amtool check the files and run the rules' own unit tests; the rules' metric names,
label names and label values are checked against what the daemon really exports, since a typo
there is an alert that silently never fires.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from daemon.observability.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "cloudpilot-alerts.yml"
RULE_TESTS = PROMETHEUS / "cloudpilot-alerts.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
DAEMON = ROOT / "daemon"

ALERTS = {
    "CloudpilotDown",
    "CloudpilotSourceStale",
    "CloudpilotNotifierFailing",
    "CloudpilotPolicyBlocked",
    "CloudpilotProviderDataUnreadable",
}
RUNBOOK = "docs/operations.md#troubleshooting"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

SELECTOR = re.compile(r"\b(cloudpilot_[a-z_]+)(?:\s*\{([^}]*)\})?")
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def tool(name: str, package: str) -> str:
    """Return the path of a Debian-packaged tool; fail in CI and skip elsewhere when absent."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI: `make test` installs it (package {package})")
        pytest.skip(f"{name} is not installed (Debian/Ubuntu package: {package})")
    return found


@pytest.fixture
def promtool() -> str:
    return tool("promtool", "prometheus")


@pytest.fixture
def amtool() -> str:
    return tool("amtool", "prometheus-alertmanager")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository root, bounded in time."""
    return subprocess.run(  # noqa: S603 - a fixed tool and arguments
        list(args), capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    """Return what a tool said, for an assertion message."""
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def alerting_rules() -> list[dict[str, Any]]:
    """Return every rule of the alerts file."""
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def selectors() -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """Return (alert, metric, [(label, operator, value)]) for each cloudpilot_ series selected."""
    found = []
    for rule in alerting_rules():
        for metric, matchers in SELECTOR.findall(rule["expr"]):
            found.append((rule["alert"], metric, MATCHER.findall(matchers)))
    return found


def exported() -> dict[str, set[str]]:
    """Return each sample name a fresh `Metrics` exports, with its label names."""
    metrics = Metrics(CollectorRegistry())
    for family in vars(metrics).values():
        # A labelled family renders no sample until it has a child, so give each one a child.
        if isinstance(family, MetricWrapperBase) and family._labelnames:
            family.labels(*["x"] * len(family._labelnames))
    # And each gauge read from state a sample, as its owner's reader would give.
    metrics.read_from(
        lambda: [(gauge, ("x",) * len(gauge.labelnames), 0.0) for gauge in metrics.state.gauges]
    )
    samples: dict[str, set[str]] = {}
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


# --- the tools --------------------------------------------------------------------------------


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))

    assert result.returncode == 0, report(result)


def test_the_rules_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(RULE_TESTS))

    assert result.returncode == 0, report(result)
    assert "SUCCESS" in result.stdout, report(result)


def test_promtool_accepts_the_prometheus_config_and_finds_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))

    assert result.returncode == 0, report(result)
    # rule_files are globs: a name that matches nothing is not an error, only zero files.
    assert "SUCCESS: 1 rule files found" in result.stdout, report(result)


def test_amtool_accepts_the_alertmanager_config(amtool: str) -> None:
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))

    assert result.returncode == 0, report(result)


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=failed-actions", "severity=critical", "resource=ec200001"], "pager"),
        (["alertname=stuck-actions", "severity=warning", "resource=ec200001"], "chat"),
        (["alertname=cloudpilot-guard", "severity=critical", "resource=ec200001"], "pager"),
        (["alertname=CloudpilotDown", "severity=critical", "job=cloudpilot"], "pager"),
        (
            ["alertname=CloudpilotNotifierFailing", "severity=critical", "job=cloudpilot"],
            "pager",
        ),
        (["alertname=CloudpilotSourceStale", "severity=warning", "job=cloudpilot"], "chat"),
    ],
    ids=lambda value: value if isinstance(value, str) else value[0].partition("=")[2],
)
def test_alertmanager_routes_critical_to_the_pager_and_the_rest_to_chat(
    amtool: str, labels: list[str], receiver: str
) -> None:
    result = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )

    assert result.returncode == 0, report(result)


# --- the rules against the daemon -------------------------------------------------------------


def test_the_rules_are_the_three_alerts_each_with_severity_texts_and_runbook() -> None:
    rules = alerting_rules()

    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert annotations["runbook_url"] == RUNBOOK, rule["alert"]


def test_the_runbook_section_exists() -> None:
    headings = OPERATIONS.read_text(encoding="utf-8").splitlines()

    assert "## Troubleshooting" in headings


def test_the_rule_tests_cover_every_alert() -> None:
    data = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))

    tested = {
        case["alertname"]
        for test in data["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == ALERTS


def test_every_metric_in_the_rules_is_one_the_daemon_exports() -> None:
    samples = exported()

    used = {metric for _, metric, _ in selectors()}
    assert used, "no cloudpilot_ metric found in the rules"
    assert used <= samples.keys(), f"not exported: {sorted(used - samples.keys())}"


def test_every_label_the_rules_match_on_is_one_the_metric_has() -> None:
    samples = exported()

    for alert, metric, matchers in selectors():
        names = {label for label, _, _ in matchers}
        unknown = names - samples.get(metric, set()) - TARGET_LABELS
        assert not unknown, f"{alert}: {metric} has no label {sorted(unknown)}"


def test_every_label_value_the_rules_match_is_a_string_of_the_daemon() -> None:
    # Label values (sources, outcomes) are string literals in the daemon's code; a value that
    # appears nowhere there is a typo that would match nothing.
    code = "\n".join(path.read_text(encoding="utf-8") for path in DAEMON.rglob("*.py"))

    for alert, metric, matchers in selectors():
        for label, _, value in matchers:
            for word in value.split("|"):
                assert re.fullmatch(r"[a-z_]+", word), f"{alert}: {metric}{{{label}}}: {value!r}"
                assert f'"{word}"' in code, f"{alert}: {metric}{{{label}}}: no {word!r} in daemon/"
