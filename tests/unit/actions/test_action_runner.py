"""The runner: dry run, concurrency modes, timeouts, errors, reconcile, startup guard, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from action_fakes import (
    DestructiveAction,
    FakeLedger,
    GatedAction,
    capture_logger,
    events_named,
    make_decision,
)
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture

from daemon.actions.base import ActionRegistry
from daemon.actions.runner import DEFAULT_RUN_OPTIONS, Runner
from daemon.actions.webhook import WebhookAction
from daemon.clock import FakeClock
from daemon.models import Decision, Mode, Outcome, OutcomeStatus
from daemon.observability.metrics import Metrics
from daemon.rules.action import Action
from daemon.rules.compiled import RunOptions
from daemon.state.store import LedgerEntry, LedgerState


@dataclass
class Harness:
    """A runner over a fake ledger, with the test in control of options and source readiness."""

    action: GatedAction
    destructive: DestructiveAction
    clock: FakeClock
    ledger: FakeLedger
    metrics: Metrics
    capture: LogCapture
    runner: Runner
    ready: set[str] = field(default_factory=set)
    options: dict[str, RunOptions] = field(default_factory=dict)

    def submit(self, *decisions: Decision) -> None:
        """Record decisions as the pipeline does, then hand them over."""
        self.runner.submit(self.ledger.record(*decisions))

    def count(self, action: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "cloudpilot_actions_total", {"action": action, "outcome": outcome}
        )
        return value or 0.0

    def open_gauge(self) -> float | None:
        return self.metrics.registry.get_sample_value("cloudpilot_ledger_open_entries")

    def detail(self, key: str) -> str:
        return self.ledger.entries[key].detail


def build(*extra: Action, gated: bool = True) -> Harness:
    clock = FakeClock()
    log, capture = capture_logger()
    action = GatedAction(gated=gated)
    destructive = DestructiveAction(gated=gated)
    ledger = FakeLedger(clock)
    metrics = Metrics(CollectorRegistry())
    ready: set[str] = set()
    options: dict[str, RunOptions] = {}
    runner = Runner(
        store=ledger,
        registry=ActionRegistry([action, destructive, *extra]),
        metrics=metrics,
        clock=clock,
        log=log,
        options=lambda rule: options.get(rule, DEFAULT_RUN_OPTIONS),
        sources_ready=lambda sources: sources <= ready,
    )
    return Harness(action, destructive, clock, ledger, metrics, capture, runner, ready, options)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = build()
    yield harness
    await harness.runner.drain(0)


def keys(n: int, rule: str = "r") -> list[str]:
    return [f"{rule}/0/e{i}" for i in range(1, n + 1)]


async def test_dry_run_never_calls_and_is_shown(h: Harness) -> None:
    decision = make_decision(mode=Mode.DRY_RUN, params={"note": "would do"})
    h.submit(decision)
    await h.runner.wait_idle()
    assert h.action.runs == []
    assert h.ledger.state(decision.key) is LedgerState.DRY_RUN
    assert h.count("fake", "dry_run") == 1
    [shown] = events_named(h.capture, "decision_dry_run")
    assert shown["rule"] == "r"
    assert shown["action"] == "fake"
    assert shown["params"] == {"note": "would do"}
    assert shown["event_key"] == "seeweb.action:709:failed"
    assert shown["resource"] == "ec200001"


async def test_dry_run_of_a_webhook_logs_no_secret() -> None:
    log, capture = capture_logger()
    clock = FakeClock()
    async with aiohttp.ClientSession() as session:
        runner = Runner(
            store=FakeLedger(clock),
            registry=ActionRegistry([WebhookAction(session=session, clock=clock)]),
            metrics=Metrics(CollectorRegistry()),
            clock=clock,
            log=log,
            sources_ready=lambda _: True,
        )
        runner.submit(
            [
                make_decision(
                    action="webhook",
                    mode=Mode.DRY_RUN,
                    params={
                        "url": "https://hooks.example.com/services/T0K3N",
                        "headers": {"Authorization": "Bearer s3cr3t"},
                    },
                )
            ]
        )
    [shown] = events_named(capture, "decision_dry_run")
    assert shown["params"] == {
        "url": "https://hooks.example.com",
        "headers": {"Authorization": "***"},
    }
    assert "s3cr3t" not in repr(capture.entries)
    assert "T0K3N" not in repr(capture.entries)


async def test_a_run_moves_the_entry_through_the_ledger(h: Harness) -> None:
    [key] = keys(1)
    h.submit(make_decision(key))
    assert h.open_gauge() == 1
    await h.action.entered(key)
    assert h.ledger.state(key) is LedgerState.STARTED
    assert h.runner.running == 1
    h.action.release(key)
    await h.runner.wait_idle()
    entry = h.ledger.entries[key]
    assert (entry.state, entry.attempts, entry.detail) == (LedgerState.DONE, 1, "ok")
    assert h.count("fake", "done") == 1
    assert h.open_gauge() == 0
    assert h.runner.running == 0
    duration = h.metrics.registry.get_sample_value(
        "cloudpilot_action_duration_seconds_count", {"action": "fake"}
    )
    assert duration == 1
    [done] = events_named(h.capture, "action_done")
    assert done["decision_key"] == key
    assert done["run_id"]


async def test_a_decision_submitted_twice_runs_once(h: Harness) -> None:
    [key] = keys(1)
    h.action.gated = False
    decision = make_decision(key)
    h.submit(decision)
    h.runner.submit([decision])
    await h.runner.wait_idle()
    h.runner.submit([decision])  # finished in the ledger: not run again
    await h.runner.wait_idle()
    assert h.action.runs == [key]
    assert h.ledger.entries[key].attempts == 1


async def test_queued_runs_one_at_a_time_in_submit_order(h: Harness) -> None:
    order = keys(3)
    h.submit(*(make_decision(key) for key in order))
    assert h.runner.running == 1
    for index, key in enumerate(order):
        await h.action.entered(key)
        assert h.action.runs == order[: index + 1]
        assert h.runner.running == 1
        h.action.release(key)
    await h.runner.wait_idle()
    assert h.action.max_in_run == 1
    assert [h.ledger.state(key) for key in order] == [LedgerState.DONE] * 3


async def test_queued_is_per_rule(h: Harness) -> None:
    h.submit(make_decision("a/0/e1", rule="a"), make_decision("b/0/e1", rule="b"))
    assert h.runner.running == 2
    for key in ("a/0/e1", "b/0/e1"):
        await h.action.entered(key)
        h.action.release(key)
    await h.runner.wait_idle()


async def test_parallel_runs_up_to_max_running(h: Harness) -> None:
    h.options["r"] = RunOptions(concurrency="parallel", max_running=2)
    order = keys(5)
    h.submit(*(make_decision(key) for key in order))
    assert h.runner.running == 2
    await h.action.entered(order[0])
    await h.action.entered(order[1])
    h.action.release(order[1])
    await h.action.entered(order[2])
    assert h.runner.running == 2
    for key in order:
        h.action.release(key)
    await h.runner.wait_idle()
    assert h.action.max_in_run == 2
    assert sorted(h.action.runs) == order
    assert h.count("fake", "done") == 5


async def test_single_skips_while_busy_and_records_it(h: Harness) -> None:
    h.options["r"] = RunOptions(concurrency="single")
    first, second = keys(2)
    h.submit(make_decision(first), make_decision(second))
    await h.action.entered(first)
    h.action.release(first)
    await h.runner.wait_idle()
    assert h.action.runs == [first]
    assert h.ledger.state(first) is LedgerState.DONE
    assert h.ledger.state(second) is LedgerState.SKIPPED
    assert h.detail(second) == "rule busy (concurrency: single)"
    assert h.count("fake", "skipped") == 1
    # Once idle, the rule takes the next one.
    [third] = keys(3)[2:]
    h.submit(make_decision(third))
    await h.action.entered(third)
    h.action.release(third)
    await h.runner.wait_idle()
    assert h.ledger.state(third) is LedgerState.DONE


async def test_a_run_past_its_timeout_fails(h: Harness) -> None:
    # A bound on the real loop clock, not a sleep: the action waits at a gate never opened.
    h.options["r"] = RunOptions(timeout_s=0.05)
    [key] = keys(1)
    h.submit(make_decision(key))
    await h.runner.wait_idle()
    assert h.ledger.state(key) is LedgerState.FAILED
    assert h.detail(key) == "timed out after 0.05 s"
    assert h.action.cancelled == [key]
    assert h.count("fake", "failed") == 1


async def test_an_exception_fails_with_one_secret_free_line(h: Harness) -> None:
    [key] = keys(1)
    h.action.gated = False
    h.action.errors[key] = RuntimeError("provider said no\n  on line two")
    h.submit(make_decision(key))
    await h.runner.wait_idle()
    assert h.ledger.state(key) is LedgerState.FAILED
    assert h.detail(key) == "RuntimeError: provider said no on line two"
    [raised] = events_named(h.capture, "action_raised")
    assert raised["error_type"] == "RuntimeError"
    [failed] = events_named(h.capture, "action_failed")
    assert failed["detail"] == "RuntimeError: provider said no on line two"
    assert failed["log_level"] == "warning"


async def test_an_action_timeout_of_its_own_is_an_error_not_the_rule_timeout(h: Harness) -> None:
    [key] = keys(1)
    h.action.gated = False
    h.action.errors[key] = TimeoutError("upstream")
    h.submit(make_decision(key))
    await h.runner.wait_idle()
    assert h.detail(key) == "TimeoutError: upstream"


async def test_invalid_params_fail_before_starting(h: Harness) -> None:
    [key] = keys(1)
    h.submit(make_decision(key, params={"note": "x", "token": "s3cr3t"}))
    await h.runner.wait_idle()
    assert h.action.runs == []
    assert h.ledger.entries[key].attempts == 0
    assert h.detail(key) == "invalid parameters: token: Extra inputs are not permitted"
    assert "s3cr3t" not in repr(h.capture.entries)


async def test_an_unregistered_action_fails_with_detail(h: Harness) -> None:
    decision = make_decision("r/0/e1", action="teleport")
    h.submit(decision)
    await h.runner.wait_idle()
    assert h.ledger.state(decision.key) is LedgerState.FAILED
    assert h.detail(decision.key) == "action type 'teleport' is not registered"


def left_over(
    ledger: FakeLedger, key: str, state: LedgerState, *, attempts: int = 0, **kw: Any
) -> Decision:
    decision = make_decision(key, **kw)
    ledger.put(LedgerEntry(decision, state, datetime(2026, 10, 31, tzinfo=UTC), attempts=attempts))
    return decision


async def test_start_runs_an_intent_once(h: Harness) -> None:
    h.action.gated = False
    [key] = keys(1)
    decision = left_over(h.ledger, key, LedgerState.INTENT)
    await h.runner.start()
    h.runner.submit([decision])  # the same decision again: still once
    await h.runner.wait_idle()
    assert h.action.runs == [key]
    assert h.action.reconciles == []
    assert h.ledger.entries[key].attempts == 1
    assert h.ledger.state(key) is LedgerState.DONE


async def test_start_reconciles_a_started_entry_and_reruns_when_unknown(h: Harness) -> None:
    h.action.gated = False
    [key] = keys(1)
    left_over(h.ledger, key, LedgerState.STARTED, attempts=1)
    await h.runner.start()
    await h.runner.wait_idle()
    assert h.action.reconciles == [key]
    assert h.action.runs == [key]  # same decision, same idempotency key
    entry = h.ledger.entries[key]
    assert (entry.state, entry.attempts) == (LedgerState.DONE, 2)
    assert events_named(h.capture, "action_rerun")


async def test_start_finishes_a_started_entry_from_what_reconcile_found(h: Harness) -> None:
    [key] = keys(1)
    left_over(h.ledger, key, LedgerState.STARTED, attempts=1)
    h.action.reconciled[key] = Outcome(OutcomeStatus.DONE, "snapshot 104 exists")
    await h.runner.start()
    await h.runner.wait_idle()
    assert h.action.runs == []
    entry = h.ledger.entries[key]
    assert (entry.state, entry.attempts, entry.detail) == (
        LedgerState.DONE,
        1,
        "snapshot 104 exists",
    )


async def test_start_fails_entries_of_actions_no_longer_registered(h: Harness) -> None:
    left_over(h.ledger, "r/0/e1", LedgerState.STARTED, action="retired")
    left_over(h.ledger, "r/0/e2", LedgerState.INTENT, action="retired")
    await h.runner.start()
    await h.runner.wait_idle()
    assert h.ledger.state("r/0/e1") is LedgerState.FAILED
    assert h.detail("r/0/e2") == "action type 'retired' is not registered"
    assert h.open_gauge() == 0


async def test_start_counts_open_entries_in_the_gauge(h: Harness) -> None:
    for key in keys(3):
        left_over(h.ledger, key, LedgerState.INTENT)
    await h.runner.start()
    assert h.open_gauge() == 3
    for key in keys(3):
        await h.action.entered(key)
        h.action.release(key)
    await h.runner.wait_idle()
    assert h.open_gauge() == 0


async def test_a_restart_resends_a_webhook_with_the_same_idempotency_key() -> None:
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(request.headers["Idempotency-Key"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    clock = FakeClock()
    ledger = FakeLedger(clock)
    log, _ = capture_logger()
    try:
        async with aiohttp.ClientSession() as session:
            key = "page/0/seeweb.action:709:failed"
            left_over(
                ledger,
                key,
                LedgerState.STARTED,
                attempts=1,
                action="webhook",
                params={"url": str(server.make_url("/hook"))},
            )
            runner = Runner(
                store=ledger,
                registry=ActionRegistry([WebhookAction(session=session, clock=clock)]),
                metrics=Metrics(CollectorRegistry()),
                clock=clock,
                log=log,
                sources_ready=lambda _: True,
            )
            await runner.start()
            await runner.wait_idle()
    finally:
        await server.close()
    assert received == [key]
    assert ledger.state(key) is LedgerState.DONE


async def test_the_startup_guard_holds_destructive_actions_until_their_sources_polled(
    h: Harness,
) -> None:
    risky = make_decision("off/0/e1", rule="off", action="fake_destructive")
    harmless = make_decision("log/0/e1", rule="log")
    h.submit(risky, harmless)
    assert h.runner.held == 1
    await h.action.entered(harmless.key)  # non-destructive: at once
    h.action.release(harmless.key)
    await h.runner.wait_idle()
    assert h.destructive.runs == []
    assert h.ledger.state(risky.key) is LedgerState.INTENT
    [held] = events_named(h.capture, "action_held")
    assert held["waiting_for"] == ["actions"]

    h.ready.add("logs")  # not the source it depends on
    h.runner.sources_polled()
    assert h.runner.held == 1
    assert h.runner.running == 0

    h.ready.add("actions")
    h.runner.sources_polled()
    assert h.runner.held == 0
    await h.destructive.entered(risky.key)
    h.destructive.release(risky.key)
    await h.runner.wait_idle()
    assert h.ledger.state(risky.key) is LedgerState.DONE


async def test_a_destructive_action_runs_at_once_when_its_sources_are_ready(h: Harness) -> None:
    h.ready.add("actions")
    risky = make_decision("off/0/e1", rule="off", action="fake_destructive")
    h.submit(risky)
    assert h.runner.held == 0
    await h.destructive.entered(risky.key)
    h.destructive.release(risky.key)
    await h.runner.wait_idle()


async def test_drain_waits_for_running_actions_then_cancels_the_rest() -> None:
    h = build()
    quick = make_decision("a/0/e1", rule="a")
    slow = make_decision("b/0/e1", rule="b")
    queued = make_decision("b/0/e2", rule="b")
    held = make_decision("off/0/e1", rule="off", action="fake_destructive")
    h.submit(quick, slow, queued, held)
    await h.action.entered(quick.key)
    await h.action.entered(slow.key)

    # A bound on the real loop clock: `slow` never finishes, so drain waits it out.
    draining = asyncio.create_task(h.runner.drain(0.2))
    h.action.release(quick.key)
    await draining

    assert h.ledger.state(quick.key) is LedgerState.DONE
    assert h.ledger.state(slow.key) is LedgerState.STARTED
    assert h.ledger.state(queued.key) is LedgerState.INTENT
    assert h.ledger.state(held.key) is LedgerState.INTENT
    assert h.action.cancelled == [slow.key]
    assert h.runner.running == 0
    assert h.open_gauge() == 3
    [cancelled] = events_named(h.capture, "actions_cancelled")
    assert cancelled["count"] == 1

    late = make_decision("c/0/e1", rule="c")
    h.submit(late)  # no longer accepted: stays INTENT for the next start
    await h.runner.wait_idle()
    assert late.key not in h.action.runs
    assert h.ledger.state(late.key) is LedgerState.INTENT

    others = {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}
    assert not others


async def test_drain_with_nothing_running_returns_at_once(h: Harness) -> None:
    await h.runner.drain(30)
    assert h.runner.running == 0


async def test_a_ledger_failure_is_logged_and_leaves_the_entry_open() -> None:
    class BrokenLedger(FakeLedger):
        async def mark_started(self, key: str, now: datetime) -> None:
            raise OSError("disk I/O error")

    h = build()
    broken = BrokenLedger(h.clock)
    runner = Runner(
        store=broken,
        registry=ActionRegistry([h.action]),
        metrics=h.metrics,
        clock=h.clock,
        log=capture_logger()[0],
        sources_ready=lambda _: True,
    )
    [key] = keys(1)
    runner.submit(broken.record(make_decision(key)))
    await runner.wait_idle()
    assert h.action.runs == []
    assert broken.state(key) is LedgerState.INTENT


def test_default_options() -> None:
    options: Mapping[str, Any] = {
        "concurrency": DEFAULT_RUN_OPTIONS.concurrency,
        "max_running": DEFAULT_RUN_OPTIONS.max_running,
        "timeout_s": DEFAULT_RUN_OPTIONS.timeout_s,
    }
    # One type, one default: what a rule that sets no `timeout` gets (the rule schema says 60 s).
    assert options == {"concurrency": "queued", "max_running": 10, "timeout_s": 60.0}


async def test_the_startup_guard_waits_for_every_source_of_the_daemon() -> None:
    clock = FakeClock()
    log, capture = capture_logger()
    destructive = DestructiveAction(gated=False)
    ready: set[str] = {"actions"}  # its own source has polled; billing and metrics have not
    ledger = FakeLedger(clock)
    runner = Runner(
        store=ledger,
        registry=ActionRegistry([destructive]),
        metrics=Metrics(CollectorRegistry()),
        clock=clock,
        log=log,
        sources_ready=lambda sources: sources <= ready,
        startup_sources=frozenset({"actions", "metrics", "billing"}),
    )
    decision = make_decision("cap/0/e1", rule="cap", action="fake_destructive")
    runner.submit(ledger.record(decision))
    [held] = events_named(capture, "action_held")
    ready.add("metrics")
    runner.sources_polled()
    still = runner.held
    ready.add("billing")
    runner.sources_polled()
    await runner.wait_idle()

    assert held["waiting_for"] == ["actions", "billing", "metrics"]
    assert still == 1
    assert runner.held == 0 and destructive.runs == [decision.key]
