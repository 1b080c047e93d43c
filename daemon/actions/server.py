"""Actions on servers: `power_off`, `power_on`, `set_cores` and `snapshot`, for any provider.

Each action resolves its server, asks the provider for the change, waits for it to end, and can
say whether the change has taken effect. What a provider does to carry a change out is its
backend's business: each provider package that offers the `power`, `set_cores` or `snapshot`
capability gives a backend (the protocols below). A rule names the provider with `provider:`;
by default an action acts on the first provider that offers it. The guard
(`daemon/policies/guard.py`) wraps the risky actions with a snapshot before and a check after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, cast

from pydantic import Field, field_validator

from daemon.errors import CloudpilotError
from daemon.models import Outcome, OutcomeStatus
from daemon.rules.action import ActionContext, ActionParams
from daemon.rules.vocabulary import Capability, ProviderTraits

# How often a provider's action or a server's state is read again while waiting.
POLL_EVERY_S = 5.0
# Notes of the snapshots Cloudpilot takes start with this; only those are ever deleted.
SNAPSHOT_NOTES_PREFIX = "cloudpilot:"


class ActionError(CloudpilotError):
    """A server action could not be carried out; the message says which server and why."""


def not_configured(provider: str) -> ActionError:
    """Return the error for an action on a provider the config has no section for."""
    return ActionError(f"{provider} is not configured: add a [{provider}] section to the config")


def intent_tag(key: str) -> str:
    """Return the snapshot notes that tie a snapshot to a decision's idempotency key."""
    return SNAPSHOT_NOTES_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Target:
    """The server an action is about: provider, the name people use, the id the API takes."""

    provider: str
    name: str
    id: str


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """A snapshot as the guard needs it: id, notes, whether it completed, when it was taken."""

    id: int
    notes: str
    completed: bool
    created_at: datetime | None = None
    protected: bool = False


class ServerBackend(Protocol):
    """A provider's side of the server actions: find a server, and say what state it is in."""

    provider: str

    async def target(self, ref: str) -> Target:
        """Return the server `ref` names (a name or id), or raise ActionError if none does."""
        ...

    async def describe(self, target: Target) -> str:
        """Return the server's state as the provider shows it (and that it exists)."""
        ...


class PowerBackend(ServerBackend, Protocol):
    """The `power` capability: power a server off or on."""

    async def power(self, target: Target, verb: str, ctx: ActionContext) -> str:
        """Ask for `power_off` or `power_on`, wait for it to end; return what happened."""
        ...

    async def power_asked_since(
        self, target: Target, verb: str, since: datetime, ctx: ActionContext
    ) -> bool:
        """Return whether `verb` was asked for at or after `since` (waiting for it to end)."""
        ...

    async def powered(self, target: Target, verb: str) -> bool:
        """Return whether the server is in the state `verb` leads to."""
        ...


class CoresBackend(ServerBackend, Protocol):
    """The `set_cores` capability: change a server's cores in place."""

    async def set_cores(self, target: Target, cores: int, ctx: ActionContext) -> str:
        """Ask for the cores (waiting out a change under way); return what happened."""
        ...

    async def check_cores(self, target: Target, cores: int, ctx: ActionContext) -> str:
        """Raise ActionError if `cores` is not a size the server allows; return any caveat."""
        ...

    async def cores_asked(self, target: Target, cores: int) -> bool:
        """Return whether the provider already has `cores` as the server's setting."""
        ...

    async def runs_with(self, target: Target, cores: int) -> bool:
        """Return whether the server runs, with no change under way, with `cores`."""
        ...


class SnapshotBackend(ServerBackend, Protocol):
    """The `snapshot` capability: take, list, delete and roll back to snapshots."""

    async def snapshots(self, target: Target) -> list[SnapshotRef]:
        """Return the server's snapshots."""
        ...

    async def take_snapshot(
        self, target: Target, name: str, notes: str, ctx: ActionContext, limit_s: float
    ) -> int:
        """Create a snapshot with these notes and wait, within `limit_s`, until it completes."""
        ...

    async def wait_snapshot(
        self, target: Target, snapshot: int, ctx: ActionContext, limit_s: float
    ) -> int:
        """Wait, within `limit_s`, for a snapshot being created; raise unless it completes."""
        ...

    async def delete_snapshot(self, target: Target, snapshot: int) -> None:
        """Delete a snapshot."""
        ...

    async def rollback(self, target: Target, snapshot: int, ctx: ActionContext) -> None:
        """Roll the server back to a snapshot and wait for it."""
        ...


@dataclass(frozen=True, slots=True)
class ServerBackends:
    """The server backends of the configured providers, by capability and provider name."""

    power: Mapping[str, PowerBackend] = field(default_factory=dict)
    cores: Mapping[str, CoresBackend] = field(default_factory=dict)
    snapshots: Mapping[str, SnapshotBackend] = field(default_factory=dict)


class ServerParams(ActionParams):
    """Parameters every server action takes."""

    server: str | None = Field(
        default=None,
        min_length=1,
        description="The server (a name or id its provider knows); default: the event's.",
    )
    provider: str | None = Field(
        default=None,
        min_length=1,
        description="The server's provider; default: the first that offers the action.",
    )
    snapshot: Literal["first", "none"] | None = Field(
        default=None,
        description="`none` acts without the guard's snapshot (required where there are none).",
    )


class SetCoresParams(ServerParams):
    """Parameters of `set_cores`."""

    cores: int = Field(ge=1, le=256, description="The number of cores to run with.")


def server_params(
    base: type[ServerParams],
    action: str,
    capability: Capability,
    providers: Mapping[str, ProviderTraits],
) -> type[ServerParams]:
    """Return `base` with `provider` limited to the providers offering `capability`.

    The first of them is the default. A provider that exists but cannot do it is refused with
    what to do instead.
    """
    offered = [name for name, traits in providers.items() if traits.offers(capability)]

    def offers(cls: type[ServerParams], value: str | None) -> str | None:
        if value is None or value in offered:
            return value
        traits = providers.get(value)
        if traits is None:
            known = ", ".join(offered) or "none"
            raise ValueError(f"unknown provider {value!r}; {action} works on: {known}")
        hint = ""
        if capability is Capability.SET_CORES and traits.recommends:
            hint = f"; use an autoscale rule with provider {value} to get a recommendation instead"
        raise ValueError(f"{value} cannot {_VERBS[capability]} through its API{hint}")

    # Named by the action (`PowerOffParams`): each has its own providers in the JSON Schema.
    name = "".join(part.title() for part in action.split("_")) + "Params"
    model: type[ServerParams] = type(
        name,
        (base,),
        {
            "__module__": base.__module__,
            "__qualname__": name,
            "__doc__": f"Parameters of `{action}`.",
            # No provider offers it: None, and a run says so.
            "__annotations__": {"provider": "str" if offered else "str | None"},
            "provider": Field(
                default=offered[0] if offered else None,
                min_length=1,
                description="The server's provider.",
                json_schema_extra={"enum": list(offered)},
            ),
            "_offered": field_validator("provider")(classmethod(offers)),
        },
    )
    return model


_VERBS = {
    Capability.POWER: "power a server off or on",
    Capability.SET_CORES: "change a server's cores",
    Capability.SNAPSHOT: "snapshot a server",
}


class ServerAction:
    """What the server actions share: parameters, target, and the guard's hooks."""

    name: ClassVar[str]
    capability: ClassVar[Capability]
    base_params: ClassVar[type[ServerParams]] = ServerParams
    destructive: ClassVar[bool] = True
    depends_on: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, backends: Mapping[str, ServerBackend], params_model: type[ServerParams]
    ) -> None:
        self.backends = backends
        self.params_model: type[ActionParams] = params_model

    @classmethod
    def params_for(cls, providers: Mapping[str, ProviderTraits]) -> type[ServerParams]:
        """Return the parameter model, with the providers that offer this action."""
        return server_params(cls.base_params, cls.name, cls.capability, providers)

    def params(self, ctx: ActionContext) -> ServerParams:
        """Return the decision's parameters."""
        params = ctx.params(self.params_model)
        assert isinstance(params, ServerParams)
        return params

    def backend(self, provider: str) -> ServerBackend:
        """Return a configured provider's backend, or raise ActionError saying what to add."""
        found = self.backends.get(provider)
        if found is None:
            raise not_configured(provider)
        return found

    async def target(self, ctx: ActionContext) -> Target:
        """Return the server the decision is about: `server`, else the event's resource."""
        params = self.params(ctx)
        event = ctx.decision.event
        ref = params.server or (event.resource if event is not None else "")
        if not ref:
            raise ActionError("no server: give `server`, or use the action on a server's event")
        if params.provider is None:
            raise ActionError(f"no provider offers {self.name}")
        return await self.backend(params.provider).target(ref)

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
        return await self.backend(target.provider).describe(target)


class _PowerAction(ServerAction):
    """Power a server off or on."""

    capability: ClassVar[Capability] = Capability.POWER
    words: ClassVar[str]

    def _power(self, target: Target) -> PowerBackend:
        # The backends this action holds are those of its capability.
        return cast(PowerBackend, self.backend(target.provider))

    async def perform(self, ctx: ActionContext, target: Target) -> str:
        """Start the power action and wait for it to complete."""
        return await self._power(target).power(target, self.name, ctx)

    async def requested_since(self, ctx: ActionContext, target: Target, since: datetime) -> bool:
        """Look for a power action of this type on the server, asked at or after `since`."""
        return await self._power(target).power_asked_since(target, self.name, since, ctx)

    async def effect_holds(self, ctx: ActionContext, target: Target) -> bool:
        """Return whether the server's power state is the one this action leads to."""
        return await self._power(target).powered(target, self.name)

    def effect_words(self, ctx: ActionContext) -> str:
        """Return `powered off` or `powered on`."""
        return self.words


class PowerOffAction(_PowerAction):
    """Power a server off (`power_off`)."""

    name: ClassVar[str] = "power_off"
    words = "powered off"


class PowerOnAction(_PowerAction):
    """Power a server on (`power_on`); it boots, so it is not destructive."""

    name: ClassVar[str] = "power_on"
    destructive: ClassVar[bool] = False
    words = "powered on"


class SetCoresAction(ServerAction):
    """Change a server's cores in place (`set_cores`); the provider may reboot it to apply them."""

    name: ClassVar[str] = "set_cores"
    capability: ClassVar[Capability] = Capability.SET_CORES
    base_params: ClassVar[type[ServerParams]] = SetCoresParams

    def _cores(self, ctx: ActionContext) -> int:
        params = self.params(ctx)
        assert isinstance(params, SetCoresParams)
        return params.cores

    def _backend(self, target: Target) -> CoresBackend:
        # The backends this action holds are those of its capability.
        return cast(CoresBackend, self.backend(target.provider))

    async def perform(self, ctx: ActionContext, target: Target) -> str:
        """Ask for the cores; the check waits for the server to run with them."""
        return await self._backend(target).set_cores(target, self._cores(ctx), ctx)

    async def preflight(self, ctx: ActionContext) -> str:
        """Say what a resize would meet; raise when the size is not one the server allows."""
        said = await super().preflight(ctx)
        if said.endswith("nothing to do"):
            return said
        target = await self.target(ctx)
        return said + await self._backend(target).check_cores(target, self._cores(ctx), ctx)

    async def requested_since(self, ctx: ActionContext, target: Target, since: datetime) -> bool:
        """Return whether the provider already has the new cores as the server's setting."""
        return await self._backend(target).cores_asked(target, self._cores(ctx))

    async def effect_holds(self, ctx: ActionContext, target: Target) -> bool:
        """Return whether the server runs, with no change under way, with the new cores."""
        return await self._backend(target).runs_with(target, self._cores(ctx))

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


def tagged(snapshots: Sequence[SnapshotRef], key: str) -> SnapshotRef | None:
    """Return the snapshot whose notes tie it to the decision key, if one was taken."""
    tag = intent_tag(key)
    return next((s for s in snapshots if s.notes == tag), None)


class SnapshotAction(ServerAction):
    """Take a snapshot of a server (`snapshot`) and wait for it to complete."""

    name: ClassVar[str] = "snapshot"
    capability: ClassVar[Capability] = Capability.SNAPSHOT
    destructive: ClassVar[bool] = False

    def _backend(self, target: Target) -> SnapshotBackend:
        # The backends this action holds are those of its capability.
        return cast(SnapshotBackend, self.backend(target.provider))

    async def perform(self, ctx: ActionContext, target: Target) -> str:
        """Create the snapshot, tagged with the decision's key, and wait for it."""
        snapshot = await self._backend(target).take_snapshot(
            target,
            f"cloudpilot: rule {ctx.decision.rule}",
            intent_tag(ctx.decision.key),
            ctx,
            ctx.timeout_s,
        )
        return f"{target.name}: snapshot {snapshot} completed"

    async def run(self, ctx: ActionContext) -> Outcome:
        """Snapshot the server, unless a snapshot for this decision already exists."""
        target = await self.target(ctx)
        backend = self._backend(target)
        found = tagged(await backend.snapshots(target), ctx.decision.key)
        if found is None:
            return Outcome(OutcomeStatus.DONE, await self.perform(ctx, target))
        # Taken before a restart: it may still be being created.
        done = await backend.wait_snapshot(target, found.id, ctx, ctx.timeout_s)
        return Outcome(OutcomeStatus.DONE, f"{target.name}: snapshot {done} completed")

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Run again: `run` finds a snapshot taken before the crash by its notes."""
        return None

    def effect_words(self, ctx: ActionContext) -> str:
        """Return `snapshotted`."""
        return "snapshotted"

    async def effect_holds(self, ctx: ActionContext, target: Target) -> bool:
        """Return whether a completed snapshot carries this decision's tag."""
        found = tagged(await self._backend(target).snapshots(target), ctx.decision.key)
        return found is not None and found.completed


SERVER_ACTIONS: tuple[type[ServerAction], ...] = (
    PowerOffAction,
    PowerOnAction,
    SetCoresAction,
    SnapshotAction,
)


def server_actions(
    backends: ServerBackends, params: Mapping[str, type[ActionParams]]
) -> list[ServerAction]:
    """Return the server actions, each with the backends of the providers that offer it.

    `params` are the parameter models by action (the vocabulary's, built by `params_for`).
    """
    by_capability: dict[Capability, Mapping[str, Any]] = {
        Capability.POWER: backends.power,
        Capability.SET_CORES: backends.cores,
        Capability.SNAPSHOT: backends.snapshots,
    }
    built: list[ServerAction] = []
    for kind in SERVER_ACTIONS:
        model = params[kind.name]
        assert issubclass(model, ServerParams)
        built.append(kind(by_capability[kind.capability], model))
    return built
