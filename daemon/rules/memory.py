"""The engine's timing memory: one timestamp per rule, kind and group, kept across restarts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class MemoryKind(StrEnum):
    """The kinds of per-rule timing memory the engine keeps."""

    FOR = "for"  # when the condition began to hold, per group
    THROTTLE = "throttle"  # when the rule last decided, per group
    COOLDOWN = "cooldown"  # when a policy last acted, per group
    SEEN = "seen"  # when a `first_seen` rule last saw a combination of values


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """One timestamp the engine remembers for a rule and a group (e.g. `ec200001|power_off`)."""

    kind: MemoryKind
    rule: str
    group: str
    since: datetime
