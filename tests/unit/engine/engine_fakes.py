"""Helpers for the rule-engine tests: small action models, events, rule loading, an observer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from daemon.durations import Seconds
from daemon.models import Event, Mode
from daemon.registry import BUILTIN
from daemon.rules.action import ActionParams
from daemon.rules.compiled import RuleSet
from daemon.rules.loader import check_rules, load_rules
from daemon.rules.vocabulary import Vocabulary

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


class LogParams(ActionParams):
    message: str
    level: Literal["debug", "info", "warning", "error"] = "info"


class WebhookParams(ActionParams):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Seconds = 10.0


# The shipped providers, and only the two actions these rules use.
ACTIONS = Vocabulary({"log": LogParams, "webhook": WebhookParams}, BUILTIN.traits)


def load_text(tmp_path: Path, text: str) -> RuleSet:
    """Load rules from YAML text written to a file in `tmp_path`."""
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return load_rules([path], ACTIONS)


def check_text(tmp_path: Path, text: str, name: str = "rules.yaml") -> list[str]:
    """Return the problems in YAML text as `NAME:LINE: field: reason` lines (run in tmp_path)."""
    path = tmp_path / name
    path.write_text(text)
    return [
        str(problem).replace(str(tmp_path) + "/", "") for problem in check_rules([path], ACTIONS)
    ]


def make_event(
    type: str = "seeweb.action.failed",
    *,
    at: float = 0.0,
    key: str | None = None,
    resource: str = "ec200001",
    data: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Event:
    """Return an event `at` seconds after T0 whose data is `data` plus `fields`."""
    return Event(
        type=type,
        key=key or f"{type}:{resource}:{at}",
        time=T0 + timedelta(seconds=at),
        resource=resource,
        data={**(data or {}), **fields},
    )


class RecordingObserver:
    """Keeps every observer call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def matched(self, rule: str) -> None:
        self.calls.append(("matched", rule))

    def decided(self, rule: str, mode: Mode) -> None:
        self.calls.append(("decided", rule, str(mode)))

    def error(self, rule: str, event: Event, message: str) -> None:
        self.calls.append(("error", rule, event.key, message))

    def stale(self, event: Event) -> None:
        self.calls.append(("stale", event.key))
