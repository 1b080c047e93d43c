"""The Glesys API client: server list, details, CPU usage, allowed sizes, changing cores in place.

The live API and its docs have moved over the years; the records here read every shape a working
client has met (see tests/fixtures/recorded/glesys/): `isrunning`/`islocked`/`status` beside the
deprecated `state`, CPU usage in cores or, on old platforms, in percent, numbers as strings.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Annotated, Any

import aiohttp
from pydantic import Field, model_validator

from daemon.client.base import (
    BasicAuth,
    Call,
    ClientSettings,
    HttpProvider,
    ProblemObserver,
    Reply,
    RequestLog,
    RequestObserver,
    WaitObserver,
)
from daemon.client.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    ProviderError,
    RequestRejected,
    ServerError,
)
from daemon.client.records import (
    EachItem,
    Flag,
    Integer,
    Number,
    Record,
    RequiredInteger,
    RequiredText,
    Text,
)
from daemon.clock import Clock
from daemon.secret import Secret

#: Glesys's own status code for a server locked by a change under way (sent with HTTP 500).
LOCKED_CODE = 606
#: How Glesys says a server id is unknown: with HTTP 400, not 404.
NOT_FOUND_TEXT = "Could not find server"
#: The functions Cloudpilot calls; a permanent API key must be allowed each of them.
FUNCTIONS = (
    "server/list",
    "server/details",
    "server/status",
    "server/edit",
    "server/allowedarguments",
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
    """A Glesys server's details; the running and locked state only when asked for.

    The API answers `isrunning`, `islocked` and `status` (running, updating, ready) with
    `includestate`, and calls the older `state` (running, stopped, locked) deprecated; older
    answers carry only `state`. `is_running` and `is_locked` read whichever is present.
    """

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
    status: Text = None
    isrunning: Flag = None
    islocked: Flag = None
    cost: GlesysCost | None = None

    @property
    def is_running(self) -> bool | None:
        """Return whether the server runs, from whichever state field the answer carried."""
        if self.isrunning is not None:
            return self.isrunning
        word = (self.status or self.state or "").strip().lower()
        if word == "running":
            return True
        if word in ("stopped", "ready"):
            return False
        return None  # locked/updating: being changed, neither yet

    @property
    def is_locked(self) -> bool | None:
        """Return whether the server is locked by a change under way."""
        if self.islocked is not None:
            return self.islocked
        word = (self.status or self.state or "").strip().lower()
        if word in ("locked", "updating"):
            return True
        if word in ("running", "stopped", "ready"):
            return False
        return None

    def runs_with(self, cores: int) -> bool:
        """Return whether a resize to `cores` is done: unlocked, running, showing the cores."""
        return self.is_locked is False and self.is_running is True and self.cpucores == cores


class GlesysCpu(Record):
    """CPU use from `server/status`: cores used of `max` cores, or on old platforms percentages."""

    usage: Number = None
    max: Number = None
    unit: Text = None
    # The old form: {"unit": "%", "idle": "97.00", "system": …, "user": …, "nice": …}.
    idle: Number = None
    user: Number = None
    system: Number = None
    nice: Number = None

    @property
    def in_percent(self) -> bool:
        """Return whether the figures are percentages rather than cores."""
        return (self.unit or "").strip() == "%"

    @property
    def percent(self) -> float | None:
        """Return CPU use as a percentage of the server's cores, if the answer tells."""
        if self.in_percent:
            if self.usage is not None:
                share = self.usage
            elif self.idle is not None:
                share = 100.0 - self.idle
            else:
                parts = [p for p in (self.user, self.system, self.nice) if p is not None]
                if not parts:
                    return None
                share = sum(parts)
            return min(100.0, max(0.0, share))
        if self.usage is None or not self.max:
            return None
        return min(100.0, max(0.0, 100.0 * self.usage / self.max))

    @property
    def cores(self) -> int | None:
        """Return the server's cores, when the figures are in cores."""
        if self.in_percent or not self.max:
            return None
        return int(self.max)


class GlesysStatus(Record):
    """A Glesys server's live state and CPU usage."""

    state: Text = None
    cpu: GlesysCpu = Field(default_factory=GlesysCpu)

    @property
    def cpu_percent(self) -> float | None:
        """Return CPU use as a percentage of the server's cores, if the platform reports it."""
        return self.cpu.percent


def _core_values(value: object) -> list[object]:
    """Read a `cpucores` entry in any shape the API has used for it."""
    if isinstance(value, Mapping):
        value = value.get("units", value.get("values", ()))
    if not isinstance(value, list | tuple):
        return []
    return [item.get("value") if isinstance(item, Mapping) else item for item in value]


class GlesysAllowedArguments(Record):
    """`server/allowedarguments`: the core counts each platform allows, smallest first.

    Today's answer nests `argumentslist.platforms.<platform>.cpucores[].value`; older ones put the
    platform right under `argumentslist` and the counts in `units`, or in a plain list.
    """

    cores: dict[str, tuple[int, ...]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        platforms = data.get("platforms", data)
        cores: dict[str, list[int]] = {}
        if isinstance(platforms, Mapping):
            for platform, arguments in platforms.items():
                if not isinstance(arguments, Mapping) or "cpucores" not in arguments:
                    continue
                counts: list[int] = []
                for item in _core_values(arguments["cpucores"]):
                    try:
                        counts.append(int(str(item).strip()))
                    except ValueError:
                        continue
                cores[str(platform).lower()] = sorted({c for c in counts if c > 0})
        return {"cores": cores}

    def cores_for(self, platform: str | None) -> tuple[int, ...]:
        """Return the core counts a platform allows (the platform's case ignored), or ()."""
        if platform is None:
            return ()
        return self.cores.get(platform.lower(), ())


class _Envelope(Record):
    """Glesys wraps every answer in `{"response": {"status": …, …}}`; unwrap it."""

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("response"), dict):
            return data["response"]
        return data


class _ServerList(_Envelope):
    servers: Annotated[tuple[GlesysServerSummary, ...], EachItem]


class _ServerDetails(_Envelope):
    server: GlesysServer


class _ServerStatus(_Envelope):
    server: GlesysStatus


class _AllowedArguments(_Envelope):
    argumentslist: GlesysAllowedArguments


def _body_status(data: object) -> tuple[int, str] | None:
    """Return the envelope's status code and text, when they say something went wrong."""
    if not isinstance(data, Mapping) or not isinstance(data.get("response"), Mapping):
        return None
    status = data["response"].get("status")
    if not isinstance(status, Mapping):
        return None
    try:
        code = int(str(status.get("code", 200)).strip())
    except ValueError:
        return None
    return (code, " ".join(str(status.get("text") or "").split())) if code != 200 else None


class GlesysClient(HttpProvider):
    """The Glesys API, authenticated with a project id and an API key (HTTP Basic)."""

    name = "glesys"
    api_prefix = ""
    capabilities = frozenset({"set_cores"})
    auth_hint = (
        "a permanent API key works only from the addresses on its allow-list and for the "
        f"functions it is granted: allow this machine's public address and {', '.join(FUNCTIONS)} "
        "(Glesys control panel: Control API access)"
    )

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
        on_problem: ProblemObserver | None = None,
        on_wait: WaitObserver | None = None,
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
            on_problem=on_problem,
            on_wait=on_wait,
        )

    def check_answer(self, data: Any, reply: Reply) -> None:
        """Raise when a 200 answer's envelope carries another status code (older API versions)."""
        failed = _body_status(data)
        if failed is None:
            return
        code, text = failed
        where = (self.name, reply.method, reply.path)
        detail = f"status {code}" + (f": {text}" if text else "")
        if code in (401, 403):
            raise AuthError(*where, f"credentials refused ({detail}); {self.auth_hint}")
        if code >= 500:
            raise ServerError(*where, f"server error ({detail})", status=code)
        raise RequestRejected(*where, f"rejected ({detail})", status=code)

    def _classify(
        self, call: Call, reply: Reply, retry_safe: bool
    ) -> tuple[ProviderError, bool, float | None]:
        """Read Glesys's own code: 606 (`Server Locked`, sent as HTTP 500) is a busy server."""
        failed = _body_status(self.decode_body(reply))
        if failed is not None and reply.status == 400 and failed[1].startswith(NOT_FOUND_TEXT):
            detail = f"not found (HTTP 400: {failed[1]})"
            return NotFoundError(self.name, call.method, call.path, detail), False, None
        if failed is not None and failed[0] == LOCKED_CODE:
            detail = f"conflict (HTTP {reply.status}, status {LOCKED_CODE}: {failed[1]})"
            where = (self.name, call.method, call.path)
            return ConflictError(*where, detail, status=reply.status), False, None
        return super()._classify(call, reply, retry_safe)

    async def list_servers(self) -> list[GlesysServerSummary]:
        """Return the project's servers."""
        # Glesys reads are POSTs that change nothing, so they may be retried like GETs.
        reply = await self.fetch(_ServerList, "POST", "/server/list", body={}, retry_safe=True)
        return list(reply.servers)

    async def server_details(self, serverid: str) -> GlesysServer:
        """Return a server's details, its running and locked state included."""
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
        # No `statustype`: the documented calls pass one type or none, and none answers all.
        reply = await self.fetch(
            _ServerStatus, "POST", "/server/status", body={"serverid": serverid}, retry_safe=True
        )
        return reply.server

    async def allowed_arguments(self, serverid: str | None = None) -> GlesysAllowedArguments:
        """Return the core counts each platform allows (for one server's edits, with `serverid`)."""
        body = {"serverid": serverid} if serverid is not None else {}
        reply = await self.fetch(
            _AllowedArguments, "POST", "/server/allowedarguments", body=body, retry_safe=True
        )
        return reply.argumentslist

    async def set_cores(self, serverid: str, cores: int) -> GlesysServer:
        """Change a server's cores; Glesys reboots it and the change shows once it is back."""
        if cores < 1:
            raise ValueError(f"cores must be at least 1, not {cores}")
        reply = await self.fetch(
            _ServerDetails, "POST", "/server/edit", body={"serverid": serverid, "cpucores": cores}
        )
        return reply.server
