"""Holds and unreadable items: said once per cause, shown in /status, counted for alerts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from daemon.client.records import ItemProblem
from daemon.clock import FakeClock
from daemon.observability.metrics import Metrics
from daemon.observability.problems import MAX_UNREADABLE_SHOWN, Hold, Problems

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def make() -> tuple[Problems, Metrics, FakeClock]:
    metrics = Metrics(CollectorRegistry())
    clock = FakeClock(T0)
    return Problems(metrics=metrics, clock=clock, log=structlog.get_logger()), metrics, clock


def blocked(metrics: Metrics, rule: str, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "cloudpilot_policy_blocked", {"rule": rule, "reason": reason}
    )


def hold(subject: str, reason: str = "no_cpu_samples", rule: str = "web") -> Hold:
    return Hold(rule, subject, reason, f"{subject}: {reason}", "GET /x", "y")


def test_a_hold_is_logged_when_it_starts_and_when_it_ends_not_in_between() -> None:
    problems, metrics, clock = make()
    with capture_logs() as logs:
        problems.settle("web", [hold("ec1"), hold("ec2")])
        clock.advance(60)
        problems.settle("web", [hold("ec1"), hold("ec2")])
        assert blocked(metrics, "web", "no_cpu_samples") == 2
        clock.advance(60)
        problems.settle("web", [hold("ec2")])
    events = [(e["event"], e["subject"]) for e in logs]
    assert events == [
        ("policy_blocked", "ec1"),
        ("policy_blocked", "ec2"),
        ("policy_unblocked", "ec1"),
    ]
    assert logs[2]["blocked_s"] == 120.0
    assert blocked(metrics, "web", "no_cpu_samples") == 1
    (shown,) = problems.as_dict()["blocked"]
    assert (shown["subject"], shown["since"]) == ("ec2", T0.isoformat())


def test_a_cleared_reason_reads_zero_and_a_forgotten_rule_leaves_quietly() -> None:
    problems, metrics, _ = make()
    problems.settle("web", [hold("ec1", "plan_not_in_catalogue")])
    problems.settle("cap", [hold("*", "no_bill", rule="cap")])
    problems.settle("web", [])
    with capture_logs() as logs:
        problems.forget(["web"])
    assert blocked(metrics, "web", "plan_not_in_catalogue") == 0
    assert blocked(metrics, "cap", "no_bill") == 0
    assert problems.holds() == [] and logs == []


def test_holds_are_checked_for_their_reason_and_rule() -> None:
    problems, _, _ = make()
    with pytest.raises(ValueError, match="unknown hold reason"):
        Hold("web", "ec1", "because", "detail")
    with pytest.raises(ValueError, match="settled under"):
        problems.settle("web", [hold("ec1", rule="other")])


def test_unreadable_items_are_counted_and_the_latest_kept_for_status() -> None:
    problems, metrics, clock = make()
    bad = ItemProblem("server[].plan_size", "ec1", "invalid integer 'x'")
    problems.unreadable("seeweb", "GET /ecs/v2/servers", bad)
    clock.advance(60)
    problems.unreadable("seeweb", "GET /ecs/v2/servers", bad)
    for n in range(MAX_UNREADABLE_SHOWN + 5):
        problems.unreadable("glesys", "POST /server/list", ItemProblem("servers[]", f"#{n}", "x"))
    count = metrics.registry.get_sample_value(
        "cloudpilot_parse_errors_total",
        {"provider": "seeweb", "endpoint": "GET /ecs/v2/servers", "field": "server[].plan_size"},
    )
    shown = problems.as_dict()["unreadable"]
    assert count == 2
    assert len(shown) == MAX_UNREADABLE_SHOWN  # bounded: the oldest went first
    assert shown[0]["item"] == f"#{MAX_UNREADABLE_SHOWN + 4}"  # newest first
    assert all(item["provider"] == "glesys" for item in shown)
