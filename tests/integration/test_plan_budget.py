"""`cloudpilot plan` on budgets: the simulator's budget-overrun scenario, read once, changed never.

The scenario starts on 2026-11-10 with about 430 EUR spent against a 500 EUR cap and bills 6
hours late; 40 hours on, month-to-date spend is about 109% of the cap.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from alert_receivers import HttpReceiver, hook_fixture  # noqa: F401
from conftest import SimFactory, SimHandle, linked_daemon
from prometheus_client import CollectorRegistry

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.config import Config
from daemon.exitcodes import EXIT_FAILURE, EXIT_OK
from daemon.plan import run_plan
from daemon.registry import load_config
from daemon.state import SqliteStore

HOUR = 3600.0
EXPENDABLE = {"ec600003", "ec600004"}
RULES = """\
rules:
  - name: overrun
    budget:
      scope: {{account: true}}
      cap: 500
      warn_at: [50, 80, 100]
      to: [hook]
      enforce:
        - {{at: 100, block_scale_up: true}}
        - {{at: 105, power_off: {{servers: {{notes: "*expendable*"}}}}, mode: {mode}}}
"""


async def overrun(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver, *, mode: str
) -> tuple[SimHandle, Config, FakeClock]:
    """Start the scenario, write a config for it, and move 40 hours on."""
    sim = await simulator("budget-overrun")
    daemon = linked_daemon(
        sim, tmp_path, RULES.format(mode=mode), k8sgpu=True, hook_url=hook.url("/hook")
    )
    clock = daemon.clock
    assert isinstance(clock, FakeClock)
    clock.advance(40 * HOUR)
    return sim, load_config(tmp_path / "cloudpilot.toml"), clock


async def plan(config: Config, clock: FakeClock) -> tuple[int, str]:
    out = io.StringIO()
    code = await run_plan(config, clock=clock, out=out)
    return code, out.getvalue()


def mutations(requests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return the provider requests that could change something, logins aside."""
    return [
        (r["method"], r["path"])
        for r in requests
        if r["method"] in ("POST", "PUT", "PATCH", "DELETE") and not r["path"].endswith("/login/")
    ]


def step_line(output: str, label: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(f"  step {label} ")]
    return line


async def test_plan_names_the_servers_an_enforcing_step_would_power_off_and_touches_none(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim, config, clock = await overrun(simulator, tmp_path, hook, mode="enforce")

    code, output = await plan(config, clock)

    assert code == EXIT_OK
    head = next(line for line in output.splitlines() if line.startswith("budget overrun "))
    percent = re.search(r"spent of 500 \((\d+)%\)", head)
    assert percent is not None and int(percent.group(1)) >= 105, head
    power_off = step_line(output, "1:power_off")
    assert "[enforce]" in power_off and ": in force: " in power_off
    assert set(re.findall(r"ec\d{6}", power_off)) == EXPENDABLE
    assert set(re.findall(r"ec\d{6}", output)) == EXPENDABLE
    assert "budget_would_deny" in step_line(output, "0:block_scale_up")
    assert mutations(await sim.requests()) == []
    _, world = await sim.call("GET", "/_sim/world")
    assert {s["name"] for s in world["servers"] if s["status"] != "RUNNING"} == set()
    assert not config.state_path.exists()


@pytest.mark.parametrize("bill", ["/ecs/v2/billing/", "/k8sgpu/v1/billing/"])
async def test_plan_says_the_bill_could_not_be_read_and_fails(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver, bill: str
) -> None:
    sim, config, clock = await overrun(simulator, tmp_path, hook, mode="enforce")
    status, _ = await sim.call("POST", "/_sim/faults", json={"path": bill, "status": 500})
    assert status == 200

    code, output = await plan(config, clock)

    assert code == EXIT_FAILURE
    lines = output.splitlines()
    assert any(
        line.startswith("error: the bill could not be read") and "500" in line for line in lines
    ), output
    assert (
        "budget overrun (account): cap 500 EUR; no complete bill for 2026-11 has been read yet"
        in lines
    )
    assert not re.search(r"ec\d{6}", output)
    assert "Traceback" not in output


async def test_plan_leaves_out_what_the_daemon_did_this_month_and_writes_nothing(
    simulator: SimFactory, tmp_path: Path, hook: HttpReceiver
) -> None:
    sim, config, clock = await overrun(simulator, tmp_path, hook, mode="dry_run")
    daemon = Daemon(config, clock=clock, registry=CollectorRegistry())
    async with daemon:
        await daemon.poll_once()
        await daemon.runner.wait_idle()
    store = SqliteStore(config.state_path, clock=clock)
    await store.open()
    try:
        before = await store.ledger(rule="overrun")
        records = await store.budgets()
        code, output = await plan(config, clock)
        after = await store.ledger(rule="overrun")
        assert await store.budgets() == records
    finally:
        await store.close()

    assert {e.decision.params["server"] for e in before if e.decision.action == "power_off"} == (
        EXPENDABLE
    )
    assert code == EXIT_OK
    power_off = step_line(output, "1:power_off")
    assert "[dry_run]" in power_off
    assert power_off.endswith("in force: nothing left to touch this month")
    assert [(e.key, e.state, e.updated_at) for e in after] == [
        (e.key, e.state, e.updated_at) for e in before
    ]
    assert mutations(await sim.requests()) == []
