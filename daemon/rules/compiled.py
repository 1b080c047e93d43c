"""The compiled rule model: what the loader builds from rule files, and every stage reads.

Plain frozen data (and the compiled `match` and `when` tests), below the engine, the policies,
the actions and the runner alike, so each can import it without importing the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from daemon.models import Event, Mode
from daemon.rules.cel import CelCondition
from daemon.rules.match import Predicate
from daemon.rules.schema import DEFAULT_RISKY
from daemon.rules.selector import ServerSelector
from daemon.rules.windows import ALWAYS, Windows


@dataclass(frozen=True, slots=True)
class Threshold:
    """Scale by `step` cores once CPU has stayed past `percent` for `for_s` seconds."""

    percent: float
    for_s: float
    step: int


@dataclass(frozen=True, slots=True)
class ScalingSpec:
    """One autoscale rule's settings, as the decision reads them."""

    up: Threshold
    down: Threshold
    min_cores: int
    max_cores: int
    cooldown_s: float
    windows: Windows = ALWAYS
    emergency_above: float | None = None
    max_resizes_per_day: int = 4


Concurrency = Literal["queued", "parallel", "single"]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How the runner runs one rule's decisions: concurrency mode, parallel limit, timeout."""

    concurrency: Concurrency = "queued"
    max_running: int = 10
    timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ActionStep:
    """One `do` entry: the action's registry name and its validated parameters as data."""

    action: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Throttle:
    """Decide at most once per `once_within_s` for each group."""

    once_within_s: float
    group_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FirstSeen:
    """Go on only for a combination of values not seen by the rule within `within_s`.

    `group` gives an event's combination: the values at the `by` paths joined with `|`.
    """

    within_s: float
    by: tuple[str, ...]
    group: Callable[[Event], str]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A validated rule with its tests compiled, ready to meet events."""

    name: str
    file: str
    line: int
    on: str
    steps: tuple[ActionStep, ...]
    mode: Mode = Mode.ENFORCE
    enabled: bool = True
    description: str = ""
    match: Predicate | None = None
    when: CelCondition | None = None
    for_s: float | None = None
    throttle: Throttle | None = None
    first_seen: FirstSeen | None = None
    group: Callable[[Event], str] = field(default=lambda event: event.resource)
    run: RunOptions = RunOptions()

    @property
    def where(self) -> str:
        """Return `file:line` of the rule's definition."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class GuardSpec:
    """The guard section: risky action types and the snapshot taken before them."""

    risky: tuple[str, ...] = DEFAULT_RISKY
    snapshot_first: bool = True
    snapshot_timeout_s: float = 1800.0
    keep_snapshots: int = 3
    file: str = ""
    verify_timeout_s: float = 600.0
    rollback_on_failure: bool = False
    to: tuple[str, ...] = ()


DEFAULT_GUARD = GuardSpec()


@dataclass(frozen=True, slots=True)
class AutoscaleRule:
    """A compiled `autoscale:` rule: which servers, and the scaling settings."""

    name: str
    file: str
    line: int
    provider: str
    servers: ServerSelector
    spec: ScalingSpec
    mode: Mode = Mode.ENFORCE
    enabled: bool = True
    description: str = ""
    snapshot: str | None = None
    to: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """Return `file:line` of the rule's definition."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """What a budget counts: `account`, `group`, `servers` (a selector) or a GPU `cluster`."""

    kind: Literal["account", "group", "servers", "cluster"]
    group: str | None = None
    servers: ServerSelector | None = None
    cluster: str | None = None

    def describe(self) -> str:
        """Return the scope in words, e.g. `group eg1` or `servers notes=*batch*`."""
        if self.kind == "group":
            return f"group {self.group}"
        if self.kind == "servers":
            assert self.servers is not None
            return f"servers {self.servers.describe()}"
        if self.kind == "cluster":
            return f"GPU cluster {self.cluster}"
        return "account"


@dataclass(frozen=True, slots=True)
class BudgetStep:
    """One graded enforcement step of a budget, at `at` percent of the cap."""

    index: int
    at: float
    kind: Literal["block_scale_up", "power_off", "delete_gpu_pods"]
    mode: Mode = Mode.DRY_RUN
    servers: ServerSelector | None = None  # power_off
    cluster: str | None = None  # delete_gpu_pods
    keep: int = 0  # delete_gpu_pods
    max_per_hour: int = 5
    approval_timeout_s: float | None = None  # None: no approval needed
    on_timeout: Literal["cancel", "proceed"] = "cancel"

    @property
    def label(self) -> str:
        """Return the step's name in metrics and logs, e.g. `2:power_off`."""
        return f"{self.index}:{self.kind}"


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A compiled `budget:` rule: its scope, monthly cap in EUR, warnings and steps."""

    name: str
    file: str
    line: int
    scope: BudgetScope
    cap: float
    warn_at: tuple[float, ...] = (80.0, 100.0)
    to: tuple[str, ...] = ()
    steps: tuple[BudgetStep, ...] = ()
    mode: Mode = Mode.ENFORCE
    enabled: bool = True
    description: str = ""
    max_bill_age_s: float = 3 * 3600.0

    @property
    def where(self) -> str:
        """Return `file:line` of the rule's definition."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every rule loaded from the rule files, in load order, and the guard if one was given."""

    rules: tuple[CompiledRule, ...] = ()
    guard: GuardSpec | None = None
    files: tuple[str, ...] = ()
    kinds: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """The rules of each registered kind (`daemon/rules/kinds.py`) by its key, in load order."""

    def __len__(self) -> int:
        events = sum(1 for rule in self.rules if rule.enabled)
        return events + sum(1 for found in self.kinds.values() for rule in found if rule.enabled)

    def of_kind(self, key: str) -> tuple[Any, ...]:
        """Return the rules of one kind (`autoscale`, `budget`, ...), in load order."""
        return self.kinds.get(key, ())

    @property
    def autoscale(self) -> tuple[AutoscaleRule, ...]:
        """Return the autoscale rules."""
        return cast(tuple[AutoscaleRule, ...], self.of_kind("autoscale"))

    @property
    def budgets(self) -> tuple[BudgetRule, ...]:
        """Return the budget rules."""
        return cast(tuple[BudgetRule, ...], self.of_kind("budget"))

    @property
    def guard_in_force(self) -> GuardSpec:
        """Return the guard section, or the defaults when no file has one."""
        return self.guard or DEFAULT_GUARD

    def get(self, name: str) -> CompiledRule | None:
        """Return the rule called `name`, or None."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None
