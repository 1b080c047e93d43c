"""`k8sgpu.pod.terminated`: once per pod seen terminated after the first poll, with why it ended."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from prometheus_client import CollectorRegistry

from daemon.client.records import GpuEvent, Pod
from daemon.clock import FakeClock
from daemon.facts import Facts
from daemon.models import Event
from daemon.observability.metrics import Metrics
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.providers.k8sgpu.source import K8sGpuSource, pod_fact
from daemon.state.store import Cursor

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


class FakeGpuClient:
    """Answers the two calls the source makes: no pod events, and a pod listing set by the test."""

    name = "k8sgpu"

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}

    async def list_events(
        self, offset: int = 0, length: int = 50, search: str | None = None
    ) -> tuple[list[GpuEvent], int]:
        """Return no events."""
        return [], 0

    async def list_pods(self, cluster: str | None = None) -> list[Pod]:
        """Return the pods as the API would."""
        return [Pod.model_validate(record) for record in self.pods.values()]

    def run(self, uuid: str) -> None:
        """List a running pod."""
        self.pods[uuid] = {
            "uuid": uuid,
            "remote_reference_name": f"pod-{uuid}",
            "status": "running",
            "online": True,
            "succeeded": False,
            "failed": False,
            "in_deletion": False,
            "runtime_class": "seeweb-nvidia-1xl4",
            "cluster": "skg00018",
            "creation_date": "2026-11-10T10:00:00+00:00",
            "deactivated_from": None,
        }

    def end(self, uuid: str, at: datetime | None, **flags: bool) -> None:
        """Show a listed pod as terminated at `at`, with the given flags."""
        self.pods[uuid].update(
            status="terminated",
            online=False,
            deactivated_from=at.isoformat() if at is not None else None,
            **flags,
        )


class Rig:
    """A source on a fake client and clock, polled with its cursor kept as JSON text."""

    def __init__(self) -> None:
        self.client = FakeGpuClient()
        self.clock = FakeClock(NOW)
        self.facts = Facts()
        self.source = K8sGpuSource(
            cast(K8sGpuClient, self.client),
            self.facts,
            self.clock,
            metrics=Metrics(CollectorRegistry()),
        )
        self.stored: str | None = None

    async def poll(self) -> list[Event]:
        cursor: Cursor | None = json.loads(self.stored) if self.stored is not None else None
        events, after = await self.source.poll(cursor)
        self.stored = json.dumps(after)
        return events

    def cursor(self) -> Any:
        assert self.stored is not None
        return json.loads(self.stored)


def terminated(events: list[Event]) -> list[Event]:
    return [event for event in events if event.type == "k8sgpu.pod.terminated"]


async def test_a_pod_that_ends_is_reported_once_with_why() -> None:
    rig = Rig()
    rig.client.run("p1")
    assert await rig.poll() == []
    ended_at = NOW + timedelta(minutes=5)
    rig.client.end("p1", ended_at, succeeded=True)
    rig.clock.advance(600)

    (event,) = await rig.poll()
    assert event == Event(
        type="k8sgpu.pod.terminated",
        key="k8sgpu.pod:p1:terminated",
        time=ended_at,
        resource="p1",
        data={
            "uuid": "p1",
            "cluster": "skg00018",
            "name": "pod-p1",
            "status": "terminated",
            "runtime_class": "seeweb-nvidia-1xl4",
            "in_deletion": False,
            "failed": False,
            "succeeded": True,
        },
        source="k8sgpu",
    )
    assert rig.cursor()["terminated"] == ["p1"]
    assert await rig.poll() == []
    assert await rig.poll() == []


async def test_a_deleted_pod_says_so() -> None:
    rig = Rig()
    rig.client.run("p1")
    await rig.poll()
    rig.client.pods["p1"]["in_deletion"] = True
    assert await rig.poll() == [], "in deletion, still running: not yet"
    rig.client.end("p1", NOW)
    (event,) = await rig.poll()
    assert (event.data["in_deletion"], event.data["succeeded"], event.data["failed"]) == (
        True,
        False,
        False,
    )


async def test_a_failed_pod_is_reported_failed_and_terminated() -> None:
    rig = Rig()
    rig.client.run("p1")
    await rig.poll()
    rig.client.end("p1", NOW, failed=True)
    events = await rig.poll()
    assert sorted(event.type for event in events) == ["k8sgpu.pod.failed", "k8sgpu.pod.terminated"]
    assert terminated(events)[0].data["failed"] is True
    assert rig.cursor()["failed"] == rig.cursor()["terminated"] == ["p1"]


async def test_pods_terminated_before_the_first_poll_are_history() -> None:
    rig = Rig()
    for uuid in ("old", "older", "live"):
        rig.client.run(uuid)
    rig.client.end("old", NOW - timedelta(days=3), succeeded=True)
    rig.client.end("older", NOW - timedelta(days=14), in_deletion=True)
    assert terminated(await rig.poll()) == []
    assert rig.cursor()["terminated"] == ["old", "older"]
    rig.client.end("live", NOW)
    assert [event.resource for event in terminated(await rig.poll())] == ["live"]


async def test_a_cursor_from_before_the_list_was_kept_counts_as_a_first_poll() -> None:
    rig = Rig()
    rig.client.run("old")
    rig.client.end("old", NOW - timedelta(days=3))
    rig.stored = json.dumps({"high_water": 0, "failed": []})
    assert await rig.poll() == []
    assert rig.cursor()["terminated"] == ["old"]


async def test_pods_gone_from_the_listing_leave_the_cursor() -> None:
    rig = Rig()
    rig.client.run("p1")
    await rig.poll()
    rig.client.end("p1", None)
    (event,) = await rig.poll()
    assert event.time == NOW, "no deactivation time: the poll's"
    del rig.client.pods["p1"]
    assert await rig.poll() == []
    assert rig.cursor()["terminated"] == []


def test_pod_facts_carry_in_deletion_and_succeeded() -> None:
    record = {"uuid": "p", "status": "Terminated", "in_deletion": True, "succeeded": None}
    fact = pod_fact(Pod.model_validate(record), NOW)
    assert (fact.status, fact.in_deletion, fact.succeeded) == ("terminated", True, False)
