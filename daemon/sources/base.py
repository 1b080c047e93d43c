"""What a source is, and the few helpers the sources share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from daemon.client.base import RequestLog
from daemon.client.pagination import HasId, Position, Walked
from daemon.facts import Facts
from daemon.models import Event
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics
from daemon.state.store import Cursor

T = TypeVar("T")
ItemT = TypeVar("ItemT", bound=HasId)

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


def keys_kept_by_cursor(source: object) -> bool:
    """Return whether a source's cursor alone keeps its events from coming twice.

    Such a source (a per-server high-water time, as the CPU samples have) sets
    `CURSOR_DEDUPS = True`: its events' keys are not stored as seen, since the cursor, stored in
    the same transaction as the events, already moves past them. Its store then does not grow
    with every sample it ever read.
    """
    return bool(getattr(source, "CURSOR_DEDUPS", False))


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
    read: Callable[[Position | None], Awaitable[Walked[ItemT]]],
    cursor: Cursor | None,
    *,
    source: str,
    now: datetime,
    log: RequestLog | None = None,
) -> tuple[list[ItemT], dict[str, Any], list[Event]]:
    """Return the items after the cursor's position, oldest first, the cursor fields, and gaps.

    A poll reads at most its page bound; what is left is read by the next poll, from the position
    returned, so a backlog (a daemon down for a while on a busy account) is caught up over a few
    polls and nothing is skipped. Only a true gap, the provider no longer listing anything at or
    below the cursor's mark, gives a `cloudpilot.gap` event naming the ids that may be missing,
    and a warning.
    """
    walked = await read(position_of(cursor))
    fields: dict[str, Any] = {"high_water": walked.position.high_water}
    if walked.position.below is not None:
        fields["below"] = walked.position.below
    gaps: list[Event] = []
    if walked.gap is not None:
        after, before = walked.gap
        detail = (
            f"the provider no longer lists anything at or below id {after}: items between "
            f"{after} and {before} may have gone unseen"
        )
        gaps.append(
            Event(
                type="cloudpilot.gap",
                key=f"{source}.gap:{after}-{before}",
                time=now,
                resource=source,
                data={"source": source, "after_id": after, "before_id": before, "detail": detail},
                source=source,
            )
        )
        if log is not None:
            log.warning("source_gap", source=source, after_id=after, before_id=before)
    if not walked.caught_up and log is not None:
        log.info(
            "source_backlog",
            source=source,
            read=len(walked.items),
            pages=walked.pages,
            remaining=walked.remaining,
            continues_from=walked.position.high_water,
        )
    return walked.items, fields, gaps


def position_of(cursor: Cursor | None) -> Position | None:
    """Return where a paged source's last poll stopped, from its cursor; None before the first."""
    if cursor is None or cursor.get("high_water") is None:
        return None
    below = cursor.get("below")
    return Position(cursor_int(cursor, "high_water"), int(below) if below is not None else None)


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


def server_series(
    metrics: Metrics, facts: Facts, provider: str, names: Collection[str]
) -> Iterator[Sample]:
    """Return the cores and latest CPU share of the named servers, as facts hold them now.

    A server no longer in facts, or without cores or samples, has no series; with per-server
    series off, only the provider's totals are given: how many are watched, their mean CPU.
    """
    servers, cpu = facts.servers, facts.cpu
    per_server = metrics.per_server
    watched = 0
    shares = 0.0
    sampled = 0
    for name in names:
        key = (provider, name)  # the labels, too
        fact = servers.get(key)
        if fact is None:
            continue
        watched += 1
        if per_server and fact.cores is not None:
            yield metrics.server_cores, key, fact.cores
        window = cpu.get(key)
        latest = window.latest if window is not None else None
        if latest is not None:
            sampled += 1
            shares += latest.percent / 100
            if per_server:
                yield metrics.server_cpu, key, latest.percent / 100
    yield metrics.watched_servers, (provider,), watched
    if sampled:
        yield metrics.watched_cpu, (provider,), shares / sampled
