"""Seeweb Serverless GPU (k8sgpu): pod events and pods, the `delete_pod` action, GPU bills."""

from __future__ import annotations

from collections.abc import Sequence

from daemon.provider import FindClient, ProviderSpec, Wiring
from daemon.providers.k8sgpu.actions import DeletePodAction
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.providers.k8sgpu.config import K8sGpuConfig
from daemon.providers.k8sgpu.events import EVENTS
from daemon.providers.k8sgpu.source import K8sGpuSource
from daemon.rules.action import Action
from daemon.rules.vocabulary import Capability, ProviderTraits, SpendReadings, Where
from daemon.sources.base import Source

PROVIDER = K8sGpuSource.name


def _client(section: K8sGpuConfig, wiring: Wiring) -> K8sGpuClient:
    return K8sGpuClient(
        wiring.session,
        section.url,
        username=section.username,
        password=wiring.secret(f"{PROVIDER}.password_file"),
        **wiring.client_options(section),
    )


def _sources(
    client: K8sGpuClient, section: K8sGpuConfig, wiring: Wiring, find: FindClient
) -> Sequence[Source]:
    return [
        K8sGpuSource(
            client, facts=wiring.facts, clock=wiring.clock, metrics=wiring.metrics, log=wiring.log
        )
    ]


def _actions(client: K8sGpuClient | None) -> Sequence[Action]:
    return [DeletePodAction(client)]


SPEC = ProviderSpec(
    traits=ProviderTraits(
        name=PROVIDER,
        events=EVENTS,
        title="Seeweb Serverless GPU",
        capabilities=frozenset({Capability.PODS, Capability.BILLING}),
        spend=SpendReadings(
            {
                "pod": Where(
                    "[budget] gpu_prices, GET /k8sgpu/v1/billing/{year}/{month}",
                    "pods[].online_hour",
                )
            }
        ),
    ),
    order=20,
    section=K8sGpuConfig,
    intervals={K8sGpuSource.name: 30.0},
    client=_client,
    sources=_sources,
    actions=_actions,
    budget_sources={
        K8sGpuSource.name: "the GPU pods could not be read, so budgets count none of them"
    },
)
