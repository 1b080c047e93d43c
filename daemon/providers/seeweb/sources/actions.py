"""Seeweb ECS actions: new ones, the ones that ended, and the ones stuck in progress."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from daemon.client.base import RequestLog
from daemon.client.errors import NotFoundError
from daemon.client.records import Action
from daemon.clock import Clock
from daemon.facts import Facts
from daemon.models import Event
from daemon.providers.seeweb.client import SeewebClient
from daemon.providers.seeweb.listings import resume_actions
from daemon.sources.base import cursor_map, cursor_set, iso, walk
from daemon.state.store import Cursor

DEFAULT_STUCK_AFTER_S = 3600.0


class ActionsSource:
    """Turn the action list into started, completed, failed and stuck events."""

    name = "actions"

    def __init__(
        self,
        client: SeewebClient,
        facts: Facts,
        clock: Clock,
        *,
        stuck_after: float = DEFAULT_STUCK_AFTER_S,
        max_pages: int = 20,
        log: RequestLog | None = None,
    ) -> None:
        self._client = client
        self._facts = facts
        self._clock = clock
        self._stuck_after = stuck_after
        self._max_pages = max_pages
        self._log = log

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return events for new actions and for open ones that ended or got stuck."""
        now = self._clock.now()
        new, position, gaps = await walk(
            lambda at: resume_actions(self._client, at, max_pages=self._max_pages),
            cursor,
            source=self.name,
            now=now,
            log=self._log,
        )
        # Open actions map id -> when they began, so a restart still knows how long they ran.
        open_since = cursor_map(cursor, "open")
        stuck = cursor_set(cursor, "stuck")
        events: list[Event] = []
        current: dict[str, Action] = {}
        for action in new:
            events.append(self._event(action, "started", _began(action) or now))
            if action.is_finished:
                events.append(self._ended(action, now))
            else:
                open_since[str(action.id)] = iso(_began(action) or now)
                current[str(action.id)] = action
        for action_id in sorted(open_since.keys() - current.keys(), key=int):
            try:
                action = await self._client.get_action(int(action_id))
            except NotFoundError:
                del open_since[action_id]  # gone from the API: nothing more will be learned
                continue
            if action.is_finished:
                del open_since[action_id]
                events.append(self._ended(action, now))
            else:
                current[action_id] = action
        for action_id, since in open_since.items():
            running_s = (now - datetime.fromisoformat(since)).total_seconds()
            if running_s > self._stuck_after and action_id not in stuck:
                stuck.add(action_id)
                events.append(
                    self._event(current[action_id], "stuck", now, in_progress_s=round(running_s, 1))
                )
        return gaps + events, {
            **position,
            "open": open_since,
            "stuck": sorted(stuck & open_since.keys(), key=int),
        }

    def _ended(self, action: Action, now: datetime) -> Event:
        kind = "failed" if action.is_failure else "completed"
        return self._event(action, kind, action.completed_at or now)

    def _event(self, action: Action, kind: str, time: datetime, **extra: Any) -> Event:
        return Event(
            type=f"seeweb.action.{kind}",
            key=f"seeweb.action:{action.id}:{kind}",
            time=time,
            resource=action.resource or "",
            data={**action_data(action), **extra},
            source=self.name,
        )


def _began(action: Action) -> datetime | None:
    return action.started_at or action.created_at


def action_data(action: Action) -> dict[str, Any]:
    """Return an action's fields as JSON-able event data."""
    return {
        "id": action.id,
        "type": action.type,
        "status": action.status,
        "user": action.user,
        "resource": action.resource,
        "resource_type": action.resource_type,
        "created_at": iso(action.created_at),
        "started_at": iso(action.started_at),
        "completed_at": iso(action.completed_at),
        "progress": action.progress,
    }
