"""The snapshot guard: nothing that reboots or destroys runs before a snapshot of its server.

For a risky action (the guard section's `risky` list) on a server, the guard takes a snapshot
whose notes carry the decision's idempotency key, waits for its `create_snapshot` action to
complete, then runs the action, checks that it took effect, and deletes Cloudpilot's own
snapshots of that server beyond `keep_snapshots`. A snapshot that fails or times out aborts the
action and raises an alert. After a crash the same decision finds its snapshot by the notes and
looks for its provider action before asking again, so neither happens twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from daemon.actions.server import (
    POLL_EVERY_S,
    SNAPSHOT_NOTES_PREFIX,
    ActionError,
    ServerAction,
    SnapshotBackend,
    SnapshotRef,
    Target,
    intent_tag,
    not_configured,
    tagged,
)
from daemon.client.errors import ProviderError
from daemon.models import Decision, Event, Outcome, OutcomeStatus
from daemon.notifications import Severity, event_alert
from daemon.observability.metrics import Metrics
from daemon.rules.action import Action, ActionContext
from daemon.rules.compiled import GuardSpec

# The alertname of what the guard reports; one alert per server.
GUARD_ALERT = "cloudpilot-guard"
# Room for the action itself and the reads around it, beyond the snapshot and the check.
_SLACK_S = 60.0


class GuardAlerts(Protocol):
    """Where the guard raises and ends its alerts (the alert book)."""

    async def raise_alert(self, decision: Decision) -> Outcome:
        """Raise a decision's alert."""
        ...

    async def resolve_alert(self, key: str) -> bool:
        """End a firing alert by its key; return whether one was firing."""
        ...


def guard_alert_key(server: str) -> str:
    """Return the identity of the guard's alert about a server."""
    return f"{GUARD_ALERT}/{server}"


def _created(snapshot: SnapshotRef) -> datetime:
    return snapshot.created_at or datetime.min.replace(tzinfo=UTC)


class SnapshotGuard:
    """Snapshot first, act, check, keep the newest own snapshots; abort and alert on failure."""

    def __init__(
        self,
        *,
        backends: Mapping[str, SnapshotBackend],
        spec: Callable[[], GuardSpec],
        metrics: Metrics,
        alerts: GuardAlerts | None = None,
        routes: Callable[[str], Sequence[str]] = lambda _rule: (),
        takes_snapshots: Callable[[str], bool] | None = None,
    ) -> None:
        self._backends = backends
        self.takes_snapshots = takes_snapshots
        self._spec = spec
        self._metrics = metrics
        self._alerts = alerts
        self._routes = routes

    def covers(self, action: Action) -> bool:
        """Return whether an action goes through the guard: risky, and about a server."""
        return action.name in self._spec().risky and isinstance(action, ServerAction)

    def time_allowed(self, timeout_s: float) -> float:
        """Return how long a guarded run may take: snapshot, the action's timeout, the check."""
        spec = self._spec()
        return spec.snapshot_timeout_s + timeout_s + spec.verify_timeout_s + _SLACK_S

    def plan(self, action: ServerAction, snapshot: str | None, provider: str) -> str:
        """Return in words what the guard would do around an action (for dry runs)."""
        spec = self._spec()
        if action.name not in spec.risky:
            return f"{action.name} is not risky: no snapshot"
        if snapshot == "none":
            return "no snapshot (the rule says snapshot: none)"
        if not spec.snapshot_first:
            return "no snapshot (guard snapshot_first is false)"
        if not self._snapshots(provider):
            return f"abort: {provider} takes no snapshots and the rule does not say snapshot: none"
        return (
            f"snapshot first (wait up to {spec.snapshot_timeout_s:g} s), then {action.name}, "
            f"check it within {spec.verify_timeout_s:g} s, keep {spec.keep_snapshots} snapshots"
        )

    async def carry_out(self, ctx: ActionContext, action: ServerAction, *, resume: bool) -> Outcome:
        """Run a risky action under the guard; `resume` after a crash left it started."""
        spec = self._spec()
        target = await action.target(ctx)
        params = action.params(ctx)
        log = ctx.log.bind(server=target.name, provider=target.provider)
        if not resume and await action.effect_holds(ctx, target):
            # Nothing to change, so nothing to protect: no snapshot, no provider action.
            return Outcome(OutcomeStatus.DONE, f"{target.name}: already {action.effect_words(ctx)}")
        snapshot: int | None = None
        if params.snapshot == "none":
            log.info("guard_snapshot_skipped", reason="the rule says snapshot: none")
        elif not spec.snapshot_first:
            log.info("guard_snapshot_skipped", reason="guard snapshot_first is false")
        elif not self._snapshots(target.provider):
            return await self._abort(
                ctx,
                target,
                f"{target.provider} takes no snapshots and the rule does not say "
                "`snapshot: none`; not running it without one",
            )
        else:
            try:
                snapshot = await self._snapshot(ctx, action, target, spec)
            except (ActionError, ProviderError) as exc:
                self._metrics.guard_snapshots.labels("failed").inc()
                return await self._abort(ctx, target, f"snapshot of {target.name} failed: {exc}")
        if resume and await action.requested_since(ctx, target, ctx.decision.time):
            detail = f"{target.name}: {action.name} was already asked for before a restart"
            log.info("guard_action_found", action=action.name)
        else:
            detail = await action.perform(ctx, target)
        if not await self._holds(ctx, action, target, spec):
            self._metrics.guard_checks.labels(action.name, "failed").inc()
            reason = (
                f"{detail}, but {target.name} was not {action.effect_words(ctx)} "
                f"within {spec.verify_timeout_s:g} s"
            )
            if spec.rollback_on_failure and snapshot is not None:
                reason += await self._rollback(ctx, target, snapshot)
            await self._alert(ctx, target, f"{action.name} on {target.name} did not hold", reason)
            return Outcome(OutcomeStatus.FAILED, reason)
        self._metrics.guard_checks.labels(action.name, "held").inc()
        if snapshot is not None:
            await self._retain(ctx, target, spec.keep_snapshots)
            detail += f" (after snapshot {snapshot})"
        await self._resolve(ctx, target)
        return Outcome(OutcomeStatus.DONE, detail)

    # --- the snapshot ----------------------------------------------------------------------------

    def _snapshots(self, provider: str) -> bool:
        """Return whether the provider takes snapshots (whether or not it is configured)."""
        if self.takes_snapshots is not None:
            return self.takes_snapshots(provider)
        return provider in self._backends

    def _backend(self, target: Target) -> SnapshotBackend:
        found = self._backends.get(target.provider)
        if found is None:
            raise not_configured(target.provider)
        return found

    async def _snapshot(
        self, ctx: ActionContext, action: ServerAction, target: Target, spec: GuardSpec
    ) -> int:
        """Take (or find, after a crash) the decision's snapshot and wait until it completes."""
        backend = self._backend(target)
        found = tagged(await backend.snapshots(target), ctx.decision.key)
        if found is None:
            started = ctx.clock.monotonic()
            snapshot = await backend.take_snapshot(
                target,
                f"cloudpilot before {action.name} (rule {ctx.decision.rule})",
                intent_tag(ctx.decision.key),
                ctx,
                spec.snapshot_timeout_s,
            )
            took = round(ctx.clock.monotonic() - started, 1)
            ctx.log.info("snapshot_created", server=target.name, snapshot=snapshot, took_s=took)
            self._metrics.guard_snapshots.labels("created").inc()
            return snapshot
        ctx.log.info(
            "snapshot_found", server=target.name, snapshot=found.id, completed=found.completed
        )
        done = await backend.wait_snapshot(target, found.id, ctx, spec.snapshot_timeout_s)
        self._metrics.guard_snapshots.labels("found").inc()
        return done

    async def _retain(self, ctx: ActionContext, target: Target, keep: int) -> None:
        """Delete Cloudpilot's own completed snapshots of the server beyond the newest `keep`."""
        try:
            backend = self._backend(target)
            own = [
                s
                for s in await backend.snapshots(target)
                if s.notes.startswith(SNAPSHOT_NOTES_PREFIX) and not s.protected and s.completed
            ]
            own.sort(key=_created, reverse=True)
            for old in own[keep:]:
                await backend.delete_snapshot(target, old.id)
                self._metrics.snapshots_deleted.inc()
                ctx.log.info("snapshot_deleted", server=target.name, snapshot=old.id, keep=keep)
        except (ActionError, ProviderError) as exc:
            # The action has run; a snapshot left over is tidied up after the next one.
            ctx.log.warning("snapshot_retention_failed", server=target.name, error=str(exc))

    async def _holds(
        self, ctx: ActionContext, action: ServerAction, target: Target, spec: GuardSpec
    ) -> bool:
        """Return whether the action's effect shows within `verify_timeout`."""
        started = ctx.clock.monotonic()
        while True:
            try:
                if await action.effect_holds(ctx, target):
                    return True
            except ProviderError as exc:
                ctx.log.warning("guard_check_failed", server=target.name, error=str(exc))
            if ctx.clock.monotonic() - started >= spec.verify_timeout_s:
                return False
            await ctx.clock.sleep(POLL_EVERY_S)

    async def _rollback(self, ctx: ActionContext, target: Target, snapshot: int) -> str:
        """Roll the server back to the snapshot; return a note on how that went."""
        try:
            await self._backend(target).rollback(target, snapshot, ctx)
        except (ActionError, ProviderError) as exc:
            ctx.log.error("guard_rollback_failed", server=target.name, error=str(exc))
            return f"; rollback to snapshot {snapshot} failed: {exc}"
        ctx.log.warning("guard_rolled_back", server=target.name, snapshot=snapshot)
        return f"; rolled back to snapshot {snapshot}"

    # --- alerts ----------------------------------------------------------------------------------

    async def _abort(self, ctx: ActionContext, target: Target, reason: str) -> Outcome:
        action = ctx.decision.action
        ctx.log.error("guard_aborted", server=target.name, reason=reason)
        await self._alert(ctx, target, f"{action} on {target.name} aborted", reason)
        return Outcome(OutcomeStatus.ABORTED, reason)

    async def _alert(self, ctx: ActionContext, target: Target, summary: str, detail: str) -> None:
        if self._alerts is None:
            return
        decision = ctx.decision
        now = ctx.clock.now()
        event = Event(
            type="guard.failed",
            key=f"guard:{decision.key}",
            time=now,
            resource=target.name,
            data={
                "summary": summary,
                "detail": detail,
                "action": decision.action,
                "rule": decision.rule,
                "provider": target.provider,
            },
            source="guard",
        )
        alert = event_alert(
            f"{decision.key}#guard",
            GUARD_ALERT,
            event,
            severity=Severity.CRITICAL,
            labels={"action": decision.action, "rule": decision.rule},
            to=list(dict.fromkeys([*self._spec().to, *self._routes(decision.rule)])),
        )
        if not alert.params["to"]:
            ctx.log.error(
                "guard_alert_unrouted",
                reason="set `to:` in the guard section (or give the rule an alert route)",
                summary=summary,
            )
            return
        try:
            await self._alerts.raise_alert(alert)
        except Exception as exc:  # the outcome stands; the log and the ledger still say why
            ctx.log.error("guard_alert_failed", error=f"{type(exc).__name__}: {exc}")

    async def _resolve(self, ctx: ActionContext, target: Target) -> None:
        if self._alerts is None:
            return
        try:
            await self._alerts.resolve_alert(guard_alert_key(target.name))
        except Exception as exc:
            ctx.log.error("guard_alert_failed", error=f"{type(exc).__name__}: {exc}")
