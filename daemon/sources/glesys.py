"""Glesys servers: cores and CPU use, read from `server/status` on every poll."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from daemon.clock import Clock
from daemon.facts import CpuSample, Facts, ServerFact
from daemon.models import Event
from daemon.observability.metrics import Metrics
from daemon.providers.glesys import GlesysClient, GlesysServerSummary, GlesysStatus
from daemon.sources.base import DEFAULT_CONCURRENCY, drop_series, gather_limited
from daemon.state.store import Cursor

PROVIDER = "glesys"


class GlesysSource:
    """Refresh Glesys server facts and gauges; emit a `glesys.server.cpu` event per server."""

    name = "glesys"

    def __init__(
        self,
        client: GlesysClient,
        facts: Facts,
        clock: Clock,
        *,
        metrics: Metrics,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._client = client
        self._facts = facts
        self._clock = clock
        self._metrics = metrics
        self._concurrency = concurrency
        self._gauged: set[str] = set()

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return one CPU event per server; Glesys keeps no history, so the cursor is empty."""
        now = self._clock.now().replace(microsecond=0)
        listed = await self._client.list_servers()
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
                )
            )
            self._metrics.server_cores.labels(PROVIDER, name).set(cores)
            percent = status.cpu_percent
            if percent is None:
                continue
            self._facts.add_cpu(PROVIDER, name, CpuSample(now, percent, cores))
            self._metrics.server_cpu.labels(PROVIDER, name).set(percent / 100)
            events.append(self._event(server.serverid, name, now, percent, cores))
        self._facts.replace_servers(PROVIDER, facts)
        names = {f.name for f in facts}
        for gone in self._gauged - names:
            drop_series(self._metrics.server_cores, PROVIDER, gone)
            drop_series(self._metrics.server_cpu, PROVIDER, gone)
        self._gauged = names
        return events, {}

    async def _status(self, server: GlesysServerSummary) -> tuple[GlesysStatus, int]:
        status = await self._client.server_status(server.serverid)
        cpu = status.cpu
        if (cpu.unit or "cores").lower() == "cores" and cpu.max:
            return status, int(cpu.max)
        # The status gave a share rather than cores: ask the details for the cores.
        return status, (await self._client.server_details(server.serverid)).cpucores

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
