"""Poll every source on its interval; own the error handling, the back-off and the bookkeeping."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from daemon.client.errors import RateLimitedError, ServerError
from daemon.clock import Clock
from daemon.facts import Facts
from daemon.models import Event
from daemon.observability.metrics import Metrics
from daemon.retry import backoff_delay
from daemon.sources.base import Source
from daemon.state.store import Cursor

CursorReader = Callable[[str], Awaitable[Cursor | None]]
Sink = Callable[[str, list[Event], Cursor], Awaitable[None]]

MAX_BACKOFF_S = 3600.0
MAX_RETRY_AFTER_S = 86400.0  # the longest wait a provider's Retry-After can impose on a source
BACKOFF_INTERVALS = 10
MIN_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 600.0
MAX_ERROR_CHARS = 500


def poll_timeout(interval: float) -> float:
    """Return how long a poll of a source with this interval may run before it is cut."""
    return min(max(MIN_TIMEOUT_S, interval), MAX_TIMEOUT_S)


class SourceJob:
    """One source's poll, with its interval, its failure state and its back-off.

    `tick` reads the cursor, polls, hands (name, events, cursor) to the sink, which stores them
    in one transaction, and records the success. Any error (the poll's or the sink's) is counted,
    logged once when the source starts failing, and backed off: ticks are skipped until an
    exponential, jittered delay has passed on the clock's monotonic time.
    """

    def __init__(
        self,
        source: Source,
        *,
        interval: float,
        cursor_of: CursorReader,
        sink: Sink,
        facts: Facts,
        metrics: Metrics,
        clock: Clock,
        log: structlog.typing.FilteringBoundLogger,
        rng: random.Random | None = None,
        timeout: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"source {source.name}: interval must be positive, not {interval}")
        self.source = source
        self.name = source.name
        self.interval = interval
        self.timeout = timeout or poll_timeout(interval)
        self.max_backoff = max(interval, min(BACKOFF_INTERVALS * interval, MAX_BACKOFF_S))
        self._cursor_of = cursor_of
        self._sink = sink
        self._facts = facts
        self._metrics = metrics
        self._clock = clock
        self._log = log.bind(source=self.name)
        self._rng = rng or random.Random()
        self.polled_once = False
        self.first_success = asyncio.Event()
        self.failing = False
        self.consecutive_failures = 0
        self.retry_at: float | None = None  # monotonic time before which ticks are skipped
        self._failing_since = 0.0
        self._lock = asyncio.Lock()
        self._skipped = 0  # ticks the scheduler skipped since the last poll ended

    @property
    def backing_off(self) -> bool:
        """Return whether the next tick would be skipped."""
        return self.retry_at is not None and self._clock.monotonic() < self.retry_at

    def skipped_tick(self) -> None:
        """Count a scheduled poll skipped because this source's last poll had not ended."""
        self._skipped += 1
        self._metrics.poll_ticks_skipped.labels(self.name).inc()

    async def tick(self) -> bool:
        """Poll once unless backing off; return True when the poll and the sink succeeded."""
        # Ticks of one source take turns: each must start from the cursor the last one stored.
        async with self._lock:
            if self.backing_off:
                return False
            started = self._clock.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    cursor = await self._cursor_of(self.name)
                    events, next_cursor = await self.source.poll(cursor)
                    await self._sink(self.name, events, next_cursor)
            except Exception as exc:  # any failure is this source's, and must not stop others
                took = self._clock.monotonic() - started
                self._failed(exc, took)
                self._overran(took, ok=False)
                return False
            took = self._clock.monotonic() - started
            self._succeeded(took)
            self._overran(took, ok=True)
            return True

    def _overran(self, took_s: float, *, ok: bool) -> None:
        """Say once, when a poll ends, that it took longer than the interval, and what it cost."""
        skipped, self._skipped = self._skipped, 0
        if took_s <= self.interval:
            return
        self._metrics.poll_overruns.labels(self.name).inc()
        self._log.warning(
            "poll_overran",
            took_s=round(took_s, 3),
            interval_s=self.interval,
            ticks_skipped=skipped,
            ok=ok,
        )

    def _succeeded(self, took_s: float) -> None:
        now = self._clock.now()
        self._metrics.poll_duration.labels(self.name).observe(took_s)
        self._metrics.last_poll_success.labels(self.name).set(now.timestamp())
        self._metrics.source_up.labels(self.name).set(1)
        self._facts.polled_at[self.name] = now
        if self.failing:
            self._log.info(
                "source_recovered",
                failures=self.consecutive_failures,
                down_s=round(self._clock.monotonic() - self._failing_since, 3),
            )
        self.failing = False
        self.consecutive_failures = 0
        self.retry_at = None
        self.polled_once = True
        self.first_success.set()

    def _failed(self, exc: Exception, took_s: float) -> None:
        self._metrics.poll_duration.labels(self.name).observe(took_s)
        self._metrics.poll_errors.labels(self.name).inc()
        self._metrics.source_up.labels(self.name).set(0)
        self.consecutive_failures += 1
        delay = self.backoff(self.consecutive_failures, _retry_after(exc))
        now = self._clock.monotonic()
        self.retry_at = now + delay
        if not self.failing:
            self.failing = True
            self._failing_since = now
            # The message only: provider errors carry no secrets, and a traceback's locals might.
            self._log.warning(
                "source_failed",
                error=describe(exc),
                error_type=type(exc).__name__,
                retry_in_s=round(delay, 3),
            )

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        """Return how long to wait after `failures` failures in a row, jittered and capped."""
        delay = backoff_delay(failures, first=self.interval, cap=self.max_backoff, rng=self._rng)
        if retry_after is not None:
            # The provider said when to come back: not sooner, whatever the interval (a day at
            # most, so a wrong header cannot silence a source for good).
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        return delay


def _retry_after(exc: Exception) -> float | None:
    if isinstance(exc, RateLimitedError | ServerError):
        return exc.retry_after
    return None


def describe(exc: BaseException) -> str:
    """Return an error's message for a log line: its text, or its type when it has none."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class SkippedTickFilter(logging.Filter):
    """Drop APScheduler's free-text warning for each tick it skips or runs late.

    A poll that runs on past its interval made one per tick (44 in a 110 s hang), timestamps in
    the event field; SourceJob says it once, with numbers, when the poll ends, and the ticks
    count in cloudpilot_poll_ticks_skipped_total. Every other APScheduler line goes through.
    """

    TEMPLATES = frozenset(
        {
            'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
            'Run time of job "%s" was missed by %s',
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the two per-tick warnings."""
        return record.msg not in self.TEMPLATES


class PollExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """APScheduler's asyncio executor, except that shutting down leaves running polls alone.

    The stock one cancels every job at shutdown, even one not yet started, and logs that as a
    job error; PollScheduler.stop() instead waits for them and cancels only what outlives it.
    """

    def shutdown(self, wait: bool = True) -> None:
        """Leave running jobs to PollScheduler.stop()."""

    def running(self) -> set[asyncio.Future[Any]]:
        """Return the jobs submitted and not yet done."""
        # The set exists only once the scheduler has started the executor.
        return {f for f in getattr(self, "_pending_futures", ()) if not f.done()}


class PollScheduler:
    """Run one APScheduler job per source; stop cleanly; say which sources have polled."""

    def __init__(
        self,
        jobs: Sequence[SourceJob],
        *,
        log: structlog.typing.FilteringBoundLogger,
        stop_timeout: float = 10.0,
    ) -> None:
        names = [job.name for job in jobs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"sources polled twice: {', '.join(duplicates)}")
        self.jobs = {job.name: job for job in jobs}
        self._log = log
        self._stop_timeout = stop_timeout
        self._executor = PollExecutor()
        self._scheduler = AsyncIOScheduler(timezone=UTC, executors={"default": self._executor})
        self._ticks: set[asyncio.Task[bool]] = set()
        self._stopping = False

    @property
    def scheduler(self) -> AsyncIOScheduler:
        """Return the underlying APScheduler scheduler (for inspection)."""
        return self._scheduler

    @property
    def running(self) -> bool:
        """Return whether the scheduler is started and not stopping."""
        return bool(self._scheduler.running) and not self._stopping

    def start(self) -> None:
        """Add one job per source, each first due now, and start; call inside the event loop."""
        # APScheduler schedules on the system clock, so its first run time comes from it too.
        first = datetime.now(UTC)
        for job in self.jobs.values():
            self._scheduler.add_job(
                self._run,
                IntervalTrigger(seconds=job.interval, jitter=min(job.interval * 0.1, 30.0)),
                args=[job],
                id=job.name,
                name=f"poll {job.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(job.interval)),
                next_run_time=first,
            )
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, SkippedTickFilter) for f in logger.filters):
                logger.addFilter(SkippedTickFilter())
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._scheduler.start()
        self._log.info("polling_started", sources=sorted(self.jobs))

    def _skipped(self, event: JobEvent) -> None:
        job = self.jobs.get(event.job_id)
        if job is not None:
            job.skipped_tick()

    async def stop(self) -> None:
        """Stop scheduling, let running polls finish within the stop timeout, cancel the rest."""
        if self._stopping:
            return
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # APScheduler applies the shutdown on the next loop iteration
        pending: set[asyncio.Future[Any]] = self._executor.running()
        pending.update(t for t in self._ticks if not t.done())
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self._stop_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._log.info("polling_stopped", cancelled=len(pending))

    def all_polled_once(self) -> bool:
        """Return whether every source has had a successful poll since start."""
        return all(job.polled_once for job in self.jobs.values())

    def polled_once(self, names: Iterable[str]) -> bool:
        """Return whether each named source (of those scheduled) has had a successful poll."""
        return all(self.jobs[n].polled_once for n in names if n in self.jobs)

    async def poll_all_once(self) -> dict[str, bool]:
        """Tick every source once, concurrently; return which polls succeeded, by source."""
        jobs = list(self.jobs.values())
        results = await asyncio.gather(*(self._spawn(job) for job in jobs))
        return {job.name: ok for job, ok in zip(jobs, results, strict=True)}

    def _spawn(self, job: SourceJob) -> asyncio.Task[bool]:
        task = asyncio.create_task(job.tick(), name=f"poll {job.name}")
        self._ticks.add(task)
        task.add_done_callback(self._ticks.discard)
        return task

    async def _run(self, job: SourceJob) -> None:
        if self._stopping:
            return
        try:
            await job.tick()
        except asyncio.CancelledError:
            # Only stop() cancels a poll that outlived its timeout; APScheduler would log the
            # cancellation as a job error. Any other cancellation is real and goes up.
            if not self._stopping:
                raise
