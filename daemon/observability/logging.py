"""Structured logging: JSON lines to stdout, credentials redacted, tracebacks without locals."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO, cast

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

REDACTED = "[redacted]"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_SECRET_KEY = re.compile(
    r"token|password|passwd|secret|authorization|api_?key|routing_?key|cookie", re.IGNORECASE
)
# An Authorization header's value inside free text, e.g. an error message that quotes a request.
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic) [A-Za-z0-9._~+/=-]{8,}")
# Marks the stdlib handler we install, so a second configure_logging replaces it.
_HANDLER_NAME = "cloudpilot-structlog"
# Left as they are for the renderer, which turns them into text without locals.
_RENDERED_LATER = frozenset({"exc_info", "_record"})


def is_secret_key(key: object) -> bool:
    """Return whether a field name says its value is a credential (`*_file` paths are not)."""
    if not isinstance(key, str):
        return False
    return _SECRET_KEY.search(key) is not None and not key.lower().endswith("_file")


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: REDACTED if is_secret_key(key) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_redact_value(item) for item in value)
    if isinstance(value, str):
        return _AUTH_SCHEME.sub(rf"\1 {REDACTED}", value)
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every credential-named field, nested ones included."""
    redacted: EventDict = {}
    for key, value in event_dict.items():
        if is_secret_key(key):
            redacted[key] = REDACTED
        elif key in _RENDERED_LATER:
            redacted[key] = value
        else:
            redacted[key] = _redact_value(value)
    return redacted


def lead_with_time_level_event(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """Put timestamp, level and event first, so each line reads the same way."""
    lead = {
        key: event_dict.pop(key) for key in ("timestamp", "level", "event") if key in event_dict
    }
    return {**lead, **event_dict}


def _level_number(level: str) -> int:
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(_LEVELS)}") from None


def configure_logging(
    *, stream: TextIO | None = None, json: bool | None = None, level: str = "info"
) -> None:
    """Send structlog and standard-library logs to `stream` (default: the current stdout)."""
    out = stream if stream is not None else sys.stdout
    number = _level_number(level)
    isatty = getattr(out, "isatty", None)
    tty = bool(callable(isatty) and isatty())
    if json is None:
        json = not tty

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if json:
        # Locals can hold tokens and passwords, so tracebacks carry frames only.
        shared.append(
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=tty, exception_formatter=structlog.dev.plain_traceback
        )
    shared += [redact_secrets, lead_with_time_level_event]

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Not cached: a later configure_logging (tests, a reopened stream) reaches every logger.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(number, logging.WARNING))


def get_logger(**bound: Any) -> FilteringBoundLogger:
    """Return a logger with `bound` fields on every line it writes."""
    return cast(FilteringBoundLogger, structlog.get_logger(**bound))
