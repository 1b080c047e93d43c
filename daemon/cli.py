"""The `cloudpilot` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon import __version__
from daemon.config import DEFAULT_CONFIG_PATH
from daemon.exitcodes import EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


def _listen(text: str) -> str:
    """Check a --listen value as argparse reads options: a bad one is a usage error (2)."""
    from daemon.net import Listen

    try:
        Listen.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudpilot",
        description="Cloud automation: autoscale, snapshot guard, alerts, budgets.",
    )
    parser.add_argument("--version", action="version", version=f"cloudpilot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = commands.add_parser("simulator", help="run the embedded simulator of the providers' APIs")
    sim.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (port 0: any free)")
    sim.add_argument(
        "--scenario", type=Path, help="a scenario file, or a shipped one by name (e.g. cpu-surge)"
    )
    sim.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    sim.add_argument("--token", default=None, help="the API token and key to accept")
    sim.add_argument("--metrics-step", default=None, help="metrics sample interval, e.g. 5m or 2s")
    sim.add_argument("--config-out", type=Path, help="write a cloudpilot.toml pointing here")
    sim.add_argument("--list-scenarios", action="store_true", help="list shipped scenarios")

    run = commands.add_parser("run", help="run the daemon (systemd Type=notify)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="the TOML config")
    run.add_argument(
        "--listen",
        type=_listen,
        help="HOST:PORT for /metrics, /healthz, /readyz and /status (overrides [http])",
    )

    check = commands.add_parser("check", help="validate the config and rule files; exit 0 or 1")
    check.add_argument(
        "--config", type=Path, help=f"the TOML config (default {DEFAULT_CONFIG_PATH})"
    )
    check.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="rule files or folders")

    exe = commands.add_parser(
        "exec", help="run one server action now, through the snapshot guard and the ledger"
    )
    exe.add_argument("action", metavar="ACTION", help="power_off, power_on, set_cores or snapshot")
    exe.add_argument("server", metavar="SERVER", help="a server name or id its provider knows")
    exe.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="the TOML config")
    exe.add_argument(
        "--provider", help="the server's provider; default: the first that offers the action"
    )
    exe.add_argument("--cores", type=int, help="the cores to run with (set_cores)")
    exe.add_argument(
        "--no-snapshot",
        action="store_true",
        help="act without the guard's snapshot (required where the provider takes none)",
    )
    exe.add_argument(
        "--dry-run", action="store_true", help="say what would be done, record it, call nothing"
    )

    plan = commands.add_parser(
        "plan",
        help="read the cloud once and print what autoscale and budgets would do; change nothing",
    )
    plan.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="the TOML config")

    approve = commands.add_parser(
        "approve", help="list the budget actions waiting for approval, or approve one"
    )
    approve.add_argument(
        "id", nargs="?", metavar="ID", help="the request to decide (at least 4 of its hex digits)"
    )
    approve.add_argument("--reject", action="store_true", help="reject the request instead")
    approve.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="the TOML config")

    commands.add_parser("schema", help="print the JSON Schema of rule files")
    demo = commands.add_parser(
        "demo", help="the daemon and the shipped rules against the simulator, narrated"
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=None,
        help="simulated seconds per real second (default 120: two hours in about a minute)",
    )
    demo.add_argument(
        "--state-dir", type=Path, default=None, help="where to keep the state and logs (kept)"
    )
    demo.add_argument("--rules", type=Path, default=None, help="rule files to run instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "simulator":
        return _simulator(args)
    if args.command == "run":
        return _run(args)
    if args.command == "check":
        return _check(args)
    if args.command == "exec":
        return _exec(args)
    if args.command == "plan":
        return _plan(args)
    if args.command == "approve":
        return _approve(args)
    if args.command == "schema":
        return _schema()
    if args.command == "demo":
        return _demo(args)
    return EXIT_USAGE


def _demo(args: argparse.Namespace) -> int:
    from daemon.demo import DEFAULT_SPEED, run_demo

    speed = DEFAULT_SPEED if args.speed is None else args.speed
    if speed <= 0:
        print("cloudpilot demo: --speed must be more than 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run_demo(speed=speed, workdir=args.state_dir, rules=args.rules))
    except KeyboardInterrupt:
        print("\nDemo interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _simulator(args: argparse.Namespace) -> int:
    from daemon.durations import parse_duration
    from daemon.simulator.http import Credentials, Simulation
    from daemon.simulator.scenario import ScenarioError, load_scenario_file, shipped_scenarios
    from daemon.simulator.serve import Listen, serve_forever

    if args.list_scenarios:
        print("\n".join(shipped_scenarios()))
        return EXIT_OK
    try:
        listen = Listen.parse(args.listen)
        step = parse_duration(args.metrics_step) if args.metrics_step else None
        if step is not None and step <= 0:
            raise ValueError("--metrics-step must be positive")
        if args.speed < 0:
            raise ValueError("--speed must be 0 or more")
    except ValueError as exc:
        print(f"cloudpilot simulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        scenario = load_scenario_file(args.scenario or Path("default"))
        credentials = Credentials()
        if args.token:
            credentials.api_token = args.token
        sim = Simulation(scenario, speed=args.speed, metrics_step_s=step, credentials=credentials)
    except ScenarioError as exc:
        print(f"cloudpilot simulator: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        asyncio.run(serve_forever(sim, listen, args.config_out))
    except OSError as exc:
        print(
            f"cloudpilot simulator: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_FAILURE
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from daemon.app import run
    from daemon.clock import SystemClock
    from daemon.errors import ConfigError
    from daemon.net import Listen
    from daemon.observability.logging import configure_logging
    from daemon.registry import load_config
    from daemon.state import StateError

    configure_logging()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cloudpilot run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    listen = Listen.parse(args.listen) if args.listen else None
    try:
        return asyncio.run(run(config, clock=SystemClock(), listen=listen))
    except ConfigError as exc:
        print(f"cloudpilot run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StateError as exc:
        print(f"cloudpilot run: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"cloudpilot run: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE


def _plan(args: argparse.Namespace) -> int:
    from daemon.client.errors import ProviderError
    from daemon.clock import SystemClock
    from daemon.errors import ConfigError
    from daemon.observability.logging import configure_logging
    from daemon.plan import run_plan
    from daemon.registry import load_config

    configure_logging(stream=sys.stderr, level="warning")
    try:
        config = load_config(args.config)
        return asyncio.run(run_plan(config, clock=SystemClock(), out=sys.stdout))
    except ConfigError as exc:
        print(f"cloudpilot plan: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ProviderError as exc:
        print(f"cloudpilot plan: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _exec(args: argparse.Namespace) -> int:
    from daemon.clock import SystemClock
    from daemon.errors import ConfigError
    from daemon.exec import run_exec, server_action_names
    from daemon.observability.logging import configure_logging
    from daemon.registry import load_config

    known = server_action_names()
    if args.action not in known:
        print(
            f"cloudpilot exec: unknown action {args.action!r}; server actions: {', '.join(known)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    configure_logging(stream=sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cloudpilot exec: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(
            run_exec(
                config,
                args.action,
                args.server,
                provider=args.provider,
                cores=args.cores,
                snapshot_none=args.no_snapshot,
                dry_run=args.dry_run,
                clock=SystemClock(),
                out=sys.stdout,
                err=sys.stderr,
            )
        )
    except KeyboardInterrupt:
        print(
            f"cloudpilot exec: interrupted; run the same command again to resume "
            f"{args.action} {args.server}",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:
        print(f"cloudpilot exec: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE


def _approve(args: argparse.Namespace) -> int:
    from daemon.approve import run_approve, usage_problem
    from daemon.clock import SystemClock
    from daemon.errors import ConfigError
    from daemon.observability.logging import configure_logging
    from daemon.registry import load_config

    problem = usage_problem(args.id, reject=args.reject)
    if problem is not None:
        print(f"cloudpilot approve: {problem}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(stream=sys.stderr, level="warning")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cloudpilot approve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(
            run_approve(
                config,
                args.id,
                reject=args.reject,
                clock=SystemClock(),
                out=sys.stdout,
                err=sys.stderr,
            )
        )
    except OSError as exc:
        print(f"cloudpilot approve: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE


def _check(args: argparse.Namespace) -> int:
    from daemon.errors import ConfigError
    from daemon.notify.alerts import unknown_routes
    from daemon.registry import load_config, vocabulary
    from daemon.rules.loader import RuleError, load_rules

    lines: list[str] = []
    paths: list[Path] = list(args.paths)
    routes: list[str] | None = None
    if args.config is not None or not paths:
        try:
            config = load_config(args.config or DEFAULT_CONFIG_PATH)
        except ConfigError as exc:
            lines.append(str(exc))
        else:
            paths = paths or list(config.rule_paths)
            routes = list(config.model.notifiers)
    if paths:
        try:
            rules = load_rules(paths, vocabulary())
        except RuleError as exc:
            lines.extend(str(problem) for problem in exc.problems)
        else:
            # Alert routes are checked against a config when there is one to check against.
            if routes is not None:
                lines.extend(unknown_routes(rules, routes))
            if not lines:
                print(f"ok: {len(rules)} rules in {len(rules.files)} files")
    for line in lines:
        print(line)
    return EXIT_FAILURE if lines else EXIT_OK


def _schema() -> int:
    import json

    from daemon.registry import vocabulary
    from daemon.rules.loader import rule_file_schema

    print(json.dumps(rule_file_schema(vocabulary()), indent=2))
    return EXIT_OK
