"""The action registry: every action type by its YAML name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from daemon.rules.action import Action, ActionParams


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
