"""Glesys's side of the server actions: cores, changed in place (Glesys reboots to apply them)."""

from __future__ import annotations

from daemon.actions.server import POLL_EVERY_S, ActionError, Target
from daemon.providers.glesys.client import GlesysClient, GlesysServer
from daemon.rules.action import ActionContext

PROVIDER = "glesys"


class GlesysServers:
    """Cores of Glesys servers, found by hostname or serverid."""

    provider = PROVIDER

    def __init__(self, client: GlesysClient) -> None:
        self.client = client

    async def target(self, ref: str) -> Target:
        """Return the server whose hostname or serverid is `ref`."""
        for server in await self.client.list_servers():
            if ref in (server.serverid, server.hostname):
                return Target(PROVIDER, server.hostname or server.serverid, server.serverid)
        raise ActionError(f"{PROVIDER} server {ref!r} not found (by hostname or serverid)")

    async def describe(self, target: Target) -> str:
        """Return the server's state, cores and lock (`server/details`)."""
        details = await self.client.server_details(target.id)
        running = {True: "running", False: "stopped", None: "state unknown"}[details.is_running]
        locked = ", locked by a change under way" if details.is_locked else ""
        return f"{PROVIDER} {target.id}, {running}, {details.cpucores} cores{locked}"

    async def set_cores(self, target: Target, cores: int, ctx: ActionContext) -> str:
        """Ask Glesys for the cores; the reboot that applies them is waited out by the check.

        The server's state is read first: a change under way (after a restart, the edit this
        decision sent before the crash) is waited out, and cores that already show are not asked
        for again. An edit sent to a locked server would be refused, and a resize reported
        failed that had happened.
        """
        details = await self._unlocked(ctx, target)
        if details.runs_with(cores):
            return f"{target.name}: already running with {cores} cores"
        await self._check_size(target, details, cores)
        await self.client.set_cores(target.id, cores)
        # The answer still shows the old cores: Glesys applies the new ones as it reboots.
        return f"{target.name}: cpucores {cores} requested"

    async def check_cores(self, target: Target, cores: int, ctx: ActionContext) -> str:
        """Raise unless the platform allows `cores`; say that a lock and a reboot lie ahead."""
        details = await self.client.server_details(target.id)
        await self._check_size(target, details, cores)
        said = ""
        if details.is_locked:
            said += f" once the change under way ends (the run waits up to {ctx.timeout_s:g} s)"
        return said + "; Glesys reboots it to apply them"

    async def cores_asked(self, target: Target, cores: int) -> bool:
        """Return whether Glesys already has the new cores as the server's setting."""
        details = await self.client.server_details(target.id)
        return details.cpucores == cores

    async def runs_with(self, target: Target, cores: int) -> bool:
        """Return whether the server runs, unlocked, with the new cores (`server/details`)."""
        details = await self.client.server_details(target.id)
        return details.runs_with(cores)

    async def _check_size(self, target: Target, details: GlesysServer, cores: int) -> None:
        """Raise ActionError unless the server's platform allows `cores` (when Glesys says)."""
        allowed = (await self.client.allowed_arguments(target.id)).cores_for(details.platform)
        if allowed and cores not in allowed:
            raise ActionError(
                f"{target.name}: {cores} cores is not a size its platform "
                f"({details.platform}) allows; server/allowedarguments lists "
                f"{', '.join(map(str, allowed))}"
            )

    async def _unlocked(self, ctx: ActionContext, target: Target) -> GlesysServer:
        """Return the server's details once no change is under way, within the timeout."""
        started = ctx.clock.monotonic()
        while True:
            details = await self.client.server_details(target.id)
            if not details.is_locked:
                return details
            if ctx.clock.monotonic() - started >= ctx.timeout_s:
                raise ActionError(
                    f"{target.name} is still locked by a change under way after "
                    f"{ctx.timeout_s:g} s: not sending another"
                )
            ctx.log.info("server_locked_waiting", server=target.name)
            await ctx.clock.sleep(POLL_EVERY_S)
