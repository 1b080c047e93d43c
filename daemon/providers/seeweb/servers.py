"""Seeweb's side of the server actions: power, snapshots and rollback (not cores: no resize)."""

from __future__ import annotations

from datetime import datetime, timedelta

from daemon.actions.server import POLL_EVERY_S, ActionError, SnapshotRef, Target
from daemon.client.records import Action as ProviderAction
from daemon.client.records import Snapshot
from daemon.providers.seeweb.client import SeewebClient
from daemon.rules.action import ActionContext

PROVIDER = "seeweb"
# Seeweb spells a stopped server SHUTOFF.
_STOPPED = frozenset({"SHUTOFF", "STOPPED", "SHUTDOWN"})
_RUNNING = frozenset({"RUNNING"})
_STATE_AFTER = {"power_off": _STOPPED, "power_on": _RUNNING}
# Seeweb snapshot states: being created, and created.
SNAPSHOT_CREATING = "CG"
SNAPSHOT_CREATED = "CD"


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


def _ref(snapshot: Snapshot) -> SnapshotRef:
    return SnapshotRef(
        snapshot.id,
        snapshot.notes or "",
        snapshot.status == SNAPSHOT_CREATED,
        snapshot.created_at,
        bool(snapshot.protected),
    )


class SeewebServers:
    """Power and snapshots of ECS servers, which the API names by their name."""

    provider = PROVIDER

    def __init__(self, client: SeewebClient) -> None:
        self.client = client

    async def target(self, ref: str) -> Target:
        """Return the server: ECS servers are named and addressed by their name."""
        return Target(PROVIDER, ref, ref)

    async def describe(self, target: Target) -> str:
        """Return the server's power state (`GET /servers/{name}/status`)."""
        status = await self.client.server_status(target.id)
        return f"{PROVIDER}, {status.current_status.lower() or 'state unknown'}"

    # --- power -----------------------------------------------------------------------------------

    async def power(self, target: Target, verb: str, ctx: ActionContext) -> str:
        """Start the power action and wait for it to complete."""
        action = await self.client.server_action(target.id, verb)
        ctx.log.info("provider_action_started", server=target.name, provider_action=action.id)
        done = await wait_for_action(self.client, action, ctx, ctx.timeout_s)
        return f"{target.name}: {verb} action {done.id} completed"

    async def power_asked_since(
        self, target: Target, verb: str, since: datetime, ctx: ActionContext
    ) -> bool:
        """Look for a power action of this type on the server, started at or after `since`."""
        # A second of slack: the provider's clock and ours round differently.
        floor = since - timedelta(seconds=1)
        actions, _ = await self.client.list_actions(resource=target.id)
        for action in actions:
            created = action.created_at or action.started_at
            if action.type == verb and created is not None and created >= floor:
                await wait_for_action(self.client, action, ctx, ctx.timeout_s)
                return True
        return False

    async def powered(self, target: Target, verb: str) -> bool:
        """Return whether the server's power state is the one `verb` leads to."""
        status = await self.client.server_status(target.id)
        return status.current_status in _STATE_AFTER[verb]

    # --- snapshots -------------------------------------------------------------------------------

    async def snapshots(self, target: Target) -> list[SnapshotRef]:
        """Return the server's snapshots."""
        return [_ref(s) for s in await self.client.list_snapshots(target.id)]

    async def take_snapshot(
        self, target: Target, name: str, notes: str, ctx: ActionContext, limit_s: float
    ) -> int:
        """Create the snapshot and wait for its `create_snapshot` action to complete."""
        snapshot, action = await self.client.create_snapshot(target.id, name, notes)
        ctx.log.info(
            "snapshot_started", server=target.name, snapshot=snapshot.id, provider_action=action.id
        )
        await wait_for_action(self.client, action, ctx, limit_s)
        return snapshot.id

    async def wait_snapshot(
        self, target: Target, snapshot: int, ctx: ActionContext, limit_s: float
    ) -> int:
        """Read a snapshot until it is no longer being created; raise unless it completed."""
        started = ctx.clock.monotonic()
        found = await self.client.get_snapshot(target.id, snapshot)
        while found.status == SNAPSHOT_CREATING:
            if ctx.clock.monotonic() - started >= limit_s:
                raise ActionError(f"snapshot {found.id} still creating after {limit_s:g} s")
            await ctx.clock.sleep(POLL_EVERY_S)
            found = await self.client.get_snapshot(target.id, snapshot)
        if found.status != SNAPSHOT_CREATED:
            raise ActionError(f"snapshot {found.id} ended {found.status_label or found.status!r}")
        return found.id

    async def delete_snapshot(self, target: Target, snapshot: int) -> None:
        """Delete a snapshot."""
        await self.client.delete_snapshot(target.id, snapshot)

    async def rollback(self, target: Target, snapshot: int, ctx: ActionContext) -> None:
        """Roll the server back to the snapshot and wait for the rollback action."""
        started = await self.client.server_action(target.id, "rollback", snapshot)
        await wait_for_action(self.client, started, ctx, ctx.timeout_s)
