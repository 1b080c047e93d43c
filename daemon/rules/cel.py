"""The `when` condition: a CEL expression over `event`, compiled once per rule.

CEL (cel-expr-python, the CEL project's own binding) sees `event` as a map with `type`, `key`,
`time`, `resource` and `data`. The binding cannot pass a Python datetime inside a map, so `time`
is an ISO 8601 string in UTC (`2026-11-10T12:00:00Z`); rules compare it with
`timestamp(event.time)`. No custom functions are declared: a rule cannot run code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from cel_expr_python import cel

from daemon.models import Event
from daemon.rules.match import MISSING, iso_time

_MEMO_LIMIT: Final = 1024
_MESSAGE_LIMIT: Final = 300
_ERROR_AT = re.compile(r"^ERROR: <input>:(\d+):(\d+): (.*)$")
# ANTLR lists every token it would have accepted; past a few, the list hides the point.
_EOF_EXPECTING = re.compile(r"mismatched input '<EOF>' expecting (\{[^}]*\}|\S+)")
_STATUS = re.compile(r"^[A-Z_]+: |\s*\[[A-Z_]+\]$")
_LONG_EXPECTING = re.compile(r" expecting \{(?:[^,}]*,){4,}[^}]*\}")


@dataclass(frozen=True, slots=True)
class CelIssue:
    """One compile error, at a 1-based line and column of the expression text."""

    line: int
    column: int
    message: str


class CelCompileError(Exception):
    """The expression does not compile; `issues` say where and why."""

    def __init__(self, issues: list[CelIssue]) -> None:
        super().__init__("; ".join(issue.message for issue in issues))
        self.issues = issues


def _parse_compile_error(text: str) -> list[CelIssue]:
    """Return the errors in CEL's message, without its status prefix and caret drawings."""
    issues = []
    for raw in text.splitlines():
        found = _ERROR_AT.match(raw.removeprefix("INVALID_ARGUMENT: "))
        if found is None:
            continue
        message = _STATUS.sub("", found.group(3))
        message = _EOF_EXPECTING.sub("unexpected end of the expression", message)
        message = _LONG_EXPECTING.sub("", message)
        issues.append(CelIssue(int(found.group(1)), int(found.group(2)), message))
    if not issues:
        first = text.strip().splitlines()[0] if text.strip() else "does not compile"
        issues.append(CelIssue(1, 1, _STATUS.sub("", first)))
    return issues


class CelCompiler:
    """One CEL environment declaring `event` as a map from strings to any value."""

    def __init__(self) -> None:
        self._env = cel.NewEnv(variables={"event": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})

    def compile(self, text: str) -> CelCondition:
        """Return the compiled condition, or raise CelCompileError."""
        try:
            expression = self._env.compile(text)
        except RuntimeError as exc:
            raise CelCompileError(_parse_compile_error(str(exc))) from None
        result = expression.return_type()
        if result == cel.Type.DYN:
            # A bare field (`event.data.user`) or a choice between fields: its type is the
            # event's, so nothing says it is a boolean. Ask for a form that is one.
            raise CelCompileError(
                [CelIssue(1, 1, "must be a boolean expression, not a value of any type: "
                          "compare it (`== true`, `!= \"\"`) or test it with has()")]
            )  # fmt: skip
        if result != cel.Type.BOOL:
            raise CelCompileError(
                [CelIssue(1, 1, f"must be a boolean expression, not {result.name().lower()}")]
            )
        return CelCondition(text, expression, self._env, event_paths(text))


class CelInput:
    """The CEL view of one event, built at most once however many rules read it."""

    __slots__ = ("_activation", "_safe", "event")

    def __init__(self, event: Event) -> None:
        self.event = event
        self._activation: Any = None
        self._safe = False

    def activation(self, env: Any) -> Any:
        """Return the activation holding `event` (any environment's activation serves all)."""
        if self._activation is None:
            self._activation = env.Activation(data={"event": self._plain()})
        return self._activation

    def sanitize(self, env: Any) -> bool:
        """Rebuild the activation with values CEL cannot hold converted; say if anything changed."""
        if self._safe:
            return False
        self._safe = True
        self._activation = env.Activation(data={"event": _cel_safe(self._plain())})
        return True

    def _plain(self) -> dict[str, Any]:
        event = self.event
        return {
            "type": event.type,
            "key": event.key,
            "time": iso_time(event.time),
            "resource": event.resource,
            "data": dict(event.data),
        }


def _cel_safe(value: Any) -> Any:
    """Return `value` with what CEL cannot hold (datetimes, tuples, huge ints) made plain."""
    if isinstance(value, Mapping):
        return {key: _cel_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_cel_safe(item) for item in value]
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else float(value)
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _unconvertible(message: str) -> bool:
    return "Non-CEL value type" in message or "out of range for 'event" in message


class CelCondition:
    """A compiled `when`: tells whether an event meets it, or why it could not be evaluated.

    When the expression reads the event only through plain dotted paths (`event.data.user`),
    its result depends only on the values there, so results are remembered per distinct
    values: most rules test a handful of users, types or statuses, and CEL costs microseconds.
    """

    __slots__ = ("_env", "_expression", "_key", "_memo", "text")

    def __init__(
        self, text: str, expression: Any, env: Any, paths: tuple[tuple[str, ...], ...] | None
    ) -> None:
        self.text = text
        self._expression = expression
        self._env = env
        self._key = _memo_key(paths) if paths is not None else None
        self._memo: dict[Any, tuple[bool, str | None]] = {}

    def check(self, source: CelInput) -> tuple[bool, str | None]:
        """Return whether the event meets the condition, and an error message if it failed."""
        key_of = self._key
        if key_of is not None:
            key = key_of(source.event)
            if key is not MISSING:
                known = self._memo.get(key)
                if known is None:
                    known = self._evaluate(source)
                    if len(self._memo) >= _MEMO_LIMIT:
                        self._memo.clear()
                    self._memo[key] = known
                return known
        return self._evaluate(source)

    def _evaluate(self, source: CelInput) -> tuple[bool, str | None]:
        while True:
            try:
                result = self._expression.eval(source.activation(self._env))
                value = result.value()
                if value is True or value is False:
                    return value, None
                kind = result.type()
                if kind != cel.Type.ERROR:
                    text = _shorten(repr(value))
                    return False, f"result is {kind.name().lower()} {text}, not a boolean"
                message = str(value)
                convertible = not _unconvertible(message)
            except Exception as exc:  # the binding raises plain RuntimeErrors on odd input
                message = f"{type(exc).__name__}: {exc}"
                convertible = False
            if convertible or not _retry_plain(source, self._env):
                return False, _shorten(message)


def _retry_plain(source: CelInput, env: Any) -> bool:
    """Say whether the event can be retried with its values made plain for CEL."""
    try:
        return source.sanitize(env)
    except Exception:  # still unconvertible: the caller reports the first error
        return False


def _shorten(message: str) -> str:
    if len(message) > _MESSAGE_LIMIT:
        return message[: _MESSAGE_LIMIT - 1] + "…"
    return message


_SCALARS: Final = frozenset((int, float, bool, type(None)))


class _Absent:
    """A memo-key part for a path missing at `depth`: `has()` tells the depths apart."""

    __slots__ = ("depth",)

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Absent) and other.depth == self.depth

    def __hash__(self) -> int:
        return hash((_Absent, self.depth))


_ABSENT_TOP: Final = _Absent(0)
_ABSENT_DATA_KEY: Final = _Absent(1)

KeyPart = Callable[[Event], Any]


def _memo_key(paths: tuple[tuple[str, ...], ...]) -> KeyPart | None:
    """Return a function giving an event's memo key for these paths, or MISSING if it has none.

    The key keeps each value's type, so `true`, `1` and `1.0` are told apart, and where a path
    is missing, so `has()` sees the same thing. Only plain values make a key: a list or a map
    may be read in ways the key cannot see.
    """
    if not paths or any(path[0] in ("key", "time") for path in paths):
        return None  # unique per event: remembering would only churn
    parts = tuple(_key_part(path) for path in paths)
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        if all(len(path) == 2 and path[0] == "data" for path in paths):
            name1, name2 = paths[0][1], paths[1][1]

            def data_pair(event: Event) -> Any:
                data = event.data
                one = data.get(name1)
                two = data.get(name2)
                if one.__class__ is str and two.__class__ is str:
                    return (one, two)  # the common case, without a call per part
                return _pair(first, second, event)

            return data_pair
        return lambda event: _pair(first, second, event)

    def many(event: Event) -> Any:
        key = []
        for part in parts:
            value = part(event)
            if value is MISSING:
                return MISSING
            key.append(value)
        return tuple(key)

    return many


def _pair(first: KeyPart, second: KeyPart, event: Event) -> Any:
    one = first(event)
    if one is MISSING:
        return MISSING
    two = second(event)
    if two is MISSING:
        return MISSING
    return (one, two)


def _key_part(path: tuple[str, ...]) -> KeyPart:
    head, rest = path[0], path[1:]
    if head in ("type", "resource"):
        if rest:
            return lambda event: MISSING
        attribute = head
        return lambda event: getattr(event, attribute)
    if head != "data":
        return lambda event: _ABSENT_TOP
    if len(rest) == 1:
        (name,) = rest

        def data_key(event: Event) -> Any:
            value = event.data.get(name, _ABSENT_DATA_KEY)
            kind = value.__class__
            if kind is str or value is _ABSENT_DATA_KEY:
                return value
            if kind in _SCALARS:
                return (kind, value)
            return MISSING

        return data_key

    def nested(event: Event) -> Any:
        value: Any = event.data
        for depth, name in enumerate(rest, 1):
            if not isinstance(value, Mapping):
                return MISSING
            value = value.get(name, MISSING)
            if value is MISSING:
                return _Absent(depth)
        kind = value.__class__
        if kind is str:
            return value
        if kind in _SCALARS:
            return (kind, value)
        return MISSING

    return nested


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING_PREFIX = re.compile(r"[rRbB]{1,2}$")


def event_paths(text: str) -> tuple[tuple[str, ...], ...] | None:
    """Return the dotted paths through which the expression reads `event`, or None if unsure.

    None means "reads `event` some other way" (indexing, optional fields, the whole map,
    raw strings we do not parse): then every evaluation goes to CEL.
    """
    paths: set[tuple[str, ...]] = set()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if char in "\"'":
            prefix = _STRING_PREFIX.search(text, 0, i)
            if prefix is not None and "r" in prefix.group().lower():
                return None
            end = _string_end(text, i)
            if end < 0:
                return None
            i = end
            continue
        found = _IDENT.match(text, i)
        if found is None:
            i += 1
            continue
        i = found.end()
        if found.group() != "event":
            continue
        before = text[: found.start()].rstrip()
        if before.endswith("."):
            ahead = before[:-1].rstrip()
            if ahead and (ahead[-1].isalnum() or ahead[-1] in "_)]}\"'"):
                continue  # a field called "event" of something else
            return None
        path, i = _read_path(text, i)
        if path is None:
            return None
        paths.add(path)
    return tuple(sorted(paths))


def _string_end(text: str, start: int) -> int:
    quote = text[start]
    triple = text.startswith(quote * 3, start)
    delimiter = quote * 3 if triple else quote
    i = start + len(delimiter)
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(delimiter, i):
            return i + len(delimiter)
        if not triple and text[i] == "\n":
            return -1
        i += 1
    return -1


def _read_path(text: str, i: int) -> tuple[tuple[str, ...] | None, int]:
    parts: list[str] = []
    while i < len(text) and text[i] == ".":
        found = _IDENT.match(text, i + 1)
        if found is None:
            return None, i
        parts.append(found.group())
        i = found.end()
    rest = text[i:].lstrip()
    if rest.startswith("("):
        parts = parts[:-1]  # a method call on the value before it
    elif rest.startswith(("[", ".")):
        return None, i
    if not parts:
        return None, i
    return tuple(parts), i
