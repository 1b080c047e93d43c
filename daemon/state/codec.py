"""JSON for what the store keeps: events, decisions, cursors and free-form data.

Free-form values (event data, decision params, cursors, alert and budget data) may hold JSON
scalars, lists, string-keyed mappings, tuples and timezone-aware datetimes, nested at will; they
come back equal and of the same kind. JSON has no tuple or time, so those travel as one-key tagged
objects (`{"$tuple": [...]}`, `{"$datetime": "2026-11-10T12:00:00+00:00"}`), and a genuine
one-key object whose key starts with `$` is wrapped (`{"$dict": {...}}`) so it is never mistaken
for a tag. Mappings come back as `dict`.

Column times (`seen_at`, `created_at`, ...) are a different thing: `utc_text` writes them as
fixed-width ISO-8601 UTC text with microseconds (`2026-11-10T12:00:00.000000Z`), so SQL can
compare and sort them as strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from daemon.models import Decision, Event, Mode
from daemon.state.store import StateError

_DATETIME = "$datetime"
_TUPLE = "$tuple"
_DICT = "$dict"


def utc_text(moment: datetime, what: str = "time") -> str:
    """Return `moment` as fixed-width ISO-8601 UTC text that sorts in time order."""
    _require_aware(moment, what)
    naive_utc = moment.astimezone(UTC).replace(tzinfo=None)
    return naive_utc.isoformat(timespec="microseconds") + "Z"


def parse_utc(text: str) -> datetime:
    """Return the aware UTC datetime written by `utc_text`."""
    return datetime.fromisoformat(text).astimezone(UTC)


def encode_value(value: Any, what: str = "value") -> str:
    """Return free-form data as JSON text; `what` names it in errors."""
    return json.dumps(_to_json(value, what), ensure_ascii=False, separators=(",", ":"))


def decode_value(text: str) -> Any:
    """Return the data that `encode_value` wrote."""
    return _from_json(json.loads(text))


def event_to_json(event: Event) -> dict[str, Any]:
    """Return an event as a JSON-ready object."""
    where = f"event {event.key!r}"
    return {
        "type": event.type,
        "key": event.key,
        "time": _aware_iso(event.time, f"{where} time"),
        "resource": event.resource,
        "data": _to_json(event.data, f"{where} data"),
        "source": event.source,
    }


def event_from_json(obj: Mapping[str, Any]) -> Event:
    """Return the event that `event_to_json` wrote."""
    return Event(
        type=obj["type"],
        key=obj["key"],
        time=datetime.fromisoformat(obj["time"]),
        resource=obj["resource"],
        data=_from_json(obj["data"]),
        source=obj.get("source", ""),
    )


def encode_event(event: Event) -> str:
    """Return an event as JSON text."""
    return json.dumps(event_to_json(event), ensure_ascii=False, separators=(",", ":"))


def decode_event(text: str) -> Event:
    """Return the event that `encode_event` wrote."""
    return event_from_json(json.loads(text))


def encode_decision(decision: Decision) -> str:
    """Return a decision, with its event, as JSON text."""
    where = f"decision {decision.key!r}"
    obj = {
        "key": decision.key,
        "rule": decision.rule,
        "action": decision.action,
        "params": _to_json(decision.params, f"{where} params"),
        "mode": Mode(decision.mode).value,
        "event": None if decision.event is None else event_to_json(decision.event),
        "time": _aware_iso(decision.time, f"{where} time"),
    }
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def decode_decision(text: str) -> Decision:
    """Return the decision that `encode_decision` wrote."""
    obj = json.loads(text)
    return Decision(
        key=obj["key"],
        rule=obj["rule"],
        action=obj["action"],
        params=_from_json(obj["params"]),
        mode=Mode(obj["mode"]),
        event=None if obj["event"] is None else event_from_json(obj["event"]),
        time=datetime.fromisoformat(obj["time"]),
    )


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise StateError(
            f"{what}: {moment.isoformat()} has no time zone; the store keeps aware times"
        )


def _aware_iso(moment: datetime, what: str) -> str:
    _require_aware(moment, what)
    return moment.isoformat()


def _to_json(value: Any, where: str) -> Any:
    # bool and StrEnum are subclasses of int and str, so they pass as the JSON scalars they are.
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return {_DATETIME: _aware_iso(value, where)}
    if isinstance(value, tuple):
        return {_TUPLE: [_to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, list):
        return [_to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        obj: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateError(f"{where}: key {key!r} is a {type(key).__name__}, not a string")
            obj[key] = _to_json(item, f"{where}.{key}")
        if len(obj) == 1 and next(iter(obj)).startswith("$"):
            return {_DICT: obj}
        return obj
    raise StateError(f"{where}: cannot store a {type(value).__name__} value ({value!r})")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == _DATETIME:
            return datetime.fromisoformat(inner)
        if tag == _TUPLE:
            return tuple(_from_json(item) for item in inner)
        if tag == _DICT:
            return {key: _from_json(item) for key, item in inner.items()}
    return {key: _from_json(item) for key, item in value.items()}
