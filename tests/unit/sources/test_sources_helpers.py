"""The sources' shared helpers: the first-poll walk, bounded gathering, the billing cut-off."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from daemon.providers.errors import PaginationLimitError
from daemon.providers.records import ServerBill, ServerBilling
from daemon.sources.base import cursor_int, cursor_map, cursor_set, gather_limited, walk
from daemon.sources.billing import estimate_billed_until


def limit_error() -> PaginationLimitError[int]:
    return PaginationLimitError(
        "seeweb", "GET", "/ecs/v2/actions", "20 pages", items=(7, 8, 9), high_water=9
    )


NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


async def test_walk_keeps_a_partial_first_walk_and_reports_a_gap_later() -> None:
    async def too_long(mark: int) -> tuple[list[int], int]:
        raise limit_error()

    assert await walk(too_long, None, source="logs", now=NOW) == ([7, 8, 9], 9, [])
    items, mark, gaps = await walk(too_long, {"high_water": 3}, source="logs", now=NOW)
    assert (items, mark) == ([7, 8, 9], 9)
    (gap,) = gaps
    assert (gap.type, gap.key, gap.time, gap.resource) == (
        "cloudpilot.gap",
        "logs.gap:3-7",
        NOW,
        "logs",
    )
    assert (gap.data["after_id"], gap.data["before_id"]) == (3, 7)


async def test_walk_passes_the_high_water_mark() -> None:
    marks: list[int] = []

    async def fetch(mark: int) -> tuple[list[int], int]:
        marks.append(mark)
        return [], mark

    await walk(fetch, None, source="logs", now=NOW)
    await walk(fetch, {"high_water": 42}, source="logs", now=NOW)
    assert marks == [0, 42]


def test_cursor_fields_survive_a_json_round_trip() -> None:
    cursor = {"high_water": "12", "open": {"7": "x"}, "stuck": [7, "8"]}
    assert cursor_int(cursor, "high_water") == 12
    assert cursor_int(None, "high_water") == 0
    assert cursor_map(cursor, "open") == {"7": "x"}
    assert cursor_map(None, "open") == {}
    assert cursor_set(cursor, "stuck") == {"7", "8"}
    assert cursor_set({"stuck": None}, "stuck") == set()


async def test_gather_limited_bounds_concurrency_and_keeps_order() -> None:
    running = 0
    peak = 0

    async def call(value: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1
        return value * 10

    calls = [lambda v=v: call(v) for v in range(10)]
    assert await gather_limited(calls, 3) == [v * 10 for v in range(10)]
    assert peak == 3


async def test_gather_limited_raises_the_first_error_itself_and_cancels_the_rest() -> None:
    blocker = asyncio.Event()
    cancelled: list[bool] = []

    async def slow() -> int:
        try:
            await blocker.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return 1

    async def broken() -> int:
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        await gather_limited([slow, broken], 2)
    assert cancelled == [True]


def bill_row(name: str, created: str, hours: float, deleted: str | None = None) -> ServerBill:
    return ServerBill.model_validate(
        {
            "name": name,
            "cost": 1.0,
            "creation_date": created,
            "deletion_date": deleted,
            "billed_hours": hours,
        }
    )


def test_billed_until_comes_from_the_longest_running_server() -> None:
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
    bill = ServerBilling(
        year=2026,
        month=11,
        rows=(
            bill_row("old", "2026-10-01T00:00:00+00:00", 226),  # all month: Nov 1 + 226 h
            bill_row("new", "2026-11-09T10:30:00+00:00", 23),  # a lower bound only
            bill_row("gone", "2026-10-01T00:00:00+00:00", 100, "2026-11-05T04:00:00+00:00"),
        ),
    )
    assert estimate_billed_until(bill, now) == datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
    assert estimate_billed_until(ServerBilling(year=2026, month=11), now) is None
