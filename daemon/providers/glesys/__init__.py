"""Glesys: servers and their CPU use, and cores changed in place (`set_cores`)."""

from __future__ import annotations

from collections.abc import Sequence

from daemon.provider import FindClient, ProviderSpec, Wiring
from daemon.providers.glesys.client import GlesysClient
from daemon.providers.glesys.config import GlesysConfig
from daemon.providers.glesys.events import EVENTS
from daemon.providers.glesys.servers import PROVIDER, GlesysServers
from daemon.providers.glesys.source import GlesysSource
from daemon.rules.vocabulary import Capability, CpuReadings, ProviderTraits, Where
from daemon.sources.base import Source

_STATUS = "POST /server/status"


def _client(section: GlesysConfig, wiring: Wiring) -> GlesysClient:
    return GlesysClient(
        wiring.session,
        section.url,
        project=section.project,
        key=wiring.secret(f"{PROVIDER}.key_file"),
        **wiring.client_options(section),
    )


def _sources(
    client: GlesysClient, section: GlesysConfig, wiring: Wiring, find: FindClient
) -> Sequence[Source]:
    return [
        GlesysSource(
            client, facts=wiring.facts, clock=wiring.clock, metrics=wiring.metrics, log=wiring.log
        )
    ]


SPEC = ProviderSpec(
    traits=ProviderTraits(
        name=PROVIDER,
        events=EVENTS,
        title="Glesys",
        capabilities=frozenset(
            {Capability.LIST_SERVERS, Capability.CPU_METRICS, Capability.SET_CORES}
        ),
        cpu=CpuReadings(
            source=GlesysSource.name,
            cores=Where(_STATUS, "server.cpu.max"),
            cpu=Where(_STATUS, "server.cpu"),
        ),
    ),
    order=30,
    section=GlesysConfig,
    intervals={GlesysSource.name: 60.0},
    client=_client,
    sources=_sources,
    servers=GlesysServers,
)
