"""Server selectors: which servers a rule is about, by name, group, notes, location and plan."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

_FIELDS = ("name", "group", "notes", "location", "plan")
# Plan names differ in case between a server's record and the plan list (`ECS1`, `eCS1`).
_ANY_CASE = frozenset({"plan"})


@dataclass(frozen=True, slots=True)
class ServerSelector:
    """Globs per server field; a server matches when every given field matches one of its globs."""

    globs: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, fields: dict[str, str | list[str] | None]) -> ServerSelector:
        """Return the selector for a rule's `servers:` mapping."""
        chosen: list[tuple[str, tuple[str, ...]]] = []
        for name in _FIELDS:
            value = fields.get(name)
            if value is None:
                continue
            chosen.append((name, (value,) if isinstance(value, str) else tuple(value)))
        return cls(tuple(chosen))

    def matches(self, server: Any) -> bool:
        """Return whether the server (a ServerFact, or a bill row with the same fields) is selected.

        Read by attribute name: `name`, `group`, `notes`, `location`, `plan`; a field the object
        lacks or holds as None matches no glob.
        """
        for name, patterns in self.globs:
            value = getattr(server, name, None)
            if value is None:
                return False
            if name in _ANY_CASE:
                value, patterns = value.casefold(), tuple(glob.casefold() for glob in patterns)
            if not any(fnmatchcase(value, glob) for glob in patterns):
                return False
        return True

    def describe(self) -> str:
        """Return the selector in words, e.g. `name=web-*`."""
        if not self.globs:
            return "all servers"
        return " ".join(f"{name}={'|'.join(patterns)}" for name, patterns in self.globs)
