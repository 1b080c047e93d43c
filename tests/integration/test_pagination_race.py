"""The acceptance test for paging: new items land while we page, and none is lost or seen twice.

Each poll walks the newest-first listing down to the high-water mark of the poll before, while
the simulator inserts new actions after every page it serves (`insert_actions_while_paging`) and
the test adds more between polls. Over all polls, the ids returned must be exactly the ids the
world gained: no duplicate, no gap.
"""

from __future__ import annotations

import random
from collections import Counter

from conftest import SimFactory, SimHandle
from test_clients_vs_sim import fake_clock, k8sgpu, seeweb, served, sim_ok, start

from daemon.client.records import GpuEvent
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.providers.k8sgpu.listings import new_events
from daemon.providers.seeweb.listings import new_actions

POLLS = 30
PAGE = 10
# A walk reads at least PAGE - 7 older items per page while 7 are inserted after each page, so
# up to 67 new actions may take ~23 pages: more than the default bound of 20, which would
# (rightly) raise PaginationLimitError instead of testing the race.
MAX_PAGES = 60
OUTCOMES = ("completed", "failed", "error")


async def add_actions(h: SimHandle, rng: random.Random, count: int) -> None:
    """Record `count` actions as if started in the panel, on random live servers."""
    names = [s.name for s in h.sim.world.live_servers()]
    for _ in range(count):
        body = {
            "resource": rng.choice(names),
            "type": rng.choice(["power_on", "power_off", "rollback"]),
            "outcome": rng.choice(OUTCOMES),
            "duration_s": rng.choice([0, 30, 90]),
        }
        await sim_ok(h, "POST", "/_sim/actions", body)


async def test_action_polls_see_every_new_action_exactly_once(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock())
    world = h.sim.world
    rng = random.Random(20261110)
    initial = max(a.id for a in world.actions)
    high_water = initial
    returned: list[int] = []
    pages_with_inserts = 0

    for _ in range(POLLS):
        inserts = rng.randint(0, 7)
        await sim_ok(h, "POST", "/_sim/faults", {"insert_actions_while_paging": inserts})
        await add_actions(h, rng, rng.randint(0, 60))
        pages_before = len(await served(h, "GET", "/ecs/v2/actions"))
        items, high_water = await new_actions(
            client, high_water, page_size=PAGE, max_pages=MAX_PAGES
        )
        returned += [a.id for a in items]
        pages = len(await served(h, "GET", "/ecs/v2/actions")) - pages_before
        pages_with_inserts += pages if inserts else 0
        await h.advance(rng.choice([0, 30, 120]))

    await sim_ok(h, "POST", "/_sim/faults", {"insert_actions_while_paging": 0})
    items, high_water = await new_actions(client, high_water, page_size=PAGE, max_pages=MAX_PAGES)
    returned += [a.id for a in items]

    expected = {a.id for a in world.actions if a.id > initial}
    duplicates = [i for i, n in Counter(returned).items() if n > 1]
    assert duplicates == []
    assert sorted(expected - set(returned)) == []  # gaps
    assert set(returned) == expected
    assert high_water == max(expected)
    # The race really was run: many multi-page walks, with actions landing between their pages.
    assert len(expected) > 30 * POLLS
    assert pages_with_inserts > 2 * POLLS


class InsertingEvents:
    """A k8sgpu event lister that starts pods in the world after each page it fetched."""

    def __init__(self, client: K8sGpuClient, h: SimHandle, rng: random.Random) -> None:
        self._client = client
        self._h = h
        self._rng = rng
        self.inserts = 0

    @property
    def name(self) -> str:
        """Return the provider's name."""
        return self._client.name

    async def list_events(
        self, offset: int = 0, length: int = 50, search: str | None = None
    ) -> tuple[list[GpuEvent], int]:
        """Return a page of events, then let new pods start as if between two page fetches."""
        page = await self._client.list_events(offset=offset, length=length, search=search)
        start_pods(self._h, self._rng, self.inserts)
        return page


def start_pods(h: SimHandle, rng: random.Random, count: int) -> None:
    """Start `count` pods in tenant skg00018, each adding a `started` event."""
    for _ in range(count):
        h.sim.world.start_pod("skg00018", rng.choice(["seeweb-nvidia-1xl4", "seeweb-nvidia-1xa30"]))


async def test_event_polls_see_every_new_event_exactly_once(simulator: SimFactory) -> None:
    h = await start(simulator)
    world = h.sim.world
    rng = random.Random(1400)
    lister = InsertingEvents(k8sgpu(h, fake_clock()), h, rng)
    initial = max(e.id for e in world.gpu_events)
    high_water = initial
    returned: list[int] = []

    for _ in range(POLLS):
        lister.inserts = rng.randint(0, 7)
        start_pods(h, rng, rng.randint(0, 40))
        # Deleting a running pod adds its `terminated` event 10 s later, during the advance.
        running = [p.uuid for p in world.pods.values() if p.status == "running"]
        for uuid in rng.sample(running, k=min(len(running), rng.randint(0, 3))):
            world.delete_pod(uuid)
        await h.advance(rng.choice([11, 30]))
        items, high_water = await new_events(
            lister, high_water, page_size=PAGE, max_pages=MAX_PAGES
        )
        returned += [e.id for e in items]

    lister.inserts = 0
    items, high_water = await new_events(lister, high_water, page_size=PAGE, max_pages=MAX_PAGES)
    returned += [e.id for e in items]

    expected = {e.id for e in world.gpu_events if e.id > initial}
    assert [i for i, n in Counter(returned).items() if n > 1] == []
    assert sorted(expected - set(returned)) == []
    assert set(returned) == expected
    assert high_water == max(expected)
    assert {e.event_type for e in world.gpu_events if e.id > initial} == {"started", "terminated"}
    assert len(expected) > 20 * POLLS
