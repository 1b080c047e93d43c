"""SourceJob: success bookkeeping, failure logged once, recovery once, back-off on a fake clock."""

from __future__ import annotations

import asyncio
import random

import pytest
from source_fakes import HangingSource, Rig, ScriptedSource, waiting_for

from daemon.client.errors import (
    PaginationLimitError,
    ProviderUnreachable,
    RateLimitedError,
    ServerError,
)


def unavailable() -> ServerError:
    return ServerError("seeweb", "GET", "/ecs/v2/actions", "HTTP 503: unavailable", status=503)


async def test_success_hands_the_batch_to_the_sink_and_records_it() -> None:
    rig = Rig()
    source = ScriptedSource("actions")
    job = rig.job(source)
    rig.clock.advance(5)

    assert await job.tick() is True

    [(name, events, cursor)] = rig.batches
    assert (name, [e.key for e in events], cursor) == ("actions", ["actions:1"], {"count": 1})
    assert rig.facts.polled_at["actions"] == rig.clock.now()
    assert rig.value("cloudpilot_last_successful_poll_timestamp_seconds", "actions") == (
        rig.clock.now().timestamp()
    )
    assert rig.value("cloudpilot_source_up", "actions") == 1
    assert rig.value("cloudpilot_poll_duration_seconds_count", "actions") == 1
    assert job.polled_once and job.first_success.is_set() and not job.failing

    assert await job.tick() is True
    assert source.cursors == [None, {"count": 1}], "the stored cursor comes back"
    assert rig.logs.entries == []


async def test_concurrent_ticks_take_turns() -> None:
    rig = Rig()
    gate = asyncio.Event()
    source = ScriptedSource("actions", [waiting_for(gate)])
    job = rig.job(source)
    first = asyncio.create_task(job.tick())
    second = asyncio.create_task(job.tick())
    await asyncio.sleep(0)
    assert source.polls == 1, "the second tick waits for the first"
    gate.set()
    assert list(await asyncio.gather(first, second)) == [True, True]
    assert source.cursors == [None, {"count": 1}]


async def test_failure_logged_once_counted_always_recovery_logged_once() -> None:
    rig = Rig()
    source = ScriptedSource("actions", [unavailable(), unavailable(), unavailable()])
    job = rig.job(source, interval=30)

    for _ in range(3):
        assert await job.tick() is False
        assert job.retry_at is not None
        rig.clock.advance(job.retry_at - rig.clock.monotonic())

    assert rig.value("cloudpilot_poll_errors_total", "actions") == 3
    assert rig.value("cloudpilot_source_up", "actions") == 0
    assert job.failing and job.consecutive_failures == 3
    assert not job.polled_once and "actions" not in rig.facts.polled_at
    [failed] = rig.events("source_failed")
    assert failed["source"] == "actions"
    assert failed["error"] == "seeweb GET /ecs/v2/actions: HTTP 503: unavailable"
    assert failed["error_type"] == "ServerError"
    assert failed["log_level"] == "warning"
    assert "exc_info" not in failed and "exception" not in failed

    assert await job.tick() is True
    [recovered] = rig.events("source_recovered")
    assert recovered["source"] == "actions"
    assert recovered["failures"] == 3
    assert recovered["log_level"] == "info"
    assert not job.failing and job.consecutive_failures == 0 and job.retry_at is None
    assert rig.value("cloudpilot_source_up", "actions") == 1

    assert await job.tick() is True
    assert len(rig.events("source_failed")) == 1
    assert len(rig.events("source_recovered")) == 1


async def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    rig = Rig()
    source = ScriptedSource("metrics", [unavailable() for _ in range(8)])
    job = rig.job(source, interval=30)
    assert job.max_backoff == 300

    delays = []
    for failures in range(1, 9):
        polls = source.polls
        assert await job.tick() is False
        assert source.polls == polls + 1
        assert job.retry_at is not None
        delay = job.retry_at - rig.clock.monotonic()
        delays.append(delay)
        ceiling = min(300.0, 30.0 * 2 ** (failures - 1))
        assert ceiling / 2 <= delay <= ceiling

        # Ticks before the delay has passed are skipped: no poll, no error counted.
        rig.clock.advance(delay - 0.5)
        assert await job.tick() is False
        assert source.polls == polls + 1
        assert rig.value("cloudpilot_poll_errors_total", "metrics") == failures
        rig.clock.advance(0.5)

    assert len(set(delays)) == len(delays), "jittered"
    assert delays[-1] <= 300


async def test_backoff_caps_at_an_hour_for_long_intervals() -> None:
    job = Rig().job(ScriptedSource("billing"), interval=1800)
    assert job.max_backoff == 3600
    assert all(job.backoff(n) <= 3600 for n in range(1, 40))
    slow = Rig().job(ScriptedSource("billing"), interval=7200)
    assert slow.max_backoff == 7200, "never shorter than the interval itself"


async def test_backoff_honours_retry_after() -> None:
    rig = Rig()
    limited = RateLimitedError("seeweb", "GET", "/ecs/v2/logs", "HTTP 429", retry_after=250)
    job = rig.job(ScriptedSource("logs", [limited]), interval=30)
    assert await job.tick() is False
    assert job.retry_at is not None and job.retry_at - rig.clock.monotonic() >= 250


async def test_sink_failure_is_a_failure_and_the_cursor_stays() -> None:
    rig = Rig()
    source = ScriptedSource("logs")
    job = rig.job(source)
    assert await job.tick() is True

    rig.sink_error = OSError("database is locked")
    rig.clock.advance(1000)
    assert await job.tick() is False
    assert rig.value("cloudpilot_poll_errors_total", "logs") == 1
    assert rig.events("source_failed")[0]["error"] == "database is locked"

    rig.sink_error = None
    rig.clock.advance(1000)
    assert await job.tick() is True
    assert source.cursors == [None, {"count": 1}, {"count": 1}], "the failed batch left no trace"
    assert [c for _, _, c in rig.batches] == [{"count": 1}, {"count": 2}]


@pytest.mark.parametrize(
    "error",
    [
        PaginationLimitError(
            "seeweb", "GET", "/ecs/v2/actions", "20 pages", items=(), high_water=9
        ),
        ProviderUnreachable("glesys", "POST", "/server/list", "connection failed"),
        OSError("network is unreachable"),
        ValueError("a bug in a source"),
    ],
)
async def test_any_error_is_counted(error: Exception) -> None:
    rig = Rig()
    job = rig.job(ScriptedSource("glesys", [error]))
    assert await job.tick() is False
    assert rig.value("cloudpilot_poll_errors_total", "glesys") == 1
    assert rig.events("source_failed")[0]["error_type"] == type(error).__name__


async def test_long_error_messages_are_cut() -> None:
    rig = Rig()
    job = rig.job(ScriptedSource("logs", [RuntimeError("x" * 5000)]))
    await job.tick()
    assert len(rig.events("source_failed")[0]["error"]) == 500


async def test_cancellation_propagates_and_is_not_a_failure() -> None:
    rig = Rig()
    job = rig.job(ScriptedSource("actions", [asyncio.CancelledError()]))
    with pytest.raises(asyncio.CancelledError):
        await job.tick()
    assert rig.value("cloudpilot_poll_errors_total", "actions") is None
    assert not job.failing


async def test_a_hanging_poll_times_out_as_a_failure() -> None:
    rig = Rig()
    source = HangingSource("k8sgpu")
    job = rig.job(source, timeout=0.01)
    assert await job.tick() is False
    assert source.cancelled
    assert rig.events("source_failed")[0]["error_type"] == "TimeoutError"
    assert rig.value("cloudpilot_poll_errors_total", "k8sgpu") == 1


async def test_default_timeout_follows_the_interval_within_bounds() -> None:
    rig = Rig()
    assert rig.job(ScriptedSource("a"), interval=5).timeout == 60
    assert rig.job(ScriptedSource("b"), interval=120).timeout == 120
    assert rig.job(ScriptedSource("c"), interval=3600).timeout == 600


async def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="source a: interval must be positive"):
        Rig().job(ScriptedSource("a"), interval=0, rng=random.Random(1))


async def test_a_poll_longer_than_its_interval_is_one_warning_with_the_ticks_it_skipped() -> None:
    rig = Rig()
    source = HangingSource("actions")
    job = rig.job(source, interval=30)
    poll = asyncio.create_task(job.tick())
    await source.entered.wait()
    for _ in range(3):  # the scheduler's ticks while the poll runs on
        job.skipped_tick()
    rig.clock.advance(95)
    source.release.set()
    assert await poll is True
    assert await job.tick() is True  # a poll within its interval says nothing

    [overran] = rig.events("poll_overran")
    assert {key: overran[key] for key in ("source", "took_s", "interval_s", "ticks_skipped")} == {
        "source": "actions",
        "took_s": 95.0,
        "interval_s": 30,
        "ticks_skipped": 3,
    }
    assert overran["log_level"] == "warning" and overran["ok"] is True
    assert rig.value("cloudpilot_poll_overruns_total", "actions") == 1
    assert rig.value("cloudpilot_poll_ticks_skipped_total", "actions") == 3
