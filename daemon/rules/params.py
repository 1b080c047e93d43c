"""What every action's parameters are: a strict pydantic model, and the data a decision carries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ActionParams(BaseModel):
    """Base of every action's parameters: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def redacted(self) -> dict[str, Any]:
        """Return the parameters as they may be logged; models holding secrets mask them."""
        return params_as_data(self)

    def event_problems(self, event_type: str) -> list[tuple[tuple[str | int, ...], str]]:
        """Return (parameter path, reason) for what cannot work with events of `event_type`.

        The rule loader asks once the parameters are valid, with the rule's `on`; parameters
        that read the event (alert templates) say what can never exist. The default: nothing.
        """
        return []


def params_as_data(params: ActionParams) -> dict[str, Any]:
    """Return validated parameters as JSON-able data, the form a Decision carries."""
    return params.model_dump(mode="json", exclude_unset=True)
