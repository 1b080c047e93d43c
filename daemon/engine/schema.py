"""The rule-file format as pydantic models: what a rule file may say, and nothing more."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from daemon.durations import parse_duration
from daemon.engine.match import check_path, compile_value_test

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_WHEN_CHARS = 4096

_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
        {"type": "number", "exclusiveMinimum": 0},
    ],
    "description": "A duration such as 500ms, 30s, 5m, 1h or 2d (a bare number is seconds).",
}

_SCALAR_SCHEMA: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}

_MATCH_VALUE_SCHEMA: dict[str, Any] = {
    "description": (
        "A scalar (equality; a string with *, ? or [ is a glob), a list (any of its items), "
        "or a mapping of operators."
    ),
    "anyOf": [
        _SCALAR_SCHEMA,
        {"type": "array", "items": _SCALAR_SCHEMA, "minItems": 1},
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "eq": _SCALAR_SCHEMA,
                "ne": _SCALAR_SCHEMA,
                "gt": {"type": "number"},
                "ge": {"type": "number"},
                "lt": {"type": "number"},
                "le": {"type": "number"},
                "in": {"type": "array", "items": _SCALAR_SCHEMA},
                "not_in": {"type": "array", "items": _SCALAR_SCHEMA},
                "glob": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    ]
                },
                "exists": {"type": "boolean"},
            },
        },
    ],
}


def _check_match_value(value: object) -> object:
    compile_value_test(value)
    return value


Duration = Annotated[
    float, BeforeValidator(parse_duration), Field(gt=0), WithJsonSchema(_DURATION_SCHEMA)
]
"""A positive duration in seconds, written like "30s" or "5m"."""

EventPath = Annotated[
    StrictStr,
    AfterValidator(check_path),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(type|key|time|resource|data(\.[^.]+)+)$",
            "description": "A path into the event: type, key, time, resource or data.<name>.",
        }
    ),
]
"""A dotted path into the event as rules see it (`resource`, `data.type`)."""

MatchValue = Annotated[Any, AfterValidator(_check_match_value), WithJsonSchema(_MATCH_VALUE_SCHEMA)]
"""One `match` test: a scalar, a list of scalars, or a mapping of operators."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ThrottleModel(_Strict):
    """Decide at most once per window for each group of events."""

    model_config = ConfigDict(title="Throttle")

    once_within: Duration
    group_by: list[EventPath] = Field(default_factory=lambda: ["resource"], min_length=1)


class FirstSeenModel(_Strict):
    """Go on only for a combination of values this rule has not seen within a window."""

    model_config = ConfigDict(title="FirstSeen")

    by: list[EventPath] = Field(min_length=1)
    within: Duration


class GuardModel(_Strict):
    """Which actions are risky, and the snapshot taken before them."""

    model_config = ConfigDict(title="Guard")

    risky: list[Annotated[StrictStr, Field(min_length=1)]] = Field(default_factory=list)
    snapshot_first: StrictBool = True
    snapshot_timeout: Duration = 1800.0
    keep_snapshots: Annotated[StrictInt, Field(ge=0)] = 3


class RuleModel(_Strict):
    """One event rule: which events, which conditions, and what to do."""

    model_config = ConfigDict(title="Rule")

    name: Annotated[StrictStr, Field(pattern=NAME_PATTERN, max_length=100)]
    description: StrictStr | None = None
    enabled: StrictBool = True
    mode: Literal["enforce", "dry_run"] = "enforce"
    on: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    match: dict[EventPath, MatchValue] | None = None
    when: Annotated[StrictStr, Field(min_length=1, max_length=MAX_WHEN_CHARS)] | None = None
    for_: Duration | None = Field(default=None, alias="for")
    throttle: ThrottleModel | None = None
    first_seen: FirstSeenModel | None = None
    do: Annotated[
        list[dict[StrictStr, Any]],
        Field(min_length=1, description="Actions, each a one-key mapping {action: params}."),
    ]
    concurrency: Literal["queued", "parallel", "single"] = "queued"
    max_running: Annotated[StrictInt, Field(ge=1)] = 10
    timeout: Duration = 60.0


class RuleFileModel(_Strict):
    """A rule file: a list of rules and, in at most one file, the guard."""

    model_config = ConfigDict(title="Cloudpilot rule file")

    rules: list[RuleModel]
    guard: GuardModel | None = None
