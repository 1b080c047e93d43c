"""What a source is, and the few helpers the sources share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from prometheus_client import Gauge

from daemon.models import Event
from daemon.providers.errors import PaginationLimitError
from daemon.state.store import Cursor

T = TypeVar("T")

DEFAULT_CONCURRENCY = 4


class Source(Protocol):
    """Something polled on an interval: fetch what is new, normalize it, update facts.

    `poll` does no error handling and no scheduling (the scheduler owns both). The cursor it
    returns is JSON-able and holds everything needed to continue after a restart.
    """

    name: str

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return the events that are new since `cursor`, and the cursor to continue from."""
        ...


def iso(value: datetime | None) -> str | None:
    """Return a time as ISO 8601 text, or None."""
    return value.isoformat() if value is not None else None


def cursor_int(cursor: Cursor | None, key: str, default: int = 0) -> int:
    """Return an integer field of a cursor, or `default` before the first poll."""
    if cursor is None:
        return default
    value = cursor.get(key, default)
    return int(value) if value is not None else default


def cursor_map(cursor: Cursor | None, key: str) -> dict[str, Any]:
    """Return a copy of a mapping field of a cursor (keys are text after a JSON round trip)."""
    value = cursor.get(key) if cursor is not None else None
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def cursor_set(cursor: Cursor | None, key: str) -> set[str]:
    """Return a list field of a cursor as a set of text."""
    value = cursor.get(key) if cursor is not None else None
    return {str(v) for v in value} if isinstance(value, list | tuple) else set()


async def walk(
    fetch: Callable[[int], Awaitable[tuple[list[T], int]]],
    cursor: Cursor | None,
    *,
    source: str,
    now: datetime,
) -> tuple[list[T], int, list[Event]]:
    """Return the items above the cursor's high-water mark, oldest first, the new mark, and gaps.

    Before the first poll there is no mark to reach: a walk that runs out of pages has then only
    left out old history, so what it saw is kept. Later, running out of pages means more arrived
    than the page bound allows (e.g. after a long outage): the walk keeps what it saw and returns
    one `cloudpilot.gap` event naming the ids it may have missed, rather than stop the source for
    good or skip them silently.
    """
    mark = cursor_int(cursor, "high_water")
    try:
        items, high_water = await fetch(mark)
    except PaginationLimitError as exc:
        if cursor is None:
            return list(exc.items), exc.high_water, []
        ids = [getattr(item, "id", item) for item in exc.items]
        first = min((i for i in ids if isinstance(i, int)), default=exc.high_water)
        gap = Event(
            type="cloudpilot.gap",
            key=f"{source}.gap:{mark}-{first}",
            time=now,
            resource=source,
            data={"source": source, "after_id": mark, "before_id": first, "detail": str(exc)},
            source=source,
        )
        return list(exc.items), exc.high_water, [gap]
    return items, high_water, []


async def gather_limited(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run the calls with at most `limit` at a time; return their results in order.

    The first failure cancels the calls still running and is raised as itself.
    """
    semaphore = asyncio.Semaphore(max(1, limit))

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await call()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(call)) for call in calls]
    except ExceptionGroup as failures:
        first: BaseException = failures
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]


def drop_series(gauge: Gauge, *labels: str) -> None:
    """Remove one labelled series from a gauge, if it exists."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
