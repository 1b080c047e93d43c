"""PollScheduler: one APScheduler job per source, independent sources, clean stop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from source_fakes import HangingSource, Rig, ScriptedSource, waiting_for

from daemon.client.errors import ServerError
from daemon.sources.scheduler import PollScheduler, SourceJob

WAIT = 5.0  # a bound on waiting for an event, never a sleep


def leftover_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


async def test_one_job_per_source_with_the_trigger_options() -> None:
    rig = Rig()
    jobs = [
        rig.job(HangingSource("actions"), interval=30),
        rig.job(HangingSource("billing"), interval=3600),
    ]
    scheduler = PollScheduler(jobs, log=rig.log)
    before = datetime.now(UTC)
    scheduler.start()
    try:
        found = {job.id: job for job in scheduler.scheduler.get_jobs()}
        assert set(found) == {"actions", "billing"}
        for name, interval, jitter in (("actions", 30, 3.0), ("billing", 3600, 30.0)):
            job = found[name]
            assert isinstance(job.trigger, IntervalTrigger)
            assert job.trigger.interval == timedelta(seconds=interval)
            assert job.trigger.jitter == jitter
            assert job.max_instances == 1
            assert job.coalesce is True
            assert job.misfire_grace_time == interval
            # Due at once: either still pending at start time or already run and rescheduled.
            assert job.next_run_time is not None
            assert job.next_run_time >= before - timedelta(seconds=1)
        assert scheduler.running
        assert rig.events("polling_started")[0]["sources"] == ["actions", "billing"]
    finally:
        await scheduler.stop()
    assert not scheduler.running
    assert leftover_tasks() == set()


async def test_sources_poll_at_start_and_a_hanging_one_blocks_no_other() -> None:
    rig = Rig()
    hanging = HangingSource("k8sgpu")
    healthy = ScriptedSource("actions")
    jobs = [rig.job(hanging), rig.job(healthy)]
    scheduler = PollScheduler(jobs, log=rig.log, stop_timeout=0.01)
    scheduler.start()
    try:
        await asyncio.wait_for(jobs[1].first_success.wait(), WAIT)
        await asyncio.wait_for(hanging.entered.wait(), WAIT)
        assert scheduler.polled_once(["actions"])
        assert not scheduler.polled_once(["actions", "k8sgpu"])
        assert scheduler.polled_once(["actions", "not-configured"])
        assert not scheduler.all_polled_once()
        assert [name for name, _, _ in rig.batches] == ["actions"]
    finally:
        await scheduler.stop()
    assert hanging.cancelled, "a poll still running after the stop timeout is cancelled"
    assert rig.events("polling_stopped")[0]["cancelled"] == 1
    assert leftover_tasks() == set()


async def test_stop_lets_a_running_poll_finish() -> None:
    rig = Rig()
    source = HangingSource("logs")
    job = rig.job(source)
    scheduler = PollScheduler([job], log=rig.log, stop_timeout=WAIT)
    scheduler.start()
    await asyncio.wait_for(source.entered.wait(), WAIT)
    stopping = asyncio.create_task(scheduler.stop())
    await asyncio.sleep(0)  # let stop() begin waiting
    assert not stopping.done()
    source.release.set()
    await asyncio.wait_for(stopping, WAIT)
    assert job.polled_once and not source.cancelled
    assert rig.batches == [("logs", [], {"released": True})]
    assert rig.events("polling_stopped")[0]["cancelled"] == 0
    assert leftover_tasks() == set()


async def test_poll_all_once_runs_every_source_concurrently() -> None:
    rig = Rig()
    handshake = asyncio.Event()

    async def open_handshake(cursor: object) -> None:
        handshake.set()

    # `waits` only finishes once `opens` has run: a sequential poll would never get there.
    waits = ScriptedSource("waits", [waiting_for(handshake)])
    opens = ScriptedSource("opens", [open_handshake])
    failing = ScriptedSource(
        "failing", [ServerError("k8sgpu", "GET", "/k8sgpu/v1/pod/", "HTTP 500", status=500)]
    )
    scheduler = PollScheduler([rig.job(waits), rig.job(opens), rig.job(failing)], log=rig.log)
    results = await asyncio.wait_for(scheduler.poll_all_once(), WAIT)
    assert results == {"waits": True, "opens": True, "failing": False}
    assert not scheduler.all_polled_once()
    assert scheduler.polled_once(["waits", "opens"])
    assert [e["source"] for e in rig.events("source_failed")] == ["failing"]
    await scheduler.stop()  # never started: nothing to shut down
    assert leftover_tasks() == set()


async def test_a_source_may_be_scheduled_once() -> None:
    rig = Rig()
    with pytest.raises(ValueError, match="sources polled twice: logs"):
        PollScheduler(
            [rig.job(ScriptedSource("logs")), rig.job(ScriptedSource("logs"))], log=rig.log
        )


class CountingJob(SourceJob):
    """A job that says when the scheduler has skipped `enough` of its ticks."""

    enough = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped = asyncio.Event()
        self.count = 0

    def skipped_tick(self) -> None:
        super().skipped_tick()
        self.count += 1
        if self.count >= self.enough:
            self.skipped.set()


async def test_ticks_skipped_during_a_long_poll_are_counted_not_logged_one_by_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    source = HangingSource("actions")
    job = CountingJob(
        source, interval=0.01, cursor_of=rig.cursor_of, sink=rig.sink, facts=rig.facts,
        metrics=rig.metrics, clock=rig.clock, log=rig.log,
    )  # fmt: skip
    scheduler = PollScheduler([job], log=rig.log, stop_timeout=WAIT)
    scheduler.start()
    try:
        await asyncio.wait_for(job.skipped.wait(), WAIT)
        rig.clock.advance(1)
        source.release.set()
        await asyncio.wait_for(job.first_success.wait(), WAIT)
    finally:
        await scheduler.stop()
    # APScheduler's own line per skipped tick ("maximum number of running instances reached")
    # is gone; the poll's end says it once, with the count.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler")] == []
    [overran] = rig.events("poll_overran")
    assert overran["ticks_skipped"] >= 2
    assert rig.value("cloudpilot_poll_ticks_skipped_total", "actions") == job.count
