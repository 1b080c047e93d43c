"""What an action is: a YAML name, a parameter model, and `run` / `reconcile`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

import structlog

from daemon.clock import Clock
from daemon.models import Decision, Outcome
from daemon.rules.params import ActionParams

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
    params_model: ClassVar[type[ActionParams]]
    destructive: ClassVar[bool]
    depends_on: ClassVar[frozenset[str]]

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


class ActionRegistry:
    """Action types by YAML name; the engine validates `do:` against it, the runner runs it."""

    def __init__(self, actions: Iterable[Action] = ()) -> None:
        self._actions: dict[str, Action] = {}
        for action in actions:
            self.add(action)

    def add(self, action: Action) -> None:
        """Register an action; a name may be registered once."""
        if action.name in self._actions:
            raise ValueError(f"action {action.name!r} is registered twice")
        self._actions[action.name] = action

    def get(self, name: str) -> Action:
        """Return the action registered under `name`, or raise KeyError."""
        return self._actions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._actions))

    def params_models(self) -> Mapping[str, type[ActionParams]]:
        """Return each action's parameter model by name, for validating rule files."""
        return {name: self._actions[name].params_model for name in self}
