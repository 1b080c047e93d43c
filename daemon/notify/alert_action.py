"""The `alert` action: raise an alert to named routes, and say which event resolves it."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, ClassVar, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from daemon.facts import ServerFact
from daemon.models import Decision, Outcome
from daemon.notify.templates import check_template, unknown_fields
from daemon.rules.action import ActionContext, ActionParams
from daemon.rules.events import (
    EVENT_FIELDS,
    EVENT_TYPE_PLACEHOLDER,
    EVENTS_CONTEXT,
    EventCatalogue,
    suggest,
)
from daemon.rules.match import check_path
from daemon.rules.schema import Duration

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_LABELS = frozenset({"alertname", "severity", "resource"})
ROUTE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_LABEL_VALUE = 1024

Template = Annotated[StrictStr, AfterValidator(check_template)]
EventField = Annotated[StrictStr, AfterValidator(check_path)]


class ResolveParams(BaseModel):
    """What ends the alert: a later event sharing fields with the first, or quiet for a while."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Resolve")

    on: Annotated[
        list[Annotated[StrictStr, Field(min_length=1, max_length=200)]],
        WithJsonSchema(
            {
                "anyOf": [
                    EVENT_TYPE_PLACEHOLDER,
                    {"type": "array", "items": EVENT_TYPE_PLACEHOLDER},
                ]
            }
        ),
    ] = Field(
        default_factory=list,
        description="Event type(s) that resolve the alert, one or a list; globs allowed.",
    )
    same: list[EventField] = Field(
        default_factory=lambda: ["resource"],
        min_length=1,
        description="Fields the resolving event must share with the one that fired the alert.",
    )
    after: Duration | None = Field(
        default=None,
        description="Resolve on its own this long after the last occurrence (e.g. 1h).",
    )

    @field_validator("on", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("on")
    @classmethod
    def _known_types(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # A resolving type no source or policy emits leaves the alert firing for ever. The rule
        # loader gives the catalogue as the validation's context; a run reads checked rules.
        events = (info.context or {}).get(EVENTS_CONTEXT)
        if not isinstance(events, EventCatalogue):
            return value
        reasons = [r for t in value if (r := events.unknown_type(t, resolving=True)) is not None]
        if reasons:
            raise ValueError("; ".join(reasons))
        return value

    @model_validator(mode="after")
    def _ends_somehow(self) -> ResolveParams:
        if not self.on and self.after is None:
            raise ValueError("give `on` (event types that resolve it), `after`, or both")
        return self


class AlertParams(ActionParams):
    """Parameters of `alert`."""

    model_config = ConfigDict(title="alert")

    severity: Literal["critical", "warning", "info"] = "warning"
    summary: Template = Field(
        description="One line (sandboxed Jinja2 over `event`, `rule`, `server`); at most 1,024 "
        "characters are sent."
    )
    description: Template = Field(default="", description="More detail; sandboxed Jinja2 too.")
    labels: dict[StrictStr, StrictStr] = Field(
        default_factory=dict,
        description="Extra labels; alertname, severity and resource are always set.",
    )
    to: Annotated[
        list[Annotated[StrictStr, Field(pattern=ROUTE_PATTERN)]],
        Field(min_length=1, description="Routes, each a `[notifiers.NAME]` of the config."),
    ]
    resolve: ResolveParams | None = None

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not LABEL_NAME.match(name):
                raise ValueError(f"label {name!r}: names are letters, digits and _")
            if name in RESERVED_LABELS:
                raise ValueError(f"label {name!r} is set by Cloudpilot")
            if len(text) > MAX_LABEL_VALUE:
                raise ValueError(f"label {name!r}: at most {MAX_LABEL_VALUE} characters")
        return value

    @field_validator("to")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a route is listed twice")
        return value

    def event_problems(
        self, event_type: str, data_fields: frozenset[str] | None
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Return the template fields that events of `event_type` can never have."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for part in ("summary", "description"):
            source = getattr(self, part)
            if not source:
                continue
            reasons = unknown_fields(
                source,
                event_fields=EVENT_FIELDS,
                data_fields=data_fields,
                server_fields=SERVER_FIELDS,
                suggest=suggest,
            )
            problems.extend(((part,), reason) for reason in reasons)
        return problems


#: What a template's `server` holds: the watched server whose name is the event's resource.
SERVER_FIELDS = tuple(field.name for field in dataclasses.fields(ServerFact))


class AlertRaiser(Protocol):
    """Raises the alert of a decision outside a poll batch (the runner's path)."""

    async def raise_alert(self, decision: Decision) -> Outcome:
        """Record the alert and queue its notifications in one transaction."""
        ...


class AlertAction:
    """Raise an alert for a decision that reaches the runner.

    Poll batches raise their alerts inside the batch's transaction; this path serves decisions
    that reach the runner otherwise (an entry left open by an older version).
    """

    name: ClassVar[str] = "alert"
    params_model: ClassVar[type[ActionParams]] = AlertParams
    destructive: ClassVar[bool] = False
    depends_on: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, raiser: AlertRaiser) -> None:
        self._raiser = raiser

    async def run(self, ctx: ActionContext) -> Outcome:
        """Record the alert and queue its notifications."""
        return await self._raiser.raise_alert(ctx.decision)

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Raise it again: the alert's state makes a second raise queue nothing new."""
        return await self._raiser.raise_alert(ctx.decision)
