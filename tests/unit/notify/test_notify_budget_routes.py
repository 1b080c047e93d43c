"""`unknown_routes` covers every rule kind that reports somewhere: alerts, autoscale, budgets."""

from __future__ import annotations

from pathlib import Path

from daemon.notify.alerts import unknown_routes
from daemon.registry import vocabulary
from daemon.rules.compiled import BudgetRule, BudgetScope, RuleSet
from daemon.rules.loader import load_rules

RULES = """\
rules:
  - name: gpu-cap
    budget:
      scope: {k8sgpu_cluster: skg00018}
      cap: 300
      to: [oncall, finance]

  - name: account-cap
    mode: dry_run
    budget:
      scope: {account: true}
      cap: 500
      warn_at: [80, 100]
      to: [finance, oncall, chat]

  - name: quiet-cap
    budget:
      scope: {group: eg1}
      cap: 50
"""


def test_budget_routes_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(RULES)
    rules = load_rules([path], vocabulary())

    assert [budget.name for budget in rules.budgets] == ["gpu-cap", "account-cap", "quiet-cap"]
    assert unknown_routes(rules, ["oncall", "pager"]) == [
        f"{path}:2: gpu-cap.budget.to: unknown route 'finance' (known: oncall, pager)",
        f"{path}:8: account-cap.budget.to: unknown route 'finance' (known: oncall, pager)",
        f"{path}:8: account-cap.budget.to: unknown route 'chat' (known: oncall, pager)",
    ]
    assert unknown_routes(rules, ["oncall", "finance", "chat"]) == []


def test_a_budget_route_with_no_routes_configured() -> None:
    budget = BudgetRule(
        name="cap", file="rules/b.yaml", line=7, scope=BudgetScope("account"), cap=10, to=("ops",)
    )
    assert unknown_routes(RuleSet(kinds={"budget": (budget,)}), []) == [
        "rules/b.yaml:7: cap.budget.to: unknown route 'ops' (known: none configured)"
    ]
