"""The latest known state of the world, kept in memory and rebuilt by the sources' polls."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from daemon.client.records import GpuPodBill, ServerBill, SnapshotBill, TemplateBill

ServerKey = tuple[str, str]
"""A server's identity in facts: (provider, name), e.g. ("seeweb", "ec200001")."""

PodGroup = tuple[str, str]
"""A group of GPU pods: (cluster, runtime class)."""

DEFAULT_CPU_WINDOW = timedelta(hours=24)
DEFAULT_CPU_SAMPLES = 4096


@dataclass(frozen=True, slots=True)
class ServerFact:
    """What the last poll said about one server.

    `name` is what rules select on (Seeweb server name, Glesys hostname); `id` is what the
    provider's API takes (the name on Seeweb, the `serverid` on Glesys).
    """

    provider: str
    name: str
    id: str
    observed_at: datetime
    plan: str | None = None
    cores: int | None = None
    status: str | None = None
    group: str | None = None
    notes: str | None = None
    location: str | None = None
    sizes: tuple[int, ...] | None = None
    """The core counts the provider lets this server have, when it says (Glesys)."""


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU use at one time, as a percentage (0-100) of the server's cores at that time."""

    time: datetime
    percent: float
    cores: int | None = None


class CpuWindow:
    """A server's recent CPU samples, oldest first, bounded by age and by count."""

    def __init__(
        self, max_age: timedelta = DEFAULT_CPU_WINDOW, max_samples: int = DEFAULT_CPU_SAMPLES
    ) -> None:
        self.max_age = max_age
        self._samples: deque[CpuSample] = deque(maxlen=max_samples)

    def prune(self) -> None:
        """Drop the samples older than `max_age` before the newest one."""
        if not self._samples:
            return
        horizon = self._samples[-1].time - self.max_age
        while self._samples and self._samples[0].time < horizon:
            self._samples.popleft()

    def add(self, sample: CpuSample) -> bool:
        """Append a sample newer than the last one; return False for one already held."""
        # A poll that failed after reading samples is repeated: the same samples come again.
        if self._samples and sample.time <= self._samples[-1].time:
            return False
        self._samples.append(sample)
        self.prune()
        return True

    @property
    def latest(self) -> CpuSample | None:
        """Return the newest sample, if any."""
        return self._samples[-1] if self._samples else None

    def since(self, start: datetime) -> list[CpuSample]:
        """Return the samples taken at or after `start`, oldest first."""
        times = [s.time for s in self._samples]
        return list(self._samples)[bisect_left(times, start) :]

    def __iter__(self) -> Iterator[CpuSample]:
        return iter(list(self._samples))

    def __len__(self) -> int:
        return len(self._samples)


@dataclass(frozen=True, slots=True)
class PodFact:
    """One Serverless GPU pod as the last listing showed it."""

    uuid: str
    cluster: str
    name: str
    runtime_class: str
    status: str
    online: bool
    failed: bool
    observed_at: datetime
    created_at: datetime | None = None
    deactivated_at: datetime | None = None
    succeeded: bool = False
    in_deletion: bool = False


@dataclass(frozen=True, slots=True)
class MonthCost:
    """Spend in one scope for one calendar month, as billed so far.

    Bills lag real use: `billed_until` is the instant the bill is known to be complete up to,
    when the bill lets us tell (else None).
    """

    scope: str
    month: str
    euros: float
    observed_at: datetime
    billed_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class MonthBills:
    """The current month's bills as the last complete billing poll read them, row by row.

    `gpu` is None when Serverless GPU is not configured. `billed_until` is the instant the
    bills are known complete up to (see `MonthCost`).
    """

    month: str
    observed_at: datetime
    billed_until: datetime | None
    servers: tuple[ServerBill, ...] = ()
    templates: tuple[TemplateBill, ...] = ()
    snapshots: tuple[SnapshotBill, ...] = ()
    snapshots_total: float = 0.0
    gpu: tuple[GpuPodBill, ...] | None = None


@dataclass
class Facts:
    """What rules and gauges read between polls; every entry says when it was observed."""

    polled_at: dict[str, datetime] = field(default_factory=dict)
    """The time of each source's last successful poll, by source name."""

    servers: dict[ServerKey, ServerFact] = field(default_factory=dict)
    """Every server the last polls listed, by (provider, name)."""

    cpu: dict[ServerKey, CpuWindow] = field(default_factory=dict)
    """Recent CPU samples of the watched servers, by (provider, name)."""

    pods: dict[str, PodFact] = field(default_factory=dict)
    """Every GPU pod the last listing showed, by uuid."""

    month_cost: dict[str, MonthCost] = field(default_factory=dict)
    """Month-to-date spend by scope: `account`, `group:<g>`, `server:<name>`, `k8sgpu:<c>`."""

    bills: MonthBills | None = None
    """The current month's bills, row by row, from the last complete billing poll."""

    cpu_window: timedelta = DEFAULT_CPU_WINDOW
    """How far back each server's CPU window reaches."""

    def fresh(self, source: str, now: datetime, max_age: timedelta | float) -> bool:
        """Return whether `source` last polled successfully no more than `max_age` before now."""
        polled = self.polled_at.get(source)
        if polled is None:
            return False
        limit = max_age if isinstance(max_age, timedelta) else timedelta(seconds=max_age)
        return now - polled <= limit

    def servers_of(self, provider: str) -> list[ServerFact]:
        """Return the servers of one provider, by name."""
        return sorted(
            (s for (p, _), s in self.servers.items() if p == provider), key=lambda s: s.name
        )

    def replace_servers(self, provider: str, servers: Iterable[ServerFact]) -> set[ServerKey]:
        """Make `servers` the provider's full list; return the keys of servers that are gone."""
        current = {(s.provider, s.name): s for s in servers}
        gone = {key for key in self.servers if key[0] == provider and key not in current}
        for key in gone:
            del self.servers[key]
            self.cpu.pop(key, None)
        self.servers.update(current)
        return gone

    def keep_cpu_for(self, window: timedelta) -> None:
        """Keep each server's CPU samples this far back from its newest, and no further."""
        self.cpu_window = window
        for samples in self.cpu.values():
            samples.max_age = window
            samples.prune()

    def add_cpu(self, provider: str, server: str, sample: CpuSample) -> bool:
        """Add a CPU sample to a server's window; return False for one already held."""
        window = self.cpu.get((provider, server))
        if window is None:
            window = self.cpu[(provider, server)] = CpuWindow(self.cpu_window)
        return window.add(sample)

    def latest_cpu(self, provider: str, server: str) -> CpuSample | None:
        """Return a server's newest CPU sample, if any."""
        window = self.cpu.get((provider, server))
        return window.latest if window is not None else None

    def pods_online(self) -> dict[PodGroup, int]:
        """Return how many pods are online per (cluster, runtime class)."""
        counts: dict[PodGroup, int] = {}
        for pod in self.pods.values():
            if pod.online:
                group = (pod.cluster, pod.runtime_class)
                counts[group] = counts.get(group, 0) + 1
        return counts
