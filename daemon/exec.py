"""`cloudpilot exec`: one server action by hand, through the snapshot guard and the ledger.

The parts are built as the daemon builds them (store, session, provider clients, alert book,
registry, rules for the guard section, guard, runner), but nothing of the daemon runs: no HTTP
endpoint, no polling, no notification dispatcher, and the runner never takes up the ledger's
other open entries (a running daemon owns those). The decision is recorded in the ledger as
`exec/<action>/<server>/<UTC time>` under the rule `exec` before anything is called; an exec that
is killed leaves it open, and running the same command again resumes that decision instead of
making a new one, so the snapshot and the action are each asked for once.

Alerts the guard raises are stored with their notifications in the outbox; the running daemon's
dispatcher delivers them (it looks at its queues at least once a minute).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import structlog
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from daemon.actions.runner import EXEC_RULE, Runner
from daemon.actions.server import ActionError, ServerAction, ServerParams
from daemon.client.errors import NotFoundError, ProviderError
from daemon.clock import Clock
from daemon.config import Config
from daemon.errors import ConfigError
from daemon.exitcodes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from daemon.facts import Facts
from daemon.models import Decision, Mode, Outcome
from daemon.notify.alerts import AlertBook
from daemon.notify.senders import build_senders
from daemon.observability.logging import get_logger
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.policies.guard import GuardAlerts, SnapshotGuard, guard_alert_key
from daemon.provider import Wiring, client_settings
from daemon.registry import BUILTIN
from daemon.rules.action import ActionContext
from daemon.rules.compiled import RunOptions
from daemon.rules.loader import load_rules
from daemon.state import SqliteStore
from daemon.state.lock import file_lock
from daemon.state.store import LedgerEntry, LedgerState, StateError, Store

Logger = structlog.typing.FilteringBoundLogger

# Generous: a manual action is watched by a person; the guard adds the snapshot's and the
# check's own time limits to this.
EXEC_TIMEOUT_S = 900.0
EXEC_OPTIONS = RunOptions(concurrency="queued", max_running=1, timeout_s=EXEC_TIMEOUT_S)


# How a parameter is spelled on the command line, for validation errors.
_OPTION_NAMES = {
    "server": "SERVER",
    "provider": "--provider",
    "cores": "--cores",
    "snapshot": "--no-snapshot",
}


def server_action_names() -> list[str]:
    """Return the actions `exec` runs: those about one server."""
    actions = BUILTIN.vocabulary().actions
    return sorted(name for name, model in actions.items() if issubclass(model, ServerParams))


@dataclass(frozen=True, slots=True)
class _Noted:
    """An alert the guard raised or resolved during this exec."""

    key: str
    raised: bool
    detail: str


class _NotingAlerts:
    """The alert book as the guard sees it, noting what it raised so the output can say so."""

    def __init__(self, book: GuardAlerts) -> None:
        self._book = book
        self.noted: list[_Noted] = []

    async def raise_alert(self, decision: Decision) -> Outcome:
        """Raise the alert in the store (queued in the outbox) and note it."""
        resource = decision.event.resource if decision.event is not None else ""
        key = guard_alert_key(resource)
        try:
            outcome = await self._book.raise_alert(decision)
        except Exception:
            # The guard logs the error; the output says that no alert went out.
            if not decision.params.get("to"):
                reason = "the guard section names no `to` route"
            else:
                reason = "see the guard_alert_failed log line"
            self.noted.append(_Noted(key, False, f"no alert raised: {reason}"))
            raise
        self.noted.append(_Noted(key, True, outcome.detail))
        return outcome

    async def resolve_alert(self, key: str) -> bool:
        """Resolve a firing alert (queued in the outbox) and note it."""
        resolved = await self._book.resolve_alert(key)
        if resolved:
            self.noted.append(_Noted(key, False, ""))
        return resolved


async def run_exec(
    config: Config,
    action: str,
    server: str,
    *,
    provider: str | None,
    cores: int | None,
    snapshot_none: bool,
    dry_run: bool,
    clock: Clock,
    out: TextIO,
    err: TextIO,
    log: Logger | None = None,
) -> int:
    """Run one server action through the guard and the ledger; return the exit code."""
    known = server_action_names()
    if action not in known:
        print(
            f"cloudpilot exec: unknown action {action!r}; server actions: {', '.join(known)}",
            file=err,
        )
        return EXIT_USAGE
    raw: dict[str, Any] = {"server": server}
    if provider is not None:
        raw["provider"] = provider
    if cores is not None:
        raw["cores"] = cores
    if snapshot_none:
        raw["snapshot"] = "none"
    model = BUILTIN.vocabulary().actions[action]
    try:
        params = model.model_validate(raw)
    except ValidationError as exc:
        for problem in _problems(exc):
            print(f"cloudpilot exec: {action}: {problem}", file=err)
        return EXIT_USAGE
    assert isinstance(params, ServerParams)
    data = params.model_dump(mode="json", exclude_none=True)
    assert params.provider is not None, "every server action has a provider that offers it"
    if config.model.provider(params.provider) is None:
        print(
            f"cloudpilot exec: {config.path}: {params.provider} is not configured: add a "
            f"[{params.provider}] section",
            file=err,
        )
        return EXIT_CONFIG
    job = _Exec(
        config,
        action,
        server,
        data,
        dry_run=dry_run,
        clock=clock,
        out=out,
        err=err,
        log=log or get_logger(),
    )
    try:
        return await job.run()
    except ConfigError as exc:
        print(f"cloudpilot exec: {exc}", file=err)
        return EXIT_CONFIG
    except StateError as exc:
        print(f"cloudpilot exec: {exc}", file=err)
        return EXIT_FAILURE


def _problems(exc: ValidationError) -> list[str]:
    """Return a validation error as `OPTION: reason` lines, without the input."""
    lines = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "not an option of this action"
        elif error["type"] == "missing":
            message = "required"
        lines.append(f"{_OPTION_NAMES.get(loc, loc)}: {message}" if loc else message)
    return lines


class _Exec:
    """One `cloudpilot exec` run: its parts, its decision and what it prints."""

    def __init__(
        self,
        config: Config,
        action: str,
        server: str,
        params: Mapping[str, Any],
        *,
        dry_run: bool,
        clock: Clock,
        out: TextIO,
        err: TextIO,
        log: Logger,
    ) -> None:
        self.config = config
        self.action = action
        self.server = server
        self.params = dict(params)
        self.dry_run = dry_run
        self.clock = clock
        self.out = out
        self.err = err
        self.log = log
        self.name = f"{action} {server}"

    async def run(self) -> int:
        """Build the parts, carry the decision out (or plan it) and report."""
        metrics = Metrics(CollectorRegistry())
        async with aiohttp.ClientSession(raise_for_status=False) as session:
            senders = build_senders(self.config, session=session, clock=self.clock)
            problems = Problems(metrics=metrics, clock=self.clock)
            wiring = Wiring(
                session=session,
                clock=self.clock,
                log=self.log,
                metrics=metrics,
                problems=problems,
                facts=Facts(),
                settings=client_settings(self.config),
                secret=self.config.secret,
            )
            built = BUILTIN.build(self.config, wiring)
            vocabulary = BUILTIN.vocabulary()
            # Read for the guard section; a broken rule file is a config error, as in the daemon.
            rules = load_rules(self.config.rule_paths, vocabulary)
            store = SqliteStore(self.config.state_path, clock=self.clock)
            await store.open()
            try:
                book = AlertBook(
                    rules=rules,
                    routes={name: sender.destinations for name, sender in senders.items()},
                    store=store,
                    facts=Facts(),
                    metrics=metrics,
                    clock=self.clock,
                    log=self.log,
                )
                unknown = book.unknown_routes(rules)
                if unknown:
                    raise ConfigError("\n".join(unknown))
                registry = BUILTIN.actions(
                    built, session=session, clock=self.clock, log=self.log, alerts=book
                )
                alerts = _NotingAlerts(book)
                guard = SnapshotGuard(
                    backends=built.backends.snapshots,
                    takes_snapshots=vocabulary.takes_snapshots,
                    spec=lambda: rules.guard_in_force,
                    metrics=metrics,
                    alerts=alerts,
                    # Not a rule: the guard section's `to` says where its alerts go.
                    routes=lambda _rule: (),
                )
                runner = Runner(
                    store=store,
                    registry=registry,
                    metrics=metrics,
                    clock=self.clock,
                    log=self.log,
                    # By hand, on purpose: there is no first poll to wait for.
                    sources_ready=lambda _sources: True,
                    options=lambda _rule: EXEC_OPTIONS,
                    guard=guard,
                )
                action = registry.get(self.action)
                assert isinstance(action, ServerAction)
                if self.dry_run:
                    return await self._plan(store, runner, guard, action)
                return await self._carry_out(store, runner, alerts)
            finally:
                await store.close()

    async def _plan(
        self, store: Store, runner: Runner, guard: SnapshotGuard, action: ServerAction
    ) -> int:
        """Read what the run would meet and say what the guard would do; change nothing.

        The provider is read (the server exists, its state, whether the change already holds,
        the size its platform allows), never written. The exit code is the real run's: 1 when
        it would fail or the guard would abort it. The decision is recorded as dry_run.
        """
        decision = self._decision(Mode.DRY_RUN)
        ctx = ActionContext(decision, self.clock, self.log, EXEC_TIMEOUT_S)
        try:
            found = await action.preflight(ctx)
        except NotFoundError as exc:
            self._fail(f"{self.name}: dry run: would fail: no such server ({exc})")
            return EXIT_FAILURE
        except (ActionError, ProviderError) as exc:
            self._fail(f"{self.name}: dry run: would fail: {exc}")
            return EXIT_FAILURE
        open_entry = await self._open_entry(store)
        await self._record(store, decision)
        runner.submit([decision])
        if open_entry is not None:
            self._say(f"{self.name}: an unfinished exec {self._since(open_entry)} would be resumed")
        self._say(f"{self.name}: dry run: {found}")
        if found.endswith("nothing to do"):
            self._say(f"{self.name}: dry run: no snapshot either; nothing was done")
            return EXIT_OK
        plan = guard.plan(action, self.params.get("snapshot"), self.params["provider"])
        if plan.startswith("abort:"):
            self._fail(
                f"{self.name}: dry run: would {plan} (pass --no-snapshot to act without one)"
            )
            return EXIT_FAILURE
        self._say(f"{self.name}: dry run: {plan}; nothing was done")
        return EXIT_OK

    async def _carry_out(self, store: Store, runner: Runner, alerts: _NotingAlerts) -> int:
        """Hold the server's lock, run (or resume) the decision, and report how it ended."""
        with _target_lock(self.config.state_path, self.params["provider"], self.server) as pid:
            if pid is not None:
                self._fail(
                    f"{self.name}: another cloudpilot exec (pid {pid}) is working on "
                    f"{self.server}; wait for it to end"
                )
                return EXIT_FAILURE
            decision = await self._decide(store)
            if decision is None:
                return EXIT_FAILURE
            runner.submit([decision])
            await runner.wait_idle()
            entry = await store.get_entry(decision.key)
        return self._report(entry, alerts.noted)

    # --- the decision ----------------------------------------------------------------------------

    def _decision(self, mode: Mode) -> Decision:
        now = self.clock.now()
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return Decision(
            key=f"{EXEC_RULE}/{self.action}/{self.server}/{stamp}",
            rule=EXEC_RULE,
            action=self.action,
            params=self.params,
            mode=mode,
            event=None,
            time=now,
        )

    async def _open_entry(self, store: Store) -> LedgerEntry | None:
        """Return the oldest open exec entry for this action and server, if one was left."""
        for entry in await store.open_entries():
            decision = entry.decision
            if (
                decision.rule == EXEC_RULE
                and decision.action == self.action
                and decision.params.get("server") == self.server
                and decision.params.get("provider") == self.params["provider"]
            ):
                return entry
        return None

    async def _decide(self, store: Store) -> Decision | None:
        """Return the decision to carry out: an earlier exec's left open, or a new recorded one."""
        entry = await self._open_entry(store)
        if entry is not None:
            if dict(entry.decision.params) != self.params:
                self._fail(
                    f"{self.name}: an unfinished exec {self._since(entry)} has other "
                    f"options ({_options(entry.decision.params)}); run it again with those "
                    "to finish it first"
                )
                return None
            self._say(f"{self.name}: resuming the unfinished exec {self._since(entry)}")
            return entry.decision
        decision = self._decision(Mode.ENFORCE)
        if not await self._record(store, decision):
            self._fail(f"{self.name}: ledger key {decision.key} is taken; try again")
            return None
        return decision

    @staticmethod
    async def _record(store: Store, decision: Decision) -> bool:
        async with store.batch() as batch:
            return bool(await batch.record_decisions([decision]))

    @staticmethod
    def _since(entry: LedgerEntry) -> str:
        attempts = f", {entry.attempts} attempt{'s' if entry.attempts != 1 else ''}"
        stamp = entry.decision.time.strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"from {stamp} ({entry.state.value}{attempts if entry.attempts else ''})"

    # --- output ----------------------------------------------------------------------------------

    def _report(self, entry: LedgerEntry | None, noted: list[_Noted]) -> int:
        if entry is None or entry.state.is_open:
            state = entry.state.value if entry is not None else "missing"
            self._fail(
                f"{self.name}: did not finish (ledger entry {state}); run the same command "
                "again to resume it"
            )
            return EXIT_FAILURE
        done = entry.state is LedgerState.DONE
        detail = entry.detail
        if (
            entry.state is LedgerState.ABORTED
            and not BUILTIN.vocabulary().takes_snapshots(self.params["provider"])
            and "snapshot" not in self.params
        ):
            detail += " (pass --no-snapshot to act without one)"
        stream = self.out if done else self.err
        for alert in noted:
            print(f"{self.name}: {_alert_line(alert)}", file=stream)
        print(f"{self.name}: {entry.state.value}: {detail}", file=stream)
        return EXIT_OK if done else EXIT_FAILURE

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _fail(self, line: str) -> None:
        print(line, file=self.err, flush=True)


def _alert_line(alert: _Noted) -> str:
    if alert.detail.startswith("no alert raised"):
        return f"{alert.detail} ({alert.key})"
    if not alert.raised:
        return (
            f"alert {alert.key} resolved; the resolve notification waits in the outbox for the "
            "running daemon to deliver"
        )
    if alert.detail.startswith("queued for no route"):
        return f"alert {alert.key} raised; no route to send it to (set the guard section's `to`)"
    if alert.detail.startswith("queued for"):
        return (
            f"alert {alert.key} raised and {alert.detail}; the notification waits in the "
            "outbox for the running daemon to deliver"
        )
    return f"alert {alert.key}: {alert.detail}"


def _options(params: Mapping[str, Any]) -> str:
    """Return the command-line options that give these parameters."""
    words = [f"--provider {params['provider']}"] if "provider" in params else []
    if "cores" in params:
        words.append(f"--cores {params['cores']}")
    if params.get("snapshot") == "none":
        words.append("--no-snapshot")
    return " ".join(words)


def _target_lock(
    state_path: Path, provider: str, server: str
) -> contextlib.AbstractContextManager[int | None]:
    """Hold a lock on one server for this process; yield None, or the pid holding it already.

    A lock file beside the state database: the kernel releases it when the process ends, however
    it ends, so a killed exec never leaves a server locked.
    """
    digest = hashlib.sha256(f"{provider}/{server}".encode()).hexdigest()[:16]
    return file_lock(state_path.with_name(f"{state_path.name}.exec-{digest}.lock"))
