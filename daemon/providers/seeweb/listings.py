"""Walking Seeweb's newest-first listings: actions and audit logs (see `pagination`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from daemon.client.pagination import (
    DEFAULT_MAX_PAGES,
    DEFAULT_PAGE_SIZE,
    PageFetch,
    Position,
    Walked,
    page_of,
    resume_walk,
    walk_newest_first,
)
from daemon.client.records import Action, LogEntry


class ActionLister(Protocol):
    """A client that pages through ECS actions (SeewebClient)."""

    @property
    def name(self) -> str:
        """Return the provider's name."""
        ...

    async def list_actions(
        self, start: int = 0, length: int = 50, resource: str | None = None
    ) -> tuple[list[Action], int]:
        """Return one page of actions, newest first, and the total."""
        ...


class LogLister(Protocol):
    """A client that pages through ECS audit logs (SeewebClient)."""

    @property
    def name(self) -> str:
        """Return the provider's name."""
        ...

    async def list_logs(
        self, start: int = 0, length: int = 50, resource: str | None = None
    ) -> tuple[list[LogEntry], int]:
        """Return one page of log entries, newest first, and the total."""
        ...


async def new_actions(
    client: ActionLister,
    high_water: int,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    resource: str | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> tuple[list[Action], int]:
    """Return the actions newer than `high_water`, oldest first, and the new high-water mark."""

    async def fetch(start: int, length: int) -> list[Action]:
        return (await client.list_actions(start=start, length=length, resource=resource))[0]

    return await walk_newest_first(
        fetch,
        high_water,
        page_size=page_size,
        max_pages=max_pages,
        where=(client.name, "GET", "/ecs/v2/actions"),
    )


async def new_logs(
    client: LogLister,
    high_water: int,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    resource: str | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> tuple[list[LogEntry], int]:
    """Return the log entries newer than `high_water`, oldest first, and the new mark."""

    async def fetch(start: int, length: int) -> list[LogEntry]:
        return (await client.list_logs(start=start, length=length, resource=resource))[0]

    return await walk_newest_first(
        fetch,
        high_water,
        page_size=page_size,
        max_pages=max_pages,
        where=(client.name, "GET", "/ecs/v2/logs"),
    )


def _action_page(client: ActionLister, resource: str | None = None) -> PageFetch[Action]:
    async def fetch(start: int, length: int) -> Sequence[Action]:
        items, total = await client.list_actions(start=start, length=length, resource=resource)
        return page_of(items, total)

    return fetch


def _log_page(client: LogLister) -> PageFetch[LogEntry]:
    async def fetch(start: int, length: int) -> Sequence[LogEntry]:
        items, total = await client.list_logs(start=start, length=length)
        return page_of(items, total)

    return fetch


async def resume_actions(
    client: ActionLister, position: Position | None, *, max_pages: int = DEFAULT_MAX_PAGES
) -> Walked[Action]:
    """Return the actions newer than `position`, oldest first, at most `max_pages` pages."""
    return await resume_walk(_action_page(client), position, max_pages=max_pages)


async def resume_logs(
    client: LogLister, position: Position | None, *, max_pages: int = DEFAULT_MAX_PAGES
) -> Walked[LogEntry]:
    """Return the audit-log entries newer than `position`, oldest first."""
    return await resume_walk(_log_page(client), position, max_pages=max_pages)
