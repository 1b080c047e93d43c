"""The k8sgpu source against the simulator: `k8sgpu.pod.terminated` once per pod that ends."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

from conftest import START, SimFactory, SimHandle
from prometheus_client import CollectorRegistry
from test_clients_vs_sim import API_KEY, PASSWORD, fake_clock, k8sgpu

from daemon.facts import Facts
from daemon.models import Event
from daemon.observability.metrics import Metrics
from daemon.providers.k8sgpu.source import K8sGpuSource
from daemon.simulator.http import Credentials
from daemon.state.store import Cursor

SCENARIO = """
name: pods-ending
seed: 5
clusters:
  - {name: skg00018, label: lab}
pods:
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xa6000, name: ended-early, age: 3h}
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xa6000, name: deleted-early, age: 3h}
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xa6000, name: finisher, age: 2h}
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xl4, name: doomed, age: 1h}
timeline:
  - {at: 0s, pod_end: {pod: ended-early, failed: false}}
  - {at: 10m, pod_end: {pod: finisher, failed: false}}
"""


class Poller:
    """A k8sgpu source on the simulator, with its clock, its cursor as JSON text, and its keys."""

    def __init__(self, h: SimHandle) -> None:
        self.h = h
        self.clock = fake_clock()
        self.client = k8sgpu(h, self.clock)
        self.source = K8sGpuSource(
            self.client, Facts(), self.clock, metrics=Metrics(CollectorRegistry())
        )
        self.stored: str | None = None
        self.keys: Counter[str] = Counter()
        self.uuids = {pod.remote_name: pod.uuid for pod in h.sim.world.pods.values()}

    async def poll(self) -> list[Event]:
        """Poll from the stored cursor; return the `k8sgpu.pod.terminated` events."""
        cursor: Cursor | None = json.loads(self.stored) if self.stored is not None else None
        events, after = await self.source.poll(cursor)
        self.stored = json.dumps(after)
        self.keys.update(event.key for event in events)
        return [event for event in events if event.type == "k8sgpu.pod.terminated"]

    async def advance(self, seconds: float) -> None:
        """Move simulated time and the source's clock together."""
        await self.h.advance(seconds)
        self.clock.advance(seconds)

    def cursor(self) -> Any:
        """Return the stored cursor."""
        assert self.stored is not None
        return json.loads(self.stored)


async def test_each_pod_that_ends_after_the_first_poll_is_reported_once(
    simulator: SimFactory,
) -> None:
    h = await simulator(SCENARIO, credentials=Credentials(api_token=API_KEY, password=PASSWORD))
    rig = Poller(h)
    uuid = rig.uuids

    # Before the first poll one pod ends on its own and one is deleted: history, not news.
    await rig.client.delete_pod(uuid["deleted-early"])
    await rig.advance(11)
    assert await rig.poll() == []
    assert rig.cursor()["terminated"] == sorted([uuid["ended-early"], uuid["deleted-early"]])

    # A pod that ends on its own.
    await rig.advance(10 * 60)
    (finished,) = await rig.poll()
    assert finished.key == f"k8sgpu.pod:{uuid['finisher']}:terminated"
    assert finished.resource == uuid["finisher"]
    assert finished.time == START + timedelta(minutes=10)
    assert finished.data == {
        "uuid": uuid["finisher"],
        "cluster": "skg00018",
        "name": "finisher",
        "status": "terminated",
        "runtime_class": "seeweb-nvidia-1xa6000",
        "in_deletion": False,
        "failed": False,
        "succeeded": True,
    }

    # A pod that is deleted: nothing while the deletion is under way, then one event.
    await rig.client.delete_pod(uuid["doomed"])
    asked_at = START + timedelta(seconds=11 + 10 * 60)
    assert await rig.poll() == []
    await rig.advance(11)
    (deleted,) = await rig.poll()
    assert deleted.key == f"k8sgpu.pod:{uuid['doomed']}:terminated"
    assert deleted.time == asked_at + timedelta(seconds=10)
    assert (deleted.data["in_deletion"], deleted.data["succeeded"], deleted.data["failed"]) == (
        True,
        False,
        False,
    )

    assert await rig.poll() == []
    await rig.advance(3600)
    assert await rig.poll() == []
    assert [key for key, count in rig.keys.items() if count > 1] == []
    assert rig.cursor()["terminated"] == sorted(uuid.values())
