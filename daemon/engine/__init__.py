"""The rule engine: rule files in, compiled rules, events to decisions."""

from daemon.engine.engine import (
    ActionStep,
    CompiledRule,
    Engine,
    EngineObserver,
    Evaluation,
    GuardSpec,
    RuleSet,
    RunOptions,
    Throttle,
)
from daemon.engine.loader import Problem, RuleError, check_rules, load_rules, rule_file_schema

__all__ = [
    "ActionStep",
    "CompiledRule",
    "Engine",
    "EngineObserver",
    "Evaluation",
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
