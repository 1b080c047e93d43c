"""The values that flow through the daemon: events in, decisions out, outcomes back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """Something new a source saw, e.g. `seeweb.action.failed` for action 709.

    `key` is stable across polls and restarts and unique per event (not per resource): the store
    deduplicates on it, so `seeweb.action:709:failed` and `seeweb.action:709:started` are two
    events. `source` names the source that produced it (`actions`, `logs`, ...).
    """

    type: str
    key: str
    time: datetime
    resource: str
    data: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return the event as rules see it: `type`, `key`, `time`, `resource`, `data`."""
        return {
            "type": self.type,
            "key": self.key,
            "time": self.time,
            "resource": self.resource,
            "data": dict(self.data),
        }


class Mode(StrEnum):
    """Whether a rule acts or only says what it would do."""

    ENFORCE = "enforce"
    DRY_RUN = "dry_run"


@dataclass(frozen=True, slots=True)
class Decision:
    """One action a rule decided on, for one event.

    `key` is the idempotency key (`<rule>/<action index>/<event key>`): the ledger holds at most
    one entry per key, so a decision is carried out at most once, across crashes and restarts.
    `params` are the action's validated parameters as plain JSON-able data.
    """

    key: str
    rule: str
    action: str
    params: Mapping[str, Any]
    mode: Mode
    event: Event | None
    time: datetime


class OutcomeStatus(StrEnum):
    """How a carried-out decision ended."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    ABORTED = "aborted"  # a guard stopped it before it ran: the snapshot failed or timed out


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of running an action: status plus a short, secret-free detail."""

    status: OutcomeStatus
    detail: str = ""
