"""The sources' shared helpers: the first-poll walk, bounded gathering, the billing cut-off."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from daemon.client.pagination import Position, Walked
from daemon.client.records import ServerBill, ServerBilling
from daemon.providers.seeweb.sources.billing import estimate_billed_until
from daemon.sources.base import cursor_int, cursor_map, cursor_set, gather_limited, walk

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


class Item:
    def __init__(self, ident: int) -> None:
        self.id = ident


def reader(walked: Walked[Item], seen: list[Position | None]) -> Any:
    async def read(position: Position | None) -> Walked[Item]:
        seen.append(position)
        return walked

    return read


async def test_walk_turns_a_true_gap_into_an_event_and_a_warning() -> None:
    lost = Walked([Item(7), Item(8)], Position(8, 2), gap=(3, 7))
    with capture_logs() as logs:
        items, cursor, gaps = await walk(
            reader(lost, []),
            {"high_water": 3, "below": 40},
            source="logs",
            now=NOW,
            log=structlog.get_logger(),
        )
    assert ([i.id for i in items], cursor) == ([7, 8], {"high_water": 8, "below": 2})
    (gap,) = gaps
    assert (gap.type, gap.key, gap.time, gap.resource) == (
        "cloudpilot.gap",
        "logs.gap:3-7",
        NOW,
        "logs",
    )
    assert (gap.data["after_id"], gap.data["before_id"]) == (3, 7)
    assert [(e["event"], e["log_level"]) for e in logs] == [("source_gap", "warning")]


async def test_walk_says_when_a_backlog_continues_next_poll() -> None:
    partial = Walked([Item(4)], Position(4, 11), caught_up=False, pages=20, remaining=2980)
    with capture_logs() as logs:
        _, cursor, gaps = await walk(
            reader(partial, []),
            {"high_water": 3, "below": 10},
            source="actions",
            now=NOW,
            log=structlog.get_logger(),
        )
    assert (cursor, gaps) == ({"high_water": 4, "below": 11}, [])
    (line,) = logs
    assert (line["event"], line["remaining"], line["continues_from"]) == ("source_backlog", 2980, 4)


async def test_walk_passes_the_position_from_the_cursor() -> None:
    seen: list[Position | None] = []
    done: Walked[Item] = Walked([], Position(42))
    for cursor in (None, {"high_water": 42}, {"high_water": "42", "below": "17"}):
        _, written, _ = await walk(reader(done, seen), cursor, source="logs", now=NOW)
        assert written == {"high_water": 42}  # no `below` when the walk does not know it
    assert seen == [None, Position(42), Position(42, 17)]


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
