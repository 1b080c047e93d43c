"""`cloudpilot plan`: read the cloud once and say what autoscale would do, changing nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import aiohttp
from prometheus_client import CollectorRegistry

from daemon.actions import action_params_models
from daemon.app import build_clients
from daemon.clock import Clock
from daemon.config import Config
from daemon.engine import load_rules
from daemon.facts import Facts
from daemon.observability.logging import get_logger
from daemon.observability.metrics import Metrics
from daemon.policies.autoscale import AutoscalePolicy
from daemon.sources.base import Source
from daemon.sources.glesys import GlesysSource
from daemon.sources.metrics import MetricsSource
from daemon.state import SqliteStore


async def run_plan(config: Config, *, clock: Clock, out: TextIO) -> int:
    """Poll the CPU sources once, evaluate the autoscale rules, print verdicts and open work."""
    rules = load_rules(config.rule_paths, action_params_models())
    metrics = Metrics(CollectorRegistry())
    facts = Facts()
    policy = AutoscalePolicy(facts=facts, metrics=metrics)
    policy.replace_rules(rules)
    log = get_logger()
    async with aiohttp.ClientSession(raise_for_status=False) as session:
        clients = build_clients(config, session, clock=clock, log=log, metrics=metrics)
        sources: list[Source] = []
        if clients.seeweb is not None:
            assert config.model.seeweb is not None
            sources.append(
                MetricsSource(
                    clients.seeweb,
                    facts=facts,
                    clock=clock,
                    metrics=metrics,
                    servers=config.model.seeweb.watch,
                )
            )
            if policy.wants_plans:
                policy.plans = await clients.seeweb.list_plans()
        if clients.glesys is not None:
            sources.append(GlesysSource(clients.glesys, facts=facts, clock=clock, metrics=metrics))
        for source in sources:
            await source.poll(None)
            scaled = policy.evaluate(source.name, clock.now())
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
    for verdict in sorted(policy.verdicts.values(), key=lambda v: (v.rule, v.server)):
        if not verdict.verdict.resize:
            print(
                f"hold {verdict.rule} {verdict.server}: {verdict.verdict.current} cores: "
                f"{verdict.verdict.reason}",
                file=out,
            )
    if not rules.autoscale:
        print("no autoscale rules", file=out)
    # A missing database means the daemon never ran here: nothing is pending.
    if config.state_path.exists():
        await _print_open(config.state_path, clock, out)
    return 0


async def _print_open(path: Path, clock: Clock, out: TextIO) -> None:
    """List the decisions the daemon has recorded but not finished (pending in the ledger)."""
    store = SqliteStore(path, clock=clock)
    await store.open()
    try:
        entries = await store.open_entries()
    finally:
        await store.close()
    for entry in entries:
        decision = entry.decision
        print(
            f"pending {decision.rule} {decision.action} ({entry.state.value} since "
            f"{entry.updated_at.isoformat()}): {decision.key}",
            file=out,
        )
