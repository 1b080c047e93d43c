"""Actions on servers: `power_off`, `power_on`, `set_cores` and `snapshot`.

Each action resolves its server, asks the provider for the change, waits for the provider's
action to end, and can say whether the change has taken effect. The guard
(`daemon/policies/guard.py`) wraps the risky ones with a snapshot before and a check after.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from daemon.errors import CloudpilotError
from daemon.models import Outcome, OutcomeStatus
from daemon.providers.glesys import GlesysClient, GlesysServer
from daemon.providers.k8sgpu import K8sGpuClient
from daemon.providers.records import Action as ProviderAction
from daemon.providers.records import Snapshot
from daemon.providers.seeweb import SeewebClient
from daemon.rules.action import ActionContext, ActionParams

Provider = Literal["seeweb", "glesys"]

# How often a provider's action or a server's state is read again while waiting.
POLL_EVERY_S = 5.0
# Seeweb spells a stopped server SHUTOFF; Glesys says `stopped`.
_STOPPED = frozenset({"SHUTOFF", "STOPPED", "SHUTDOWN"})
_RUNNING = frozenset({"RUNNING"})
# Notes of the snapshots Cloudpilot takes start with this; only those are ever deleted.
SNAPSHOT_NOTES_PREFIX = "cloudpilot:"
# Seeweb snapshot states: being created, and created.
SNAPSHOT_CREATING = "CG"
SNAPSHOT_CREATED = "CD"


class ActionError(CloudpilotError):
    """A server action could not be carried out; the message says which server and why."""


class ServerParams(ActionParams):
    """Parameters every server action takes."""

    server: str | None = Field(
        default=None,
        min_length=1,
        description="The server (Seeweb name, Glesys hostname or serverid); default: the event's.",
    )
    provider: Provider = Field(default="seeweb", description="The server's provider.")
    snapshot: Literal["first", "none"] | None = Field(
        default=None,
        description="`none` acts without the guard's snapshot (required where there are none).",
    )


class SetCoresParams(ServerParams):
    """Parameters of `set_cores`."""

    provider: Provider = Field(default="glesys", description="Only Glesys changes cores in place.")
    cores: int = Field(ge=1, le=256, description="The number of cores to run with.")

    @model_validator(mode="after")
    def _resizable(self) -> SetCoresParams:
        if self.provider != "glesys":
            raise ValueError(
                f"{self.provider} cannot change a server's cores through its API; use an "
                "autoscale rule with provider seeweb to get a recommendation instead"
            )
        return self


@dataclass(frozen=True, slots=True)
class Target:
    """The server an action is about: provider, the name people use, the id the API takes."""

    provider: str
    name: str
    id: str


@dataclass(frozen=True, slots=True)
class ServerClients:
    """The provider clients actions and sources share; None where the provider is not configured."""

    seeweb: SeewebClient | None = None
    glesys: GlesysClient | None = None
    k8sgpu: K8sGpuClient | None = None

    def need_seeweb(self) -> SeewebClient:
        """Return the Seeweb client, or raise ActionError if it is not configured."""
        if self.seeweb is None:
            raise ActionError("seeweb is not configured: add a [seeweb] section to the config")
        return self.seeweb

    def need_glesys(self) -> GlesysClient:
        """Return the Glesys client, or raise ActionError if it is not configured."""
        if self.glesys is None:
            raise ActionError("glesys is not configured: add a [glesys] section to the config")
        return self.glesys

    def need_k8sgpu(self) -> K8sGpuClient:
        """Return the Serverless GPU client, or raise ActionError if it is not configured."""
        if self.k8sgpu is None:
            raise ActionError("k8sgpu is not configured: add a [k8sgpu] section to the config")
        return self.k8sgpu


def intent_tag(key: str) -> str:
    """Return the snapshot notes that tie a snapshot to a decision's idempotency key."""
    return SNAPSHOT_NOTES_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


async def resolve_target(
    clients: ServerClients, params: ServerParams, ctx: ActionContext
) -> Target:
    """Return the server a decision is about: the `server` parameter, else the event's resource."""
    event = ctx.decision.event
    ref = params.server or (event.resource if event is not None else "")
    if not ref:
        raise ActionError("no server: give `server`, or use the action on a server's event")
    if params.provider == "seeweb":
        return Target("seeweb", ref, ref)
    for server in await clients.need_glesys().list_servers():
        if ref in (server.serverid, server.hostname):
            return Target("glesys", server.hostname or server.serverid, server.serverid)
    raise ActionError(f"glesys server {ref!r} not found (by hostname or serverid)")


async def wait_for_action(
    client: SeewebClient, action: ProviderAction, ctx: ActionContext, limit_s: float
) -> ProviderAction:
    """Read a Seeweb action by id until it ends; raise ActionError if it fails or takes too long."""
    started = ctx.clock.monotonic()
    while not action.is_finished:
        if ctx.clock.monotonic() - started >= limit_s:
            raise ActionError(
                f"action {action.id} ({action.type}) on {action.resource} still in progress "
                f"after {limit_s:g} s"
            )
        await ctx.clock.sleep(POLL_EVERY_S)
        action = await client.get_action(action.id)
    if action.is_failure:
        raise ActionError(
            f"action {action.id} ({action.type}) on {action.resource} ended {action.status!r}"
        )
    return action


async def tagged_snapshot(client: SeewebClient, target: Target, key: str) -> Snapshot | None:
    """Return the snapshot whose notes tie it to the decision key, if one was taken."""
    tag = intent_tag(key)
    return next((s for s in await client.list_snapshots(target.id) if s.notes == tag), None)


async def wait_for_snapshot(
    client: SeewebClient, target: Target, snapshot: Snapshot, ctx: ActionContext, limit_s: float
) -> Snapshot:
    """Read a snapshot until it is no longer being created; raise unless it completed."""
    started = ctx.clock.monotonic()
    while snapshot.status == SNAPSHOT_CREATING:
        if ctx.clock.monotonic() - started >= limit_s:
            raise ActionError(f"snapshot {snapshot.id} still creating after {limit_s:g} s")
        await ctx.clock.sleep(POLL_EVERY_S)
        snapshot = await client.get_snapshot(target.id, snapshot.id)
    if snapshot.status != SNAPSHOT_CREATED:
        raise ActionError(
            f"snapshot {snapshot.id} ended {snapshot.status_label or snapshot.status!r}"
        )
    return snapshot


class ServerAction:
    """What the server actions share: parameters, target, and the guard's hooks."""

    name: ClassVar[str]
    params_model: ClassVar[type[ActionParams]] = ServerParams
    destructive: ClassVar[bool] = True
    depends_on: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, clients: ServerClients) -> None:
        self.clients = clients

    def params(self, ctx: ActionContext) -> ServerParams:
        """Return the decision's parameters."""
        params = ctx.params(self.params_model)
        assert isinstance(params, ServerParams)
        return params

    async def target(self, ctx: ActionContext) -> Target:
        """Return the server the decision is about."""
        return await resolve_target(self.clients, self.params(ctx), ctx)

    async def perform(self, ctx: ActionContext, target: Target) -> str:
        """Ask the provider for the change and wait for it to end; return what happened."""
        raise NotImplementedError

    async def requested_since(self, ctx: ActionContext, target: Target, since: datetime) -> bool:
        """Return whether this change was asked of the provider at or after `since`."""
        return False

    async def effect_holds(self, ctx: ActionContext, target: Target) -> bool:
        """Return whether the server now shows the change."""
        raise NotImplementedError

    async def run(self, ctx: ActionContext) -> Outcome:
        """Carry the change out without the guard (the action is not listed as risky)."""
        target = await self.target(ctx)
        if await self.effect_holds(ctx, target):
            return Outcome(OutcomeStatus.DONE, f"{target.name}: already {self.effect_words(ctx)}")
        return Outcome(OutcomeStatus.DONE, await self.perform(ctx, target))

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Return DONE when the server already shows the change, else None (run again)."""
        target = await self.target(ctx)
        if await self.effect_holds(ctx, target):
            return Outcome(OutcomeStatus.DONE, f"{target.name}: {self.effect_words(ctx)}")
        return None

    def effect_words(self, ctx: ActionContext) -> str:
        """Return the change in words, e.g. `powered off`."""
        return self.name

    async def preflight(self, ctx: ActionContext) -> str:
        """Read, and never change, what a real run would meet; return it in words.

        Raise ActionError or ProviderError (the server does not exist, the size is not one the
        platform allows, ...) when the real run would fail, saying why.
        """
        target = await self.target(ctx)
        state = await self.describe(target)
        if await self.effect_holds(ctx, target):
            return f"{target.name} ({state}) is already {self.effect_words(ctx)}: nothing to do"
        return f"{target.name} ({state}) would be {self.effect_words(ctx)}"

    async def describe(self, target: Target) -> str:
        """Return the server's state as the provider shows it (and that it exists)."""
        if target.provider == "seeweb":
            status = await self.clients.need_seeweb().server_status(target.id)
            return f"seeweb, {status.current_status.lower() or 'state unknown'}"
        details = await self.clients.need_glesys().server_details(target.id)
        running = {True: "running", False: "stopped", None: "state unknown"}[details.is_running]
        locked = ", locked by a change under way" if details.is_locked else ""
        return f"glesys {target.id}, {running}, {details.cpucores} cores{locked}"


class _PowerAction(ServerAction):
    """Power a Seeweb server off or on."""

    state_after: ClassVar[frozenset[str]]
    words: ClassVar[str]

    async def target(self, ctx: ActionContext) -> Target:
        """Return the server; only Seeweb servers have power actions here."""
        params = self.params(ctx)
        if params.provider != "seeweb":
            raise ActionError(f"{self.name} is a Seeweb action; {params.provider} has none here")
        return await resolve_target(self.clients, params, ctx)

    async def perform(self, ctx: ActionContext, target: Target) -> str:
        """Start the power action and wait for it to complete."""
        client = self.clients.need_seeweb()
        action = await client.server_action(target.id, self.name)
        ctx.log.info("provider_action_started", server=target.name, provider_action=action.id)
        done = await wait_for_action(client, action, ctx, ctx.timeout_s)
        return f"{target.name}: {self.name} action {done.id} completed"

    async def requested_since(self, ctx: ActionContext, target: Target, since: datetime) -> bool:
        """Look for a power action of this type on the server, started at or after `since`."""
        client = self.clients.need_seeweb()
        # A second of slack: the provider's clock and ours round differently.
        floor = since - timedelta(seconds=1)
        actions, _ = await client.list_actions(resource=target.id)
        for action in actions:
            created = action.created_at or action.started_at
            if action.type == self.name and created is not None and created >= floor:
                await wait_for_action(client, action, ctx, ctx.timeout_s)
                return True
        return False

    async def effect_holds(self, ctx: ActionContext, target: Target) -> bool:
        """Return whether the server's power state is the one this action leads to."""
        status = await self.clients.need_seeweb().server_status(target.id)
        return status.current_status in self.state_after

    def effect_words(self, ctx: ActionContext) -> str:
        """Return `powered off` or `powered on`."""
        return self.words


class PowerOffAction(_PowerAction):
    """Power a Seeweb server off (`power_off`)."""

    name: ClassVar[str] = "power_off"
    state_after = _STOPPED
    words = "powered off"


class PowerOnAction(_PowerAction):
    """Power a Seeweb server on (`power_on`); it boots, so it is not destructive."""

    name: ClassVar[str] = "power_on"
    destructive: ClassVar[bool] = False
    state_after = _RUNNING
    words = "powered on"


class SetCoresAction(ServerAction):
    """Change a Glesys server's cores in place (`set_cores`); Glesys reboots it to apply them."""

    name: ClassVar[str] = "set_cores"
    params_model: ClassVar[type[ActionParams]] = SetCoresParams

    def _cores(self, ctx: ActionContext) -> int:
        params = self.params(ctx)
        assert isinstance(params, SetCoresParams)
        return params.cores

    async def perform(self, ctx: ActionContext, target: Target) -> str:
        """Ask Glesys for the cores; the reboot that applies them is waited out by the check.

        The server's state is read first: a change under way (after a restart, the edit this
        decision sent before the crash) is waited out, and cores that already show are not asked
        for again. An edit sent to a locked server would be refused, and a resize reported
        failed that had happened.
        """
        cores = self._cores(ctx)
        glesys = self.clients.need_glesys()
        details = await self._unlocked(ctx, target)
        if details.runs_with(cores):
            return f"{target.name}: already running with {cores} cores"
        await self._check_size(target, details, cores)
        await glesys.set_cores(target.id, cores)
        # The answer still shows the old cores: Glesys applies the new ones as it reboots.
        return f"{target.name}: cpucores {cores} requested"

    async def preflight(self, ctx: ActionContext) -> str:
        """Say what a resize would meet; raise when the size is not one the platform allows."""
        said = await super().preflight(ctx)
        if said.endswith("nothing to do"):
            return said
        target = await self.target(ctx)
        cores = self._cores(ctx)
        details = await self.clients.need_glesys().server_details(target.id)
        await self._check_size(target, details, cores)
        if details.is_locked:
            said += f" once the change under way ends (the run waits up to {ctx.timeout_s:g} s)"
        return said + "; Glesys reboots it to apply them"

    async def _check_size(self, target: Target, details: GlesysServer, cores: int) -> None:
        """Raise ActionError unless the server's platform allows `cores` (when Glesys says)."""
        glesys = self.clients.need_glesys()
        allowed = (await glesys.allowed_arguments(target.id)).cores_for(details.platform)
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
            details = await self.clients.need_glesys().server_details(target.id)
            if not details.is_locked:
                return details
            if ctx.clock.monotonic() - started >= ctx.timeout_s:
                raise ActionError(
                    f"{target.name} is still locked by a change under way after "
                    f"{ctx.timeout_s:g} s: not sending another"
                )
            ctx.log.info("server_locked_waiting", server=target.name)
            await ctx.clock.sleep(POLL_EVERY_S)

    async def requested_since(self, ctx: ActionContext, target: Target, since: datetime) -> bool:
        """Return whether Glesys already has the new cores as the server's setting."""
        details = await self.clients.need_glesys().server_details(target.id)
        return details.cpucores == self._cores(ctx)

    async def effect_holds(self, ctx: ActionContext, target: Target) -> bool:
        """Return whether the server runs, unlocked, with the new cores (`server/details`)."""
        details = await self.clients.need_glesys().server_details(target.id)
        return details.runs_with(self._cores(ctx))

    async def run(self, ctx: ActionContext) -> Outcome:
        """Set the cores and wait, within the timeout, until the server runs with them."""
        target = await self.target(ctx)
        if await self.effect_holds(ctx, target):
            return Outcome(OutcomeStatus.DONE, f"{target.name}: already {self.effect_words(ctx)}")
        detail = await self.perform(ctx, target)
        started = ctx.clock.monotonic()
        while not await self.effect_holds(ctx, target):
            if ctx.clock.monotonic() - started >= ctx.timeout_s:
                raise ActionError(f"{detail}, but it did not run with them within the timeout")
            await ctx.clock.sleep(POLL_EVERY_S)
        return Outcome(OutcomeStatus.DONE, detail)

    def effect_words(self, ctx: ActionContext) -> str:
        """Return `running with N cores`."""
        return f"running with {self._cores(ctx)} cores"


class SnapshotAction(ServerAction):
    """Take a snapshot of a Seeweb server (`snapshot`) and wait for it to complete."""

    name: ClassVar[str] = "snapshot"
    destructive: ClassVar[bool] = False

    async def perform(self, ctx: ActionContext, target: Target) -> str:
        """Create the snapshot, tagged with the decision's key, and wait for it."""
        client = self.clients.need_seeweb()
        snapshot, action = await client.create_snapshot(
            target.id, f"cloudpilot: rule {ctx.decision.rule}", intent_tag(ctx.decision.key)
        )
        await wait_for_action(client, action, ctx, ctx.timeout_s)
        return f"{target.name}: snapshot {snapshot.id} completed"

    async def run(self, ctx: ActionContext) -> Outcome:
        """Snapshot the server, unless a snapshot for this decision already exists."""
        target = await self.target(ctx)
        client = self.clients.need_seeweb()
        found = await tagged_snapshot(client, target, ctx.decision.key)
        if found is None:
            return Outcome(OutcomeStatus.DONE, await self.perform(ctx, target))
        # Taken before a restart: it may still be being created.
        found = await wait_for_snapshot(client, target, found, ctx, ctx.timeout_s)
        return Outcome(OutcomeStatus.DONE, f"{target.name}: snapshot {found.id} completed")

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Run again: `run` finds a snapshot taken before the crash by its notes."""
        return None

    def effect_words(self, ctx: ActionContext) -> str:
        """Return `snapshotted`."""
        return "snapshotted"

    async def effect_holds(self, ctx: ActionContext, target: Target) -> bool:
        """Return whether a completed snapshot carries this decision's tag."""
        found = await tagged_snapshot(self.clients.need_seeweb(), target, ctx.decision.key)
        return found is not None and found.status == SNAPSHOT_CREATED
