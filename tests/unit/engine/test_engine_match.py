"""`match`: every value form and operator, compiled to closures and run on events."""

from __future__ import annotations

from typing import Any

import pytest
from engine_fakes import make_event

from daemon.rules.match import (
    MISSING,
    check_path,
    compile_match,
    compile_value_test,
    iso_time,
    value_getter,
)


def matches(tests: dict[str, Any], **data: Any) -> bool:
    predicate = compile_match(tests)
    assert predicate is not None
    return predicate(make_event(data=data))


def test_an_empty_match_compiles_to_nothing() -> None:
    assert compile_match({}) is None


def test_scalar_means_equality() -> None:
    assert matches({"data.type": "power_off"}, type="power_off")
    assert not matches({"data.type": "power_off"}, type="power_on")


def test_equality_never_confuses_types() -> None:
    assert not matches({"data.flag": 1}, flag=True)
    assert not matches({"data.flag": True}, flag=1)
    assert matches({"data.flag": True}, flag=True)
    assert not matches({"data.n": "5"}, n=5)
    assert matches({"data.n": None}, n=None)
    assert not matches({"data.n": None}, n=0)


def test_number_equality_reads_numeric_strings() -> None:
    assert matches({"data.cores": 4}, cores=4)
    assert matches({"data.cores": 4}, cores=4.0)
    assert matches({"data.cores": 4}, cores="4")
    assert not matches({"data.cores": 4}, cores="four")


def test_string_with_glob_characters_is_a_case_sensitive_glob() -> None:
    assert matches({"data.server": "web-*"}, server="web-01")
    assert not matches({"data.server": "web-*"}, server="WEB-01")
    assert matches({"data.server": "web-0?"}, server="web-07")
    assert not matches({"data.server": "web-0?"}, server="web-10")
    assert matches({"data.server": "web-[12]*"}, server="web-2a")
    assert not matches({"data.server": "web-[12]*"}, server="web-3a")
    assert matches({"data.server": "*-db"}, server="eu-db")
    assert not matches({"data.server": "web-*"}, server=7)


def test_list_means_any_of_its_items() -> None:
    tests = {"data.type": ["power_off", "rollback", "delete_*"]}
    assert matches(tests, type="rollback")
    assert matches(tests, type="delete_server")
    assert not matches(tests, type="power_on")
    assert matches({"data.cores": [2, 4]}, cores=4)
    assert not matches({"data.cores": [2, 4]}, cores=True)


@pytest.mark.parametrize(
    ("operator", "argument", "value", "expected"),
    [
        ("eq", "x", "x", True),
        ("eq", "x*", "xy", False),  # eq is literal, never a glob
        ("ne", "x", "y", True),
        ("ne", "x", "x", False),
        ("gt", 5, 6, True),
        ("gt", 5, 5, False),
        ("gt", 5, "6.5", True),
        ("gt", 5, "lots", False),
        ("gt", 0, True, False),
        ("gt", 5, None, False),
        ("ge", 5, 5, True),
        ("ge", 5, 4.99, False),
        ("lt", 5, 4, True),
        ("lt", 5, 5, False),
        ("le", 5, 5, True),
        ("le", 5, " 5 ", True),
        ("le", 5, 6, False),
        ("in", ["a", "b"], "b", True),
        ("in", ["a", "b"], "c", False),
        ("in", [1, "a"], 1, True),
        ("in", [], "a", False),
        ("not_in", ["a", "b"], "c", True),
        ("not_in", ["a", "b"], "a", False),
        ("glob", "ec2*", "ec200001", True),
        ("glob", ["x*", "ec2*"], "ec200001", True),
        ("glob", "x*", "ec200001", False),
        ("exists", True, None, True),
        ("exists", False, None, False),
    ],
)
def test_operator(operator: str, argument: Any, value: Any, expected: bool) -> None:
    assert matches({"data.v": {operator: argument}}, v=value) is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("x", False),
        (["x"], False),
        ({"eq": None}, False),
        ({"ne": "x"}, False),
        ({"gt": 0}, False),
        ({"in": ["x"]}, False),
        ({"not_in": ["x"]}, False),
        ({"glob": "*"}, False),
        ({"exists": True}, False),
        ({"exists": False}, True),
    ],
)
def test_a_missing_path_fails_every_test_but_exists_false(spec: Any, expected: bool) -> None:
    assert matches({"data.absent": spec}, present=1) is expected


def test_operators_in_one_mapping_must_all_pass() -> None:
    tests = {"data.cpu": {"gt": 50, "le": 90}}
    assert matches(tests, cpu=75)
    assert not matches(tests, cpu=95)
    assert not matches(tests, cpu=50)


def test_every_test_must_pass() -> None:
    tests = {"data.type": "power_off", "data.user": {"ne": "ci-bot"}, "resource": "ec2*"}
    assert matches(tests, type="power_off", user="alice")
    assert not matches(tests, type="power_off", user="ci-bot")
    assert not matches(tests, type="power_on", user="alice")
    assert not matches({**tests, "data.x": 1, "data.y": 2}, type="power_off", user="a", x=1)
    assert matches({**tests, "data.x": 1, "data.y": 2}, type="power_off", user="a", x=1, y=2)


def test_paths_reach_event_fields_and_nested_data() -> None:
    event = make_event("seeweb.log", key="seeweb.log:9", resource="ec200002", a={"b": {"c": 3}})
    assert value_getter("type")(event) == "seeweb.log"
    assert value_getter("key")(event) == "seeweb.log:9"
    assert value_getter("resource")(event) == "ec200002"
    assert value_getter("time")(event) == "2026-11-10T12:00:00Z"
    assert value_getter("data.a.b.c")(event) == 3
    assert value_getter("data.a.x.c")(event) is MISSING
    assert value_getter("data.a.b.c.d")(event) is MISSING
    predicate = compile_match({"data.a.b.c": {"ge": 3}, "type": "seeweb.*", "time": "2026-11-*"})
    assert predicate is not None and predicate(event)


def test_iso_time_is_utc_with_z() -> None:
    from datetime import datetime, timedelta, timezone

    rome = timezone(timedelta(hours=1))
    assert iso_time(datetime(2026, 11, 10, 13, 0, tzinfo=rome)) == "2026-11-10T12:00:00Z"


@pytest.mark.parametrize("path", ["foo", "data", "data.", "data..x", "resource.name", ""])
def test_paths_outside_the_event_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="not a field of the event"):
        check_path(path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "must not be an empty list"),
        ([["a"]], "list items must be plain values, got a list"),
        ({}, "must hold at least one operator"),
        ({"between": [1, 2]}, "unknown operator 'between'"),
        ({"gt": "5"}, "gt must be a number, got '5'"),
        ({"gt": True}, "gt must be a number, got True"),
        ({"in": "a"}, "in must be a list of values, got 'a'"),
        ({"eq": [1]}, "eq must be a plain value, got a list"),
        ({"glob": 5}, "glob must be a pattern or a list of patterns"),
        ({"glob": [5]}, "glob patterns must be strings"),
        ({"exists": "yes"}, "exists must be true or false"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        compile_value_test(spec)
