"""What rule files may name: the actions with their parameters, and the providers' capabilities.

Provider packages (`daemon/providers/<name>/`) declare their traits; the registry gathers them
into a `Vocabulary` that the loader, `cloudpilot check` and `cloudpilot schema` read. The rule
model never names a provider: it asks what one can do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from daemon.rules.action import ActionParams
from daemon.rules.events import EventCatalogue, EventType
from daemon.rules.kinds import RULE_KINDS, RuleKind


class Capability(StrEnum):
    """Something a provider's API lets Cloudpilot do or read."""

    LIST_SERVERS = "list_servers"
    CPU_METRICS = "cpu_metrics"
    SET_CORES = "set_cores"
    """Change a server's cores in place."""
    RESIZE_PLAN = "resize_plan"
    """Size a server by moving it to another priced plan, which Cloudpilot can only recommend."""
    SNAPSHOT = "snapshot"
    POWER = "power"
    BILLING = "billing"
    ACTION_LOG = "action_log"
    PODS = "pods"


@dataclass(frozen=True, slots=True)
class Where:
    """Where a provider gives a value: the request and field to name when it is missing."""

    endpoint: str
    field: str


@dataclass(frozen=True, slots=True)
class CpuReadings:
    """Where a provider's CPU facts come from: the source that brings them, and the fields."""

    source: str
    """The source whose batches bring the CPU samples; autoscale decides after each one."""
    cores: Where
    cpu: Where
    plans: Where | None = None
    """The plan list, for providers that size by plan (`resize_plan`)."""
    plan: Where | None = None
    """A server's plan, compared with the plan list."""
    price: Where | None = None
    """A plan's monthly price."""


@dataclass(frozen=True, slots=True)
class SpendReadings:
    """Where a provider's spend data comes from, by what it prices: `bill`, `server`, `pod`."""

    fields: Mapping[str, Where]


@dataclass(frozen=True, slots=True)
class ProviderTraits:
    """What one provider offers, as plain data."""

    name: str
    title: str
    capabilities: frozenset[Capability]
    cpu: CpuReadings | None = None
    spend: SpendReadings | None = None
    events: tuple[EventType, ...] = ()
    """The event types its sources emit: what `on:` can name."""

    def offers(self, capability: Capability) -> bool:
        """Return whether the provider offers `capability`."""
        return capability in self.capabilities

    @property
    def recommends(self) -> bool:
        """Return whether autoscale can only recommend a size (a plan), not set the cores."""
        return self.offers(Capability.RESIZE_PLAN) and not self.offers(Capability.SET_CORES)

    @property
    def autoscalable(self) -> bool:
        """Return whether an autoscale rule can watch this provider's servers."""
        return (
            self.cpu is not None
            and self.offers(Capability.CPU_METRICS)
            and (self.offers(Capability.SET_CORES) or self.offers(Capability.RESIZE_PLAN))
        )


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The actions (by YAML name, with their parameter models) and providers a rule may name."""

    actions: Mapping[str, type[ActionParams]]
    providers: Mapping[str, ProviderTraits] = field(default_factory=dict)
    kinds: tuple[RuleKind, ...] = RULE_KINDS
    """The rule kinds besides event rules (`daemon/rules/kinds.py`)."""
    events: EventCatalogue = field(init=False)
    """The event types of every provider's sources, Cloudpilot's and the policies'."""

    def __post_init__(self) -> None:
        sources = [event for traits in self.providers.values() for event in traits.events]
        object.__setattr__(self, "events", EventCatalogue(sources))

    def autoscalable(self) -> tuple[str, ...]:
        """Return the providers an autoscale rule can name."""
        return tuple(name for name, p in self.providers.items() if p.autoscalable)

    def spend_readings(self) -> dict[str, Where]:
        """Return where spend data comes from, by what it prices, over every provider."""
        found: dict[str, Where] = {}
        for traits in self.providers.values():
            if traits.spend is not None:
                for kind, where in traits.spend.fields.items():
                    found.setdefault(kind, where)
        return found

    def takes_snapshots(self, provider: str) -> bool:
        """Return whether the provider can snapshot a server (unknown providers: assume so)."""
        traits = self.providers.get(provider)
        return traits is None or traits.offers(Capability.SNAPSHOT)
