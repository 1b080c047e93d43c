"""The `log` action: write the rule's message to the daemon's log."""

from __future__ import annotations

from typing import ClassVar, Literal

import structlog
from pydantic import Field

from daemon.models import Outcome, OutcomeStatus
from daemon.rules.action import ActionContext, ActionParams


class LogParams(ActionParams):
    """Parameters of `log`."""

    message: str = Field(min_length=1, description="The text to log, as written.")
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The log level."
    )


class LogAction:
    """Log a message with the rule and the event that triggered it (`rule_log`)."""

    name: ClassVar[str] = "log"
    params_model: ClassVar[type[ActionParams]] = LogParams
    destructive: ClassVar[bool] = False
    depends_on: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, log: structlog.typing.FilteringBoundLogger) -> None:
        self._log = log

    async def run(self, ctx: ActionContext) -> Outcome:
        """Write the message at its level."""
        params = ctx.params(LogParams)
        decision = ctx.decision
        event = decision.event
        emit = {
            "debug": self._log.debug,
            "info": self._log.info,
            "warning": self._log.warning,
            "error": self._log.error,
        }[params.level]
        emit(
            "rule_log",
            message=params.message,
            rule=decision.rule,
            decision_key=decision.key,
            event_type=event.type if event else None,
            event_key=event.key if event else None,
            resource=event.resource if event else None,
        )
        return Outcome(OutcomeStatus.DONE, f"logged at {params.level}")

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Say the outcome is unknown: logging the message twice is harmless."""
        return None
