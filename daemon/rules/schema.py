"""The rule-file format as pydantic models: what a rule file may say, and nothing more."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    model_validator,
)

from daemon.durations import parse_duration
from daemon.rules.events import EVENT_TYPE_PLACEHOLDER
from daemon.rules.match import check_path, compile_value_test
from daemon.rules.windows import parse_window

# Actions that reboot or destroy, guarded unless a guard section says otherwise.
DEFAULT_RISKY = ("set_cores", "power_off", "rollback", "delete_server")
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

    risky: list[Annotated[StrictStr, Field(min_length=1)]] = Field(
        default_factory=lambda: list(DEFAULT_RISKY)
    )
    snapshot_first: StrictBool = True
    snapshot_timeout: Duration = 1800.0
    keep_snapshots: Annotated[StrictInt, Field(ge=1)] = 3
    verify_timeout: Duration = 600.0
    rollback_on_failure: StrictBool = False
    to: list[Annotated[StrictStr, Field(min_length=1)]] = Field(default_factory=list)


Globs = Annotated[
    StrictStr | Annotated[list[StrictStr], Field(min_length=1)],
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ],
            "description": "A glob (*, ?, [..]) or a list of globs, any of which may match.",
        }
    ),
]


class ServerSelectorModel(_Strict):
    """Which servers: every field given must match (globs); an empty selector takes them all."""

    model_config = ConfigDict(title="ServerSelector")

    name: Globs | None = None
    group: Globs | None = None
    notes: Globs | None = None
    location: Globs | None = None
    plan: Globs | None = None


Percent = Annotated[float, Field(gt=0, lt=100)]


class ScaleUpModel(_Strict):
    """Add `step` cores once CPU has stayed above `above` percent for `for`."""

    model_config = ConfigDict(title="ScaleUp")

    above: Percent
    for_: Duration = Field(alias="for")
    step: Annotated[StrictInt, Field(ge=1)] = 1


class ScaleDownModel(_Strict):
    """Remove `step` cores once CPU has stayed below `below` percent for `for`."""

    model_config = ConfigDict(title="ScaleDown")

    below: Percent
    for_: Duration = Field(alias="for")
    step: Annotated[StrictInt, Field(ge=1)] = 1


def _check_window(value: str) -> str:
    parse_window(value)
    return value


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (write e.g. UTC or Europe/Rome)") from None
    return value


class AutoscaleModel(_Strict):
    """Change a server's cores with its CPU load: in place on Glesys, as advice on Seeweb."""

    model_config = ConfigDict(title="Autoscale")

    provider: Annotated[StrictStr, Field(min_length=1)]
    servers: ServerSelectorModel = Field(default_factory=ServerSelectorModel)
    metric: Literal["cpu"] = "cpu"
    up: ScaleUpModel
    down: ScaleDownModel
    min_cores: Annotated[StrictInt, Field(ge=1)] = 1
    max_cores: Annotated[StrictInt, Field(ge=1, le=256)]
    cooldown: Duration = 1800.0
    windows: list[Annotated[StrictStr, AfterValidator(_check_window)]] = Field(
        default_factory=list,
        description='When resizes may happen, e.g. "Mon-Fri 22:00-06:00"; none means any time.',
    )
    timezone: Annotated[StrictStr, AfterValidator(_check_zone)] = "UTC"
    emergency_above: Percent | None = None
    max_resizes_per_day: Annotated[StrictInt, Field(ge=1)] = 4
    snapshot: Literal["first", "none"] | None = None
    to: list[Annotated[StrictStr, Field(min_length=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> AutoscaleModel:
        if self.min_cores > self.max_cores:
            raise ValueError(
                f"min_cores ({self.min_cores}) is more than max_cores ({self.max_cores})"
            )
        if self.down.below >= self.up.above:
            raise ValueError(
                f"down.below ({self.down.below:g}) must be under up.above ({self.up.above:g})"
            )
        if self.emergency_above is not None and self.emergency_above < self.up.above:
            raise ValueError(
                f"emergency_above ({self.emergency_above:g}) is under up.above ({self.up.above:g})"
            )
        return self


class AutoscaleRuleModel(_Strict):
    """An autoscale rule: a name, a mode and the `autoscale` body."""

    model_config = ConfigDict(title="AutoscaleRule")

    name: Annotated[StrictStr, Field(pattern=NAME_PATTERN, max_length=100)]
    description: StrictStr | None = None
    enabled: StrictBool = True
    mode: Literal["enforce", "dry_run"] = "enforce"
    autoscale: AutoscaleModel


class BudgetScopeModel(_Strict):
    """What a budget counts: the account, a group, a server selector or a GPU cluster (one)."""

    model_config = ConfigDict(title="BudgetScope")

    account: Literal[True] | None = None
    group: Annotated[StrictStr, Field(min_length=1)] | None = None
    servers: ServerSelectorModel | None = None
    k8sgpu_cluster: Annotated[StrictStr, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one(self) -> BudgetScopeModel:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of account: true, group, servers, k8sgpu_cluster"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class PowerOffStepModel(_Strict):
    """Power off the Seeweb servers a selector names (through the guard: snapshot first)."""

    model_config = ConfigDict(title="BudgetPowerOff")

    servers: ServerSelectorModel

    @model_validator(mode="after")
    def _narrow(self) -> PowerOffStepModel:
        if not self.servers.model_dump(exclude_none=True):
            raise ValueError("servers must name at least one field: an empty selector takes all")
        return self


class DeleteGpuPodsModel(_Strict):
    """Delete a cluster's online GPU pods, newest first, keeping `keep` of them."""

    model_config = ConfigDict(title="BudgetDeleteGpuPods")

    cluster: Annotated[StrictStr, Field(min_length=1)]
    keep: Annotated[StrictInt, Field(ge=0)] = 0


class ApprovalModel(_Strict):
    """Wait for `cloudpilot approve ID` before acting; after `timeout`, cancel or proceed."""

    model_config = ConfigDict(title="BudgetApproval")

    timeout: Duration = 4 * 3600.0
    on_timeout: Literal["cancel", "proceed"] = "cancel"


BudgetPercent = Annotated[float, Field(gt=0, le=1000)]


class EnforceStepModel(_Strict):
    """One graded step: at `at` percent of the cap, do one thing (dry run unless told)."""

    model_config = ConfigDict(title="BudgetEnforceStep")

    at: BudgetPercent
    block_scale_up: Literal[True] | None = None
    power_off: PowerOffStepModel | None = None
    delete_gpu_pods: DeleteGpuPodsModel | None = None
    mode: Literal["enforce", "dry_run"] = "dry_run"
    approval: ApprovalModel | None = None
    max_per_hour: Annotated[StrictInt, Field(ge=1)] = 5

    @model_validator(mode="after")
    def _one(self) -> EnforceStepModel:
        given = [
            name
            for name in ("block_scale_up", "power_off", "delete_gpu_pods")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of block_scale_up: true, power_off, delete_gpu_pods"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.block_scale_up and self.approval is not None:
            raise ValueError("block_scale_up takes no approval: it only says no to scale-ups")
        return self


class BudgetModel(_Strict):
    """A monthly cap in EUR on a scope: warnings on actual and forecast spend, graded steps."""

    model_config = ConfigDict(title="Budget")

    scope: BudgetScopeModel
    cap: Annotated[float, Field(gt=0)]
    warn_at: list[BudgetPercent] = Field(default_factory=lambda: [80.0, 100.0])
    to: list[Annotated[StrictStr, Field(min_length=1)]] = Field(default_factory=list)
    enforce: list[EnforceStepModel] = Field(default_factory=list)
    max_bill_age: Duration = Field(
        default=3 * 3600.0,
        description="Enforce only on a bill read no longer ago than this.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> BudgetModel:
        if len(set(self.warn_at)) != len(self.warn_at):
            raise ValueError("warn_at lists a percentage twice")
        cluster = self.scope.k8sgpu_cluster
        for step in self.enforce:
            pods = step.delete_gpu_pods
            if pods is None:
                continue
            if cluster is None and not self.scope.account:
                raise ValueError(
                    "delete_gpu_pods needs an account or k8sgpu_cluster scope: "
                    "a group or servers budget counts no GPU pods"
                )
            if cluster is not None and pods.cluster != cluster:
                raise ValueError(
                    f"delete_gpu_pods names cluster {pods.cluster!r}, but the budget counts "
                    f"cluster {cluster!r}"
                )
        return self


class BudgetRuleModel(_Strict):
    """A budget rule: a name, a mode (dry_run forces every step to dry run) and the body."""

    model_config = ConfigDict(title="BudgetRule")

    name: Annotated[StrictStr, Field(pattern=NAME_PATTERN, max_length=100)]
    description: StrictStr | None = None
    enabled: StrictBool = True
    mode: Literal["enforce", "dry_run"] = "enforce"
    budget: BudgetModel


class RuleModel(_Strict):
    """One event rule: which events, which conditions, and what to do."""

    model_config = ConfigDict(title="Rule")

    name: Annotated[StrictStr, Field(pattern=NAME_PATTERN, max_length=100)]
    description: StrictStr | None = None
    enabled: StrictBool = True
    mode: Literal["enforce", "dry_run"] = "enforce"
    on: Annotated[
        StrictStr,
        Field(min_length=1, max_length=200),
        WithJsonSchema(EVENT_TYPE_PLACEHOLDER),
    ]
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

    rules: list[RuleModel | AutoscaleRuleModel | BudgetRuleModel]
    guard: GuardModel | None = None
