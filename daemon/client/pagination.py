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

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from daemon.client.errors import PaginationLimitError
from daemon.client.records import PageItems

DEFAULT_PAGE_SIZE = 50
DEFAULT_MAX_PAGES = 20
# Finding the resume point by id is a binary search of one-item pages: about log2(total) probes.
MAX_PROBES = 64


class HasId(Protocol):
    """An item of a listing: it has an integer id that grows with time."""

    @property
    def id(self) -> int:
        """Return the item's id."""
        ...


ItemT = TypeVar("ItemT", bound=HasId)


async def walk_newest_first(
    fetch: Callable[[int, int], Awaitable[Sequence[ItemT]]],
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


# --- resuming a walk where the last one stopped ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """How far a newest-first listing has been read.

    Every item with an id up to `high_water` has been seen. `below` is how many items the listing
    held with ids up to it: those never move (new items come only at the head), so the listing's
    total less `below` is the offset to resume from. None where it is not known (a cursor written
    before it was kept): the resume point is then found by id.
    """

    high_water: int
    below: int | None = None


@dataclass(slots=True)
class Walked(Generic[ItemT]):
    """What one bounded walk read: new items oldest first, and where the next walk starts."""

    items: list[ItemT]
    position: Position
    caught_up: bool = True
    """False when the page bound stopped the walk: the next poll goes on from `position`."""
    gap: tuple[int, int] | None = None
    """(after, before): the listing no longer holds anything at or below the high-water mark, so
    items with ids between these two may have gone unseen."""
    pages: int = 0
    probes: int = 0
    remaining: int | None = field(default=None)
    """How many items are still to read, when the listing's total is known."""


PageFetch = Callable[[int, int], Awaitable[Sequence[ItemT]]]


def page_of(found: Sequence[ItemT], total: int | None = None) -> PageItems[ItemT]:
    """Return a fetched page as PageItems, with the listing's total when the answer gave one."""
    if isinstance(found, PageItems):
        return found
    return PageItems(found, total=total)


async def resume_walk(
    fetch: PageFetch[ItemT],
    position: Position | None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> Walked[ItemT]:
    """Return the items newer than `position`, oldest first, reading at most `max_pages` pages.

    An idle poll costs one request (the head page). A backlog larger than a page is read from
    the resume point upwards, page by page, oldest first: the page bound limits one poll's work,
    and the next poll continues from the position returned, so nothing is skipped. Without a
    position (the first poll), the newest `max_pages` pages are read as history.

    `fetch(start, length)` returns a page, newest first, as `PageItems` with the listing's
    `total` (a listing that gives no total is walked newest first, as `walk_newest_first` does).
    """
    if page_size < 1 or max_pages < 1:
        raise ValueError("page_size and max_pages must be at least 1")
    head = page_of(await fetch(0, page_size))
    if position is None:
        return await _first_read(fetch, head, page_size, max_pages)
    mark = position.high_water
    if head.total is None:
        return await _newest_first(fetch, position, page_size, max_pages)
    boundary = _first_at_or_below(head.ids, mark)
    if boundary is not None or head.listed < page_size or head.listed >= head.total:
        # The new items fit in the head page: the usual case.
        lost = boundary is None and bool(position.below) and mark > 0
        return Walked(
            _newer(head, mark),
            _advanced(head, 0, head.total, mark, position.below),
            gap=(mark, min(_known(head.ids), default=mark)) if lost else None,
            pages=1,
            remaining=0,
        )
    walked: Walked[ItemT] = Walked([], position, caught_up=False, pages=1)
    below = position.below
    total = head.total
    # The head page only told that a backlog is there: `max_pages` more read it.
    while walked.pages <= max_pages:
        if below is None or not 0 <= total - below <= total:
            below, total = await _locate(fetch, mark, total, walked)
            if below == 0 and walked.gap is None and mark > 0:
                oldest = await _oldest_id(fetch, total, walked)
                walked.gap = (mark, oldest if oldest is not None else mark)
        # The page ends a little past the resume point, so that items arriving at the head
        # between two fetches (which push it further) still leave it inside the page.
        margin = max(1, page_size // 5)
        start = max(0, total - below - page_size + margin)
        page = page_of(await fetch(start, total - below - start + margin))
        walked.pages += 1
        total = page.total if page.total is not None else total
        boundary = _first_at_or_below(page.ids, mark)
        at_end = start + page.listed >= total
        if boundary is None and not at_end:
            # New items pushed the resume point further: look again from the new total. If it
            # should have been in this page, the count was wrong: find it by id.
            below = None if total - below < start + page.listed else below
            continue
        if boundary == 0:
            below = None  # the whole page is old: the count was wrong (the listing shrank)
            continue
        if boundary is None and mark > 0 and walked.gap is None:
            # Nothing at or below the mark is listed any more: what lay between may be lost.
            walked.gap = (mark, min(_known(page.ids), default=mark))
        walked.items.extend(_newer(page, mark))
        walked.position = _advanced(page, start, total, mark, below)
        mark, below = walked.position.high_water, walked.position.below
        if start == 0:
            walked.caught_up = True
            walked.remaining = 0
            return walked
    walked.remaining = max(0, total - (below or 0))
    return walked


def _advanced(
    page: PageItems[ItemT], start: int, total: int, mark: int, below: int | None
) -> Position:
    """Return the position after reading a page at `start` of a listing of `total` items.

    The new mark is the newest id read; the items at or below it are those from its place in
    the page to the end of the listing. An unreadable item above it is left out (and reported).
    """
    known = [i for i in page.ids if i is not None]
    top = max([mark, *known])
    place = next((n for n, i in enumerate(page.ids) if i is not None and i <= top), None)
    if place is None:  # nothing readable at or below the mark in the page: the count stands
        return Position(top, below)
    return Position(top, total - start - place)


def _known(ids: Sequence[int | None]) -> list[int]:
    return [i for i in ids if i is not None]


def _first_at_or_below(ids: Sequence[int | None], mark: int) -> int | None:
    """Return the index of the first (newest) id at or below `mark`, if the page has one."""
    return next((n for n, i in enumerate(ids) if i is not None and i <= mark), None)


def _newer(page: Sequence[ItemT], mark: int) -> list[ItemT]:
    """Return the page's items above `mark`, oldest first."""
    return sorted((item for item in page if item.id > mark), key=_item_id)


def _item_id(item: HasId) -> int:
    return item.id


async def _locate(
    fetch: PageFetch[ItemT], mark: int, total: int, walked: Walked[ItemT]
) -> tuple[int, int]:
    """Find, by id, how many listed items are at or below `mark`; return it and the total."""
    lo, hi = 0, total  # the first offset whose id is at or below the mark lies in [lo, hi]
    while lo < hi and walked.probes < MAX_PROBES:
        middle = (lo + hi) // 2
        probe = page_of(await fetch(middle, 2))
        walked.probes += 1
        total = probe.total if probe.total is not None else total
        known = [i for i in probe.ids if i is not None]
        if not known:
            hi = middle  # nothing readable there: look nearer the head
        elif known[0] <= mark:
            hi = middle
        else:
            lo = middle + 1
    return max(0, total - lo), total


async def _oldest_id(fetch: PageFetch[ItemT], total: int, walked: Walked[ItemT]) -> int | None:
    if total <= 0:
        return None
    page = page_of(await fetch(max(0, total - 1), 1))
    walked.probes += 1
    known = _known(page.ids)
    return known[-1] if known else None


async def _first_read(
    fetch: PageFetch[ItemT], head: PageItems[ItemT], page_size: int, max_pages: int
) -> Walked[ItemT]:
    """Read the newest pages as history, and start the position at the head page's top."""
    seen: dict[int, ItemT] = {}
    for item in head:
        seen.setdefault(_item_id(item), item)
    offset, pages, page = head.listed, 1, head
    while page.listed >= page_size and pages < max_pages:
        page = page_of(await fetch(offset, page_size))
        pages += 1
        for item in page:
            seen.setdefault(_item_id(item), item)
        offset += page.listed
    position = (
        _advanced(head, 0, head.total, 0, None)
        if head.total is not None
        else Position(max([0, *_known(head.ids)]))
    )
    items = sorted((i for n, i in seen.items() if n <= position.high_water), key=_item_id)
    return Walked(items, position, pages=pages, remaining=0)


async def _newest_first(
    fetch: PageFetch[ItemT], position: Position, page_size: int, max_pages: int
) -> Walked[ItemT]:
    """Walk a listing that gives no total the old way: newest first, down to the mark."""
    try:
        items, top = await walk_newest_first(
            fetch, position.high_water, page_size=page_size, max_pages=max_pages, where=("", "", "")
        )
    except PaginationLimitError as exc:
        low = min((_item_id(i) for i in exc.items), default=exc.high_water)
        return Walked(
            list(exc.items),
            Position(exc.high_water),
            gap=(position.high_water, low),
            pages=max_pages,
        )
    return Walked(items, Position(top), pages=0)
