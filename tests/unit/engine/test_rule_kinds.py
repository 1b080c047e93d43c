"""A rule kind is a registration: a kind defined only in this test loads, checks and plans.

The kind here, `quota`, caps how many servers a group may have. It is a model, a compiled type,
a `RuleKind` in the vocabulary and a pipeline stage; nothing in `daemon/` knows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field

from daemon.models import Decision, Mode
from daemon.pipeline import Batch, Pipeline, StageResult
from daemon.registry import BUILTIN
from daemon.rules.compiled import RuleSet
from daemon.rules.kinds import RULE_KINDS, Compiling, RuleKind
from daemon.rules.loader import RuleError, check_rules, load_rules, rule_file_schema
from daemon.rules.vocabulary import Vocabulary
from daemon.state.store import Batch as Transaction

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(min_length=1)
    max_servers: int = Field(ge=1)


class QuotaRuleModel(BaseModel):
    """A quota rule: a name and the `quota` body."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="QuotaRule")

    name: str
    enabled: bool = True
    quota: QuotaBody


@dataclass(frozen=True, slots=True)
class QuotaRule:
    name: str
    enabled: bool
    group: str
    max_servers: int
    line: int


def compile_quota(model: QuotaRuleModel, at: Compiling) -> QuotaRule | None:
    if model.quota.group == "all":
        at.problem(("quota", "group"), "name one group, not all")
        return None
    return QuotaRule(
        model.name, model.enabled, model.quota.group, model.quota.max_servers, at.line()
    )


QUOTA = RuleKind("quota", QuotaRuleModel, compile_quota, "a quota rule", "QuotaRule")
VOCABULARY = Vocabulary(BUILTIN.vocabulary().actions, BUILTIN.traits, kinds=(*RULE_KINDS, QUOTA))

RULES = """\
rules:
  - name: web-quota
    quota: {group: web, max_servers: 3}
  - name: cpu
    autoscale:
      provider: glesys
      up: {above: 75, for: 10m}
      down: {below: 20, for: 1h}
      max_cores: 4
      snapshot: none
      to: [hook]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_a_registered_kind_loads_beside_the_shipped_ones(tmp_path: Path) -> None:
    rules = load_rules([write(tmp_path, RULES)], VOCABULARY)
    assert rules.of_kind("quota") == (QuotaRule("web-quota", True, "web", 3, 2),)
    assert [rule.name for rule in rules.autoscale] == ["cpu"]
    assert len(rules) == 2
    # Without the registration, the same file is refused: it is an event rule missing `on`.
    with pytest.raises(RuleError):
        load_rules([write(tmp_path, RULES)], BUILTIN.vocabulary())


def test_its_problems_name_file_line_and_field(tmp_path: Path) -> None:
    text = RULES.replace("group: web, max_servers: 3", "group: all, max_servers: 0")
    problems = [str(p) for p in check_rules([write(tmp_path, text)], VOCABULARY)]
    assert len(problems) == 1 and "rules.yaml:3: rules[0].quota.max_servers" in problems[0]
    text = RULES.replace("max_servers: 3", "max_servers: 2")
    text = text.replace("group: web", "group: all").replace("name: cpu", "name: web-quota")
    problems = [str(p) for p in check_rules([write(tmp_path, text)], VOCABULARY)]
    assert any("rules[0].quota.group: name one group, not all" in p for p in problems)
    assert any("duplicate rule name 'web-quota'" in p for p in problems)


def test_the_schema_picks_the_kind_by_its_key(tmp_path: Path) -> None:
    schema = rule_file_schema(VOCABULARY)
    validator = Draft202012Validator(schema)
    good = {"rules": [{"name": "q", "quota": {"group": "web", "max_servers": 2}}]}
    bad = {"rules": [{"name": "q", "quota": {"group": "web"}}]}
    assert list(validator.iter_errors(good)) == []
    assert [e.message for e in validator.iter_errors(bad)] == [
        "'max_servers' is a required property"
    ]
    assert "a quota rule (quota)" in schema["properties"]["rules"]["items"]["description"]


class QuotaStage:
    """The kind's stage: an alert decision for each group over its quota."""

    name = "quota"

    def __init__(self, rules: RuleSet, sizes: dict[str, int]) -> None:
        self._rules = rules
        self._sizes = sizes
        self.applied: list[StageResult] = []

    async def prepare(self, source: str, now: datetime) -> None:
        """Read nothing."""

    def plan(self, batch: Batch) -> StageResult:
        over = [
            rule
            for rule in self._rules.of_kind("quota")
            if rule.enabled and self._sizes.get(rule.group, 0) > rule.max_servers
        ]
        decisions = [
            Decision(
                key=f"{rule.name}/{batch.now.isoformat()}",
                rule=rule.name,
                action="log",
                params={"message": f"{rule.group} is over its quota"},
                mode=Mode.ENFORCE,
                event=None,
                time=batch.now,
            )
            for rule in over
        ]
        return StageResult(self.name, decisions)

    async def write(self, tx: Transaction, result: StageResult) -> None:
        """Keep nothing."""

    async def apply(self, result: StageResult, ends: Any) -> None:
        self.applied.append(result)


async def test_its_stage_plans_in_the_pipeline(tmp_path: Path) -> None:
    rules = load_rules([write(tmp_path, RULES)], VOCABULARY)
    stage = QuotaStage(rules, {"web": 5, "db": 1})
    pipeline = Pipeline([stage])
    await pipeline.prepare("metrics", NOW)
    [result] = pipeline.plan(Batch("metrics", (), NOW))
    assert [d.rule for d in result.decisions] == ["web-quota"]
    await pipeline.apply([result], ends=None)  # type: ignore[arg-type]
    assert stage.applied == [result]
