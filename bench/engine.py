"""Events per second through dedup → engine.plan → apply, with rules mixing `match` and `when`.

The events are synthetic Seeweb action records (1% failures), fed in batches of 500 as a poll
would deliver them, with `now` advancing. The rules are loaded from YAML through the real loader.

    .venv/bin/python -m bench.engine [--events 200000] [--rules 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.engine import Engine
from daemon.facts import Facts
from daemon.models import Event
from daemon.registry import BUILTIN
from daemon.rules.action import ActionParams
from daemon.rules.loader import load_rules
from daemon.rules.vocabulary import Vocabulary


class LogParams(ActionParams):
    message: str


BATCH = 500
START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
ACTION_TYPES = (
    "power_on",
    "power_off",
    "reboot",
    "create_snapshot",
    "delete_snapshot",
    "rollback",
    "delete_server",
    "set_plan",
)
USERS = ("alice", "bob", "carol", "ci-bot", "ops-anna", "ops-marco", "root", "svc-backup")
ON = (
    "seeweb.action.failed",
    "seeweb.action.completed",
    "seeweb.action.started",
    "seeweb.action.stuck",
    "seeweb.action.*",
    "seeweb.action.failed",
    "seeweb.action.completed",
    "seeweb.action.started",
    "seeweb.action.stuck",
    "seeweb.action.s*",
)
MATCHES = (
    "{data.type: [delete_server, rollback]}",
    "{data.user: {glob: 'ops-*'}, data.type: power_off}",
    "{resource: 'ec20000*', data.resource_type: ECS}",
    "{data.status: {in: [failed, error]}}",
    "{data.type: reboot, data.progress: {lt: 10}}",
)
WHENS = (
    'event.data.user != "ci-bot" && event.data.type == "power_off"',
    'event.data.type in ["delete_server", "rollback"]',
    'event.data.progress >= 95 && event.resource.startsWith("ec2001")',
    'event.data.status == "failed" || event.data.user == "root"',
    'event.data.user.startsWith("ops-") && event.data.type == "reboot"',
)


def rules_yaml(count: int) -> str:
    """Return a rule file with `count` rules: match only, when only, or both, about half each."""
    lines = ["rules:"]
    for i in range(count):
        kind = i % 4  # 0, 3: match only; 1: when only; 2: both
        lines += [f"  - name: bench-{i:03d}", f"    on: {ON[i % len(ON)]!r}"]
        if kind in (0, 2, 3):
            lines.append(f"    match: {MATCHES[(i // len(ON)) % len(MATCHES)]}")
        if kind in (1, 2):
            lines.append(f"    when: {WHENS[(i // len(ON) + i) % len(WHENS)]!r}")
        if "failed" not in ON[i % len(ON)]:
            # As users write them: every failure counts, anything else at most once in a while.
            lines.append("    throttle: {once_within: 10m, group_by: [resource, data.type]}")
        lines += ["    do:", f"      - log: {{message: 'rule {i} matched'}}"]
    return "\n".join(lines) + "\n"


def action_events(count: int) -> list[Event]:
    """Return `count` action events 10 ms apart; every 100th is a failure."""
    events = []
    for i in range(count):
        if i % 100 == 7:
            kind, status = "failed", "failed"
        elif i % 2:
            kind, status = "completed", "completed"
        else:
            kind, status = "started", "in-progress"
        moment = START + timedelta(milliseconds=10 * i)
        resource = f"ec2{i % 1000:05d}"
        stamp = moment.isoformat()
        events.append(
            Event(
                type=f"seeweb.action.{kind}",
                key=f"seeweb.action:{100000 + i}:{kind}",
                time=moment,
                resource=resource,
                data={
                    "id": 100000 + i,
                    "type": ACTION_TYPES[i % len(ACTION_TYPES)],
                    "status": status,
                    "user": USERS[(i // 3) % len(USERS)],
                    "resource": resource,
                    "resource_type": "ECS",
                    "created_at": stamp,
                    "started_at": stamp,
                    "completed_at": stamp if status != "in-progress" else None,
                    "progress": 100 if status != "in-progress" else (i * 7) % 100,
                },
                source="actions",
            )
        )
    return events


def run(events: Sequence[Event], engine: Engine) -> tuple[float, int]:
    """Push the events through the pipeline in batches; return seconds taken and decisions."""
    seen: set[str] = set()
    facts = Facts()
    decisions = 0
    started = time.perf_counter()
    for offset in range(0, len(events), BATCH):
        batch = events[offset : offset + BATCH]
        fresh = [event for event in batch if event.key not in seen]
        seen.update(event.key for event in fresh)
        now = batch[-1].time + timedelta(seconds=1)
        evaluation = engine.plan(fresh, facts, now)
        engine.apply(evaluation)
        decisions += len(evaluation.decisions)
    return time.perf_counter() - started, decisions


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rules", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.yaml"
        path.write_text(rules_yaml(args.rules))
        loading = time.perf_counter()
        rules = load_rules([path], Vocabulary({"log": LogParams}, BUILTIN.traits))
        load_seconds = time.perf_counter() - loading
    events = action_events(args.events)
    engine = Engine(rules, stale_after=3600)
    seconds, decisions = run(events, engine)
    print(f"engine_eps={args.events / seconds:.0f} rules={args.rules} events={args.events}")
    print(f"engine_decisions={decisions}")
    print(f"engine_seconds={seconds:.3f}")
    print(f"engine_rules_load_ms={load_seconds * 1000:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
