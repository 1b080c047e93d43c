"""`cloudpilot plan`: read the cloud once and say what autoscale and budgets would do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO, cast

import aiohttp
import structlog
from prometheus_client import CollectorRegistry
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from daemon.client.errors import ProviderError
from daemon.clock import Clock
from daemon.config import Config
from daemon.exitcodes import EXIT_FAILURE, EXIT_OK
from daemon.facts import Facts
from daemon.models import Mode
from daemon.observability.logging import get_logger
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.pipeline import Batch, Pipeline, Policies
from daemon.policies.autoscale import Scaled
from daemon.policies.budget import BudgetPolicy, BudgetView, StepView
from daemon.provider import Wiring, client_settings
from daemon.registry import BUILTIN, Providers
from daemon.rules.compiled import BudgetRule, BudgetStep, RuleSet
from daemon.rules.loader import load_rules
from daemon.state import SqliteStore
from daemon.state.store import LedgerEntry

# As many as the daemon reads at start, so plan leaves out what the daemon would.
BUDGET_LEDGER_LIMIT = 1000
# Plan discards what budgets decide: log lines saying a warning went out or a step acted would
# mislead. Other lines (a server whose power could not be read) still go out.
_DISCARDED_EVENTS = frozenset({"budget_warning", "budget_enforcement", "budget_approval_requested"})


async def run_plan(
    config: Config, *, clock: Clock, out: TextIO, providers: Providers = BUILTIN
) -> int:
    """Poll the sources once; print autoscale verdicts, budgets and open work; return 0 or 1."""
    rules = load_rules(config.rule_paths, providers.vocabulary())
    metrics = Metrics(CollectorRegistry())
    facts = Facts()
    log = get_logger()
    # Holds are printed below, so they are not logged as well.
    problems = Problems(metrics=metrics, clock=clock)
    policies = Policies(
        providers=providers,
        facts=facts,
        metrics=metrics,
        problems=problems,
        clock=clock,
        log=log,
        gpu_prices=config.model.budget.gpu_prices,
        budget_log=_without_decisions(),
    )
    policies.replace_rules(rules)
    budgets, policy = policies.budgets, policies.autoscale
    failed = False
    async with aiohttp.ClientSession(raise_for_status=False) as session:
        wiring = Wiring(
            session=session,
            clock=clock,
            log=log,
            metrics=metrics,
            problems=problems,
            facts=facts,
            settings=client_settings(config),
            secret=config.secret,
        )
        built = providers.build(config, wiring)
        policies.connect(built.clients)
        cpu_sources = {spec.traits.cpu.source for spec in providers if spec.traits.cpu is not None}
        budget_sources = {
            source: meaning for spec in providers for source, meaning in spec.budget_sources.items()
        }
        sources = [
            source
            for source in built.sources
            if source.name in cpu_sources or (budgets.active and source.name in budget_sources)
        ]
        for source in sources:
            try:
                await source.poll(None)
            except ProviderError as exc:
                # The CPU sources' failures end the plan, as they always did (the CLI says why).
                if source.name not in budget_sources or source.name in cpu_sources:
                    raise
                print(f"error: {budget_sources[source.name]}: {exc}", file=out)
                failed = True
                continue
            facts.polled_at[source.name] = clock.now()
        # A missing database means the daemon never ran here: nothing is pending or done.
        pending = await _read_state(config, clock, budgets, rules)
        # The daemon's policy stages, built the same way, prepare and plan as after a batch of
        # each source; nothing they decide is written, sent or carried out.
        pipeline = Pipeline(policies.stages(store=None))
        for source in sources:
            await pipeline.prepare(source.name, clock.now())
    now = clock.now()
    for source in sources:
        if source.name in cpu_sources:
            for result in pipeline.plan(Batch(source.name, (), now)):
                if isinstance(result.detail, Scaled):
                    _print_scaled(result.detail, out)
    for verdict in sorted(policy.verdicts.values(), key=lambda v: (v.rule, v.server)):
        if not verdict.verdict.resize and verdict.hold is None:
            print(
                f"hold {verdict.rule} {verdict.server}: {verdict.verdict.current} cores: "
                f"{verdict.verdict.reason}",
                file=out,
            )
    if not rules.autoscale:
        print("no autoscale rules", file=out)
    for rule in rules.budgets:
        view = budgets.views.get(rule.name)
        if view is None:
            print(f"budget {rule.name} ({rule.scope.describe()}): disabled", file=out)
        else:
            _print_budget(rule, view, out)
    _print_problems(problems, out)
    for entry in pending:
        decision = entry.decision
        print(
            f"pending {decision.rule} {decision.action} ({entry.state.value} since "
            f"{entry.updated_at.isoformat()}): {decision.key}",
            file=out,
        )
    return EXIT_FAILURE if failed else EXIT_OK


def _print_scaled(scaled: Scaled, out: TextIO) -> None:
    """Print the resizes and recommendations the autoscale rules make on a source's facts."""
    for decision in scaled.decisions:
        kind = "resize" if decision.action == "set_cores" else "recommend"
        event = decision.event
        data = event.data if event is not None else {}
        line = f"{kind} {decision.rule} {data.get('server')}: "
        line += f"{data.get('current_cores')} -> {data.get('target_cores')} cores"
        if data.get("plan"):
            line += f" ({data['current_plan']} -> {data['plan']}, "
            price = data.get("price_difference_euros")
            line += "price unknown)" if price is None else f"{price:+.2f} EUR/month)"
        mode = "" if decision.mode.value == "enforce" else " [dry_run]"
        print(f"{line}{mode}: {data.get('reason')}", file=out)


def _print_problems(problems: Problems, out: TextIO) -> None:
    """Print what keeps each rule from deciding, and the provider items that could not be read."""
    for hold in problems.holds():
        print(f"blocked {hold.rule} {hold.subject}: {hold.reason}: {hold.describe()}", file=out)
    for item in problems.as_dict()["unreadable"]:
        print(
            f"unreadable {item['provider']} {item['endpoint']} {item['field']} "
            f"(item {item['item']}): {item['error']}; left out, the rest of the answer used",
            file=out,
        )


def _print_budget(rule: BudgetRule, view: BudgetView, out: TextIO) -> None:
    """Print a budget's spend and, per step, whether it is in force and what it would touch."""
    head = f"budget {rule.name} ({view.scope}): "
    spend = view.spend
    if spend is None:
        print(f"{head}cap {rule.cap:g} EUR; {view.note}", file=out)
        return
    print(
        f"{head}{spend.estimated:.2f} EUR spent of {rule.cap:g} ({spend.percent(rule.cap):.0f}%), "
        f"billed {spend.billed:.2f} up to {spend.billed_until.isoformat()}; "
        f"forecast {spend.forecast:.2f} EUR ({spend.forecast_percent(rule.cap):.0f}%); "
        f"burning {spend.rate:.3f} EUR/h",
        file=out,
    )
    if spend.unpriced:
        print(f"  unpriced, counted as free: {', '.join(spend.unpriced)}", file=out)
    if view.note:
        print(f"  {view.note}", file=out)
    for step in view.steps:
        print(
            f"  step {step.step.label} at {step.step.at:g}% [{_mode(step.step)}]: {_state(step)}",
            file=out,
        )


def _mode(step: BudgetStep) -> str:
    """Return how a step acts: its mode, and the approval it waits for."""
    if step.approval_timeout_s is None or step.mode is Mode.DRY_RUN:
        return step.mode.value  # a step in dry run asks no one
    return f"enforce, approval within {step.approval_timeout_s / 3600:g} h, else {step.on_timeout}"


def _state(view: StepView) -> str:
    """Return whether a step is in force and, if so, what it would do now."""
    if not view.in_force:
        return f"not in force: {view.note}"
    step = view.step
    if step.kind == "block_scale_up" and step.mode is Mode.DRY_RUN:
        return (
            "in force (dry run): scale-ups in the budget's scope go ahead, "
            "logged as budget_would_deny"
        )
    if step.kind == "block_scale_up" or not view.targets:
        return f"in force: {view.note or 'nothing left to touch this month'}"
    if step.mode is Mode.DRY_RUN:
        state, verb = "in force (dry run: recorded and logged, not done)", "would"
    elif step.approval_timeout_s is not None:
        state, verb = "in force", "would ask approval to"
    else:
        state, verb = "in force", "would"
    said = "; ".join(f"{verb} {target}" for target in view.targets)
    return f"{state}: {said}" + (f" ({view.note})" if view.note else "")


async def _read_state(
    config: Config, clock: Clock, budgets: BudgetPolicy, rules: RuleSet
) -> list[LedgerEntry]:
    """Teach the budgets what the daemon did this month; return its unfinished decisions."""
    if not config.state_path.exists():
        return []
    store = SqliteStore(config.state_path, clock=clock)
    await store.open()
    try:
        if budgets.active:
            entries: list[LedgerEntry] = []
            for rule in rules.budgets:
                entries += await store.ledger(rule=rule.name, limit=BUDGET_LEDGER_LIMIT)
            await budgets.remember(store, entries, clock.now())
        return await store.open_entries()
    finally:
        await store.close()


def _drop_decisions(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    if event_dict.get("event") in _DISCARDED_EVENTS:
        raise structlog.DropEvent
    return event_dict


def _without_decisions() -> FilteringBoundLogger:
    """Return a logger like the configured one that leaves out the budgets' decision lines."""
    processors: Sequence[Processor] = structlog.get_config()["processors"]
    return cast(
        FilteringBoundLogger, structlog.wrap_logger(None, processors=[_drop_decisions, *processors])
    )
