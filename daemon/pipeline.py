"""The pipeline every batch goes through, built once for `cloudpilot run` and `cloudpilot plan`.

A batch is one poll of one source: its new events, at one instant. Each stage (the rule engine,
the budgets, autoscale, and any rule kind added later) has one contract:

- `prepare(source, now)`: the reads it needs besides facts, before the transaction (a
  provider's plan list, its servers' power states, approvals given since the last batch);
- `plan(batch) -> StageResult`: what it decides; nothing is recorded, sent or carried out;
- `write(tx, result)`: what it keeps, inside the batch's transaction (engine memory, budget
  records);
- `apply(result, ends)`: after the commit: its memory, the alerts its decisions end.

`cloudpilot run` prepares, plans, writes and applies; `cloudpilot plan` builds the same stages
with `policy_stages` and only prepares and plans, so the two cannot decide differently on the
same cloud. Adding a rule kind is adding its stage to `policy_stages`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import structlog

from daemon.client.errors import ProviderError
from daemon.client.plans import PlanCatalogue
from daemon.clock import Clock
from daemon.engine import Engine
from daemon.engine.engine import Evaluation
from daemon.facts import Facts
from daemon.models import Decision, Event
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.policies.autoscale import AutoscalePolicy, Scaled
from daemon.policies.budget import Budgeted, BudgetPolicy
from daemon.provider import ProviderSpec
from daemon.registry import Providers
from daemon.rules.compiled import RuleSet
from daemon.rules.vocabulary import Capability
from daemon.state.store import Batch as Transaction
from daemon.state.store import Store

Logger = structlog.typing.FilteringBoundLogger

# A provider's plan list (cores, prices) changes rarely.
PLANS_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class Batch:
    """One poll of one source: the events no batch brought before, and the instant."""

    source: str
    events: Sequence[Event]
    now: datetime


@dataclass(slots=True)
class StageResult:
    """What one stage decided for a batch, before anything is recorded or applied."""

    stage: str
    decisions: list[Decision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    """The events the decisions answer, besides the batch's (the alert book settles both)."""
    detail: Any = None
    """The stage's own result, for its `write` and `apply`."""


class AlertEnds(Protocol):
    """Where stages end alerts once a batch has committed (the alert book)."""

    async def resolve_alert(self, key: str) -> bool:
        """End a firing alert by its key; return whether one was firing."""
        ...

    async def resolve_prefixed(self, prefixes: Sequence[str]) -> None:
        """End every firing alert whose key starts with one of `prefixes`."""
        ...


class Stage(Protocol):
    """One step of the pipeline; see the module's docstring for the contract."""

    name: str

    async def prepare(self, source: str, now: datetime) -> None:
        """Read what `plan` needs besides facts, before the batch's transaction."""
        ...

    def plan(self, batch: Batch) -> StageResult:
        """Return what the stage decides for the batch; record nothing."""
        ...

    async def write(self, tx: Transaction, result: StageResult) -> None:
        """Store what the stage keeps, inside the batch's transaction."""
        ...

    async def apply(self, result: StageResult, ends: AlertEnds) -> None:
        """Act on the result once the transaction has committed."""
        ...


class Pipeline:
    """The stages, in order: each prepares, then each plans, writes and applies."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)

    async def prepare(self, source: str, now: datetime) -> None:
        """Let every stage read what it needs before a batch of `source`."""
        for stage in self.stages:
            await stage.prepare(source, now)

    def plan(self, batch: Batch) -> list[StageResult]:
        """Return every stage's result for the batch, in stage order."""
        return [stage.plan(batch) for stage in self.stages]

    async def write(self, tx: Transaction, results: Sequence[StageResult]) -> None:
        """Store what each stage keeps, in the batch's transaction."""
        for stage, result in zip(self.stages, results, strict=True):
            await stage.write(tx, result)

    async def apply(self, results: Sequence[StageResult], ends: AlertEnds) -> None:
        """Let each stage act on its result after the commit."""
        for stage, result in zip(self.stages, results, strict=True):
            await stage.apply(result, ends)


def decisions_of(results: Sequence[StageResult]) -> list[Decision]:
    """Return every stage's decisions, in stage order."""
    return [decision for result in results for decision in result.decisions]


def events_of(results: Sequence[StageResult]) -> list[Event]:
    """Return the events every stage's decisions answer, in stage order."""
    return [event for result in results for event in result.events]


# --- the stages -------------------------------------------------------------------------------


class EngineStage:
    """Event rules: match the batch's events, keep the timing memory they want."""

    name = "engine"

    def __init__(self, engine: Engine, facts: Facts) -> None:
        self._engine = engine
        self._facts = facts

    async def prepare(self, source: str, now: datetime) -> None:
        """Read nothing: event rules see the events and facts only."""

    def plan(self, batch: Batch) -> StageResult:
        """Return the decisions the batch's events lead to."""
        evaluation = self._engine.plan(list(batch.events), self._facts, batch.now)
        return StageResult(self.name, evaluation.decisions, detail=evaluation)

    async def write(self, tx: Transaction, result: StageResult) -> None:
        """Keep and forget the timing memory the evaluation wants."""
        evaluation: Evaluation = result.detail
        if evaluation.put:
            await tx.put_memory(evaluation.put)
        if evaluation.drop:
            await tx.drop_memory(evaluation.drop)

    async def apply(self, result: StageResult, ends: AlertEnds) -> None:
        """Take the committed memory into the engine."""
        self._engine.apply(result.detail)


class BudgetStage:
    """Budget rules: spend, warnings, enforcement steps and their approvals."""

    name = "budget"

    def __init__(self, policies: Policies, store: Store | None) -> None:
        self._policies = policies
        self._store = store
        self._approved = Budgeted()

    async def prepare(self, source: str, now: datetime) -> None:
        """Read the power states budgets count, then the approvals given since last time."""
        await self._policies.refresh_power(source)
        if self._store is not None:
            self._approved.extend(await self._policies.budgets.approvals(self._store, now))

    def plan(self, batch: Batch) -> StageResult:
        """Return the approvals' decisions and what the budgets decide now."""
        budgeted, self._approved = self._approved, Budgeted()
        budgeted.extend(self._policies.budgets.evaluate(batch.now))
        return StageResult(self.name, budgeted.decisions, budgeted.events, detail=budgeted)

    async def write(self, tx: Transaction, result: StageResult) -> None:
        """Keep the approval records."""
        budgeted: Budgeted = result.detail
        for record in budgeted.records:
            await tx.put_budget(record)

    async def apply(self, result: StageResult, ends: AlertEnds) -> None:
        """End the approval alerts decided and, at a new month, last month's warnings."""
        budgeted: Budgeted = result.detail
        for key in budgeted.resolve:
            await ends.resolve_alert(key)
        if budgeted.resolve_prefixes:
            await ends.resolve_prefixed(budgeted.resolve_prefixes)


class AutoscaleStage:
    """Autoscale rules: resizes and recommendations after a batch of CPU facts."""

    name = "autoscale"

    def __init__(self, policies: Policies) -> None:
        self._policies = policies

    async def prepare(self, source: str, now: datetime) -> None:
        """Read the plan lists of the providers whose CPU facts this source brings."""
        await self._policies.refresh_plans(source)

    def plan(self, batch: Batch) -> StageResult:
        """Return the resizes and recommendations on the source's servers."""
        scaled = self._policies.autoscale.evaluate(batch.source, batch.now)
        return StageResult(self.name, scaled.decisions, scaled.events, detail=scaled)

    async def write(self, tx: Transaction, result: StageResult) -> None:
        """Keep nothing: past resizes are the ledger's decisions."""

    async def apply(self, result: StageResult, ends: AlertEnds) -> None:
        """End the recommendations whose load is back within the thresholds."""
        scaled: Scaled = result.detail
        for key in scaled.resolve:
            await ends.resolve_alert(key)


# --- the policies and what they read ----------------------------------------------------------


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

    def stages(self, store: Store | None) -> list[Stage]:
        """Return the stages of the policy rule kinds, in the order they plan.

        Budgets go first: the autoscale policy asks them before it scales up. `store` gives
        the budgets the approvals given (None: `cloudpilot plan`, which reads none).
        """
        return [BudgetStage(self, store), AutoscaleStage(self)]

    def _reading(self, source: str) -> list[tuple[ProviderSpec, Any]]:
        """Return the configured providers whose CPU facts `source` brings, with their clients."""
        found = []
        for spec in self._providers:
            cpu = spec.traits.cpu
            client = self._clients.get(spec.name)
            if cpu is not None and cpu.source == source and client is not None:
                found.append((spec, client))
        return found

    async def refresh_plans(self, source: str) -> None:
        """Before a batch of `source`, read its providers' plan lists when a rule needs them."""
        for spec, client in self._reading(source):
            await self._refresh_plans(spec, client)

    async def refresh_power(self, source: str) -> None:
        """Before a batch of `source`, read the power states of the servers budgets count."""
        if not self.budgets.active:
            return
        for spec, client in self._reading(source):
            if spec.power_state is not None:
                await self.budgets.refresh_power(partial(spec.power_state, client))

    async def _refresh_plans(self, spec: ProviderSpec, client: Any) -> None:
        """Read a provider's plan list (sizes and prices), at most hourly."""
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
