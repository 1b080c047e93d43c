"""Rule kinds besides event rules: a rule holding a kind's key (`autoscale:`, `budget:`) is one.

Each kind is one `RuleKind` in `RULE_KINDS`: its key, the model a rule of that kind is validated
with, and how a validated rule compiles. The loader, `cloudpilot schema` and `RuleSet` read the
list; the kind's pipeline stage reads `rules.of_kind(key)`. Adding a rule kind is adding its
model (`schema.py`), its compiled type (`compiled.py`), its entry here (or in a vocabulary's
`kinds`) and its stage (`daemon/pipeline.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from daemon.models import Mode
from daemon.rules.compiled import (
    AutoscaleRule,
    BudgetRule,
    BudgetScope,
    BudgetStep,
    ScalingSpec,
    Threshold,
)
from daemon.rules.schema import AutoscaleRuleModel, BudgetRuleModel
from daemon.rules.selector import ServerSelector
from daemon.rules.windows import Windows, parse_window

if TYPE_CHECKING:  # the vocabulary lists the kinds: imported for the type only
    from daemon.rules.vocabulary import Vocabulary


class Compiling(Protocol):
    """What compiling one rule may use: where it is, the vocabulary, and where to report."""

    @property
    def vocabulary(self) -> Vocabulary:
        """Return what rule files may name."""
        ...

    @property
    def file(self) -> str:
        """Return the rule file's name."""
        ...

    def line(self, *path: str | int) -> int:
        """Return the line of a path inside the rule (the rule's own line for none)."""
        ...

    def problem(self, path: tuple[str | int, ...], reason: str) -> None:
        """Report a problem at a path inside the rule."""
        ...

    def needs_snapshot_none(self, path: tuple[str | int, ...], action: str, provider: str) -> None:
        """Report, once the guard is known, a risky action on a provider without snapshots."""
        ...


@dataclass(frozen=True, slots=True)
class RuleKind:
    """One kind of rule: the key that marks it, its model, how it compiles."""

    key: str
    model: type[BaseModel]
    compile: Callable[[Any, Compiling], Any]
    """Return the compiled rule (with `name` and `enabled`), or None after reporting problems."""
    words: str
    """The kind in words, for the schema: `an autoscale rule`."""
    title: str
    """The title of its model in the JSON Schema."""


def _autoscale(model: AutoscaleRuleModel, at: Compiling) -> AutoscaleRule | None:
    body = model.autoscale
    autoscalable = at.vocabulary.autoscalable()
    if body.provider not in autoscalable:
        at.problem(
            ("autoscale", "provider"),
            f"no provider {body.provider!r} can be autoscaled; one of "
            f"{', '.join(autoscalable) or 'none'}",
        )
        return None
    if not at.vocabulary.takes_snapshots(body.provider) and body.snapshot != "none":
        at.needs_snapshot_none(("autoscale",), "set_cores", body.provider)
    spec = ScalingSpec(
        up=Threshold(body.up.above, body.up.for_, body.up.step),
        down=Threshold(body.down.below, body.down.for_, body.down.step),
        min_cores=body.min_cores,
        max_cores=body.max_cores,
        cooldown_s=body.cooldown,
        windows=Windows(
            tuple(parse_window(text) for text in body.windows), ZoneInfo(body.timezone)
        ),
        emergency_above=body.emergency_above,
        max_resizes_per_day=body.max_resizes_per_day,
    )
    return AutoscaleRule(
        name=model.name,
        file=at.file,
        line=at.line(),
        provider=body.provider,
        servers=ServerSelector.of(body.servers.model_dump()),
        spec=spec,
        mode=Mode(model.mode),
        enabled=model.enabled,
        description=model.description or "",
        snapshot=body.snapshot,
        to=tuple(body.to),
    )


def _budget(model: BudgetRuleModel, at: Compiling) -> BudgetRule:
    body = model.budget
    scope = body.scope
    if scope.account:
        compiled = BudgetScope("account")
    elif scope.group is not None:
        compiled = BudgetScope("group", group=scope.group)
    elif scope.servers is not None:
        compiled = BudgetScope("servers", servers=ServerSelector.of(scope.servers.model_dump()))
    else:
        compiled = BudgetScope("cluster", cluster=scope.k8sgpu_cluster)
    steps: list[BudgetStep] = []
    for number, step in enumerate(body.enforce):
        common: dict[str, Any] = {
            "index": number,
            "at": step.at,
            # A dry-run rule runs every step dry; an enforcing rule leaves it to each step.
            "mode": Mode.DRY_RUN if model.mode == "dry_run" else Mode(step.mode),
            "max_per_hour": step.max_per_hour,
        }
        if step.approval is not None:
            common["approval_timeout_s"] = step.approval.timeout
            common["on_timeout"] = step.approval.on_timeout
        if step.power_off is not None:
            selector = ServerSelector.of(step.power_off.servers.model_dump())
            steps.append(BudgetStep(kind="power_off", servers=selector, **common))
        elif step.delete_gpu_pods is not None:
            pods = step.delete_gpu_pods
            steps.append(
                BudgetStep(kind="delete_gpu_pods", cluster=pods.cluster, keep=pods.keep, **common)
            )
        else:
            steps.append(BudgetStep(kind="block_scale_up", **common))
    return BudgetRule(
        name=model.name,
        file=at.file,
        line=at.line(),
        scope=compiled,
        cap=body.cap,
        warn_at=tuple(sorted(body.warn_at)),
        to=tuple(body.to),
        steps=tuple(sorted(steps, key=lambda s: (s.at, s.index))),
        mode=Mode(model.mode),
        enabled=model.enabled,
        description=model.description or "",
        max_bill_age_s=body.max_bill_age,
    )


AUTOSCALE = RuleKind(
    "autoscale", AutoscaleRuleModel, _autoscale, "an autoscale rule", "AutoscaleRule"
)
BUDGET = RuleKind("budget", BudgetRuleModel, _budget, "a budget rule", "BudgetRule")

#: The rule kinds, in the order a rule is tested for their keys; any other rule is an event rule.
RULE_KINDS: tuple[RuleKind, ...] = (AUTOSCALE, BUDGET)
