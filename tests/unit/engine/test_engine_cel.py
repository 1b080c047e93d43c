"""`when`: CEL compiled once, evaluated per event, errors kept apart from plain `false`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from engine_fakes import make_event

from daemon.models import Event
from daemon.rules.cel import CelCompileError, CelCompiler, CelInput, event_paths


@pytest.fixture(scope="module")
def compiler() -> CelCompiler:
    return CelCompiler()


def check(compiler: CelCompiler, text: str, event: Event) -> tuple[bool, str | None]:
    return compiler.compile(text).check(CelInput(event))


def test_event_fields_are_visible(compiler: CelCompiler) -> None:
    event = make_event("seeweb.action.failed", key="k:1", resource="ec200001", user="bob", n=3)
    assert check(compiler, 'event.type == "seeweb.action.failed"', event) == (True, None)
    assert check(compiler, 'event.key == "k:1" && event.resource == "ec200001"', event) == (
        True,
        None,
    )
    assert check(compiler, 'event.data.user != "ci-bot" && event.data.n > 2', event) == (
        True,
        None,
    )
    assert check(compiler, 'event.data.user == "ci-bot"', event) == (False, None)
    assert check(compiler, 'event.type.startsWith("seeweb.") && size(event.data) == 2', event) == (
        True,
        None,
    )


def test_time_is_an_iso_string_that_timestamp_reads(compiler: CelCompiler) -> None:
    event = make_event(at=90)
    assert check(compiler, 'event.time == "2026-11-10T12:01:30Z"', event) == (True, None)
    text = 'timestamp(event.time) > timestamp("2026-11-10T12:00:00Z")'
    assert check(compiler, text, event) == (True, None)


def test_a_missing_key_is_an_error_not_a_false(compiler: CelCompiler) -> None:
    met, error = check(compiler, 'event.data.actor == "root"', make_event(user="bob"))
    assert met is False
    assert error is not None and "actor" in error


def test_has_guards_a_missing_key(compiler: CelCompiler) -> None:
    text = 'has(event.data.actor) && event.data.actor == "root"'
    assert check(compiler, text, make_event(user="bob")) == (False, None)
    assert check(compiler, text, make_event(actor="root")) == (True, None)


def test_runtime_errors_do_not_match(compiler: CelCompiler) -> None:
    met, error = check(compiler, "event.data.n / 0 == 1", make_event(n=4))
    assert met is False
    assert error == "INVALID_ARGUMENT: divide by zero"


def test_values_cel_cannot_hold_are_made_plain(compiler: CelCompiler) -> None:
    event = make_event(
        when=datetime(2026, 11, 10, 13, 0, tzinfo=UTC), ids=(1, 2), huge=2**80, user="bob"
    )
    assert check(compiler, 'event.data.user == "bob"', event) == (True, None)
    assert check(compiler, 'event.data.when == "2026-11-10T13:00:00Z"', event) == (True, None)
    assert check(compiler, "event.data.ids == [1, 2]", event) == (True, None)


def test_remembered_results_still_tell_types_and_absence_apart(compiler: CelCompiler) -> None:
    condition = compiler.compile("event.data.x == 1")
    outcomes = [
        condition.check(CelInput(make_event(x=value)))[0] for value in (1, True, 1, "1", 1.0, 1)
    ]
    assert outcomes == [True, False, True, False, True, True]
    present = compiler.compile("has(event.data.x)")
    seen = [present.check(CelInput(make_event(data=data)))[0] for data in ({"x": 1}, {}, {"x": 2})]
    assert seen == [True, False, True]
    nested = compiler.compile("has(event.data.a.b)")
    shapes: list[dict[str, Any]] = [{"a": {"b": 1}}, {"a": {}}, {}, {"a": {}}]
    verdicts = [nested.check(CelInput(make_event(data=data))) for data in shapes]
    assert [met for met, _ in verdicts] == [True, False, False, False]
    assert verdicts[1][1] is None and verdicts[2][1] is not None and verdicts[3][1] is None


def test_an_error_is_reported_again_from_memory(compiler: CelCompiler) -> None:
    condition = compiler.compile('event.data.actor == "root"')
    first = condition.check(CelInput(make_event(user="a")))
    second = condition.check(CelInput(make_event(user="b")))
    assert first == second
    assert first[1] is not None


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("1 +", 1, 4, "Syntax error: unexpected end of the expression"),
        ("foo == 1", 1, 1, "undeclared reference to 'foo' (in container '')"),
        (
            '"a" + 1 == 2',
            1,
            5,
            "found no matching overload for '_+_' applied to '(string, int)'",
        ),
        ("event.data.n + 1", 1, 1, "must be a boolean expression, not int"),
        (
            "event.data.ok",
            1,
            1,
            "must be a boolean expression, not a value of any type: "
            'compare it (`== true`, `!= ""`) or test it with has()',
        ),
        (
            'event.data.x == "a" &&\n  nope',
            2,
            3,
            "undeclared reference to 'nope' (in container '')",
        ),
    ],
)
def test_compile_errors_say_where(
    compiler: CelCompiler, text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(CelCompileError) as caught:
        compiler.compile(text)
    (issue,) = caught.value.issues
    assert (issue.line, issue.column, issue.message) == (line, column, message)


def test_every_compile_error_is_listed(compiler: CelCompiler) -> None:
    with pytest.raises(CelCompileError) as caught:
        compiler.compile("foo == bar")
    assert [(issue.line, issue.column) for issue in caught.value.issues] == [(1, 1), (1, 8)]


def test_custom_functions_do_not_exist(compiler: CelCompiler) -> None:
    with pytest.raises(CelCompileError, match="undeclared reference to 'system'"):
        compiler.compile('system("rm -rf /") == 0')


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ('event.data.user != "ci-bot"', (("data", "user"),)),
        (
            'event.data.user.startsWith("ops-") && event.resource == "x"',
            (("data", "user"), ("resource",)),
        ),
        ("has(event.data.a.b)", (("data", "a", "b"),)),
        ('event.data.x == "event[0]" // event["y"]', (("data", "x"),)),
        ("event.data.note == 'it\\'s event.type'", (("data", "note"),)),
        ("event.data.a.event == 1", (("data", "a", "event"),)),
        ('event["data"]["user"] == "x"', None),
        ("event.data.size() > 1", (("data",),)),
        ("size(event) > 1", None),
        ("event.?data.x == 1", None),
        ("[1].exists(event, event > 0)", None),
        ('r"event" == event.data.x', None),
        (".event.data.x == 1", None),
        ("1 == 1", ()),
    ],
)
def test_event_paths_are_found_conservatively(
    text: str, paths: tuple[tuple[str, ...], ...] | None
) -> None:
    assert event_paths(text) == paths


def test_results_are_correct_without_memory(compiler: CelCompiler) -> None:
    condition = compiler.compile('event["data"]["user"] in ["a", "b"]')
    results: list[Any] = [
        condition.check(CelInput(make_event(user=user)))[0] for user in ("a", "c", "b")
    ]
    assert results == [True, False, True]
