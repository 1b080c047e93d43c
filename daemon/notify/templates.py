"""Alert texts: Jinja2 templates in a sandbox, compiled once at rule load, rendered bounded.

A rule file may not run code, nor stall or exhaust the daemon. The sandbox refuses attribute
access to internals (`__class__`, `mro`, ...) and methods that change data; there are no filters
or globals beyond Jinja2's safe built-ins; and every rendering runs on a budget:

- no value it makes may exceed `MAX_VALUE` characters or items, nor an integer `MAX_INT_BITS`
  bits. The operations that make big values from small ones (`*`, `**`, `+`, `~`, `%`, the
  `format`, `center`, `indent`, `replace`, `join`, `batch` ... filters and the matching string
  methods) are checked *before* they run, so `{{ 9**99999999 }}` and `{{ 'x' * 300000000 }}`
  stop at once instead of computing;
- all the values it makes together stay under `MAX_MADE` characters;
- loop iterations, operations and calls stay under `MAX_STEPS`, and the whole rendering under
  `MAX_RENDER_S` seconds (a deadline checked as steps are taken).

Jinja2 folds constant expressions when it compiles, so the bounded operations are also the ones
it may not fold (the sandbox's `intercepted_binops`); a template that breaks a bound even with no
event at all (a constant bomb) is refused when the rule loads, which is what `cloudpilot check`
reports.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import string
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from typing import Any

from jinja2 import TemplateError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

MAX_TEMPLATE_CHARS = 4096
MAX_RANGE = 1000
MAX_VALUE = 65_536  # characters of one string, items of one list
MAX_INT_BITS = 4096
MAX_MADE = 1_048_576  # characters made by one rendering, all values together
MAX_STEPS = 10_000  # loop iterations, operations and calls of one rendering
MAX_RENDER_S = 0.25
_DEADLINE_EVERY = 64  # steps between two looks at the clock


class TemplateLimit(Exception):
    """A rendering went past one of its bounds: too big a value, too much work or too long."""


class _Budget:
    """What one rendering may still do; `step` and `make` raise TemplateLimit past a bound."""

    __slots__ = ("deadline", "made", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.made = 0
        self.deadline = time.monotonic() + MAX_RENDER_S

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateLimit(f"more than {MAX_STEPS:,} loop iterations, operations and calls")
        if self.steps % _DEADLINE_EVERY == 0 and time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering took more than {MAX_RENDER_S:g} s")

    def make(self, size: int) -> None:
        if size > MAX_VALUE:
            raise TemplateLimit(f"a value of {size:,} characters or items (at most {MAX_VALUE:,})")
        self.made += size
        if self.made > MAX_MADE:
            raise TemplateLimit(f"more than {MAX_MADE:,} characters made in one rendering")


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _budget() -> _Budget:
    """Return the budget of the rendering in progress (or a fresh one, as when compiling)."""
    return _BUDGET.get() or _Budget()


@contextlib.contextmanager
def _bounded() -> Iterator[_Budget]:
    budget = _Budget()
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def _size(value: Any, cap: int = MAX_VALUE) -> int:
    """Return about how many characters `str(value)` has, counting no further than past `cap`."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 3 // 10 + 2
    if isinstance(value, list | tuple | set | frozenset | dict):
        total = 2
        items: Iterable[Any] = value.items() if isinstance(value, dict) else value
        for item in items:
            total += _size(item, cap - total) + 2
            if total > cap:
                break
        return total
    return 32


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimit(f"an integer of more than {MAX_INT_BITS:,} bits")
    return value


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would break a bound, before computing it."""
    budget = _budget()
    budget.step()
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if max(left.bit_length(), 1) * right > MAX_INT_BITS and abs(left) > 1:
            raise TemplateLimit(f"an integer of more than {MAX_INT_BITS:,} bits")
    elif operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if _is_sequence(sequence) and isinstance(times, int):
                budget.make(len(sequence) * max(times, 0))
    elif operator == "+" and _is_sequence(left) and _is_sequence(right):
        budget.make(len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        _check_printf(left)
        budget.make(len(left) + _size(right))


_PRINTF_WIDTHS = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(text: str) -> None:
    """Refuse a `%` format whose widths or precisions would make a huge string."""
    for width, precision in _PRINTF_WIDTHS.findall(text):
        for number in (width, precision):
            if number == "*":
                raise TemplateLimit("a `*` width in a % format")
            if number and int(number) > MAX_VALUE:
                raise TemplateLimit(f"a % format width of {int(number):,}")


def _check_format(text: str) -> None:
    """Refuse a str.format pattern whose widths would make a huge string, or nest fields."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError:
        return  # str.format raises the same error, rendered as the template's error
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise TemplateLimit("a replacement field inside a format spec")
        digits = "".join(char if char.isdigit() else " " for char in spec).split()
        if any(int(number) > MAX_VALUE for number in digits):
            raise TemplateLimit(f"a format width in {spec!r}")


def _check_call(
    name: str,
    subject: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    method: bool = False,
) -> None:
    """Refuse a filter or method call that would make a value past the bounds.

    `subject` is what a filter filters, or the object whose method it is.
    """
    budget = _budget()
    budget.step()
    numbers = [value for value in (*args, *kwargs.values()) if isinstance(value, int)]
    if any(abs(number) > MAX_VALUE for number in numbers):
        raise TemplateLimit(f"{name}() with an argument over {MAX_VALUE:,}")
    width = max(numbers, default=0)
    size = _size(subject)
    if name in ("center", "ljust", "rjust", "zfill"):
        budget.make(max(size, width))
    elif name == "expandtabs" and isinstance(subject, str):
        budget.make(size + subject.count("\t") * (width or 8))
    elif name == "indent" and isinstance(subject, str):
        prefix = next((value for value in (*args, *kwargs.values()) if isinstance(value, str)), "")
        budget.make(size + (subject.count("\n") + 1) * max(width, len(prefix)))
    elif name == "replace" and isinstance(subject, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = subject.count(old) if old else size + 1
        budget.make(size + count * len(new))
    elif name == "join":
        if method:  # separator.join(items)
            items, separator = (args[0] if args else ()), subject
        else:  # items|join(separator)
            items, separator = subject, (args[0] if args else "")
        count = len(items) if isinstance(items, Sized) else 0
        budget.make(_size(items) + _size(separator) * count)
    elif name == "format" and isinstance(subject, str):
        _check_printf(subject)
        budget.make(size + _size(args) + _size(dict(kwargs)))
    elif name in ("string", "tojson", "pprint", "list", "batch", "slice", "wordwrap"):
        budget.make(size)


def _bounded_filter(name: str, filter_: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a built-in filter so its call is checked first and its result counted."""
    skip = 1 if hasattr(filter_, "jinja_pass_arg") else 0  # the context, eval context or env

    @functools.wraps(filter_)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        subject = args[skip] if len(args) > skip else None
        if name == "join" and subject is not None and not isinstance(subject, Sized):
            # A generator (`map`, `select`): made into a list, at most MAX_VALUE items.
            subject = list(itertools.islice(subject, MAX_VALUE + 1))
            args = (*args[:skip], subject, *args[skip + 1 :])
        _check_call(name, subject, args[skip + 1 :], kwargs)
        result = filter_(*args, **kwargs)
        if isinstance(result, str | list | tuple):
            _budget().make(_size(result))
        return result

    return bounded


def _loop(iterable: Any) -> Iterator[Any]:
    """Yield what a `for` walks, one budget step per item."""
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


def _concat(*parts: Any) -> str:
    """Join the parts of a `~`, counting what it makes."""
    budget = _budget()
    budget.step()
    budget.make(sum(_size(part) for part in parts))
    return "".join(str(part) for part in parts)


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimit(f"range() in an alert text is limited to {MAX_RANGE} items")
    return numbers


def _finalize(value: Any) -> Any:
    """Count each `{{ }}` output before it becomes text."""
    budget = _budget()
    budget.step()
    budget.make(_size(value))
    return value


class _Missing(Undefined):
    """A missing field renders as nothing and may be walked further (`event.data.a.b`)."""

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return self

    def __getitem__(self, key: Any) -> Any:
        return self


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with every operation that can make a big value checked against the budget."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _check_int(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        subject = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "call")
        _check_call(name, subject, args, kwargs, method=subject is not None)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str | list | tuple):
            _budget().make(_size(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)
        return wrapped


def _environment() -> _Environment:
    env = _Environment(
        autoescape=False,
        undefined=_Missing,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_finalize,
    )
    # Only these two of Jinja2's globals: no lipsum, cycler, joiner or namespace.
    env.globals = {"range": _bounded_range, "dict": dict, "_loop": _loop, "_concat": _concat}
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    return env


_ENV = _environment()


def _call(name: str, args: list[Any], lineno: int) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load"), args, [], None, None, lineno=lineno)


class _CountWork(NodeTransformer):
    """Route every `for` through `_loop` and every `~` through `_concat`, to count their work."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call("_loop", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call("_concat", node.nodes, node.lineno)


class AlertTemplate:
    """One compiled alert text; `render` never raises."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str) -> None:
        """Compile `source`, or raise ValueError saying which line is wrong and why.

        A template that breaks a bound with no event at all is refused here too: whatever the
        event, its rendering would only ever be the error.
        """
        if len(source) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"a template may be at most {MAX_TEMPLATE_CHARS} characters")
        try:
            with _bounded():
                tree = _CountWork().visit(_ENV.parse(source))
                self._compiled = _ENV.template_class.from_code(
                    _ENV, _ENV.compile(tree), _ENV.make_globals(None), None
                )
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            where = f" (template line {line})" if line else ""
            raise ValueError(f"not a valid template{where}: {exc.message or exc}") from None
        except (RecursionError, MemoryError, SyntaxError):
            raise ValueError("not a valid template: nested too deeply") from None
        self.source = source
        _, error = self.render({}, MAX_TEMPLATE_CHARS)
        if error is not None and error.startswith(TemplateLimit.__name__):
            raise ValueError(f"cannot be rendered safely: {error.partition(': ')[2]}")

    def render(self, context: Mapping[str, Any], limit: int) -> tuple[str, str | None]:
        """Return the text cut to `limit` characters, and the error that stopped it, if any."""
        pieces: list[str] = []
        size = 0
        try:
            with _bounded():
                for piece in self._compiled.generate(dict(context)):
                    pieces.append(piece)
                    size += len(piece)
                    if size > limit:
                        break
        except Exception as exc:  # a bound, a sandbox refusal, a bad filter argument...
            return _cut("".join(pieces), limit), f"{type(exc).__name__}: {exc}"
        return _cut("".join(pieces), limit), None


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_template(source: str) -> str:
    """Return `source` when it compiles as an alert template, else raise ValueError."""
    AlertTemplate(source)
    return source


# --- what a template reads ----------------------------------------------------------------------

#: The names a template sees (the rendering context) besides the globals.
CONTEXT_NAMES = ("event", "rule", "severity", "server")


def _read_key(node: nodes.Node) -> tuple[nodes.Node, str] | None:
    """Return (what is read from, the field) for `x.field` and `x['field']`, else None."""
    if isinstance(node, nodes.Getattr):
        return node.node, node.attr
    if not isinstance(node, nodes.Getitem):
        return None
    key = node.arg
    return (
        (node.node, key.value)
        if isinstance(key, nodes.Const) and isinstance(key.value, str)
        else None
    )


def _is_name(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name and node.ctx == "load"


def unknown_fields(
    source: str,
    *,
    event_fields: Collection[str],
    data_fields: Collection[str] | None,
    server_fields: Collection[str],
    suggest: Callable[[str, Iterable[str]], str | None],
) -> list[str]:
    """Return, for each name or field the template reads that can never exist, why.

    A variable must be one of CONTEXT_NAMES (or set by the template itself); `event.<f>` one of
    `event_fields`; `event.data.<f>` one of `data_fields` when they are known; `server.<f>` one
    of `server_fields`. Each reason says what was meant when one name is close.
    """
    tree = _ENV.parse(source)
    found: list[str] = []

    def refuse(what: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        guess = suggest(name, known)
        hint = f"did you mean {guess!r}?" if guess else f"known: {', '.join(known)}"
        found.append(f"{what}{name} can never exist; {hint}")

    for name in sorted(meta.find_undeclared_variables(tree)):
        if name not in CONTEXT_NAMES and name not in _ENV.globals:
            refuse("variable ", name, CONTEXT_NAMES)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        read = _read_key(node)
        if read is None:
            continue
        base, field = read
        if _is_name(base, "event"):
            if field not in event_fields:
                refuse("field event.", field, event_fields)
        elif _is_name(base, "server"):
            if field not in server_fields:
                refuse("field server.", field, server_fields)
        elif data_fields is not None and field not in data_fields:
            inner = _read_key(base)
            if inner is not None and _is_name(inner[0], "event") and inner[1] == "data":
                refuse("field event.data.", field, data_fields)
    return list(dict.fromkeys(found))
