"""Walk newest-first paged listings down to a high-water mark without duplicates or gaps.

The APIs have no "since": `GET /actions`, `GET /logs` and k8sgpu `GET /events/` return the newest
items first, paged by offset. New items are inserted at the head while we page, which shifts the
older ones to higher offsets. The walk below reads pages at offsets 0, L, 2L, ... and relies on
three facts:

1. Ids grow with insertion time, and the listing is ordered by id, newest (largest) first.
2. Insertions happen only at the head; nothing is removed. So between two fetches an item's offset
   can only grow, by the number n of items inserted meanwhile.
3. Page k+1 is requested at offset (k+1)L. In the listing as it was when page k was read, that
   offset is (k+1)L - n <= (k+1)L: the windows overlap (re-seen ids are dropped) but never leave
   a hole. Hence every item older than the newest item seen is read before the walk ends, unless
   the walk first reaches an id <= high_water (everything below is old) or a short page (the end).

Let M be the largest id seen. Any id x with high_water < x < M was inserted before M, so when M
was read x was already listed below it; by (3) the walk reaches x before it stops. Ids not seen are
therefore all above M: the new high-water mark is M, the largest id *actually seen*, and the next
poll picks up the rest. No gap, and no duplicate (ids are deduplicated within a walk, and each walk
returns only ids above the previous mark). If the walk runs out of pages first, it
raises PaginationLimitError instead of advancing silently past ids it never saw.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from daemon.providers.errors import PaginationLimitError
from daemon.providers.records import Action, GpuEvent, LogEntry, PageItems

DEFAULT_PAGE_SIZE = 50
DEFAULT_MAX_PAGES = 20


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


ItemT = TypeVar("ItemT", bound=_HasId)


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


async def walk_newest_first(
    fetch: Callable[[int, int], Awaitable[list[ItemT]]],
    high_water: int,
    *,
    page_size: int,
    max_pages: int,
    where: tuple[str, str, str],
) -> tuple[list[ItemT], int]:
    """Return the items newer than `high_water`, oldest first, and the new high-water mark."""
    if page_size < 1 or max_pages < 1:
        raise ValueError("page_size and max_pages must be at least 1")
    seen: dict[int, ItemT] = {}
    offset = 0
    for _ in range(max_pages):
        page = await fetch(offset, page_size)
        for item in page:
            if item.id <= high_water:
                return _result(seen, high_water)
            seen.setdefault(item.id, item)
        # Items the client could not read were left out of the page, not out of the listing.
        listed = page.listed if isinstance(page, PageItems) else len(page)
        if listed < page_size:
            return _result(seen, high_water)
        offset += listed
    items, top = _result(seen, high_water)
    provider, method, endpoint = where
    raise PaginationLimitError(
        provider,
        method,
        endpoint,
        f"{max_pages} pages of {page_size} did not reach high-water mark {high_water}; "
        f"ids between {high_water} and {items[0].id if items else top} may be missing",
        items=tuple(items),
        high_water=top,
    )


def _result(seen: dict[int, ItemT], high_water: int) -> tuple[list[ItemT], int]:
    items = sorted(seen.values(), key=lambda item: item.id)
    return items, (max(high_water, items[-1].id) if items else high_water)


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
