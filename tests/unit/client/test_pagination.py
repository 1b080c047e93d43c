"""The high-water walk over newest-first pages: no duplicate, no gap, bounded."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.client.errors import PaginationLimitError
from daemon.client.pagination import Position
from daemon.client.records import Action, GpuEvent, LogEntry, PageItems
from daemon.providers.k8sgpu.listings import new_events, resume_events
from daemon.providers.seeweb.listings import new_actions, new_logs, resume_actions, resume_logs


class Feed:
    """An in-memory newest-first listing that grows at the head between page fetches."""

    name = "fake"

    def __init__(self, initial: int, rng: random.Random, max_insert: int) -> None:
        self.ids = list(range(initial, 0, -1))  # newest first
        self.rng = rng
        self.max_insert = max_insert
        self.fetches = 0

    def insert(self, count: int) -> None:
        top = self.ids[0] if self.ids else 0
        self.ids[:0] = range(top + count, top, -1)

    def page(self, start: int, length: int) -> list[int]:
        assert start >= 0 and length > 0
        page = self.ids[start : start + length]
        self.fetches += 1
        self.insert(self.rng.randint(0, self.max_insert))  # new items land between fetches
        return page

    async def list_actions(
        self, start: int = 0, length: int = 50, resource: str | None = None
    ) -> tuple[list[Action], int]:
        total = len(self.ids)
        ids = self.page(start, length)
        return [Action(id=i, status="completed", resource=resource) for i in ids], total

    async def list_logs(
        self, start: int = 0, length: int = 50, resource: str | None = None
    ) -> tuple[list[LogEntry], int]:
        total = len(self.ids)
        return [LogEntry(id=i) for i in self.page(start, length)], total

    async def list_events(
        self, offset: int = 0, length: int = 50, search: str | None = None
    ) -> tuple[list[GpuEvent], int]:
        total = len(self.ids)
        return [GpuEvent(id=i) for i in self.page(offset, length)], total


async def poll_many(feed: Feed, kind: str, polls: int, page_size: int) -> list[int]:
    """Poll like a source would, and return every id delivered, in delivery order."""
    delivered: list[int] = []
    high_water = 0
    for n in range(polls + 1):
        if n == polls:
            feed.max_insert = 0  # a last, quiet poll collects what arrived during the others
        if kind == "actions":
            actions, mark = await new_actions(feed, high_water, page_size=page_size, max_pages=500)
            ids = [a.id for a in actions]
        elif kind == "logs":
            logs, mark = await new_logs(feed, high_water, page_size=page_size, max_pages=500)
            ids = [e.id for e in logs]
        else:
            events, mark = await new_events(feed, high_water, page_size=page_size, max_pages=500)
            ids = [e.id for e in events]
        assert ids == sorted(ids), "oldest first"
        assert all(i > high_water for i in ids)
        assert mark == max([high_water, *ids])
        delivered += ids
        high_water = mark
    return delivered


@pytest.mark.parametrize("kind", ["actions", "logs", "events"])
@pytest.mark.parametrize("seed", range(5))
async def test_thirty_polls_with_insertions_deliver_every_id_once(kind: str, seed: int) -> None:
    feed = Feed(initial=23, rng=random.Random(seed), max_insert=7)
    delivered = await poll_many(feed, kind, polls=30, page_size=10)
    assert len(delivered) == len(set(delivered)), "no duplicates"
    assert set(delivered) == set(feed.ids), "no gaps"


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    initial=st.integers(0, 120),
    # Pages must outrun the insertions (up to 7 per fetch), or no walk could ever finish; that
    # case is the page bound's, tested below.
    page_size=st.integers(8, 30),
    max_insert=st.integers(0, 7),
)
def test_no_duplicates_and_no_gaps_for_any_page_size(
    seed: int, initial: int, page_size: int, max_insert: int
) -> None:
    feed = Feed(initial, random.Random(seed), max_insert)
    delivered = asyncio.run(poll_many(feed, "actions", polls=30, page_size=page_size))
    assert len(delivered) == len(set(delivered))
    assert set(delivered) == set(feed.ids)


async def test_walk_stops_at_the_high_water_mark() -> None:
    feed = Feed(initial=100, rng=random.Random(0), max_insert=0)
    actions, mark = await new_actions(feed, 97, page_size=50)
    assert [a.id for a in actions] == [98, 99, 100]
    assert mark == 100
    assert feed.fetches == 1


async def test_walk_stops_at_a_short_or_empty_page() -> None:
    feed = Feed(initial=3, rng=random.Random(0), max_insert=0)
    assert [a.id for a in (await new_actions(feed, 0))[0]] == [1, 2, 3]
    assert feed.fetches == 1
    feed = Feed(initial=10, rng=random.Random(0), max_insert=0)
    actions, mark = await new_actions(feed, 0, page_size=5)
    assert (len(actions), mark, feed.fetches) == (10, 10, 3)  # the third page is empty


async def test_nothing_new_keeps_the_mark() -> None:
    feed = Feed(initial=0, rng=random.Random(0), max_insert=0)
    assert await new_actions(feed, 42) == ([], 42)


async def test_page_bound_raises_instead_of_skipping_unseen_ids() -> None:
    # Eight new actions land between fetches of five-item pages: the walk never catches up.
    feed = Feed(initial=50, rng=_Always(8), max_insert=8)
    feed.insert(20)  # 51..70 are new
    with pytest.raises(PaginationLimitError) as caught:
        await new_actions(feed, 50, page_size=5, max_pages=4)
    error = caught.value
    assert "did not reach high-water mark 50" in str(error)
    assert str(error).startswith("fake GET /ecs/v2/actions:")
    seen = [a.id for a in error.items]
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert error.high_water == max(seen)
    assert min(seen) > 51  # ids just above the old mark were never seen
    assert feed.fetches == 4


class _Always(random.Random):
    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value

    def randint(self, a: int, b: int) -> int:
        return self.value


async def test_resource_filter_is_passed_through() -> None:
    feed = Feed(initial=2, rng=random.Random(0), max_insert=0)
    actions, _ = await new_actions(feed, 0, resource="ec200001")
    assert {a.resource for a in actions} == {"ec200001"}


def test_bad_bounds_are_refused() -> None:
    feed = Feed(initial=2, rng=random.Random(0), max_insert=0)
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(new_actions(feed, 0, page_size=0))


# --- resuming a bounded walk ---------------------------------------------------------------------


async def resume_many(
    feed: Feed, kind: str, position: Position | None, polls: int, max_pages: int
) -> tuple[list[int], Position | None]:
    """Poll `polls` times with a small page bound; return every id delivered, in order."""
    delivered: list[int] = []
    for n in range(polls):
        if n == polls - 3:
            feed.max_insert = 0  # the last polls are quiet and catch up
        if kind == "actions":
            walked_a = await resume_actions(feed, position, max_pages=max_pages)
            ids, position, gap = [a.id for a in walked_a.items], walked_a.position, walked_a.gap
        elif kind == "logs":
            walked_l = await resume_logs(feed, position, max_pages=max_pages)
            ids, position, gap = [e.id for e in walked_l.items], walked_l.position, walked_l.gap
        else:
            walked_e = await resume_events(feed, position, max_pages=max_pages)
            ids, position, gap = [e.id for e in walked_e.items], walked_e.position, walked_e.gap
        assert gap is None
        delivered += ids
    return delivered, position


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    backlog=st.integers(0, 900),
    max_insert=st.integers(0, 7),
    max_pages=st.integers(1, 4),
    kind=st.sampled_from(["actions", "logs", "events"]),
)
def test_a_backlog_beyond_the_page_bound_is_read_over_later_polls_once_and_in_order(
    seed: int, backlog: int, max_insert: int, max_pages: int, kind: str
) -> None:
    rng = random.Random(seed)
    feed = Feed(initial=300, rng=rng, max_insert=0)
    first, position = asyncio.run(resume_many(feed, kind, None, polls=1, max_pages=2))
    assert first == sorted(first) and position is not None
    top = position.high_water
    feed.insert(backlog)  # a daemon down while the account was busy
    feed.max_insert = max_insert
    delivered, _ = asyncio.run(resume_many(feed, kind, position, polls=80, max_pages=max_pages))
    assert delivered == list(range(top + 1, feed.ids[0] + 1)), "every new id once, in order"


async def test_an_idle_poll_costs_one_request() -> None:
    feed = Feed(initial=120, rng=random.Random(0), max_insert=0)
    position = (await resume_actions(feed, None)).position
    feed.fetches = 0
    walked = await resume_actions(feed, position)
    assert (walked.items, walked.position, feed.fetches) == ([], position, 1)


async def test_a_cursor_without_a_count_finds_its_place_by_id() -> None:
    feed = Feed(initial=3000, rng=random.Random(0), max_insert=0)
    walked = await resume_actions(feed, Position(1000), max_pages=5)
    ids = [a.id for a in walked.items]
    assert ids[0] == 1001 and ids == list(range(1001, 1001 + len(ids)))
    assert walked.probes <= 14  # a binary search: log2(3000) one-item pages
    assert not walked.caught_up and walked.position == Position(ids[-1], ids[-1])
    assert walked.remaining == 3000 - ids[-1]


async def test_a_listing_that_dropped_everything_up_to_the_mark_is_a_gap() -> None:
    feed = Feed(initial=400, rng=random.Random(0), max_insert=0)
    position = Position(100, 100)
    del feed.ids[-150:]  # the provider keeps only the newest 250: ids 151..400
    walked = await resume_actions(feed, position, max_pages=50)
    assert walked.gap == (100, 151)
    assert [a.id for a in walked.items] == list(range(151, 401))
    assert walked.position == Position(400, 250)


async def test_a_page_with_unreadable_items_keeps_its_positions() -> None:
    feed = Feed(initial=200, rng=random.Random(0), max_insert=0)
    position = (await resume_actions(feed, None)).position
    feed.insert(120)

    class Garbling:
        name = "fake"

        async def list_actions(
            self, start: int = 0, length: int = 50, resource: str | None = None
        ) -> tuple[PageItems[Action], int]:
            page, total = await feed.list_actions(start, length, resource)
            kept = [a for a in page if a.id % 10 != 0]  # every tenth action unreadable
            ids = [a.id if a.id % 10 else None for a in page]
            return PageItems(kept, len(page), ids=ids, total=total), total

    delivered: list[int] = []
    for _ in range(5):
        walked = await resume_actions(Garbling(), position, max_pages=1)
        delivered += [a.id for a in walked.items]
        position = walked.position
    assert delivered == [i for i in range(201, 321) if i % 10]
    # 320 itself could not be read: the mark is the newest id read, 319 items are at or below it.
    assert position == Position(319, 319)
