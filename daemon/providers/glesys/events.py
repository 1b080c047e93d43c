"""The events the Glesys source emits, with the fields of each one's `data`."""

from __future__ import annotations

from daemon.rules.events import EventType

EVENTS: tuple[EventType, ...] = (
    EventType(
        "glesys.server.cpu", ("server", "serverid", "cpu_percent", "cores"), "a Glesys CPU sample"
    ),
)
