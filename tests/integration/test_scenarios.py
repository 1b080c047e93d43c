"""Scenario files: the shipped ones build and run, and a broken one says where and what."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import SimFactory, SimHandle

from daemon.simulator.demand import Trace
from daemon.simulator.scenario import (
    ScenarioError,
    build_world,
    load_scenario_file,
    parse_scenario,
    shipped_scenarios,
)

DAY = 86400


async def world_servers(h: SimHandle) -> dict[str, dict[str, Any]]:
    """Return /_sim/world's servers by name."""
    status, state = await h.call("GET", "/_sim/world")
    assert status == 200
    return {s["name"]: s for s in state["servers"]}


# -- shipped scenarios -----------------------------------------------------------------------------


def test_the_documented_scenarios_are_shipped() -> None:
    assert {"default", "quiet", "cpu-surge", "failing-actions", "budget-overrun"} <= set(
        shipped_scenarios()
    )


@pytest.mark.parametrize("name", shipped_scenarios())
def test_a_shipped_scenario_builds_a_world(name: str) -> None:
    scenario = load_scenario_file(Path(name))
    assert scenario.name == name
    assert scenario.description
    world = build_world(scenario, speed=0)
    assert world.servers or world.glesys
    assert world.timeline_errors == []


@pytest.mark.parametrize("name", shipped_scenarios())
async def test_a_shipped_scenario_serves_and_runs_its_timeline_cleanly(
    simulator: SimFactory, name: str
) -> None:
    h = await simulator(name)
    status, body = await h.call("GET", "/ecs/v2/servers")
    assert status == 200
    assert body["count"] == len(h.sim.world.live_servers())
    await h.advance(4 * DAY)  # past the last timeline entry of every shipped scenario
    status, state = await h.call("GET", "/_sim/world")
    assert status == 200
    assert state["timeline_errors"] == []


# -- errors name file, line and field --------------------------------------------------------------

SERVER_PLAN_NUMBER = """\
name: broken
servers:
  - {name: ec1, plan: 5}
"""

UNKNOWN_KEY = """\
name: broken
servers:
  - name: ec1
    plan: ECS1
    colour: red
"""

TWO_THINGS = """\
name: broken
servers:
  - {name: ec1, plan: ECS1}
timeline:
  - {at: 1m, demand: {server: ec1, cores: 1}}
  - at: 2m
    demand: {server: ec1, cores: 2}
    log: {action: Login}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SERVER_PLAN_NUMBER, "s.yaml:3: servers[0].plan: Input should be a valid string"),
        (UNKNOWN_KEY, "s.yaml:5: servers[0].colour: Extra inputs are not permitted"),
        (
            "name: x\nservers:\n  - {name: ec1, plan: ECS1, age: soon}\n",
            "s.yaml:3: servers[0].age: Value error, not a duration: 'soon' "
            "(write e.g. 30s, 5m, 1h, 2d)",
        ),
        (
            "servers: [\n",
            "s.yaml:2: not valid YAML: expected the node content, but found '<stream end>'",
        ),
        ("- 1\n", "s.yaml:1: a scenario is a mapping of fields"),
    ],
    ids=["wrong type", "extra forbidden", "bad duration", "not YAML", "not a mapping"],
)
def test_a_scenario_error_names_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as raised:
        parse_scenario(text, "s.yaml")
    assert str(raised.value) == message


def test_a_timeline_entry_with_two_things_is_refused() -> None:
    with pytest.raises(ScenarioError) as raised:
        parse_scenario(TWO_THINGS, "s.yaml")
    message = str(raised.value)
    assert message.startswith("s.yaml:")
    assert "timeline" in message
    assert "needs exactly one of action, log, demand, pod_start, pod_end, fault" in message


def test_a_timeline_entry_with_two_things_is_named_by_its_own_line() -> None:
    with pytest.raises(ScenarioError) as raised:
        parse_scenario(TWO_THINGS, "s.yaml")
    assert str(raised.value).startswith("s.yaml:6: timeline[1]")


def test_a_scenario_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(SERVER_PLAN_NUMBER, encoding="utf-8")
    with pytest.raises(ScenarioError) as raised:
        load_scenario_file(path)
    assert str(raised.value) == f"{path}:3: servers[0].plan: Input should be a valid string"


def test_a_missing_scenario_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as raised:
        load_scenario_file(tmp_path / "nope.yaml")
    assert str(raised.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read:")


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {plan: ECS1}\nservers:\n  - *b\n",
        "servers:\n  - &first {name: ec1, plan: ECS1}\n",
    ],
    ids=["alias", "anchor"],
)
def test_anchors_and_aliases_are_refused(text: str) -> None:
    with pytest.raises(ScenarioError) as raised:
        parse_scenario(text, "s.yaml")
    line = 1 if text.startswith("base") else 2
    assert str(raised.value) == f"s.yaml:{line}: anchors and aliases are not allowed"


def test_a_server_on_an_unknown_plan_is_refused_when_built() -> None:
    scenario = parse_scenario("name: x\nservers:\n  - {name: ec1, plan: ECS9}\n", "s.yaml")
    with pytest.raises(ScenarioError) as raised:
        build_world(scenario, speed=0)
    assert "plan 'ECS9' does not exist" in str(raised.value)


# -- demand models ---------------------------------------------------------------------------------


def trace_scenario(tmp_path: Path, csv_text: str) -> Path:
    """Write a CSV trace and a scenario that replays it; return the scenario's path."""
    (tmp_path / "load.csv").write_text(csv_text, encoding="utf-8")
    path = tmp_path / "trace.yaml"
    path.write_text(
        'name: traced\nstart: "2026-11-10T12:00:00Z"\nservers:\n'
        "  - {name: ec1, plan: ECS2, demand: {kind: trace, path: load.csv, step: 5m}}\n",
        encoding="utf-8",
    )
    return path


async def test_a_csv_trace_is_loaded_and_replayed_in_a_loop(
    simulator: SimFactory, tmp_path: Path
) -> None:
    scenario = load_scenario_file(trace_scenario(tmp_path, "t,cores\n0,0.5\n1,1.5\n2,3\n"))
    demand = scenario.servers[0].demand
    assert isinstance(demand, Trace)
    assert demand.values == (0.5, 1.5, 3.0)
    assert demand.path == tmp_path / "load.csv"

    h = await simulator(scenario)
    seen = []
    for _ in range(4):
        seen.append((await world_servers(h))["ec1"]["cpu_demand"])
        await h.advance(300)
    assert seen == [0.5, 1.5, 3.0, 0.5]


@pytest.mark.parametrize(
    "csv_text", [None, "cores\n1\nlots\n"], ids=["missing trace", "not a number"]
)
def test_a_bad_trace_is_a_scenario_error(tmp_path: Path, csv_text: str | None) -> None:
    path = trace_scenario(tmp_path, csv_text or "cores\n1\n")
    if csv_text is None:
        (tmp_path / "load.csv").unlink()
    with pytest.raises(ScenarioError):
        load_scenario_file(path)


# -- timelines -------------------------------------------------------------------------------------


async def test_cpu_surge_raises_the_glesys_demand_after_ten_minutes(simulator: SimFactory) -> None:
    h = await simulator("cpu-surge")
    before = await world_servers(h)
    assert (before["web-glesys-1"]["cpu_demand"], before["ec500001"]["cpu_demand"]) == (0.8, 0.8)
    await h.advance(599)
    assert (await world_servers(h))["web-glesys-1"]["cpu_demand"] == 0.8
    await h.advance(1)
    surged = await world_servers(h)
    assert surged["web-glesys-1"]["cpu_demand"] == 3.4
    assert surged["web-glesys-1"]["provider"] == "glesys"
    assert surged["ec500001"]["cpu_demand"] == 1.9
    await h.advance(3600)
    assert (await world_servers(h))["web-glesys-1"]["cpu_demand"] == 0.6


async def test_failing_actions_fail_as_failed_and_as_error(simulator: SimFactory) -> None:
    h = await simulator("failing-actions")
    status, body = await h.call("GET", "/ecs/v2/actions")
    assert (status, body["total_actions"]) == (200, 2)  # only the history
    await h.advance(30 * 60)
    status, body = await h.call("GET", "/ecs/v2/actions")
    assert status == 200
    seen = [(a["resource"], a["type"], a["status"]) for a in reversed(body["actions"])]
    assert seen[2:] == [
        ("ec400001", "power_off", "failed"),
        ("ec400002", "rollback", "error"),
        ("ec400003", "power_on", "in-progress"),  # stuck: it takes two hours
        ("ec400001", "power_off", "completed"),
        ("ec400002", "rollback", "completed"),
    ]
    status, logs = await h.call("GET", "/ecs/v2/logs")
    assert [(e["action"], e["status"]) for e in logs["logs"]] == [("Login", "failure")]
