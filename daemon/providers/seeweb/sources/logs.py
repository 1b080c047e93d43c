"""Seeweb ECS audit logs: one event per new log line."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from daemon.client.base import RequestLog
from daemon.client.records import LogEntry
from daemon.clock import Clock
from daemon.facts import Facts
from daemon.models import Event
from daemon.providers.seeweb.client import SeewebClient
from daemon.providers.seeweb.listings import resume_logs
from daemon.sources.base import iso, walk
from daemon.state.store import Cursor


class LogsSource:
    """Turn new audit-log lines (logins, token changes, panel actions) into `seeweb.log` events."""

    name = "logs"

    def __init__(
        self,
        client: SeewebClient,
        facts: Facts,
        clock: Clock,
        *,
        max_pages: int = 20,
        log: RequestLog | None = None,
    ) -> None:
        self._client = client
        self._facts = facts
        self._clock = clock
        self._max_pages = max_pages
        self._log = log

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return an event per log line newer than the cursor's high-water mark."""
        now = self._clock.now()
        entries, position, gaps = await walk(
            lambda at: resume_logs(self._client, at, max_pages=self._max_pages),
            cursor,
            source=self.name,
            now=now,
            log=self._log,
        )
        events = [
            Event(
                type="seeweb.log",
                key=f"seeweb.log:{entry.id}",
                time=entry.created_at or now,
                resource=entry.target or "",
                data=log_data(entry),
                source=self.name,
            )
            for entry in entries
        ]
        return gaps + events, position


def log_data(entry: LogEntry) -> dict[str, Any]:
    """Return a log line's fields as JSON-able event data, times as ISO 8601 text."""
    return {
        name: iso(value) if isinstance(value, datetime) else value
        for name, value in entry.model_dump().items()
    }
