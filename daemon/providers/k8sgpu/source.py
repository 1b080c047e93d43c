"""Seeweb Serverless GPU: pod events, and the pods online or failed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from daemon.client.base import RequestLog
from daemon.client.records import GpuEvent, Pod
from daemon.clock import Clock
from daemon.facts import Facts, PodFact
from daemon.models import Event
from daemon.observability.metrics import Metrics
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.providers.k8sgpu.listings import resume_events
from daemon.sources.base import cursor_set, iso, walk
from daemon.state.store import Cursor

FAILED_STATUSES = frozenset({"failed", "error"})
TERMINATED = "terminated"


class K8sGpuSource:
    """Turn GPU pod events into `k8sgpu.event.*`, report pods that fail or end, keep pod facts."""

    name = "k8sgpu"

    def __init__(
        self,
        client: K8sGpuClient,
        facts: Facts,
        clock: Clock,
        *,
        metrics: Metrics,
        max_pages: int = 20,
        log: RequestLog | None = None,
    ) -> None:
        self._client = client
        self._facts = facts
        self._clock = clock
        self._metrics = metrics
        self._max_pages = max_pages
        self._log = log

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Return new pod events, and one `k8sgpu.pod.failed` / `.terminated` per pod newly so."""
        now = self._clock.now()
        found, position, gaps = await walk(
            lambda at: resume_events(self._client, at, max_pages=self._max_pages),
            cursor,
            source=self.name,
            now=now,
            log=self._log,
        )
        events = [self._gpu_event(e, now) for e in found]
        pods = [pod_fact(p, now) for p in await self._client.list_pods()]
        reported = cursor_set(cursor, "failed")
        ended = cursor_set(cursor, "terminated")
        # The listing keeps terminated pods for 15 days: on the first poll (no cursor, or a
        # cursor from before this list was kept) those already terminated are history. They are
        # recorded as reported, without an event.
        history = cursor is None or "terminated" not in cursor
        failed: list[str] = []
        terminated: list[str] = []
        for pod in pods:
            if pod.failed:
                failed.append(pod.uuid)
                if pod.uuid not in reported:
                    events.append(self._failed(pod, now))
            if pod.status == TERMINATED:
                terminated.append(pod.uuid)
                if not history and pod.uuid not in ended:
                    events.append(self._terminated(pod, now))
        self._update_pods(pods)
        # Pods gone from the listing drop out of the cursor, which keeps it bounded.
        return gaps + events, {
            **position,
            "failed": sorted(failed),
            "terminated": sorted(terminated),
        }

    def _update_pods(self, pods: list[PodFact]) -> None:
        before = self._facts.pods_online()
        self._facts.pods = {p.uuid: p for p in pods}
        after = self._facts.pods_online()
        for cluster, runtime_class in before.keys() - after.keys():
            self._metrics.gpu_pods.labels(cluster, runtime_class).set(0)
        for (cluster, runtime_class), count in after.items():
            self._metrics.gpu_pods.labels(cluster, runtime_class).set(count)

    def _gpu_event(self, event: GpuEvent, now: datetime) -> Event:
        kind = (event.event_type or "unknown").strip().lower()
        data: dict[str, Any] = {
            name: iso(value) if isinstance(value, datetime) else value
            for name, value in event.model_dump().items()
        }
        return Event(
            type=f"k8sgpu.event.{kind}",
            key=f"k8sgpu.event:{event.id}",
            time=event.date or now,
            resource=event.uuid or event.pod or "",
            data=data,
            source=self.name,
        )

    def _failed(self, pod: PodFact, now: datetime) -> Event:
        return self._pod_event("failed", pod, now, {})

    def _terminated(self, pod: PodFact, now: datetime) -> Event:
        extra = {"in_deletion": pod.in_deletion, "failed": pod.failed, "succeeded": pod.succeeded}
        return self._pod_event("terminated", pod, now, extra)

    def _pod_event(self, end: str, pod: PodFact, now: datetime, extra: dict[str, Any]) -> Event:
        """Return the k8sgpu.pod.<end> event of a pod: what it is, and the end's own fields."""
        return Event(
            type=f"k8sgpu.pod.{end}",
            key=f"k8sgpu.pod:{pod.uuid}:{end}",
            time=pod.deactivated_at or now,
            resource=pod.uuid,
            data={
                "uuid": pod.uuid,
                "cluster": pod.cluster,
                "name": pod.name,
                "status": pod.status,
                "runtime_class": pod.runtime_class,
                **extra,
            },
            source=self.name,
        )


def pod_fact(pod: Pod, now: datetime) -> PodFact:
    """Return what a pod listing says about one pod."""
    status = (pod.status or "").strip().lower()
    online = pod.online if pod.online is not None else status == "running"
    return PodFact(
        uuid=pod.uuid,
        cluster=pod.cluster or "",
        name=pod.remote_reference_name or pod.local_reference_name or pod.uuid,
        runtime_class=pod.runtime_class or "",
        status=status,
        online=online,
        failed=bool(pod.failed) or status in FAILED_STATUSES,
        observed_at=now,
        created_at=pod.creation_date,
        deactivated_at=pod.deactivated_from,
        succeeded=bool(pod.succeeded),
        in_deletion=bool(pod.in_deletion),
    )
