"""The policies every batch goes through, built once for `cloudpilot run` and `cloudpilot plan`.

`Policies` holds the autoscale and budget policies with what they read besides the batch: each
provider's plan list and its servers' power states, read through the providers' capabilities
before a batch of the source that brings their CPU facts. `plan(source, now)` asks the
policies for their decisions and returns them without recording, sending or carrying out
anything; the daemon then records them in the batch's transaction and applies them after the
commit, while `cloudpilot plan` prints them. Because both build their policies here, they
cannot decide differently on the same cloud.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import structlog

from daemon.clock import Clock
from daemon.facts import Facts
from daemon.models import Decision, Event
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.policies.autoscale import AutoscalePolicy, Scaled
from daemon.policies.budget import Budgeted, BudgetPolicy
from daemon.providers.errors import ProviderError
from daemon.providers.plans import PlanCatalogue
from daemon.providers.registry import Providers
from daemon.providers.spec import ProviderSpec
from daemon.rules.compiled import RuleSet
from daemon.rules.vocabulary import Capability

Logger = structlog.typing.FilteringBoundLogger

# A provider's plan list (cores, prices) changes rarely.
PLANS_EVERY_S = 3600.0


@dataclass(slots=True)
class Planned:
    """What the policies decided for one batch, before anything is recorded or applied."""

    scaled: Scaled = field(default_factory=Scaled)
    budgeted: Budgeted = field(default_factory=Budgeted)

    @property
    def decisions(self) -> list[Decision]:
        """Return every decision, autoscale's first, in the order they are recorded."""
        return self.scaled.decisions + self.budgeted.decisions

    @property
    def events(self) -> list[Event]:
        """Return the events the decisions answer."""
        return self.scaled.events + self.budgeted.events


class Policies:
    """The autoscale and budget policies, and the provider reads they need before a batch."""

    def __init__(
        self,
        *,
        providers: Providers,
        facts: Facts,
        metrics: Metrics,
        problems: Problems,
        clock: Clock,
        log: Logger,
        gpu_prices: Mapping[str, float],
        budget_log: Logger | None = None,
    ) -> None:
        self._providers = providers
        self._clock = clock
        self._log = log
        self._plans_read: dict[str, float] = {}
        self._clients: dict[str, Any] = {}
        billed = next(
            (
                spec.name
                for spec in providers
                if spec.traits.offers(Capability.BILLING)
                and spec.traits.offers(Capability.LIST_SERVERS)
            ),
            "",
        )
        self.budgets = BudgetPolicy(
            facts=facts,
            metrics=metrics,
            log=budget_log or log,
            plans=lambda: self.autoscale.plans_of(billed),
            problems=problems,
            billed=billed,
            gpu_prices=gpu_prices,
            readings=providers.vocabulary().spend_readings(),
        )
        self.autoscale = AutoscalePolicy(
            facts=facts,
            metrics=metrics,
            problems=problems,
            providers=providers.traits,
            budget=self.budgets,
        )

    def connect(self, clients: Mapping[str, Any]) -> None:
        """Use the clients of the configured providers for the reads before a batch."""
        self._clients = dict(clients)

    def replace_rules(self, rules: RuleSet) -> None:
        """Use a new rule set's autoscale and budget rules."""
        self.autoscale.replace_rules(rules)
        self.budgets.replace_rules(rules)

    async def refresh(self, source: str) -> None:
        """Before a batch of `source`, read what its providers' policies need besides facts."""
        for spec in self._providers:
            cpu = spec.traits.cpu
            client = self._clients.get(spec.name)
            if cpu is None or cpu.source != source or client is None:
                continue
            await self._refresh_plans(spec, client)
            if spec.power_state is not None and self.budgets.active:
                await self.budgets.refresh_power(partial(spec.power_state, client))

    async def _refresh_plans(self, spec: ProviderSpec, client: Any) -> None:
        """Read a provider's plan list (sizes and prices), at most hourly, when a rule needs it."""
        if spec.plans is None:
            return
        if not (self.autoscale.wants_plans(spec.name) or self.budgets.active):
            return
        read = self._plans_read.get(spec.name, float("-inf"))
        if self._clock.monotonic() - read < PLANS_EVERY_S:
            return
        try:
            self.autoscale.plans[spec.name] = await spec.plans(client)
        except ProviderError as exc:  # keep the last list; recommendations wait for one
            self.autoscale.plans_error[spec.name] = str(exc)
            kept = len(self.autoscale.plans.get(spec.name, PlanCatalogue()))
            self._log.warning("plans_read_failed", provider=spec.name, error=str(exc), kept=kept)
            return
        self.autoscale.plans_error.pop(spec.name, None)
        self._plans_read[spec.name] = self._clock.monotonic()

    def plan(self, source: str, now: datetime, budgeted: Budgeted | None = None) -> Planned:
        """Return what the policies decide after a batch of `source`; record nothing.

        Budgets go first: the autoscale policy asks them before it scales up. `budgeted` holds
        what the budgets' approvals decided before the batch, if anything.
        """
        planned = Planned(budgeted=budgeted or Budgeted())
        planned.budgeted.extend(self.budgets.evaluate(now))
        planned.scaled = self.autoscale.evaluate(source, now)
        return planned
