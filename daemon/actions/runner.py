"""The runner: carry decisions out, each at most once, per rule concurrency, with timeouts.

The pipeline records every decision in the ledger (INTENT, or DRY_RUN) before handing it over.
The runner marks an entry STARTED just before the call and DONE, FAILED or SKIPPED after it, so
a crash leaves a trace: on the next start, INTENT entries run and STARTED ones are reconciled
against the real state by their action before anything is repeated.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from daemon.actions.base import ActionRegistry
from daemon.clock import Clock
from daemon.models import Decision, Mode, Outcome, OutcomeStatus
from daemon.observability.metrics import Metrics
from daemon.rules.action import Action, ActionContext
from daemon.rules.compiled import RunOptions
from daemon.state.store import LedgerEntry, LedgerState

Logger = structlog.typing.FilteringBoundLogger

_DETAIL_LIMIT = 300
# The rule name of decisions `cloudpilot exec` records.
EXEC_RULE = "exec"
_SINGLE_BUSY = "rule busy (concurrency: single)"


# How long cancelled actions get to unwind; the stop as a whole must fit TimeoutStopSec.
CANCEL_WAIT_S = 1.0


DEFAULT_RUN_OPTIONS = RunOptions()


class Guard(Protocol):
    """What the runner asks of the snapshot guard (`daemon/policies/guard.py`)."""

    def covers(self, action: Action) -> bool:
        """Return whether the action goes through the guard."""
        ...

    def time_allowed(self, timeout_s: float) -> float:
        """Return how long a guarded run may take, given the rule's timeout."""
        ...

    async def carry_out(self, ctx: ActionContext, action: Any, *, resume: bool) -> Outcome:
        """Run the action under the guard; `resume` when a crash left it started."""
        ...


class LedgerStore(Protocol):
    """The part of the store the runner uses: the action ledger."""

    async def get_entry(self, key: str) -> LedgerEntry | None:
        """Return one ledger entry by idempotency key."""
        ...

    async def open_entries(self) -> list[LedgerEntry]:
        """Return the entries in INTENT or STARTED state, oldest first."""
        ...

    async def mark_started(self, key: str, now: datetime) -> None:
        """Move an entry to STARTED and count the attempt."""
        ...

    async def mark_finished(self, key: str, state: LedgerState, detail: str, now: datetime) -> None:
        """Move an entry to DONE, FAILED or SKIPPED with a short detail."""
        ...


@dataclass(slots=True)
class _Lane:
    """One rule's runs: how many are under way and which wait their turn."""

    running: int = 0
    waiting: deque[Decision] = field(default_factory=deque)


def error_detail(exc: BaseException) -> str:
    """Return a one-line account of an error for the ledger: its type and message, trimmed."""
    if isinstance(exc, ValidationError):
        # Without the input: parameters may hold tokens.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'params'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        )
        return _trim(f"invalid parameters: {problems}")
    text = " ".join(str(exc).split())
    return _trim(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _trim(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def _seconds(value: float) -> str:
    return f"{value:g}"


class Runner:
    """Carry out enforce decisions; show dry-run ones; keep the ledger and the metrics."""

    def __init__(
        self,
        *,
        store: LedgerStore,
        registry: ActionRegistry,
        metrics: Metrics,
        clock: Clock,
        log: Logger,
        sources_ready: Callable[[frozenset[str]], bool],
        options: Callable[[str], RunOptions] = lambda _rule: DEFAULT_RUN_OPTIONS,
        guard: Guard | None = None,
        startup_sources: frozenset[str] = frozenset(),
    ) -> None:
        self._store = store
        self._registry = registry
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._sources_ready = sources_ready
        self._options = options
        self._guard = guard
        # What every destructive or risky action waits for, besides its own `depends_on`: the
        # daemon's sources (billing included), so nothing acts on a half-read cloud.
        self._startup_sources = startup_sources
        self._accepting = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._lanes: dict[str, _Lane] = {}
        self._held: list[Decision] = []
        # Keys this runner owes a result: open in the ledger, submitted or reconciled.
        self._open: set[str] = set()

    @property
    def running(self) -> int:
        """Return how many actions are under way."""
        return sum(lane.running for lane in self._lanes.values())

    @property
    def held(self) -> int:
        """Return how many destructive actions wait for their sources' first full poll."""
        return len(self._held)

    async def start(self) -> None:
        """Take up the ledger's open entries from a previous run: run or reconcile each."""
        entries = await self._store.open_entries()
        # `cloudpilot exec` finishes its own entries (it resumes them when run again).
        fresh = [
            entry
            for entry in entries
            if entry.key not in self._open and entry.decision.rule != EXEC_RULE
        ]
        self._log.info(
            "ledger_reconciling",
            intent=sum(entry.state is LedgerState.INTENT for entry in fresh),
            started=sum(entry.state is LedgerState.STARTED for entry in fresh),
        )
        for entry in fresh:
            self._open.add(entry.key)
            self._admit(entry.decision)
        self._update_gauge()

    def submit(self, decisions: Sequence[Decision]) -> None:
        """Take decisions already recorded in the ledger: show dry-run ones, schedule the rest."""
        for decision in decisions:
            if decision.mode is Mode.DRY_RUN:
                self._show(decision)
                continue
            if decision.key in self._open:
                continue
            self._open.add(decision.key)
            if not self._accepting:
                self._log.warning(
                    "decision_deferred",
                    reason="shutting down",
                    rule=decision.rule,
                    action=decision.action,
                    decision_key=decision.key,
                )
                continue
            self._admit(decision)
        self._update_gauge()

    def sources_polled(self) -> None:
        """Release held destructive actions whose sources have now completed a full poll."""
        if not self._held or not self._accepting:
            return
        still_held: list[Decision] = []
        for decision in self._held:
            action = self._registry.get(decision.action)
            if self._sources_ready(self._waits_for(action) or frozenset()):
                self._log.info(
                    "action_released",
                    rule=decision.rule,
                    action=decision.action,
                    decision_key=decision.key,
                )
                self._dispatch(decision)
            else:
                still_held.append(decision)
        self._held = still_held

    async def wait_idle(self) -> None:
        """Wait until no action is running or waiting its turn (held ones aside)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, grace: float) -> None:
        """Stop taking work, let running actions finish up to `grace` s, cancel the rest.

        Whatever did not finish keeps its ledger entry open (INTENT or STARTED), so the next
        start runs or reconciles it.
        """
        self._accepting = False
        waiting = len(self._held) + sum(len(lane.waiting) for lane in self._lanes.values())
        self._held.clear()
        for lane in self._lanes.values():
            lane.waiting.clear()
        self._log.info("runner_draining", running=self.running, left_waiting=waiting)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.0, grace))
        for task in pending:
            task.cancel()
        if pending:
            # Bounded as well: an action that swallows cancellation must not hang the stop.
            _, stuck = await asyncio.wait(pending, timeout=CANCEL_WAIT_S)
            self._log.warning("actions_cancelled", count=len(pending), ignored_cancel=len(stuck))
        self._log.info("runner_drained")

    # --- scheduling ------------------------------------------------------------------------------

    def _admit(self, decision: Decision) -> None:
        """Schedule a decision, unless its action is unknown or the startup guard holds it."""
        if decision.mode is Mode.DRY_RUN:
            self._spawn(
                self._finish_unrun(decision, OutcomeStatus.SKIPPED, "dry_run: not carried out")
            )
            return
        if decision.action not in self._registry:
            detail = f"action type {decision.action!r} is not registered"
            self._spawn(self._finish_unrun(decision, OutcomeStatus.FAILED, detail))
            return
        action = self._registry.get(decision.action)
        needs = self._waits_for(action)
        if needs is not None and not self._sources_ready(needs):
            self._held.append(decision)
            self._log.info(
                "action_held",
                reason="startup guard: sources have not completed a full poll",
                rule=decision.rule,
                action=decision.action,
                decision_key=decision.key,
                waiting_for=sorted(needs),
            )
            return
        self._dispatch(decision)

    def _waits_for(self, action: Action) -> frozenset[str] | None:
        """Return the sources an action must wait for at startup, or None when it waits for none.

        Destructive actions, and those the guard calls risky, wait for their own sources and
        every source of the daemon to complete a full poll since start.
        """
        risky = self._guard is not None and self._guard.covers(action)
        if not (action.destructive or risky):
            return None
        return action.depends_on | self._startup_sources

    def _dispatch(self, decision: Decision) -> None:
        """Start the decision now, queue it behind its rule's runs, or skip it (single)."""
        options = self._options(decision.rule)
        lane = self._lanes.setdefault(decision.rule, _Lane())
        if options.concurrency == "single" and lane.running:
            self._spawn(self._finish_unrun(decision, OutcomeStatus.SKIPPED, _SINGLE_BUSY))
            return
        if lane.running < self._limit(options) and not lane.waiting:
            self._start(decision, lane)
        else:
            lane.waiting.append(decision)

    @staticmethod
    def _limit(options: RunOptions) -> int:
        return max(1, options.max_running) if options.concurrency == "parallel" else 1

    def _start(self, decision: Decision, lane: _Lane) -> None:
        lane.running += 1
        self._spawn(self._execute(decision, lane))

    def _next(self, rule: str, lane: _Lane) -> None:
        """Start the rule's waiting decisions that now have room."""
        if self._accepting:
            limit = self._limit(self._options(rule))
            while lane.waiting and lane.running < limit:
                self._start(lane.waiting.popleft(), lane)
        if not lane.running and not lane.waiting:
            self._lanes.pop(rule, None)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one run ---------------------------------------------------------------------------------

    async def _execute(self, decision: Decision, lane: _Lane) -> None:
        try:
            await self._carry_out(decision)
        except Exception as exc:
            # A ledger write failed: the entry stays open and the next start takes it up.
            self._log.error(
                "runner_error",
                rule=decision.rule,
                action=decision.action,
                decision_key=decision.key,
                error=error_detail(exc),
            )
        finally:
            lane.running -= 1
            self._next(decision.rule, lane)

    async def _carry_out(self, decision: Decision) -> None:
        """Run (or first reconcile) one decision and record how it ended."""
        log = self._log.bind(
            run_id=uuid.uuid4().hex[:12],
            rule=decision.rule,
            action=decision.action,
            decision_key=decision.key,
        )
        entry = await self._store.get_entry(decision.key)
        if entry is None or not entry.state.is_open:
            log.warning("action_not_open", state=entry.state.value if entry else None)
            self._forget(decision.key)
            return
        action = self._registry.get(decision.action)
        options = self._options(decision.rule)
        ctx = ActionContext(
            decision=decision, clock=self._clock, log=log, timeout_s=options.timeout_s
        )
        try:
            action.params_model.model_validate(decision.params)
        except ValidationError as exc:
            await self._finish(decision, Outcome(OutcomeStatus.FAILED, error_detail(exc)), log)
            return
        guard = self._guard if self._guard is not None and self._guard.covers(action) else None
        resume = entry.state is LedgerState.STARTED
        call: Callable[[ActionContext], Awaitable[Outcome | None]] = action.run
        timeout = options.timeout_s
        if guard is not None:
            # The guard reconciles for itself: it finds its snapshot and the provider's action.
            timeout = guard.time_allowed(options.timeout_s)

            def call(c: ActionContext) -> Awaitable[Outcome | None]:
                return guard.carry_out(c, action, resume=resume)

            log.info("action_guarded", resume=resume, timeout_s=timeout)
        elif resume:
            known = await self._bounded(action.reconcile, ctx, options, log)
            if known is not None:
                log.info("action_reconciled", outcome=known.status.value, detail=known.detail)
                await self._finish(decision, known, log)
                return
            log.info(
                "action_rerun", reason="outcome unknown after restart", attempts=entry.attempts
            )
        await self._store.mark_started(decision.key, self._clock.now())
        log.debug("action_started", timeout_s=timeout)
        started = self._clock.monotonic()
        outcome = await self._bounded(call, ctx, options, log, timeout_s=timeout)
        took = self._clock.monotonic() - started
        self._metrics.action_duration.labels(decision.action).observe(took)
        assert outcome is not None
        await self._finish(decision, outcome, log, took_s=took)

    async def _bounded(
        self,
        call: Callable[[ActionContext], Awaitable[Outcome | None]],
        ctx: ActionContext,
        options: RunOptions,
        log: Logger,
        *,
        timeout_s: float | None = None,
    ) -> Outcome | None:
        """Await an action's run or reconcile within the rule's timeout; turn errors to FAILED."""
        limit = options.timeout_s if timeout_s is None else timeout_s
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                return await call(ctx)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                return Outcome(OutcomeStatus.FAILED, f"timed out after {_seconds(limit)} s")
            detail = error_detail(exc)
            log.warning("action_raised", error_type=type(exc).__name__, detail=detail)
            return Outcome(OutcomeStatus.FAILED, detail)

    async def _finish_unrun(self, decision: Decision, status: OutcomeStatus, detail: str) -> None:
        """Close an entry that will not run (busy rule, unknown action) with its reason."""
        log = self._log.bind(rule=decision.rule, action=decision.action, decision_key=decision.key)
        try:
            await self._finish(decision, Outcome(status, detail), log)
        except Exception as exc:
            log.error("runner_error", error=error_detail(exc))

    async def _finish(
        self, decision: Decision, outcome: Outcome, log: Logger, *, took_s: float | None = None
    ) -> None:
        await self._store.mark_finished(
            decision.key, LedgerState(outcome.status.value), outcome.detail, self._clock.now()
        )
        self._forget(decision.key)
        self._metrics.actions.labels(decision.action, outcome.status.value).inc()
        took = {} if took_s is None else {"took_s": round(took_s, 3)}
        if outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.ABORTED):
            log.warning(f"action_{outcome.status.value}", detail=outcome.detail, **took)
        elif outcome.status is OutcomeStatus.SKIPPED:
            log.info("action_skipped", detail=outcome.detail)
        else:
            log.info("action_done", detail=outcome.detail, **took)

    # --- dry run and bookkeeping -----------------------------------------------------------------

    def _show(self, decision: Decision) -> None:
        """Log what a dry-run decision would have done and count it; call nothing."""
        event = decision.event
        self._log.info(
            "decision_dry_run",
            rule=decision.rule,
            action=decision.action,
            decision_key=decision.key,
            params=self._loggable_params(decision),
            event_key=event.key if event else None,
            event_type=event.type if event else None,
            resource=event.resource if event else None,
        )
        self._metrics.actions.labels(decision.action, "dry_run").inc()

    def _loggable_params(self, decision: Decision) -> dict[str, Any] | str:
        if decision.action not in self._registry:
            return "<unknown action>"
        action: Action = self._registry.get(decision.action)
        try:
            return action.params_model.model_validate(decision.params).redacted()
        except ValidationError:
            return "<invalid>"

    def _forget(self, key: str) -> None:
        self._open.discard(key)
        self._update_gauge()

    def _update_gauge(self) -> None:
        self._metrics.ledger_open.set(len(self._open))
