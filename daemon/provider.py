"""What a provider package declares (`SPEC`), and what building its parts may use.

See `daemon/registry.py` for how the declarations are found and used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from pydantic import BaseModel

from daemon.actions.server import ServerBackend
from daemon.client.base import ClientSettings
from daemon.client.plans import PlanCatalogue
from daemon.clock import Clock
from daemon.config import Config, ProviderLimits, ProviderSection
from daemon.facts import Facts
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.rules.action import Action
from daemon.rules.vocabulary import Capability, ProviderTraits
from daemon.secret import Secret
from daemon.sources.base import Source

Logger = structlog.typing.FilteringBoundLogger
#: Another configured provider's client offering a capability, or None (for sources that
#: read two providers, such as the bills).
FindClient = Callable[[Capability], Any]


@dataclass(frozen=True, slots=True)
class Wiring:
    """What building a provider's parts may use: the shared session, clock, logs and facts."""

    session: aiohttp.ClientSession
    clock: Clock
    log: Logger
    metrics: Metrics
    problems: Problems
    facts: Facts
    settings: ClientSettings
    secret: Callable[[str], Secret]
    interval: Callable[[str], float] | None = None
    """How often a source polls (`[poll] <source>`), for sources that pace their work by it."""
    """A secret read for a `*_file` key, e.g. `secret("<provider>.key_file")`."""

    def client_options(self, section: ProviderLimits) -> dict[str, Any]:
        """Return the keyword arguments every provider client takes, with its section's limits."""
        return {
            "settings": dataclasses.replace(
                self.settings,
                requests_per_second=section.rate,
                burst=section.burst,
                max_concurrency=section.concurrency,
            ),
            "clock": self.clock,
            "logger": self.log,
            "observer": self.metrics.observe_request,
            "on_problem": self.problems.unreadable,
            "on_wait": self.metrics.observe_wait,
        }


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider: what it offers, its config, and how its parts are built."""

    traits: ProviderTraits
    order: int
    """Where it comes among the providers: in lists, and as an action's default provider."""
    section: type[BaseModel]
    intervals: Mapping[str, float]
    """Its sources by name, with their default poll intervals (`[poll] <source>`)."""
    client: Callable[[Any, Wiring], Any]
    """Build the client from the provider's config section."""
    sources: Callable[[Any, Any, Wiring, FindClient], Sequence[Source]]
    """Build the sources from the client, the section, and the other providers' clients."""
    servers: Callable[[Any], ServerBackend] | None = None
    """Build the backend of the server actions it offers (power, set_cores, snapshot)."""
    actions: Callable[[Any | None], Sequence[Action]] = lambda _client: ()
    """Build its own actions, with its client or None when it is not configured."""
    plans: Callable[[Any], Awaitable[PlanCatalogue]] | None = None
    """Read the plan list (the `resize_plan` capability)."""
    budget_sources: Mapping[str, str] = field(default_factory=dict)
    """The sources whose facts budgets read, with what their failure means for the budgets."""
    power_state: Callable[[Any, str], Awaitable[str]] | None = None
    """Read a server's power state by name, as the provider spells it (the `power` capability)."""

    @property
    def name(self) -> str:
        """Return the provider's name: its config section and its servers' provider."""
        return self.traits.name

    def config_section(self) -> ProviderSection:
        """Return what the provider adds to the config file."""
        return ProviderSection(self.name, self.section, tuple(self.intervals.items()))


def client_settings(config: Config) -> ClientSettings:
    """Return how every provider client treats answers, from `[providers]`."""
    providers = config.model.providers
    return ClientSettings(
        max_body_bytes=providers.max_response, max_retry_after=providers.max_retry_after
    )
