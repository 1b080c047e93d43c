"""The plan catalogue: names in any case, families, the sizes and the plan a server may move to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.client.plans import PlanCatalogue, family_of
from daemon.client.records import Plan, parse_record
from daemon.providers.seeweb.client import _PlansPage

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded" / "ecs" / "plans.json"


@pytest.fixture(scope="module")
def live() -> PlanCatalogue:
    """Return the catalogue as the live API listed it (34 plans, February 2025)."""
    body = json.loads(RECORDED.read_text(encoding="utf-8"))["body"]
    return PlanCatalogue(parse_record(_PlansPage, body).plans)


def named(catalogue: PlanCatalogue, name: str) -> Plan:
    plan = catalogue.get(name)
    assert plan is not None, name
    return plan


@pytest.mark.parametrize("spelling", ["eCS1", "ECS1", "ecs1", " ECS1 "])
def test_a_plan_is_found_whatever_the_case(live: PlanCatalogue, spelling: str) -> None:
    assert named(live, spelling).name == "eCS1"
    assert live.hourly_price(spelling) == 0.019


def test_unknown_names_find_nothing(live: PlanCatalogue) -> None:
    assert live.get("ECS9") is None and live.get(None) is None
    assert live.hourly_price("ECS9") is None


@pytest.mark.parametrize(
    ("name", "windows", "accelerator", "memory"),
    [
        ("eCS3", False, None, "standard"),
        ("eCS3W", True, None, "standard"),
        ("eCS2HM", False, None, "high"),
        ("ECS1GPU6", False, "ECSGPU6", "standard"),
        ("ECS1AIA1", False, "ECSAIA1", "standard"),
    ],
)
def test_families_come_from_the_flags_and_host_types(
    live: PlanCatalogue, name: str, windows: bool, accelerator: str | None, memory: str
) -> None:
    family = family_of(named(live, name))
    assert (family.windows, family.accelerator, family.memory) == (windows, accelerator, memory)


def test_families_fall_back_to_the_name_without_flags() -> None:
    plan = Plan(name="eCS9W", cpu=2)
    assert family_of(plan).windows
    assert family_of(Plan(name="eCS9HM", cpu=4)).memory == "high"


@pytest.mark.parametrize(
    ("current", "cores", "chosen"),
    [
        ("ECS1", 2, "eCS2"),  # the server's spelling; the cheapest plan with the cores
        ("eCS2", 3, "eCS3"),  # 4 cores: eCS3 (35 EUR) before eCS4 (45 EUR)
        ("eCS2W", 4, "eCS3W"),  # Windows stays Windows
        ("eCS1HM", 8, "eCS2HM"),  # high memory stays high memory ...
        ("eCS6", 16, "eCS3HM"),  # ... and standard takes high memory only when nothing else fits
        ("ECS1GPU6", 8, "ECS2GPU6"),  # a GPU server keeps its card
    ],
)
def test_the_recommended_plan_stays_in_the_family(
    live: PlanCatalogue, current: str, cores: int, chosen: str
) -> None:
    plan = live.choose(named(live, current), cores)
    assert plan is not None and plan.name == chosen


def test_a_cpu_server_is_never_offered_a_gpu_plan(live: PlanCatalogue) -> None:
    for name in ("eCS1", "eCS6", "eCS5W", "eCS5HM"):
        moves = live.moves(named(live, name))
        assert not [plan.name for plan in moves if family_of(plan).accelerator]


def test_nothing_bigger_in_the_family_is_no_recommendation(live: PlanCatalogue) -> None:
    assert live.choose(named(live, "eCS6W"), 16) is None
    assert live.sizes(named(live, "eCS6W")) == [12]


def test_sizes_are_the_family_s_core_counts_that_keep_the_disk(live: PlanCatalogue) -> None:
    assert live.sizes(named(live, "ECS1")) == [1, 2, 4, 8, 12, 16, 32]
    assert live.sizes(named(live, "eCS2W")) == [2, 4, 8, 12]


def test_unpriced_plans_are_not_moves() -> None:
    catalogue = PlanCatalogue(
        [
            Plan(name="eCS1", cpu=1, disk=20, monthly_price=14.0),
            Plan(name="eCS2", cpu=2, disk=40),
            Plan(name="eCS3", cpu=4, disk=80, monthly_price=35.0),
        ]
    )
    chosen = catalogue.choose(named(catalogue, "eCS1"), 2)
    assert chosen is not None and chosen.name == "eCS3"
