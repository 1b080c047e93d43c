"""A provider written only in the test folder: in-memory servers whose cores change in place.

It offers `list_servers`, `cpu_metrics` and `set_cores`, and nothing else (no snapshots, no
HTTP): `tests/integration/test_fake_provider.py` shows that such a package autoscales through
the shared policy, the guard and the runner with no change outside the test folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from daemon.actions.server import ActionError, Target
from daemon.config import Section
from daemon.facts import CpuSample, ServerFact
from daemon.models import Event
from daemon.provider import FindClient, ProviderSpec, Wiring
from daemon.rules.action import ActionContext
from daemon.rules.vocabulary import Capability, CpuReadings, ProviderTraits, Where
from daemon.sources.base import Source
from daemon.state.store import Cursor

NAME = "fakecloud"


@dataclass(slots=True)
class FakeServer:
    """A server: its cores, and the load on it in cores' worth of work."""

    cores: int
    load: float


@dataclass(slots=True)
class FakeCloud:
    """The cloud's state, and every change asked of it."""

    servers: dict[str, FakeServer] = field(default_factory=dict)
    edits: list[tuple[str, int]] = field(default_factory=list)

    def cpu_percent(self, name: str) -> float:
        """Return the server's CPU use: its load over its cores, at most 100%."""
        server = self.servers[name]
        return min(100.0, 100.0 * server.load / server.cores)


#: The clouds a config can name (`[fakecloud] cloud = "..."`), set up by the test.
CLOUDS: dict[str, FakeCloud] = {}


class FakeConfig(Section):
    """The `[fakecloud]` section: which in-memory cloud to use."""

    cloud: str


class FakeSource:
    """Put every server and its CPU use in facts on each poll."""

    name = NAME

    def __init__(self, cloud: FakeCloud, wiring: Wiring) -> None:
        self._cloud = cloud
        self._wiring = wiring

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Read the servers; the CPU samples are facts, not events."""
        now = self._wiring.clock.now()
        facts = self._wiring.facts
        found = []
        for name, server in self._cloud.servers.items():
            found.append(ServerFact(NAME, name, name, now, cores=server.cores))
            facts.add_cpu(NAME, name, CpuSample(now, self._cloud.cpu_percent(name), server.cores))
        facts.replace_servers(NAME, found)
        return [], {}


class FakeServers:
    """The `set_cores` backend: the cores change at once."""

    provider = NAME

    def __init__(self, cloud: FakeCloud) -> None:
        self._cloud = cloud

    async def target(self, ref: str) -> Target:
        """Return the server named `ref`."""
        if ref not in self._cloud.servers:
            raise ActionError(f"{NAME} server {ref!r} not found")
        return Target(NAME, ref, ref)

    async def describe(self, target: Target) -> str:
        """Return the server's cores."""
        return f"{NAME}, {self._cloud.servers[target.id].cores} cores"

    async def set_cores(self, target: Target, cores: int, ctx: ActionContext) -> str:
        """Change the cores."""
        self._cloud.servers[target.id].cores = cores
        self._cloud.edits.append((target.id, cores))
        return f"{target.name}: cores set to {cores}"

    async def check_cores(self, target: Target, cores: int, ctx: ActionContext) -> str:
        """Allow any size."""
        return ""

    async def cores_asked(self, target: Target, cores: int) -> bool:
        """Return whether the server has `cores` already."""
        return self._cloud.servers[target.id].cores == cores

    async def runs_with(self, target: Target, cores: int) -> bool:
        """Return whether the server runs with `cores`."""
        return self._cloud.servers[target.id].cores == cores


def _client(section: FakeConfig, wiring: Wiring) -> FakeCloud:
    return CLOUDS[section.cloud]


def _sources(
    cloud: FakeCloud, section: FakeConfig, wiring: Wiring, find: FindClient
) -> Sequence[Source]:
    return [FakeSource(cloud, wiring)]


SPEC = ProviderSpec(
    traits=ProviderTraits(
        name=NAME,
        title="Fake Cloud",
        capabilities=frozenset(
            {Capability.LIST_SERVERS, Capability.CPU_METRICS, Capability.SET_CORES}
        ),
        cpu=CpuReadings(
            source=NAME,
            cores=Where("(memory)", "servers[].cores"),
            cpu=Where("(memory)", "servers[].load"),
        ),
    ),
    order=0,
    section=FakeConfig,
    intervals={NAME: 60.0},
    client=_client,
    sources=_sources,
    servers=FakeServers,
)
