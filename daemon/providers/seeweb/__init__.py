"""Seeweb ECS: servers, power, snapshots, plans, actions, audit logs, CPU metrics and bills.

Its API cannot resize a server, so autoscale recommends a plan (`resize_plan`).
"""

from __future__ import annotations

from collections.abc import Sequence

from daemon.client.plans import PlanCatalogue
from daemon.provider import FindClient, ProviderSpec, Wiring
from daemon.providers.seeweb.client import SeewebClient
from daemon.providers.seeweb.config import SeewebConfig
from daemon.providers.seeweb.events import EVENTS
from daemon.providers.seeweb.servers import PROVIDER, SeewebServers
from daemon.providers.seeweb.sources.actions import ActionsSource
from daemon.providers.seeweb.sources.billing import BillingSource
from daemon.providers.seeweb.sources.logs import LogsSource
from daemon.providers.seeweb.sources.metrics import MetricsSource
from daemon.rules.vocabulary import (
    Capability,
    CpuReadings,
    ProviderTraits,
    SpendReadings,
    Where,
)
from daemon.sources.base import Source
from daemon.sources.scheduler import poll_timeout

_SERVERS = "GET /ecs/v2/servers"
_PLANS = "GET /ecs/v2/plans"


def _client(section: SeewebConfig, wiring: Wiring) -> SeewebClient:
    options = wiring.client_options(section)
    if section.token_file is not None:
        return SeewebClient(
            wiring.session, section.url, token=wiring.secret(f"{PROVIDER}.token_file"), **options
        )
    return SeewebClient(
        wiring.session,
        section.url,
        username=section.username,
        password=wiring.secret(f"{PROVIDER}.password_file"),
        **options,
    )


def _sources(
    client: SeewebClient, section: SeewebConfig, wiring: Wiring, find: FindClient
) -> Sequence[Source]:
    return [
        ActionsSource(
            client,
            facts=wiring.facts,
            clock=wiring.clock,
            stuck_after=section.stuck_after,
            log=wiring.log,
        ),
        LogsSource(client, facts=wiring.facts, clock=wiring.clock, log=wiring.log),
        MetricsSource(
            client,
            facts=wiring.facts,
            clock=wiring.clock,
            metrics=wiring.metrics,
            servers=section.watch,
            concurrency=section.concurrency,
            # Half the poll's time: the answers in flight when it runs out still fit.
            budget_s=poll_timeout(wiring.interval(MetricsSource.name)) / 2
            if wiring.interval is not None
            else None,
            log=wiring.log,
        ),
        BillingSource(
            client,
            # The GPU bills are counted with the account's, when that provider is configured.
            k8sgpu=find(Capability.PODS),
            facts=wiring.facts,
            clock=wiring.clock,
            metrics=wiring.metrics,
        ),
    ]


async def _plans(client: SeewebClient) -> PlanCatalogue:
    return PlanCatalogue(await client.list_plans())


async def _power_state(client: SeewebClient, name: str) -> str:
    return (await client.server_status(name)).current_status or ""


SPEC = ProviderSpec(
    traits=ProviderTraits(
        name=PROVIDER,
        events=EVENTS,
        title="Seeweb ECS",
        capabilities=frozenset(
            {
                Capability.LIST_SERVERS,
                Capability.CPU_METRICS,
                Capability.RESIZE_PLAN,
                Capability.SNAPSHOT,
                Capability.POWER,
                Capability.BILLING,
                Capability.ACTION_LOG,
            }
        ),
        cpu=CpuReadings(
            source=MetricsSource.name,
            cores=Where(_SERVERS, "server[].plan_size.core"),
            cpu=Where("GET /ecs/v2/servers/{name}/metrics", "metrics.core"),
            plans=Where(_PLANS, "plans"),
            plan=Where(_SERVERS, "server[].plan"),
            price=Where(_PLANS, "plans[].montly_price"),
        ),
        spend=SpendReadings(
            {
                "bill": Where("GET /ecs/v2/billing/servers/{year}/{month}", "[].cost"),
                "server": Where(_PLANS, "plans[].hourly_price"),
            }
        ),
    ),
    order=10,
    section=SeewebConfig,
    intervals={
        ActionsSource.name: 30.0,
        LogsSource.name: 60.0,
        MetricsSource.name: 300.0,
        BillingSource.name: 3600.0,
    },
    client=_client,
    sources=_sources,
    servers=SeewebServers,
    plans=_plans,
    budget_sources={BillingSource.name: "the bill could not be read, so no budget has a spend"},
    power_state=_power_state,
)
