"""Alert texts: Jinja2 templates in a sandbox, compiled once at rule load, rendered bounded.

A rule file may not run code. The sandbox refuses attribute access to internals (`__class__`,
`mro`, ...), there are no filters or globals beyond Jinja2's safe built-ins, `range` is capped,
and a rendering stops at a character limit, so a template can neither escape nor run away.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

MAX_TEMPLATE_CHARS = 4096
MAX_RANGE = 1000


class _Missing(Undefined):
    """A missing field renders as nothing and may be walked further (`event.data.a.b`)."""

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return self

    def __getitem__(self, key: Any) -> Any:
        return self


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise OverflowError(f"range() in an alert text is limited to {MAX_RANGE} items")
    return numbers


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        autoescape=False,
        undefined=_Missing,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    # Only these two of Jinja2's globals: no lipsum, cycler, joiner or namespace.
    env.globals = {"range": _bounded_range, "dict": dict}
    return env


_ENV = _environment()


class AlertTemplate:
    """One compiled alert text; `render` never raises."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str) -> None:
        """Compile `source`, or raise ValueError saying which line is wrong and why."""
        if len(source) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"a template may be at most {MAX_TEMPLATE_CHARS} characters")
        try:
            self._compiled = _ENV.from_string(source)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            where = f" (template line {line})" if line else ""
            raise ValueError(f"not a valid template{where}: {exc.message or exc}") from None
        self.source = source

    def render(self, context: Mapping[str, Any], limit: int) -> tuple[str, str | None]:
        """Return the text cut to `limit` characters, and the error that stopped it, if any."""
        pieces: list[str] = []
        size = 0
        try:
            for piece in self._compiled.generate(dict(context)):
                pieces.append(piece)
                size += len(piece)
                if size > limit:
                    break
        except Exception as exc:  # a sandbox refusal, a bad filter argument, a type error...
            return _cut("".join(pieces), limit), f"{type(exc).__name__}: {exc}"
        return _cut("".join(pieces), limit), None


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_template(source: str) -> str:
    """Return `source` when it compiles as an alert template, else raise ValueError."""
    AlertTemplate(source)
    return source
