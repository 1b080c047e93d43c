"""`cloudpilot demo`: the daemon with the shipped rules against the simulated cloud, narrated.

The simulator serves the `demo` scenario on a free loopback port; the daemon runs in process with
the shipped rule files, a webhook receiver standing in for on-call's pager, and a clock linked to
the simulator's. Each step moves simulated time one minute on, polls every source once, lets
actions finish and notifications go out, then tells what happened, one line per event, as seen
from outside: what the receiver got, what the ledger holds, what the provider was asked. Real
time only paces the story (`speed` simulated seconds per real second).
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

import daemon
from daemon.actions.runner import EXEC_RULE
from daemon.app import Daemon
from daemon.errors import ConfigError
from daemon.exec import run_exec
from daemon.exitcodes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from daemon.net import Listen
from daemon.observability.logging import configure_logging
from daemon.registry import load_config
from daemon.rules.compiled import RuleSet
from daemon.simulator.http import Simulation
from daemon.simulator.linked import LinkedClock
from daemon.simulator.scenario import load_shipped_scenario
from daemon.simulator.serve import start, write_config
from daemon.state.store import LedgerEntry, LedgerState

STEP_S = 60.0
DURATION_S = 2 * 3600.0
DEFAULT_SPEED = 120.0  # two simulated hours in about a minute
# When the operator runs a risky action by hand, in simulated seconds after the start.
EXEC_AT_S = 100 * 60.0
EXEC_SERVER = "ec200005"
ROUTES = ("oncall", "security")

Write = Callable[[str], object]


def say_now(line: str) -> None:
    """Print a line at once, also into a pipe."""
    print(line, flush=True)


def shipped_rules() -> Path | None:
    """Return the folder of shipped rule files: a source checkout's, else the installed copy."""
    for folder in (
        Path(daemon.__file__).resolve().parent.parent / "rules",
        Path(sys.prefix) / "share" / "cloudpilot" / "rules",
    ):
        if folder.is_dir():
            return folder
    return None


@dataclass
class Receiver:
    """A webhook endpoint per route that keeps what it is sent: on-call's pager, for the demo."""

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        """Keep one notification."""
        self.received.append((request.match_info["route"], await request.json()))
        return web.Response(status=204)

    async def start(self) -> tuple[web.AppRunner, str]:
        """Listen on a free loopback port; return the runner and the base URL."""
        app = web.Application()
        app.router.add_post("/{route}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return runner, f"http://127.0.0.1:{port}"


@dataclass
class Tally:
    """What each policy did, for the closing table."""

    fired: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)
    warnings: int = 0
    recommendations: list[str] = field(default_factory=list)
    cores: dict[str, list[int]] = field(default_factory=dict)
    snapshots: int = 0
    guarded: list[str] = field(default_factory=list)
    dry_runs: list[str] = field(default_factory=list)
    would_deny: int = 0


class Story:
    """Turn what changed since the last step into one line per event."""

    def __init__(self, write: Write, daemon_: Daemon, sim: Simulation, receiver: Receiver) -> None:
        self._write = write
        self._daemon = daemon_
        self._sim = sim
        self._receiver = receiver
        self._heard = 0
        self._requests = 0
        self._ledger: dict[str, LedgerState] = {}
        self._steps: set[tuple[str, str]] = set()
        self._denied = 0.0
        self.tally = Tally()

    def say(self, who: str, text: str, at: datetime | None = None) -> None:
        """Print one line: the simulated time, who acted, and what happened."""
        when = (at or self._daemon.clock.now()).strftime("%H:%M")
        self._write(f"{when}  {who:<9}  {text}")

    async def catch_up(self) -> None:
        """Tell everything that happened since the last call, in a fixed order."""
        self._notifications()
        self._budget_steps()
        await self._ledger_changes()
        self._denials()

    def _kind(self, rule: str) -> str:
        rules: RuleSet = self._daemon.engine.rules
        if any(r.name == rule for r in rules.autoscale):
            return "autoscale"
        if any(r.name == rule for r in rules.budgets):
            return "budget"
        if rule == EXEC_RULE or rule.startswith("cloudpilot-guard"):
            return "guard"
        return "alert"

    def _notifications(self) -> None:
        for route, body in self._receiver.received[self._heard :]:
            alert = body["alert"]
            kind = self._kind(alert["rule"])
            summary = alert["summary"]
            if body["status"] == "resolved":
                if kind == "alert":
                    self.tally.resolved[alert["rule"]] += 1
                    self.say(kind, f"resolved on {route}: {summary}")
                else:
                    self.say(kind, f"no longer needed, resolved on {route}: {summary}")
                continue
            if kind == "budget":
                self.tally.warnings += 1
            elif kind == "autoscale":
                self.tally.recommendations.append(summary)
            else:
                self.tally.fired[alert["rule"]] += 1
            self.say(kind, f"{alert['severity']} alert to {route}: {summary}")
        self._heard = len(self._receiver.received)

    def _budget_steps(self) -> None:
        for name, view in self._daemon.budgets.views.items():
            for step in view.steps:
                label = step.step.label
                if not step.in_force or (name, label) in self._steps:
                    continue
                self._steps.add((name, label))
                mode = step.step.mode.value.replace("_", " ")
                kind = label.split(":", 1)[-1]
                note = step.note.removeprefix("dry run: ")
                self.say(
                    "budget",
                    f"{name} passed {step.step.at:g}%: step {kind} is in force, in {mode}"
                    + (f" ({note})" if note else ""),
                )

    async def _ledger_changes(self) -> None:
        for entry in reversed(await self._daemon.store.ledger(limit=500)):
            if entry.decision.action in ("alert", "log"):
                continue
            if self._ledger.get(entry.key) == entry.state or entry.state.is_open:
                continue
            self._ledger[entry.key] = entry.state
            self._tell_entry(entry)

    def _tell_entry(self, entry: LedgerEntry) -> None:
        decision = entry.decision
        data = decision.event.data if decision.event is not None else {}
        target = str(decision.params.get("server") or decision.params.get("name") or "")
        kind = self._kind(decision.rule)
        if entry.state is LedgerState.DRY_RUN:
            about = str(data.get("about") or f"{decision.action} {target}")
            self.tally.dry_runs.append(about)
            self.say(kind, f"dry run: {decision.rule} would {about}; nothing was done")
        elif decision.action == "set_cores" and entry.state is LedgerState.DONE:
            before, after = int(data.get("current_cores", 0)), int(decision.params["cores"])
            self.tally.cores.setdefault(target, [before]).append(after)
            self.say(kind, f"{target}: {before} → {after} cores, {data.get('reason', '')}")
        else:
            self.say(kind, f"{decision.action} {target} {entry.state.value}: {entry.detail}")

    def _denials(self) -> None:
        total = 0.0
        for family in self._daemon.metrics.registry.collect():
            if family.name == "cloudpilot_budget_enforcements":
                total += sum(
                    sample.value
                    for sample in family.samples
                    if sample.name.endswith("_total") and sample.labels["outcome"] == "would_deny"
                )
        if total > self._denied:
            self.tally.would_deny += round(total - self._denied)
            self.say("budget", "enforced, the budget would have refused that scale-up")
        self._denied = total

    def provider_changes(self) -> list[tuple[datetime, str]]:
        """Return the provider requests that changed something since the last call."""
        log = list(self._sim.requests)[self._requests :]
        self._requests += len(log)
        return [
            (datetime.fromisoformat(r["t"]), f"{r['method']} {r['path']}")
            for r in log
            if r["method"] in ("POST", "PUT", "DELETE", "PATCH") and "login" not in r["path"]
        ]


async def run_demo(
    write: Write = say_now,
    *,
    speed: float = DEFAULT_SPEED,
    workdir: Path | None = None,
    rules: Path | None = None,
) -> int:
    """Run the narrated demo; return 0 when it ends by itself and 130 when interrupted."""
    rules = rules or shipped_rules()
    if rules is None:
        write("cloudpilot demo: cannot find the shipped rules/ folder; pass --rules DIR")
        return EXIT_USAGE
    workdir = workdir or Path(tempfile.mkdtemp(prefix="cloudpilot-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sim = Simulation(load_shipped_scenario("demo"), speed=0)
    receiver = Receiver()
    sim_runner, sim_url = await start(sim, Listen("127.0.0.1", 0))
    hook_runner, hook_url = await receiver.start()
    log_file = (workdir / "cloudpilot.log").open("a", encoding="utf-8")
    configure_logging(stream=log_file, json=True)
    try:
        config_path = workdir / "cloudpilot.toml"
        write_config(
            config_path,
            sim_url,
            sim.credentials,
            rules=rules,
            http_listen="127.0.0.1:0",
            webhooks={route: f"{hook_url}/{route}" for route in ROUTES},
            # What the GPU classes cost, as a team would write it for its budget's estimate.
            gpu_prices=sim.world.pricing.gpu_prices,
        )
        clock = LinkedClock(sim)
        the_daemon = Daemon(load_config(config_path), clock=clock, registry=CollectorRegistry())
        async with the_daemon:
            story = Story(write, the_daemon, sim, receiver)
            _opening(write, sim, the_daemon, rules, speed)
            await _run(story, the_daemon, clock, config_path, speed)
            _ending(write, story, the_daemon, workdir)
    except ConfigError as exc:
        write(f"cloudpilot demo: {exc}")
        return EXIT_CONFIG
    except (KeyboardInterrupt, asyncio.CancelledError):
        write("\nDemo interrupted; everything it started is stopped.")
        return EXIT_INTERRUPTED
    finally:
        await hook_runner.cleanup()
        await sim_runner.cleanup()
        log_file.close()
    return EXIT_OK


async def _run(
    story: Story, the_daemon: Daemon, clock: LinkedClock, config_path: Path, speed: float
) -> None:
    began = clock.now()
    real_start = time.monotonic()
    exec_done = False
    while (clock.now() - began).total_seconds() < DURATION_S:
        await _poll(the_daemon)
        await story.catch_up()
        if not exec_done and (clock.now() - began).total_seconds() >= EXEC_AT_S:
            exec_done = True
            await _risky_by_hand(story, the_daemon, clock, config_path)
        clock.advance(STEP_S)
        elapsed = (clock.now() - began).total_seconds()
        ahead = elapsed / speed - (time.monotonic() - real_start)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await _poll(the_daemon)
    await story.catch_up()


async def _poll(the_daemon: Daemon) -> None:
    """Do one step's work now, as the daemon's timers would: poll, act, expire, notify."""
    await the_daemon.poll_once()
    await the_daemon.runner.wait_idle()
    # The daemon checks expiries once a real minute; the demo's minutes are shorter.
    await the_daemon.alerts.expire()
    for route in ROUTES:
        await the_daemon.dispatcher.pump(route)


async def _risky_by_hand(
    story: Story, the_daemon: Daemon, clock: LinkedClock, config_path: Path
) -> None:
    """Power a server off by hand, as on-call would: the guard snapshots it first."""
    story.say(
        "guard", f"on-call runs `cloudpilot exec power_off {EXEC_SERVER}`; power_off is risky"
    )
    story.provider_changes()
    out = io.StringIO()
    code = await run_exec(
        load_config(config_path),
        "power_off",
        EXEC_SERVER,
        provider=None,
        cores=None,
        snapshot_none=False,
        dry_run=False,
        clock=clock,
        out=out,
        err=out,
    )
    for at, request in story.provider_changes():
        if request.endswith("/snapshots"):
            story.tally.snapshots += 1
            story.say("guard", f"first a snapshot: {request}", at)
        else:
            story.say("guard", f"then, the snapshot completed: {request}", at)
    if code == 0:
        story.tally.guarded.append(f"power_off {EXEC_SERVER}")
    else:
        story.say("guard", f"exec ended with code {code}: {out.getvalue().strip()}")
    await _poll(the_daemon)
    await story.catch_up()


def _opening(write: Write, sim: Simulation, the_daemon: Daemon, rules: Path, speed: float) -> None:
    start_at: datetime = sim.world.now
    write("Cloudpilot demo: the daemon, with the shipped rules, against a simulated cloud account.")
    write(f"  rules      {rules}")
    write("  cloud      the simulated providers' APIs (scenario demo)")
    write(f"  on-call    a webhook receiver stands in for the pager (routes {', '.join(ROUTES)})")
    write(
        f"  time       {start_at:%a %d %b %H:%M} UTC, {DURATION_S / 3600:g} hours, "
        f"{speed:g} simulated seconds per real second"
    )
    write(f"  metrics    http://127.0.0.1:{the_daemon.http_port}/metrics while it runs")
    write("")


def _ending(write: Write, story: Story, the_daemon: Daemon, workdir: Path) -> None:
    tally = story.tally
    resizes = [
        f"{server}: {' → '.join(map(str, cores))} cores ({len(cores) - 1} resizes in place)"
        for server, cores in tally.cores.items()
    ]
    budget = [f"{tally.warnings} warning(s)"]
    for name, view in the_daemon.budgets.views.items():
        if view.spend is not None:
            budget.append(
                f"{name} at {view.spend.estimated:,.0f} of {view.cap:,.0f} EUR "
                f"({view.spend.percent(view.cap):.0f}%)"
            )
    budget += [f"dry run: would refuse {tally.would_deny} scale-up(s)"]
    budget += [f"dry run: would {about}" for about in tally.dry_runs]
    rows = [
        (
            "alerts",
            [
                f"{rule}: {count} fired, {tally.resolved[rule]} resolved"
                for rule, count in tally.fired.items()
            ],
        ),
        ("autoscale", resizes + [f"recommended: {r}" for r in tally.recommendations]),
        ("guard", [f"{tally.snapshots} snapshot(s) before: " + ", ".join(tally.guarded)]),
        ("budget", budget),
    ]
    width = max(len(name) for name, _ in rows)
    write("")
    write(f"{'policy':<{width}}  what it did")
    write(f"{'-' * width}  {'-' * 60}")
    for name, lines in rows:
        for index, line in enumerate(lines or ["nothing"]):
            write(f"{name if index == 0 else '':<{width}}  {line}")
    write("")
    write(
        f"/metrics  was served at http://127.0.0.1:{the_daemon.http_port}/metrics during the demo;"
    )
    write("          `cloudpilot run` serves it where [http] listen says (127.0.0.1:9464).")
    write(f"state     {workdir / 'state.db'} (SQLite: ledger, alerts, outbox, budgets)")
    write(f"logs      {workdir / 'cloudpilot.log'} (JSON lines)")
    write(f"config    {workdir / 'cloudpilot.toml'}")
    write("Demo finished.")
