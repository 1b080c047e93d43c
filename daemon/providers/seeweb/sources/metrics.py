"""Seeweb ECS server list and per-server CPU samples."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from functools import partial

from daemon.client.errors import NotFoundError
from daemon.client.records import MetricSample, Server, ServerMetrics
from daemon.clock import Clock
from daemon.facts import CpuSample, Facts, ServerFact
from daemon.models import Event
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics
from daemon.providers.seeweb.client import SeewebClient
from daemon.sources.base import DEFAULT_CONCURRENCY, cursor_map, gather_limited, server_series
from daemon.state.store import Cursor

PROVIDER = "seeweb"


class MetricsSource:
    """Refresh server facts, and turn each new CPU sample of the watched servers into an event."""

    name = "metrics"

    def __init__(
        self,
        client: SeewebClient,
        facts: Facts,
        clock: Clock,
        *,
        metrics: Metrics,
        servers: Sequence[str] = ("*",),
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._client = client
        self._facts = facts
        self._clock = clock
        self._metrics = metrics
        self._globs = tuple(servers)
        self._concurrency = concurrency
        self._watched: frozenset[str] = frozenset()
        metrics.read_from(self.series)

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return a `seeweb.server.cpu` event per sample newer than the cursor, per server."""
        now = self._clock.now()
        listed = await self._client.list_servers()
        self._facts.replace_servers(PROVIDER, (server_fact(s, now) for s in listed))
        watched = [s for s in listed if any(fnmatchcase(s.name, g) for g in self._globs)]
        self._watched = frozenset(s.name for s in watched)
        series = await gather_limited(
            [partial(self._series, s.name) for s in watched], self._concurrency
        )
        last_seen = cursor_map(cursor, "last")
        events: list[Event] = []
        last: dict[str, str] = {}
        for server, cpu in zip(watched, series, strict=True):
            since = last_seen.get(server.name)
            samples = new_samples(cpu, datetime.fromisoformat(since) if since else None)
            for sample in samples:
                percent = min(100.0, max(0.0, sample.value))
                cpu_sample = CpuSample(sample.t, percent, server.cores)
                self._facts.add_cpu(PROVIDER, server.name, cpu_sample)
                events.append(self._event(server, sample.t, percent))
            if samples or since:
                last[server.name] = samples[-1].t.isoformat() if samples else str(since)
        return events, {"last": last}

    def series(self) -> Iterator[Sample]:
        """Return the cores and latest CPU share of the watched servers (the scrape's reader)."""
        return server_series(self._metrics, self._facts, PROVIDER, self._watched)

    async def _series(self, name: str) -> ServerMetrics | None:
        try:
            return await self._client.server_metrics(name)
        except NotFoundError:
            return None  # deleted between the listing and now; gone from the next listing

    def _event(self, server: Server, time: datetime, percent: float) -> Event:
        return Event(
            type="seeweb.server.cpu",
            key=f"seeweb.cpu:{server.name}:{time.isoformat()}",
            time=time,
            resource=server.name,
            data={"server": server.name, "cpu_percent": round(percent, 2), "cores": server.cores},
            source=self.name,
        )


def new_samples(series: ServerMetrics | None, since: datetime | None) -> list[MetricSample]:
    """Return the CPU samples taken after `since`, oldest first."""
    samples = sorted(series.cpu if series else (), key=lambda s: s.t)
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
