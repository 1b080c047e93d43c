"""The `match` fast path: field tests compiled once into plain closures over an event."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final

from daemon.models import Event

EVENT_FIELDS: Final = ("type", "key", "time", "resource")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What a getter returns for a path the event does not have."""

Getter = Callable[[Event], Any]
ValueTest = Callable[[Any], bool]
Predicate = Callable[[Event], bool]

_GLOB_CHARS = frozenset("*?[")
_OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "glob", "exists")


def check_path(path: str) -> str:
    """Return `path` if it names a field of the event, or raise ValueError saying why not."""
    parts = path.split(".")
    head = parts[0]
    if head in EVENT_FIELDS and len(parts) == 1:
        return path
    if head == "data" and len(parts) > 1 and all(parts[1:]):
        return path
    raise ValueError(
        f"not a field of the event: {path!r} (write type, key, time, resource or data.<name>)"
    )


def iso_time(moment: datetime) -> str:
    """Return an event time as rules see it: ISO 8601 in UTC, like `2026-11-10T12:00:00Z`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _event_time(event: Event) -> str:
    return iso_time(event.time)


def value_getter(path: str) -> Getter:
    """Return a function reading `path` (e.g. `data.type`) from an event, or MISSING."""
    check_path(path)
    if path == "time":
        return _event_time
    if path in EVENT_FIELDS:
        return attrgetter(path)
    keys = tuple(path.split(".")[1:])
    if len(keys) == 1:
        (key,) = keys

        def get_one(event: Event) -> Any:
            return event.data.get(key, MISSING)

        return get_one

    def get_nested(event: Event) -> Any:
        value: Any = event.data
        for key in keys:
            if not isinstance(value, Mapping):
                return MISSING
            value = value.get(key, MISSING)
            if value is MISSING:
                return MISSING
        return value

    return get_nested


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def as_number(value: Any) -> float | None:
    """Return a number, or a numeric string, as a float; anything else as None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def _equals(expected: object) -> ValueTest:
    """Return a test for equality that never confuses true with 1 or "5" with a string."""
    if expected is None:
        return lambda value: value is None
    if isinstance(expected, bool):
        return lambda value: value is expected
    if isinstance(expected, int | float):
        number = float(expected)

        def equals_number(value: Any) -> bool:
            if value.__class__ is bool:
                return False
            return as_number(value) == number

        return equals_number
    return lambda value: value == expected


def _glob(pattern: str) -> ValueTest:
    body = pattern[:-1]
    if pattern.endswith("*") and _GLOB_CHARS.isdisjoint(body):
        # `web-*` is by far the commonest glob; a prefix test is several times faster.
        return lambda value: value.__class__ is str and value.startswith(body)
    matches = re.compile(fnmatch.translate(pattern)).match

    def glob(value: Any) -> bool:
        return value.__class__ is str and matches(value) is not None

    return glob


def _scalar(expected: object, *, globs: bool) -> ValueTest:
    if globs and isinstance(expected, str) and not _GLOB_CHARS.isdisjoint(expected):
        return _glob(expected)
    return _equals(expected)


def _any_of(tests: Sequence[ValueTest]) -> ValueTest:
    if len(tests) == 1:
        return tests[0]
    return lambda value: any(test(value) for test in tests)


def _all_of(tests: Sequence[ValueTest]) -> ValueTest:
    if len(tests) == 1:
        return tests[0]
    return lambda value: all(test(value) for test in tests)


def _scalars(name: str, items: object) -> list[object]:
    if not isinstance(items, list):
        raise ValueError(f"{name} must be a list of values, got {_describe(items)}")
    for item in items:
        if not _is_scalar(item):
            raise ValueError(f"{name} items must be plain values, got {_describe(item)}")
    return items


def _compare(name: str, limit: object) -> ValueTest:
    if not _is_number(limit):
        raise ValueError(f"{name} must be a number, got {_describe(limit)}")
    bound = float(limit)  # type: ignore[arg-type]
    compare: Callable[[float, float], bool] = {
        "gt": float.__gt__,
        "ge": float.__ge__,
        "lt": float.__lt__,
        "le": float.__le__,
    }[name]

    def test(value: Any) -> bool:
        number = as_number(value)
        return number is not None and compare(number, bound)

    return test


def _operator(name: str, argument: object) -> ValueTest:
    if name in ("eq", "ne"):
        if not _is_scalar(argument):
            raise ValueError(f"{name} must be a plain value, got {_describe(argument)}")
        equal = _equals(argument)
        if name == "eq":
            return equal
        return lambda value: value is not MISSING and not equal(value)
    if name in ("gt", "ge", "lt", "le"):
        return _compare(name, argument)
    if name in ("in", "not_in"):
        member = _members(_scalars(name, argument))
        if name == "in":
            return member
        return lambda value: value is not MISSING and not member(value)
    if name == "glob":
        patterns = [argument] if isinstance(argument, str) else argument
        if not isinstance(patterns, list) or not patterns:
            raise ValueError(f"glob must be a pattern or a list of patterns, got {argument!r}")
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise ValueError(f"glob patterns must be strings, got {_describe(pattern)}")
        return _any_of([_glob(pattern) for pattern in patterns])
    if not isinstance(argument, bool):
        raise ValueError(f"exists must be true or false, got {_describe(argument)}")
    if argument:
        return lambda value: value is not MISSING
    return lambda value: value is MISSING


def _members(items: list[object]) -> ValueTest:
    """Return a test for equality with any of `items` (no globs)."""
    if not items:
        return lambda value: False
    if all(isinstance(item, str) for item in items):
        members = frozenset(items)
        return lambda value: value.__class__ is str and value in members
    return _any_of([_equals(item) for item in items])


def compile_value_test(spec: object) -> ValueTest:
    """Return a test of one value (MISSING when absent), or raise ValueError for a bad spec.

    A scalar means equality (a string with *, ? or [ is a glob); a list means any of its items;
    a mapping holds operators, which must all pass. Every test fails on MISSING except
    `exists: false`.
    """
    if _is_scalar(spec):
        return _scalar(spec, globs=True)
    if isinstance(spec, list):
        if not spec:
            raise ValueError("must not be an empty list")
        for item in spec:
            if not _is_scalar(item):
                raise ValueError(f"list items must be plain values, got {_describe(item)}")
        if any(isinstance(item, str) and not _GLOB_CHARS.isdisjoint(item) for item in spec):
            return _any_of([_scalar(item, globs=True) for item in spec])
        return _members(spec)
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError(f"must hold at least one operator ({', '.join(_OPERATORS)})")
        tests = []
        for name, argument in spec.items():
            if name not in _OPERATORS:
                raise ValueError(f"unknown operator {name!r} (use {', '.join(_OPERATORS)})")
            tests.append(_operator(name, argument))
        return _all_of(tests)
    raise ValueError(f"must be a value, a list or a mapping of operators, got {spec!r}")


def compile_match(tests: Mapping[str, object]) -> Predicate | None:
    """Return one predicate that holds when every test of a `match` mapping passes.

    The tests run cheapest first (plain equality, then sets, then globs and comparisons):
    they have no side effects, so only the time to the first failing test changes.
    """
    if not tests:
        return None
    ordered = sorted(tests.items(), key=lambda item: _cost(item[1]))
    if all(path.count(".") == 1 and path.startswith("data.") for path, _ in ordered):
        # Most tests read a top-level data key: read `event.data` once and test in place.
        return _data_tests([(path.split(".")[1], spec) for path, spec in ordered])
    checks: list[Predicate] = [_field_test(path, spec) for path, spec in ordered]
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda event: first(event) and second(event)
    every = tuple(checks)
    return lambda event: all(check(event) for check in every)


def _plain(spec: object) -> bool:
    return isinstance(spec, str) and _GLOB_CHARS.isdisjoint(spec)


def _cost(spec: object) -> int:
    if _plain(spec):
        return 0
    if _is_scalar(spec):
        return 1
    if isinstance(spec, list) and all(_plain(item) for item in spec):
        return 1
    return 2


def _data_tests(tests: list[tuple[str, object]]) -> Predicate:
    if len(tests) == 1:
        ((key, spec),) = tests
        if _plain(spec):
            return lambda event: event.data.get(key, MISSING) == spec
        test = compile_value_test(spec)
        return lambda event: test(event.data.get(key, MISSING))
    if len(tests) == 2:
        (key1, spec1), (key2, spec2) = tests
        test2 = compile_value_test(spec2)
        if _plain(spec1):

            def equal_and(event: Event) -> bool:
                data = event.data
                return data.get(key1, MISSING) == spec1 and test2(data.get(key2, MISSING))

            return equal_and
        test1 = compile_value_test(spec1)

        def both(event: Event) -> bool:
            data = event.data
            return test1(data.get(key1, MISSING)) and test2(data.get(key2, MISSING))

        return both
    pairs = tuple((key, compile_value_test(spec)) for key, spec in tests)

    def every(event: Event) -> bool:
        data = event.data
        return all(test(data.get(key, MISSING)) for key, test in pairs)

    return every


def _field_test(path: str, spec: object) -> Predicate:
    test = compile_value_test(spec)
    get = value_getter(path)
    return lambda event: test(get(event))
