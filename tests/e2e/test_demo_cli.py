"""`cloudpilot demo` as a newcomer runs it: a subprocess, from the first line to the last.

The demo is run with its clock accelerated far past the default, so its two simulated hours
take a few real seconds; the Ctrl-C test runs it at the default pace and interrupts it once the
first failure has been paged.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from daemon.clock import SystemClock
from daemon.state import SqliteStore
from daemon.state.store import LedgerState

REPO = Path(__file__).resolve().parents[2]
FAST = "100000"
LINE = re.compile(r"^(\d\d:\d\d)  (\w+)\s+ (.*)$")


def run_demo(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the demo to its end, accelerated; return what it printed."""
    command = [sys.executable, "-m", "daemon", "demo", "--speed", FAST, "--state-dir", str(state)]
    return subprocess.run(  # noqa: S603 - our own program, no shell
        [*command, *extra],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def story(stdout: str) -> list[tuple[str, str, str]]:
    """Return the narrated lines as (simulated time, who, what), in order."""
    return [m.groups() for m in map(LINE.match, stdout.splitlines()) if m]  # type: ignore[misc]


def first(lines: list[tuple[str, str, str]], who: str, text: str) -> int:
    """Return the index of the first line by `who` that contains `text`."""
    for index, (_, by, what) in enumerate(lines):
        if by == who and text in what:
            return index
    raise AssertionError(f"no {who} line contains {text!r}:\n" + "\n".join(map(str, lines)))


async def test_demo_narrates_each_policy_acting_and_exits_zero(tmp_path: Path) -> None:
    done = run_demo(tmp_path / "state")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = story(done.stdout)

    # A failed action is paged, then resolved when its retry completes.
    paged = first(lines, "alert", "critical alert to oncall: power_on error on ec200007")
    assert first(lines, "alert", "resolved on oncall: power_on error on ec200007") > paged
    # The audit log's failed login goes to the security route, and resolves after its hour.
    login = first(lines, "alert", "alert to security: failed Seeweb login for demo")
    assert first(lines, "alert", "resolved on security: failed Seeweb login") > login
    # The Glesys surge is scaled up in place, and back down once the load has gone.
    up = first(lines, "autoscale", "web-glesys-1: 2 → 4 cores, CPU above 85%")
    down = first(lines, "autoscale", "web-glesys-1: 4 → 3 cores, CPU below 35%")
    assert up < down < first(lines, "autoscale", "web-glesys-1: 3 → 2 cores")
    # The hot Seeweb servers get a plan of their family and its price, as an alert: the listing
    # says ECS2, the plan list eCS2; the Windows server stays on Windows.
    first(lines, "autoscale", "ec200002: move from eCS2 (2 cores) to eCS3 (4 cores), +12.00 EUR")
    first(lines, "autoscale", "ec200008: move from eCS2W (2 cores) to eCS3W (4 cores), +21.00 EUR")
    # The risky action by hand waits for its snapshot.
    snapshot = first(lines, "guard", "snapshot: POST /ecs/v2/servers/ec200005/snapshots")
    assert first(lines, "guard", "POST /ecs/v2/servers/ec200005/actions") > snapshot
    # The budget warns, then its steps say in dry run what they would do.
    warned = first(lines, "budget", "alert to oncall: monthly-cap")
    blocked = first(lines, "budget", "passed 100%: step block_scale_up is in force, in dry run")
    would = first(lines, "budget", "dry run: monthly-cap would power off ec200004")
    assert warned < blocked < would
    first(lines, "budget", "would have refused that scale-up")

    tail = done.stdout.splitlines()
    assert tail[-1] == "Demo finished."
    assert any(re.match(r"alerts\s+failed-actions: 1 fired, 1 resolved$", line) for line in tail)
    assert f"state     {tmp_path / 'state' / 'state.db'}" in done.stdout

    # The ledger holds what the story told: three resizes done, the guarded power_off done,
    # and the budget's power_off recorded as a dry run only.
    store = SqliteStore(tmp_path / "state" / "state.db", clock=SystemClock())
    await store.open()
    try:
        entries = await store.ledger()
    finally:
        await store.close()
    states = sorted((e.decision.action, e.decision.params.get("server"), e.state) for e in entries
                    if e.decision.action in ("set_cores", "power_off"))  # fmt: skip
    assert states == [
        ("power_off", "ec200004", LedgerState.DRY_RUN),
        ("power_off", "ec200005", LedgerState.DONE),
        ("set_cores", "web-glesys-1", LedgerState.DONE),
        ("set_cores", "web-glesys-1", LedgerState.DONE),
        ("set_cores", "web-glesys-1", LedgerState.DONE),
    ]
    # The daemon's log is JSON lines, and the simulator's credentials are not in it.
    log = (tmp_path / "state" / "cloudpilot.log").read_text()
    events = {json.loads(line)["event"] for line in log.splitlines()}
    assert {"daemon_started", "budget_enforcement", "daemon_stopped"} <= events
    assert "simulator-token" not in log


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(  # noqa: S603 - our own program, no shell
        [sys.executable, "-m", "daemon", "demo", "--state-dir", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "alert to oncall: power_on error" in line:
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, "".join(seen) + out + err
    assert "Demo interrupted" in out
    assert "Traceback" not in err
    assert "Demo finished." not in out


def test_demo_names_the_file_and_field_of_a_bad_rule(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text(
        "rules:\n  - name: x\n    on: seeweb.log\n    do: [{nope: 1}]\n"
    )
    done = run_demo(tmp_path / "state", "--rules", str(rules))
    assert done.returncode == 78
    assert f"{rules / 'bad.yaml'}:4: rules[0].do[0].nope: unknown action 'nope'" in done.stdout
