"""Wiring: the one place that builds objects, runs the daemon and shuts it down in stages."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from daemon import __version__
from daemon.actions.base import ActionRegistry
from daemon.actions.runner import Runner
from daemon.clock import Clock
from daemon.config import Config, ProviderLimits
from daemon.engine import Engine, EngineObserver
from daemon.engine.engine import Evaluation
from daemon.errors import ConfigError
from daemon.facts import Facts
from daemon.lifecycle import background, finishing, opened, signal_handlers
from daemon.models import Decision, Event, Mode
from daemon.net import Listen
from daemon.notify.alerts import ALERT_ACTION, AlertBook
from daemon.notify.dispatcher import Dispatcher
from daemon.notify.senders import build_senders
from daemon.observability.http import Readiness, build_http_app, serving
from daemon.observability.logging import get_logger
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.observability.sdnotify import SystemdNotifier
from daemon.pipeline import (
    Batch,
    EngineStage,
    Pipeline,
    Policies,
    decisions_of,
    events_of,
)
from daemon.policies.guard import SnapshotGuard
from daemon.provider import Wiring, client_settings
from daemon.registry import BUILTIN, Built, Providers
from daemon.rules.compiled import RuleSet
from daemon.rules.loader import load_rules
from daemon.sources.base import Source, keys_kept_by_cursor
from daemon.sources.scheduler import PollScheduler, SourceJob
from daemon.state import SqliteStore, Store
from daemon.state.lock import hold_state
from daemon.state.store import Cursor, LedgerEntry
from daemon.urls import is_loopback_host

Logger = structlog.typing.FilteringBoundLogger

# Seen event keys are kept well past the point where any source could bring them again.
SEEN_RETENTION = timedelta(days=30)
PRUNE_EVERY_S = 3600.0
# How often alerts with `resolve.after` are checked for having gone quiet.
ALERT_EXPIRY_EVERY_S = 60.0
MAX_EVENT_TYPES = 100
# A batch is a few SQLite statements; this bounds the wait only if the disk hangs.
BATCH_FINISH_S = 2.0
# Stages of a stop: polls 5 s, batches 2 s, actions and sends side by side `[shutdown] grace`
# (at most 15 s) plus 1 s to unwind, HTTP 5 s: inside the unit's TimeoutStopSec=30s even when
# every stage times out.
POLL_STOP_S = 5.0


class _EngineMetrics(EngineObserver):
    """Feed the engine's observations into Prometheus counters."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def matched(self, rule: str) -> None:
        """Count a rule match."""
        self._metrics.rule_matches.labels(rule).inc()

    def decided(self, rule: str, mode: Mode) -> None:
        """Count a decision."""
        self._metrics.decisions.labels(rule, mode.value).inc()

    def error(self, rule: str, event: Event, message: str) -> None:
        """Count a condition that could not be evaluated."""
        self._metrics.rule_errors.labels(rule).inc()

    def stale(self, event: Event) -> None:
        """Count an event too old to decide on."""
        self._metrics.events_stale.labels(event.type).inc()


class Daemon:
    """Cloudpilot, built from a config: sources → store → engine → runner, plus HTTP."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        registry: CollectorRegistry | None = None,
        log: Logger | None = None,
        notifier: SystemdNotifier | None = None,
        listen: Listen | None = None,
        rng: random.Random | None = None,
        providers: Providers | None = None,
    ) -> None:
        self.config = config
        self.providers = providers or BUILTIN
        self._vocabulary = self.providers.vocabulary()
        self.clock = clock
        self.metrics = Metrics(registry or CollectorRegistry())
        self.metrics.per_server = config.model.http.per_server_metrics
        self.log: Logger = log or get_logger()
        self.notifier = notifier or SystemdNotifier.from_environ({})
        self.listen = listen or Listen.parse(config.model.http.listen)
        self.rng = rng or random.Random()
        self.facts = Facts()
        self.readiness = Readiness()
        self.store: Store = SqliteStore(config.state_path, clock=clock)
        self._stack = AsyncExitStack()
        self._session: aiohttp.ClientSession | None = None
        self._engine: Engine | None = None
        self._pipeline: Pipeline | None = None
        self._cursor_dedups: set[str] = set()
        self._runner: Runner | None = None
        self._actions: ActionRegistry | None = None
        self._alerts: AlertBook | None = None
        self._dispatcher: Dispatcher | None = None
        self._scheduler: PollScheduler | None = None
        self._http_port: int | None = None
        self._last_prune = float("-inf")
        self._status_sent: str | None = None
        self._built = Built()
        self.problems = Problems(metrics=self.metrics, clock=clock, log=self.log)
        self.policies = Policies(
            providers=self.providers,
            facts=self.facts,
            metrics=self.metrics,
            problems=self.problems,
            clock=clock,
            log=self.log,
            gpu_prices=config.model.budget.gpu_prices,
        )
        self.budgets = self.policies.budgets
        self.autoscale = self.policies.autoscale
        self._batches: set[asyncio.Task[None]] = set()
        self._event_types: set[str] = set()
        self._stopping = False

    # --- parts, available after start() ----------------------------------------------------------

    @property
    def pipeline(self) -> Pipeline:
        """Return the stages every batch goes through."""
        assert self._pipeline is not None, "the daemon has not started"
        return self._pipeline

    @property
    def engine(self) -> Engine:
        """Return the rule engine."""
        assert self._engine is not None, "the daemon has not started"
        return self._engine

    @property
    def runner(self) -> Runner:
        """Return the action runner."""
        assert self._runner is not None, "the daemon has not started"
        return self._runner

    @property
    def alerts(self) -> AlertBook:
        """Return the alert book."""
        assert self._alerts is not None, "the daemon has not started"
        return self._alerts

    @property
    def dispatcher(self) -> Dispatcher:
        """Return the notification dispatcher."""
        assert self._dispatcher is not None, "the daemon has not started"
        return self._dispatcher

    @property
    def scheduler(self) -> PollScheduler:
        """Return the poll scheduler."""
        assert self._scheduler is not None, "the daemon has not started"
        return self._scheduler

    @property
    def http_port(self) -> int:
        """Return the port the HTTP endpoint bound."""
        assert self._http_port is not None, "the daemon has not started"
        return self._http_port

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open state, load rules, reconcile the ledger and listen; do not wait for the cloud.

        Each part is a context entered on one stack, so a part that fails to start leaves the
        ones before it closed (in reverse) and the ones after it never started.
        """
        async with AsyncExitStack() as stack:
            # One daemon per state file: a second would poll, decide and notify twice.
            stack.enter_context(hold_state(self.config.state_path))
            self._session = await stack.enter_async_context(
                aiohttp.ClientSession(raise_for_status=False)
            )
            await stack.enter_async_context(opened(self.store))
            senders = build_senders(self.config, session=self._session, clock=self.clock)
            notifiers = self.config.model.notifiers
            self._dispatcher = Dispatcher(
                store=self.store,
                senders=senders,
                metrics=self.metrics,
                clock=self.clock,
                log=self.log,
                rng=self.rng,
                give_up_after=lambda route: notifiers[route].give_up_after,
                refresh_every={
                    name: notifier.resend_every
                    for name, notifier in notifiers.items()
                    if notifier.type == "alertmanager"
                },
            )
            self._alerts = AlertBook(
                rules=RuleSet(),
                routes={name: sender.destinations for name, sender in senders.items()},
                store=self.store,
                facts=self.facts,
                metrics=self.metrics,
                clock=self.clock,
                log=self.log,
                on_queued=self._dispatcher.wake,
            )
            built = self._built = self.providers.build(self.config, self._wiring())
            self.policies.connect(built.clients)
            actions = self.providers.actions(
                built, session=self._session, clock=self.clock, log=self.log, alerts=self._alerts
            )
            self._actions = actions
            rules = self._load_rules()
            memory = await self.store.load_memory()
            self._engine = Engine(
                rules,
                stale_after=self.config.model.engine.stale_after,
                memory=memory,
                observer=_EngineMetrics(self.metrics),
            )
            self._rules_loaded(rules)
            self._pipeline = Pipeline(
                [EngineStage(self._engine, self.facts), *self.policies.stages(self.store)]
            )
            jobs = [self._job(source) for source in built.sources]
            self._cursor_dedups = {s.name for s in built.sources if keys_kept_by_cursor(s)}
            self._scheduler = PollScheduler(jobs, log=self.log, stop_timeout=POLL_STOP_S)
            self.readiness.expect_sources(sorted(job.name for job in jobs))
            app = build_http_app(
                metrics=self.metrics,
                readiness=self.readiness,
                health=self.healthy,
                status=self.status,
            )
            self._http_port = await stack.enter_async_context(
                serving(app, self.listen.host, self.listen.port)
            )
            if not is_loopback_host(self.listen.host):
                self._warn_exposed(app)
            self._runner = Runner(
                store=self.store,
                registry=actions,
                metrics=self.metrics,
                clock=self.clock,
                log=self.log,
                options=self.engine.run_options,
                # A source counts once a batch of it has committed since start.
                sources_ready=self.readiness.polled,
                startup_sources=frozenset(job.name for job in jobs),
                guard=SnapshotGuard(
                    backends=built.backends.snapshots,
                    takes_snapshots=self._vocabulary.takes_snapshots,
                    spec=lambda: self.engine.rules.guard_in_force,
                    metrics=self.metrics,
                    alerts=self._alerts,
                    routes=lambda rule: alert_routes(self.engine.rules, rule),
                ),
            )
            await self._remember_resizes()
            await self.alerts.count_firing()
            await self.dispatcher.count_queued()
            # Left in reverse: polls stop, batches finish, expiry ends, then actions and sends
            # drain side by side, then HTTP, the store, the session and the lock.
            await stack.enter_async_context(self._working(self._runner, self._dispatcher))
            await stack.enter_async_context(background(self._expire_alerts()))
            await stack.enter_async_context(self._storing_batches())
            await stack.enter_async_context(_polling(self._scheduler))
            self._stack = stack.pop_all()
        self.log.info(
            "daemon_started",
            version=__version__,
            rules=len(rules),
            sources=[job.name for job in jobs],
            listen=f"{self.listen.host}:{self._http_port}",
        )

    @contextlib.asynccontextmanager
    async def _working(self, runner: Runner, dispatcher: Dispatcher) -> AsyncIterator[None]:
        """Run actions and deliver notifications; on the way out drain both side by side.

        One context for both, so that the two share one `[shutdown] grace` instead of waiting
        one after the other. Unwinding a failure (a start that fails) gives them none.
        """
        grace = 0.0
        try:
            await runner.start()
            dispatcher.start()
            yield
            grace = self.config.model.shutdown.grace
        finally:
            await asyncio.gather(runner.drain(grace), dispatcher.stop(grace))

    @contextlib.asynccontextmanager
    async def _storing_batches(self) -> AsyncIterator[None]:
        """On the way out, give the batches being stored up to BATCH_FINISH_S to commit."""
        try:
            yield
        finally:
            if self._batches:
                await asyncio.wait(set(self._batches), timeout=BATCH_FINISH_S)

    def _warn_exposed(self, app: web.Application) -> None:
        """Say, as a warning, what anyone who reaches a non-loopback address can read."""
        endpoints = sorted({resource.canonical for resource in app.router.resources()})
        self.log.warning(
            "http_exposed",
            listen=f"{self.listen.host}:{self._http_port}",
            endpoints=endpoints,
            reason="served without authentication beyond this machine: /status and /metrics "
            "show server names, rules, alerts, spend and approvals to anyone who can connect. "
            "Bind 127.0.0.1, or put a proxy with authentication or a firewall in front",
        )

    def start_polling(self) -> None:
        """Start the scheduler: every source polls now, then on its interval."""
        self.scheduler.start()

    async def poll_once(self) -> None:
        """Poll every source once, concurrently, and wait for the batches to be stored."""
        await self.scheduler.poll_all_once()

    async def stop(self) -> None:
        """Shut down in stages, leaving the parts in reverse order of start; idempotent.

        Polls stop (POLL_STOP_S), batches finish (BATCH_FINISH_S), alert expiry ends, actions
        and notification sends drain side by side (`[shutdown] grace`), then HTTP, the store,
        the session and the state lock close.
        """
        if self._stopping:
            return
        self._stopping = True
        self.log.info("daemon_stopping")
        await self._stack.aclose()
        self.log.info("daemon_stopped")

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- rules -----------------------------------------------------------------------------------

    async def reload_rules(self) -> bool:
        """Load the rule files again; on any problem keep the running rules and say why."""
        try:
            rules = self._load_rules()
        except (ConfigError, OSError) as exc:
            self.metrics.rule_reloads.labels("error").inc()
            self.log.error("rules_reload_failed", error=str(exc), kept=len(self.engine.rules))
            return False
        self.engine.replace_rules(rules)
        self._rules_loaded(rules)
        self.metrics.rule_reloads.labels("ok").inc()
        self.log.info("rules_reloaded", rules=len(rules), files=list(rules.files))
        return True

    def _load_rules(self) -> RuleSet:
        """Load the rule files, or raise ConfigError, also for an alert to an unknown route."""
        assert self._actions is not None
        rules = load_rules(
            self.config.rule_paths, replace(self._vocabulary, actions=self._actions.params_models())
        )
        problems = self.alerts.unknown_routes(rules)
        if problems:
            raise ConfigError("\n".join(problems))
        return rules

    def _rules_loaded(self, rules: RuleSet) -> None:
        self.problems.forget(
            [rule.name for rule in rules.autoscale] + [b.name for b in rules.budgets]
        )
        self.alerts.replace_rules(rules)
        self.policies.replace_rules(rules)
        self.metrics.rules_loaded.set(len(rules))
        self.readiness.rules_loaded()

    async def _remember_resizes(self) -> None:
        """Teach the policies their past decisions, the advice still firing, open approvals."""
        entries: list[LedgerEntry] = []
        for rule in self.engine.rules.autoscale:
            entries += await self.store.ledger(rule=rule.name, limit=500)
        firing = [alert.key for alert in await self.store.firing_alerts()]
        self.autoscale.remember(entries, firing)
        spent: list[LedgerEntry] = []
        for budget in self.engine.rules.budgets:
            spent += await self.store.ledger(rule=budget.name, limit=1000)
        await self.budgets.remember(self.store, spent, self.clock.now())

    # --- the pipeline ----------------------------------------------------------------------------

    async def on_batch(self, source: str, events: list[Event], cursor: Cursor) -> None:
        """Store one poll's events and decisions in one transaction, then hand decisions over.

        The work runs shielded: a poll timeout or a shutdown that cancels the tick must not
        separate a committed transaction from the engine memory and hand-off that follow it.
        """
        task = asyncio.get_running_loop().create_task(self._store_batch(source, events, cursor))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        await asyncio.shield(task)

    async def _store_batch(self, source: str, events: list[Event], cursor: Cursor) -> None:
        pipeline = self.pipeline
        await pipeline.prepare(source, self.clock.now())
        now = self.clock.now()
        # Sources whose cursor keeps events from coming twice store no seen keys for them.
        kept_by_cursor = source in self._cursor_dedups
        async with self.store.batch() as tx:
            keys = [event.key for event in events]
            unseen = set(keys) if kept_by_cursor else await tx.unseen(keys)
            fresh: list[Event] = []
            for event in events:
                if event.key in unseen:
                    unseen.discard(event.key)  # a key twice in one batch counts once
                    fresh.append(event)
            results = pipeline.plan(Batch(source, fresh, now))
            recorded = await tx.record_decisions(decisions_of(results))
            settled = await self.alerts.settle(tx, fresh + events_of(results), recorded, now)
            await pipeline.write(tx, results)
            if not kept_by_cursor:
                await tx.mark_seen([event.key for event in fresh], now)
            await tx.set_cursor(source, cursor)
            if settled.forget:
                await tx.drop_memory(settled.forget)
        await pipeline.apply(results, self.alerts)
        if settled.forget:
            self.engine.apply(Evaluation([], [], settled.forget))
        await self.alerts.committed(settled)
        for event in fresh:
            self.metrics.events.labels(self._event_label(event.type)).inc()
        self.readiness.source_polled(source)
        self.runner.sources_polled()
        # Enforced alerts were raised in the transaction; the runner shows dry-run ones.
        self._submit([d for d in recorded if d.action != ALERT_ACTION or d.mode is Mode.DRY_RUN])
        await self._prune()

    async def _expire_alerts(self) -> None:
        while True:
            # Loop time on purpose: the check's cadence; what is due is judged by the clock.
            await asyncio.sleep(ALERT_EXPIRY_EVERY_S)
            try:
                await self.alerts.expire()
            except Exception as exc:  # the store failing: try again next round
                self.log.error("alert_expiry_failed", error=f"{type(exc).__name__}: {exc}")

    def _event_label(self, event_type: str) -> str:
        # Event types partly come from provider text (k8sgpu event kinds): bound the label set.
        if event_type in self._event_types or len(self._event_types) < MAX_EVENT_TYPES:
            self._event_types.add(event_type)
            return event_type
        return "other"

    def _submit(self, decisions: Sequence[Decision]) -> None:
        if decisions:
            self.runner.submit(decisions)

    async def _prune(self) -> None:
        """Once an hour, forget seen keys, resolved alerts and timing memory no longer needed."""
        if self.clock.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = self.clock.monotonic()
        # Computed and dropped under the batch lock, and applied before another batch can plan.
        async with self.store.batch() as batch:
            expired = self.engine.expired(self.clock.now())
            if expired:
                await batch.drop_memory(expired)
        if expired:
            self.engine.apply(Evaluation([], [], expired))
            self.log.info("memory_pruned", count=len(expired))
        retention = max(SEEN_RETENTION, timedelta(seconds=2 * self.config.model.engine.stale_after))
        pruned = await self.store.prune_seen(self.clock.now() - retention)
        if pruned:
            self.log.info("seen_keys_pruned", count=pruned)
        kept = timedelta(seconds=self.config.model.state.retention)
        alerts = await self.store.prune_alerts(self.clock.now() - kept)
        if alerts:
            self.log.info("resolved_alerts_pruned", count=alerts)
        ledger = await self.store.prune_ledger(self.clock.now() - kept)
        if ledger:
            self.log.info("ledger_pruned", count=ledger)

    # --- health ----------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Return whether the daemon is working: not stopping, and its scheduler is running."""
        return not self._stopping and self._scheduler is not None and self._scheduler.running

    def status(self) -> dict[str, Any]:
        """Return what `/status` shows: version, rules, sources and open ledger entries."""
        return {
            "version": __version__,
            "rules": [rule.name for rule in self.engine.rules.rules],
            "sources": {
                name: {"polled_at": polled.isoformat()}
                for name, polled in sorted(self.facts.polled_at.items())
            },
            "running_actions": self.runner.running if self._runner else 0,
            "providers": self._limits(),
            "autoscale": [v.as_dict() for _, v in sorted(self.autoscale.verdicts.items())],
            "budgets": [view.as_dict() for _, view in sorted(self.budgets.views.items())],
            "problems": self.problems.as_dict(),
        }

    def _limits(self) -> dict[str, dict[str, float]]:
        """Return each configured provider's request limits, as `/status` shows them."""
        limits: dict[str, dict[str, float]] = {}
        for spec in self.providers.configured(self.config):
            section = self.config.model.provider(spec.name)
            if isinstance(section, ProviderLimits):
                limits[spec.name] = {
                    "rate_per_s": section.rate,
                    "burst": section.burst,
                    "concurrency": section.concurrency,
                }
        return limits

    def status_line(self) -> str:
        """Return the line `systemctl status` shows: sources up, alerts firing, the last poll."""
        jobs = list(self._scheduler.jobs.values()) if self._scheduler is not None else []
        up = sum(1 for job in jobs if job.polled_once and not job.failing)
        failing = sorted(job.name for job in jobs if job.failing)
        sources = f"{up}/{len(jobs)} sources up"
        if failing:
            sources += f" ({', '.join(failing)} failing)"
        firing = self._alerts.firing if self._alerts is not None else 0
        last = max(self.facts.polled_at.values(), default=None)
        polled = f"last poll {last:%H:%M} UTC" if last is not None else "no poll yet"
        return f"{sources}, {firing} alert{'' if firing == 1 else 's'} firing, {polled}"

    def report_status(self) -> bool:
        """Send the status line to systemd if it changed since the last one; return if sent."""
        line = self.status_line()
        if line == self._status_sent:
            return False
        self._status_sent = line
        return self.notifier.status(line)

    # --- building --------------------------------------------------------------------------------

    def _job(self, source: Source) -> SourceJob:
        return SourceJob(
            source,
            interval=self.config.model.interval(source.name),
            cursor_of=self.store.get_cursor,
            sink=self.on_batch,
            facts=self.facts,
            metrics=self.metrics,
            clock=self.clock,
            log=self.log,
            rng=self.rng,
        )

    def _wiring(self) -> Wiring:
        assert self._session is not None
        return Wiring(
            session=self._session,
            clock=self.clock,
            log=self.log,
            metrics=self.metrics,
            problems=self.problems,
            facts=self.facts,
            settings=client_settings(self.config),
            secret=self.config.secret,
            interval=self.config.model.interval,
        )


@contextlib.asynccontextmanager
async def _polling(scheduler: PollScheduler) -> AsyncIterator[None]:
    """Let polls run (start_polling, poll_once); on the way out stop them, in POLL_STOP_S."""
    try:
        yield
    finally:
        await scheduler.stop()


def alert_routes(rules: RuleSet, rule: str) -> tuple[str, ...]:
    """Return the routes a rule reports to: an autoscale rule's `to`, an event rule's alerts'."""
    for named in (rules.autoscale, rules.budgets):
        for policy_rule in named:
            if policy_rule.name == rule:
                return policy_rule.to
    found = rules.get(rule)
    if found is None:
        return ()
    routes: list[str] = []
    for step in found.steps:
        if step.action == ALERT_ACTION:
            routes.extend(step.params.get("to", ()))
    return tuple(dict.fromkeys(routes))


async def run(
    config: Config,
    *,
    clock: Clock,
    listen: Listen | None = None,
    notifier: SystemdNotifier | None = None,
    registry: CollectorRegistry | None = None,
    log: Logger | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT (or `stop`); reload rules on SIGHUP. Return 0."""
    notifier = notifier or SystemdNotifier.from_environ()
    stop = stop or asyncio.Event()
    daemon = Daemon(
        config, clock=clock, registry=registry, log=log, notifier=notifier, listen=listen
    )
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()

    async def reload_and_tell() -> bool:
        notifier.reloading()
        try:
            return await daemon.reload_rules()
        finally:
            notifier.ready()

    def reload() -> None:
        task = loop.create_task(reload_and_tell())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    # One stack, left in reverse: STOPPING=1, the tickers end, a reload under way finishes,
    # the signal handlers go, and the daemon stops in its own stages.
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(daemon)
        handlers = {signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: reload}
        stack.enter_context(signal_handlers(handlers))
        await stack.enter_async_context(finishing(reloads))
        daemon.start_polling()
        await stack.enter_async_context(background(_watchdog(daemon, notifier)))
        await stack.enter_async_context(background(_status(daemon)))
        # Entered last so that systemd hears STOPPING=1 first; the tickers only run once this
        # task waits, so READY=1 still comes before any of theirs.
        stack.enter_context(_announced(notifier))
        await stop.wait()
    return 0


@contextlib.contextmanager
def _announced(notifier: SystemdNotifier) -> Iterator[None]:
    """Tell systemd the daemon is ready; on the way out, that it is stopping."""
    notifier.ready()
    try:
        yield
    finally:
        notifier.stopping()
        notifier.status("stopping")


STATUS_EVERY_S = 5.0


async def _status(daemon: Daemon) -> None:
    """Keep systemd's status line current: sent when it changes, looked at every few seconds."""
    if not daemon.notifier.enabled:
        return
    while True:
        daemon.report_status()
        # Real time, as for the watchdog: the line is for a person running systemctl status.
        await asyncio.sleep(STATUS_EVERY_S)


async def _watchdog(daemon: Daemon, notifier: SystemdNotifier) -> None:
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        if daemon.healthy():
            notifier.watchdog()
        # Real time on purpose: systemd's watchdog counts wall seconds, not simulated ones.
        await asyncio.sleep(interval)
