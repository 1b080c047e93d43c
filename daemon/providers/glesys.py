"""The Glesys API client: server list, details, CPU usage, and changing cores in place."""

from __future__ import annotations

import random

import aiohttp
from pydantic import Field, model_validator

from daemon.clock import Clock
from daemon.providers.base import (
    BasicAuth,
    ClientSettings,
    HttpProvider,
    RequestLog,
    RequestObserver,
    Secret,
)
from daemon.providers.records import (
    Flag,
    Integer,
    Number,
    Record,
    RequiredInteger,
    RequiredText,
    Text,
)


class GlesysServerSummary(Record):
    """A line of `server/list`."""

    serverid: RequiredText
    hostname: Text = None
    datacenter: Text = None
    platform: Text = None


class GlesysCost(Record):
    """What a Glesys server costs per period."""

    amount: Number = None
    currency: Text = None
    timeperiod: Text = None


class GlesysServer(Record):
    """A Glesys server's details; `state` is only known when asked for."""

    serverid: RequiredText
    hostname: Text = None
    description: Text = None
    cpucores: RequiredInteger
    memorysize: Integer = None
    disksize: Integer = None
    datacenter: Text = None
    platform: Text = None
    templatename: Text = None
    state: Text = None
    isrunning: Flag = None
    islocked: Flag = None
    cost: GlesysCost | None = None


class GlesysUsage(Record):
    """A usage figure of `server/status`: how much of `max` is used, in `unit`."""

    usage: Number = None
    max: Number = None
    unit: Text = None


class GlesysStatus(Record):
    """A Glesys server's live state and CPU usage (in cores used out of its cores)."""

    state: Text = None
    cpu: GlesysUsage = Field(default_factory=GlesysUsage)

    @property
    def cpu_percent(self) -> float | None:
        """Return CPU use as a percentage of the server's cores, if the platform reports it."""
        if self.cpu.usage is None or not self.cpu.max:
            return None
        if (self.cpu.unit or "cores").lower() == "%":
            return min(100.0, self.cpu.usage)
        return min(100.0, 100.0 * self.cpu.usage / self.cpu.max)


class _Envelope(Record):
    """Glesys wraps every answer in `{"response": {"status": …, …}}`; unwrap it."""

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("response"), dict):
            return data["response"]
        return data


class _ServerList(_Envelope):
    servers: tuple[GlesysServerSummary, ...]


class _ServerDetails(_Envelope):
    server: GlesysServer


class _ServerStatus(_Envelope):
    server: GlesysStatus


class GlesysClient(HttpProvider):
    """The Glesys API, authenticated with a project id and an API key (HTTP Basic)."""

    name = "glesys"
    api_prefix = ""
    capabilities = frozenset({"set_cores"})

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        clock: Clock,
        project: str,
        key: Secret,
        settings: ClientSettings | None = None,
        rng: random.Random | None = None,
        logger: RequestLog | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        super().__init__(
            session,
            base_url,
            clock=clock,
            auth=BasicAuth(project, key),
            settings=settings,
            rng=rng,
            logger=logger,
            observer=observer,
        )

    async def list_servers(self) -> list[GlesysServerSummary]:
        """Return the project's servers."""
        # Glesys reads are POSTs that change nothing, so they may be retried like GETs.
        reply = await self.fetch(_ServerList, "POST", "/server/list", body={}, retry_safe=True)
        return list(reply.servers)

    async def server_details(self, serverid: str) -> GlesysServer:
        """Return a server's details, its state included."""
        reply = await self.fetch(
            _ServerDetails,
            "POST",
            "/server/details",
            body={"serverid": serverid, "includestate": "yes"},
            retry_safe=True,
        )
        return reply.server

    async def server_status(self, serverid: str) -> GlesysStatus:
        """Return a server's state and CPU usage."""
        reply = await self.fetch(
            _ServerStatus,
            "POST",
            "/server/status",
            body={"serverid": serverid, "statustype": "state,cpu"},
            retry_safe=True,
        )
        return reply.server

    async def set_cores(self, serverid: str, cores: int) -> GlesysServer:
        """Change a server's cores; Glesys reboots it and the change shows once it is back."""
        if cores < 1:
            raise ValueError(f"cores must be at least 1, not {cores}")
        reply = await self.fetch(
            _ServerDetails, "POST", "/server/edit", body={"serverid": serverid, "cpucores": cores}
        )
        return reply.server
