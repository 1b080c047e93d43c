"""What an action is: its YAML name and parameter model, the context of one run, `run`/`reconcile`.

The contract every stage shares (the engine validates `do:` against the parameter models, the
runner and the guard run actions, the alert book is one); the registry is in `daemon.actions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict

from daemon.clock import Clock
from daemon.models import Decision, Outcome


class ActionParams(BaseModel):
    """Base of every action's parameters: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def redacted(self) -> dict[str, Any]:
        """Return the parameters as they may be logged; models holding secrets mask them."""
        return params_as_data(self)

    def event_problems(
        self, event_type: str, data_fields: frozenset[str] | None
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Return (parameter path, reason) for what cannot work with events of `event_type`.

        The rule loader asks once the parameters are valid, with the rule's `on` and the fields
        its events' `data` may hold (None: unknown); parameters that read the event (alert
        templates) say what can never exist. The default: nothing.
        """
        return []


def params_as_data(params: ActionParams) -> dict[str, Any]:
    """Return validated parameters as JSON-able data, the form a Decision carries."""
    return params.model_dump(mode="json", exclude_unset=True)


ActionParamsT = TypeVar("ActionParamsT", bound=ActionParams)


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What one run of one action gets: the decision, the time and a bound logger."""

    decision: Decision
    clock: Clock
    log: structlog.typing.FilteringBoundLogger
    timeout_s: float

    def params(self, model: type[ActionParamsT]) -> ActionParamsT:
        """Return the decision's parameters parsed as `model`."""
        return model.model_validate(self.decision.params)


class Action(Protocol):
    """One action type, found in the registry by its YAML name (`webhook`, `power_off`, ...).

    `destructive` actions reboot or destroy: the runner holds them until the sources in
    `depends_on` have completed a full successful poll since start (the startup guard).
    """

    name: ClassVar[str]
    destructive: ClassVar[bool]
    depends_on: ClassVar[frozenset[str]]

    @property
    def params_model(self) -> type[ActionParams]:
        """Return the model its parameters are validated with."""
        ...

    async def run(self, ctx: ActionContext) -> Outcome:
        """Carry the decision out once and say how it went."""
        ...

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Find out what became of a run that started before a crash.

        Return its outcome when the real state shows it, or None when it cannot be known, in
        which case the runner runs it again (actions must then be safe to repeat with the same
        idempotency key, e.g. a webhook that sends it as `Idempotency-Key`).
        """
        ...
