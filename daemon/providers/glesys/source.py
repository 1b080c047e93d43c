"""Glesys servers: cores and CPU use from `server/status` on every poll, allowed sizes hourly."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import partial

from daemon.client.base import RequestLog
from daemon.client.errors import ProviderError
from daemon.clock import Clock
from daemon.facts import CpuSample, Facts, ServerFact
from daemon.models import Event
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics
from daemon.providers.glesys.client import (
    GlesysAllowedArguments,
    GlesysClient,
    GlesysServerSummary,
    GlesysStatus,
)
from daemon.sources.base import DEFAULT_CONCURRENCY, gather_limited, server_series
from daemon.state.store import Cursor

PROVIDER = "glesys"
# The core counts a platform allows change rarely: read them once an hour.
ALLOWED_EVERY_S = 3600.0


class GlesysSource:
    """Refresh Glesys server facts and gauges; emit a `glesys.server.cpu` event per server."""

    name = "glesys"
    # Each poll's samples are keyed by its own time: a sample can never come twice.
    CURSOR_DEDUPS = True

    def __init__(
        self,
        client: GlesysClient,
        facts: Facts,
        clock: Clock,
        *,
        metrics: Metrics,
        concurrency: int = DEFAULT_CONCURRENCY,
        log: RequestLog | None = None,
    ) -> None:
        self._client = client
        self._facts = facts
        self._clock = clock
        self._metrics = metrics
        self._concurrency = concurrency
        self._listed: frozenset[str] = frozenset()
        self._allowed: GlesysAllowedArguments | None = None
        self._allowed_read = float("-inf")
        self._log = log
        metrics.read_from(self.series)

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return one CPU event per server; Glesys keeps no history, so the cursor is empty."""
        now = self._clock.now().replace(microsecond=0)
        listed = await self._client.list_servers()
        allowed = await self._allowed_sizes()
        statuses = await gather_limited(
            [partial(self._status, s) for s in listed], self._concurrency
        )
        facts: list[ServerFact] = []
        events: list[Event] = []
        for server, (status, cores) in zip(listed, statuses, strict=True):
            name = server.hostname or server.serverid
            facts.append(
                ServerFact(
                    provider=PROVIDER,
                    name=name,
                    id=server.serverid,
                    observed_at=now,
                    cores=cores,
                    status=status.state,
                    location=server.datacenter,
                    plan=server.platform,
                    sizes=allowed.cores_for(server.platform) or None if allowed else None,
                )
            )
            percent = status.cpu_percent
            if percent is None:
                continue
            self._facts.add_cpu(PROVIDER, name, CpuSample(now, percent, cores))
            events.append(self._event(server.serverid, name, now, percent, cores))
        self._facts.replace_servers(PROVIDER, facts)
        self._listed = frozenset(f.name for f in facts)
        return events, {}

    def series(self) -> Iterator[Sample]:
        """Return the cores and latest CPU share of the servers listed (the scrape's reader)."""
        return server_series(self._metrics, self._facts, PROVIDER, self._listed)

    async def _status(self, server: GlesysServerSummary) -> tuple[GlesysStatus, int]:
        status = await self._client.server_status(server.serverid)
        if status.cpu.cores is not None:
            return status, status.cpu.cores
        # The status gave a percentage rather than cores: ask the details for the cores.
        return status, (await self._client.server_details(server.serverid)).cpucores

    async def _allowed_sizes(self) -> GlesysAllowedArguments | None:
        """Return the core counts each platform allows, read at most hourly; None if unknown."""
        if self._clock.monotonic() - self._allowed_read < ALLOWED_EVERY_S:
            return self._allowed
        try:
            self._allowed = await self._client.allowed_arguments()
        except ProviderError as exc:
            # Resizes still keep within min_cores and max_cores; Glesys refuses a size it lacks.
            if self._log is not None:
                self._log.warning(
                    "glesys_allowed_sizes_unread",
                    endpoint="POST /server/allowedarguments",
                    error=str(exc),
                    kept="the sizes read before" if self._allowed else "min_cores to max_cores",
                )
        self._allowed_read = self._clock.monotonic()
        return self._allowed

    def _event(self, serverid: str, name: str, time: datetime, percent: float, cores: int) -> Event:
        return Event(
            type="glesys.server.cpu",
            key=f"glesys.cpu:{serverid}:{time.isoformat()}",
            time=time,
            resource=name,
            data={
                "server": name,
                "serverid": serverid,
                "cpu_percent": round(percent, 2),
                "cores": cores,
            },
            source=self.name,
        )
