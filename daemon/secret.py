"""A credential that never shows itself: in repr, str, logs or exception text."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A credential that never shows itself in repr, str, logs or exception text."""

    _value: str = field(compare=True)

    def reveal(self) -> str:
        """Return the secret for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__
