"""Seeweb ECS server list and per-server CPU samples, read in sweeps that resume.

A poll lists the servers, then reads the CPU series of the watched ones, the least recently read
first, each answer handled as it arrives and dropped (only the new samples are kept, in facts).
A sweep has a time budget (half the poll's timeout by default): when it runs out, the poll ends
with what it read, and the next one starts with the servers this one did not reach, so every
server is read at least once per `max(interval, servers / rate)` and none is left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import datetime
from fnmatch import fnmatchcase

import structlog

from daemon.client.errors import NotFoundError
from daemon.client.records import MetricSample, Server
from daemon.clock import Clock
from daemon.facts import CpuSample, Facts, ServerFact
from daemon.models import Event
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics
from daemon.providers.seeweb.client import SeewebClient
from daemon.sources.base import DEFAULT_CONCURRENCY, cursor_map, server_series
from daemon.state.store import Cursor

PROVIDER = "seeweb"


class MetricsSource:
    """Refresh server facts, and turn each new CPU sample of the watched servers into an event."""

    name = "metrics"
    # The cursor's per-server high-water time keeps a sample from coming twice.
    CURSOR_DEDUPS = True

    def __init__(
        self,
        client: SeewebClient,
        facts: Facts,
        clock: Clock,
        *,
        metrics: Metrics,
        servers: Sequence[str] = ("*",),
        concurrency: int = DEFAULT_CONCURRENCY,
        budget_s: float | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._client = client
        self._facts = facts
        self._clock = clock
        self._metrics = metrics
        self._globs = tuple(servers)
        self._concurrency = concurrency
        self._budget_s = budget_s
        self._log = log
        self._watched: frozenset[str] = frozenset()
        self.remaining = 0
        """Watched servers the last sweep did not reach (read first by the next)."""
        metrics.read_from(self.series)

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return a `seeweb.server.cpu` event per sample newer than the cursor, per server."""
        now = self._clock.now()
        listed = await self._client.list_servers()
        self._facts.replace_servers(PROVIDER, (server_fact(s, now) for s in listed))
        watched = [s for s in listed if any(fnmatchcase(s.name, g) for g in self._globs)]
        self._watched = frozenset(s.name for s in watched)
        last_seen = cursor_map(cursor, "last")
        # What a server was last read up to stays until it is read again (or leaves the list).
        last = {s.name: str(last_seen[s.name]) for s in watched if s.name in last_seen}
        # Fair: servers never read first, then the least recently read.
        queue = iter(sorted(watched, key=lambda s: (s.name in last, last.get(s.name, ""))))
        deadline = None if self._budget_s is None else self._clock.monotonic() + self._budget_s
        events: list[Event] = []
        read = 0

        async def sweep() -> None:
            nonlocal read
            for server in queue:
                if deadline is not None and self._clock.monotonic() >= deadline:
                    return
                cpu = await self._cpu(server.name)
                read += 1
                self._take(server, cpu, last, events)

        await asyncio.gather(*(sweep() for _ in range(max(1, self._concurrency))))
        self.remaining = len(watched) - read
        if self.remaining and self._log is not None:
            self._log.warning(
                "sweep_incomplete",
                source=self.name,
                read=read,
                remaining=self.remaining,
                budget_s=self._budget_s,
                reason="the sweep's time ran out; the next poll reads these first. Raise "
                "[seeweb] rate (or concurrency) if it happens on every poll",
            )
        return events, {"last": last}

    def _take(
        self, server: Server, cpu: Sequence[MetricSample], last: dict[str, str], out: list[Event]
    ) -> None:
        """Keep a server's new CPU samples in facts and events; move its mark past them."""
        since = last.get(server.name)
        samples = new_samples(cpu, datetime.fromisoformat(since) if since else None)
        for sample in samples:
            percent = min(100.0, max(0.0, sample.value))
            self._facts.add_cpu(PROVIDER, server.name, CpuSample(sample.t, percent, server.cores))
            out.append(self._event(server, sample.t, percent))
        if samples:
            last[server.name] = samples[-1].t.isoformat()

    def series(self) -> Iterator[Sample]:
        """Return the watched servers' cores and latest CPU share, and what the sweep left."""
        yield from server_series(self._metrics, self._facts, PROVIDER, self._watched)
        yield self._metrics.sweep_remaining, (self.name,), self.remaining

    async def _cpu(self, name: str) -> Sequence[MetricSample]:
        try:
            return await self._client.server_cpu(name)
        except NotFoundError:
            return ()  # deleted between the listing and now; gone from the next listing

    def _event(self, server: Server, time: datetime, percent: float) -> Event:
        return Event(
            type="seeweb.server.cpu",
            key=f"seeweb.cpu:{server.name}:{time.isoformat()}",
            time=time,
            resource=server.name,
            data={"server": server.name, "cpu_percent": round(percent, 2), "cores": server.cores},
            source=self.name,
        )


def new_samples(cpu: Sequence[MetricSample], since: datetime | None) -> list[MetricSample]:
    """Return the CPU samples taken after `since`, oldest first."""
    samples = sorted(cpu, key=lambda s: s.t)
    return [s for s in samples if since is None or s.t > since]


def server_fact(server: Server, now: datetime) -> ServerFact:
    """Return what a server listing says about one Seeweb server."""
    return ServerFact(
        provider=PROVIDER,
        name=server.name,
        id=server.name,
        observed_at=now,
        plan=server.plan,
        cores=server.cores,
        status=server.status,
        group=server.group,
        notes=server.notes,
        location=server.location,
    )
