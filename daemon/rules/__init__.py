"""The rule model: the rule-file format, its loader, and the compiled rules every stage reads."""

from daemon.rules.compiled import (
    ActionStep,
    AutoscaleRule,
    BudgetRule,
    CompiledRule,
    GuardSpec,
    RuleSet,
    RunOptions,
    Throttle,
)
from daemon.rules.loader import Problem, RuleError, check_rules, load_rules, rule_file_schema

__all__ = [
    "ActionStep",
    "AutoscaleRule",
    "BudgetRule",
    "CompiledRule",
    "GuardSpec",
    "Problem",
    "RuleError",
    "RuleSet",
    "RunOptions",
    "Throttle",
    "check_rules",
    "load_rules",
    "rule_file_schema",
]
