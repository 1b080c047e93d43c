"""Budget rules in rule files: compiled scopes and steps, every problem named, the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_fakes import ACTIONS, check_text, load_text

from daemon.cli import main
from daemon.models import Mode
from daemon.rules.compiled import BudgetRule, BudgetScope
from daemon.rules.loader import RuleError, load_rules, rule_file_schema
from daemon.rules.selector import ServerSelector

GOOD = """\
rules:
  - name: account-cap
    description: The whole account.
    budget:
      scope: {account: true}
      cap: 500
      warn_at: [100, 50, 90]
      to: [oncall]
      max_bill_age: 2h
      enforce:
        - at: 120
          power_off: {servers: {notes: "*batch*", group: [eg1, eg2]}}
          mode: enforce
          approval: {timeout: 30m, on_timeout: proceed}
          max_per_hour: 2
        - at: 95
          block_scale_up: true
        - at: 110
          delete_gpu_pods: {cluster: c1, keep: 1}
          approval: {}
  - name: eg1-cap
    mode: dry_run
    budget:
      scope: {group: eg1}
      cap: 50.5
      enforce:
        - at: 100
          block_scale_up: true
          mode: enforce
  - name: batch-cap
    enabled: false
    budget:
      scope: {servers: {name: "batch-*"}}
      cap: 20
  - name: gpu-cap
    budget:
      scope: {k8sgpu_cluster: c1}
      cap: 300
"""


def budgets_by_name(tmp_path: Path) -> dict[str, BudgetRule]:
    rules = load_text(tmp_path, GOOD)
    assert rules.rules == () and rules.autoscale == ()
    return {rule.name: rule for rule in rules.budgets}


def test_a_good_file_loads_its_budgets_in_order(tmp_path: Path) -> None:
    rules = load_text(tmp_path, GOOD)
    assert [rule.name for rule in rules.budgets] == [
        "account-cap",
        "eg1-cap",
        "batch-cap",
        "gpu-cap",
    ]
    assert len(rules) == 3  # the disabled budget does not count
    first = rules.budgets[0]
    assert first.where == f"{tmp_path}/rules.yaml:2"
    assert first.description == "The whole account."
    assert first.cap == 500.0
    assert first.to == ("oncall",)
    assert first.max_bill_age_s == 7200.0
    assert first.mode is Mode.ENFORCE and first.enabled


def test_each_scope_kind_compiles(tmp_path: Path) -> None:
    budgets = budgets_by_name(tmp_path)
    assert budgets["account-cap"].scope == BudgetScope("account")
    assert budgets["eg1-cap"].scope == BudgetScope("group", group="eg1")
    assert budgets["batch-cap"].scope == BudgetScope(
        "servers", servers=ServerSelector((("name", ("batch-*",)),))
    )
    assert budgets["batch-cap"].scope.describe() == "servers name=batch-*"
    assert budgets["batch-cap"].enabled is False
    assert budgets["gpu-cap"].scope == BudgetScope("cluster", cluster="c1")


def test_defaults_apply_when_unsaid(tmp_path: Path) -> None:
    gpu = budgets_by_name(tmp_path)["gpu-cap"]
    assert gpu.warn_at == (80.0, 100.0)
    assert gpu.steps == ()
    assert gpu.to == ()
    assert gpu.max_bill_age_s == 3 * 3600.0
    assert gpu.description == ""


def test_warn_at_is_sorted(tmp_path: Path) -> None:
    assert budgets_by_name(tmp_path)["account-cap"].warn_at == (50.0, 90.0, 100.0)


def test_steps_are_sorted_by_at_and_keep_their_index(tmp_path: Path) -> None:
    steps = budgets_by_name(tmp_path)["account-cap"].steps
    assert [(step.at, step.index, step.kind) for step in steps] == [
        (95.0, 1, "block_scale_up"),
        (110.0, 2, "delete_gpu_pods"),
        (120.0, 0, "power_off"),
    ]
    assert [step.label for step in steps] == [
        "1:block_scale_up",
        "2:delete_gpu_pods",
        "0:power_off",
    ]


def test_step_fields_compile(tmp_path: Path) -> None:
    block, delete, power_off = budgets_by_name(tmp_path)["account-cap"].steps
    assert power_off.servers == ServerSelector.of({"notes": "*batch*", "group": ["eg1", "eg2"]})
    assert power_off.approval_timeout_s == 1800.0
    assert power_off.on_timeout == "proceed"
    assert power_off.max_per_hour == 2
    assert (delete.cluster, delete.keep) == ("c1", 1)
    # An empty approval mapping takes the defaults: four hours, then cancel.
    assert delete.approval_timeout_s == 4 * 3600.0
    assert delete.on_timeout == "cancel"
    assert delete.max_per_hour == 5
    assert block.approval_timeout_s is None
    assert block.servers is None and block.cluster is None


def test_step_modes_default_to_dry_run_and_a_dry_run_rule_forces_them(tmp_path: Path) -> None:
    budgets = budgets_by_name(tmp_path)
    block, delete, power_off = budgets["account-cap"].steps
    assert block.mode is Mode.DRY_RUN  # unsaid
    assert delete.mode is Mode.DRY_RUN  # unsaid, even with approval
    assert power_off.mode is Mode.ENFORCE  # said on the step, the rule enforces
    eg1 = budgets["eg1-cap"]
    assert eg1.mode is Mode.DRY_RUN
    assert [step.mode for step in eg1.steps] == [Mode.DRY_RUN]  # the step said enforce


def error_lines(tmp_path: Path, budget: str, *, name: str = "b") -> list[str]:
    """Return the problems of one budget rule whose `budget:` body is `budget` (indented 6)."""
    return check_text(tmp_path, f"rules:\n  - name: {name}\n    budget:\n{budget}")


def test_a_cap_must_be_positive(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, "      scope: {account: true}\n      cap: 0\n")
    assert lines == ["rules.yaml:5: rules[0].budget.cap: must be greater than 0"]


def test_a_scope_gives_exactly_one_kind(tmp_path: Path) -> None:
    two = error_lines(tmp_path, "      scope: {group: eg1, k8sgpu_cluster: c1}\n      cap: 10\n")
    assert two == [
        "rules.yaml:4: rules[0].budget.scope: give exactly one of account: true, group, "
        "servers, k8sgpu_cluster (got group, k8sgpu_cluster)"
    ]
    empty = error_lines(tmp_path, "      scope: {}\n      cap: 10\n")
    assert empty == [
        "rules.yaml:4: rules[0].budget.scope: give exactly one of account: true, group, "
        "servers, k8sgpu_cluster"
    ]
    missing = error_lines(tmp_path, "      cap: 10\n")
    assert missing == ["rules.yaml:3: rules[0].budget.scope: required"]


def test_a_step_does_exactly_one_thing(tmp_path: Path) -> None:
    lines = error_lines(
        tmp_path,
        "      scope: {account: true}\n"
        "      cap: 10\n"
        "      enforce:\n"
        "        - at: 90\n"
        "          block_scale_up: true\n"
        "          delete_gpu_pods: {cluster: c1}\n"
        "        - at: 95\n"
        "          mode: enforce\n",
    )
    assert lines == [
        "rules.yaml:7: rules[0].budget.enforce[0]: give exactly one of block_scale_up: true, "
        "power_off, delete_gpu_pods (got block_scale_up, delete_gpu_pods)",
        "rules.yaml:10: rules[0].budget.enforce[1]: give exactly one of block_scale_up: true, "
        "power_off, delete_gpu_pods",
    ]


def test_block_scale_up_takes_no_approval(tmp_path: Path) -> None:
    lines = error_lines(
        tmp_path,
        "      scope: {account: true}\n"
        "      cap: 10\n"
        "      enforce:\n"
        "        - {at: 100, block_scale_up: true, approval: {timeout: 1h}}\n",
    )
    assert lines == [
        "rules.yaml:7: rules[0].budget.enforce[0]: block_scale_up takes no approval: "
        "it only says no to scale-ups"
    ]


def test_power_off_needs_a_narrow_selector(tmp_path: Path) -> None:
    lines = error_lines(
        tmp_path,
        "      scope: {account: true}\n"
        "      cap: 10\n"
        "      enforce:\n"
        "        - at: 100\n"
        "          power_off: {servers: {}}\n",
    )
    assert lines == [
        "rules.yaml:8: rules[0].budget.enforce[0].power_off: servers must name at least one "
        "field: an empty selector takes all"
    ]


def test_warn_at_may_not_repeat_a_percentage(tmp_path: Path) -> None:
    lines = error_lines(
        tmp_path, "      scope: {account: true}\n      cap: 10\n      warn_at: [80, 100, 80.0]\n"
    )
    assert lines == ["rules.yaml:3: rules[0].budget: warn_at lists a percentage twice"]


def test_gpu_pods_are_deleted_only_by_a_budget_that_counts_them(tmp_path: Path) -> None:
    step = "      enforce:\n        - {at: 100, delete_gpu_pods: {cluster: c1}}\n"
    group = error_lines(tmp_path, "      scope: {group: eg1}\n      cap: 10\n" + step)
    other = error_lines(tmp_path, "      scope: {k8sgpu_cluster: c2}\n      cap: 10\n" + step)
    fine = error_lines(tmp_path, "      scope: {k8sgpu_cluster: c1}\n      cap: 10\n" + step)
    assert group == [
        "rules.yaml:3: rules[0].budget: delete_gpu_pods needs an account or k8sgpu_cluster "
        "scope: a group or servers budget counts no GPU pods"
    ]
    assert other == [
        "rules.yaml:3: rules[0].budget: delete_gpu_pods names cluster 'c1', but the budget "
        "counts cluster 'c2'"
    ]
    assert fine == []


def test_an_unknown_key_inside_budget_is_named(tmp_path: Path) -> None:
    lines = error_lines(
        tmp_path, "      scope: {account: true}\n      cap: 10\n      currency: USD\n"
    )
    assert lines == ["rules.yaml:6: rules[0].budget.currency: unknown field"]


def test_field_values_are_checked_with_their_paths(tmp_path: Path) -> None:
    lines = error_lines(
        tmp_path,
        "      scope: {group: eg1}\n"
        "      cap: 10\n"
        "      warn_at: [0, 1001]\n"
        "      enforce:\n"
        "        - at: 50\n"
        "          delete_gpu_pods: {cluster: c1, keep: -1}\n"
        "          approval: {on_timeout: maybe}\n"
        "          max_per_hour: 0\n"
        "          mode: always\n",
    )
    assert lines == [
        "rules.yaml:6: rules[0].budget.warn_at[0]: must be greater than 0",
        "rules.yaml:6: rules[0].budget.warn_at[1]: must be less than or equal to 1000",
        "rules.yaml:9: rules[0].budget.enforce[0].delete_gpu_pods.keep: "
        "must be greater than or equal to 0",
        "rules.yaml:10: rules[0].budget.enforce[0].approval.on_timeout: "
        "must be 'cancel' or 'proceed', got 'maybe'",
        "rules.yaml:11: rules[0].budget.enforce[0].max_per_hour: "
        "must be greater than or equal to 1",
        "rules.yaml:12: rules[0].budget.enforce[0].mode: "
        "must be 'enforce' or 'dry_run', got 'always'",
    ]


def test_a_budget_and_an_event_rule_may_not_share_a_name(tmp_path: Path) -> None:
    text = (
        "rules:\n"
        "  - name: cap\n"
        "    on: seeweb.billing.updated\n"
        "    do: [{log: {message: m}}]\n"
        "  - name: cap\n"
        "    budget: {scope: {account: true}, cap: 10}\n"
    )
    assert check_text(tmp_path, text) == [
        "rules.yaml:5: rules[1].name: duplicate rule name 'cap' (first at rules.yaml:2)"
    ]
    flipped = (
        "rules:\n"
        "  - name: cap\n"
        "    budget: {scope: {account: true}, cap: 10}\n"
        "  - name: cap\n"
        "    on: seeweb.billing.updated\n"
        "    do: [{log: {message: m}}]\n"
    )
    assert check_text(tmp_path, flipped) == [
        "rules.yaml:4: rules[1].name: duplicate rule name 'cap' (first at rules.yaml:2)"
    ]


def test_a_bad_budget_stops_loading(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: b\n    budget: {scope: {account: true}, cap: -5}\n")
    with pytest.raises(RuleError) as caught:
        load_rules([path], ACTIONS)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:3: rules[0].budget.cap: must be greater than 0"
    ]


# --- the schema ----------------------------------------------------------------------------------


def test_the_schema_offers_budget_rules() -> None:
    schema = rule_file_schema(ACTIONS)
    # The kind is picked by key: a rule with `budget` is a budget rule.
    kinds = schema["properties"]["rules"]["items"]["else"]
    assert kinds["if"]["required"] == ["budget"]
    assert kinds["then"] == {"$ref": "#/$defs/BudgetRuleModel"}
    rule = schema["$defs"]["BudgetRuleModel"]
    assert rule["title"] == "BudgetRule"
    assert rule["required"] == ["name", "budget"]
    assert rule["additionalProperties"] is False
    budget = schema["$defs"]["BudgetModel"]
    assert {"scope", "cap", "warn_at", "to", "enforce", "max_bill_age"} == set(budget["properties"])
    assert budget["properties"]["cap"]["exclusiveMinimum"] == 0
    scope = schema["$defs"]["BudgetScopeModel"]
    assert set(scope["properties"]) == {"account", "group", "servers", "k8sgpu_cluster"}


def test_cloudpilot_schema_prints_the_budget_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = capsys.readouterr().out
    schema = json.loads(printed)
    titles = {item.get("title") for item in schema["$defs"].values()}
    assert {"BudgetRule", "Budget", "BudgetScope", "BudgetEnforceStep"} <= titles
    assert {"BudgetPowerOff", "BudgetDeleteGpuPods", "BudgetApproval"} <= titles
    assert "BudgetRule" in printed
