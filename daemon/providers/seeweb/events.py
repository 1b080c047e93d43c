"""The events Seeweb's sources emit, with the fields of each one's `data`."""

from __future__ import annotations

from daemon.rules.events import BILL_FIELDS, EventType

_ACTION = (
    "id",
    "type",
    "status",
    "user",
    "resource",
    "resource_type",
    "created_at",
    "started_at",
    "completed_at",
    "progress",
)

_LOG = (  # an audit-log line's fields (records.LogEntry)
    "id",
    "actor",
    "action",
    "severity",
    "status",
    "target_type",
    "target",
    "created_at",
    "ip_address",
    "user_agent",
    "url",
    "location",
    "result_type",
    "result",
    "description",
    "extra_data",
)

EVENTS: tuple[EventType, ...] = (
    EventType("seeweb.action.started", _ACTION, "a Seeweb action began"),
    EventType("seeweb.action.completed", _ACTION, "a Seeweb action ended well"),
    EventType("seeweb.action.failed", _ACTION, "a Seeweb action ended failed or error"),
    EventType(
        "seeweb.action.stuck", (*_ACTION, "in_progress_s"), "a Seeweb action still runs late"
    ),
    EventType("seeweb.log", _LOG, "a line of the Seeweb audit log"),
    EventType("seeweb.server.cpu", ("server", "cpu_percent", "cores"), "a Seeweb CPU sample"),
    EventType(
        "seeweb.billing.updated",
        (*BILL_FIELDS, "servers", "templates", "snapshots"),
        "the Seeweb bill of the month changed",
    ),
)
