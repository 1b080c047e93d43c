"""Walking the Serverless GPU event listing, newest first (see `pagination`)."""

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
from daemon.client.records import GpuEvent


class EventLister(Protocol):
    """A client that pages through k8sgpu events (K8sGpuClient)."""

    @property
    def name(self) -> str:
        """Return the provider's name."""
        ...

    async def list_events(
        self, offset: int = 0, length: int = 50, search: str | None = None
    ) -> tuple[list[GpuEvent], int]:
        """Return one page of events, newest first, and the total."""
        ...


async def new_events(
    client: EventLister,
    high_water: int,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    search: str | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> tuple[list[GpuEvent], int]:
    """Return the k8sgpu events newer than `high_water`, oldest first, and the new mark."""

    async def fetch(offset: int, length: int) -> list[GpuEvent]:
        return (await client.list_events(offset=offset, length=length, search=search))[0]

    return await walk_newest_first(
        fetch,
        high_water,
        page_size=page_size,
        max_pages=max_pages,
        where=(client.name, "GET", "/k8sgpu/v1/events/"),
    )


def _event_page(client: EventLister) -> PageFetch[GpuEvent]:
    async def fetch(start: int, length: int) -> Sequence[GpuEvent]:
        items, total = await client.list_events(offset=start, length=length)
        return page_of(items, total)

    return fetch


async def resume_events(
    client: EventLister, position: Position | None, *, max_pages: int = DEFAULT_MAX_PAGES
) -> Walked[GpuEvent]:
    """Return the k8sgpu events newer than `position`, oldest first."""
    return await resume_walk(_event_page(client), position, max_pages=max_pages)
