"""`cloudpilot approve` as a user meets it: a subprocess on the daemon's state database."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.state import BudgetRecord, SqliteStore

REPO = Path(__file__).resolve().parents[2]


async def cloudpilot(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_approve_lists_then_approves_through_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "cloudpilot.toml"
    config.write_text('[state]\npath = "state.db"\n')
    # The subprocess reads the real clock: the request expires well after the test ends.
    requested = datetime.now(UTC)
    expires = requested + timedelta(hours=4)
    month = requested.strftime("%Y-%m")
    data = {
        "id": "3f2a9c01bd",
        "state": "waiting",
        "rule": "monthly-cap",
        "step": "1:power_off",
        "action": "power_off",
        "target": "ec600003",
        "summary": "power off ec600003 (notes: batch-1 expendable)",
        "requested_at": requested.isoformat(),
        "expires_at": expires.isoformat(),
        "on_timeout": "cancel",
    }
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:
        await store.put_budget(
            BudgetRecord("monthly-cap", "approval:3f2a9c01bd", month, requested, data)
        )

        code, out, err = await cloudpilot("approve", "--config", str(config))
        assert (code, err) == (0, "")
        assert out == (
            "3f2a9c01bd  monthly-cap  1:power_off  power off ec600003 (notes: batch-1 expendable)"
            f"  expires {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}  on timeout: cancel\n"
        )

        code, out, err = await cloudpilot("approve", "3f2a9c01bd", "--config", str(config))
        assert (code, err) == (0, "")
        assert out == (
            "approved 3f2a9c01bd: power off ec600003 (notes: batch-1 expendable)"
            " (monthly-cap, step 1:power_off); the daemon acts on its next evaluation\n"
        )
        stored = await store.get_budget("monthly-cap", "approval:3f2a9c01bd", month)
        assert stored is not None
        assert stored.data["state"] == "approved"
        assert stored.data["decided_by"] == "cloudpilot approve"
        assert datetime.fromisoformat(stored.data["decided_at"]) >= requested

        code, out, err = await cloudpilot("approve", "3f2a", "--reject", "--config", str(config))
        assert (code, out) == (1, "")
        assert err.startswith("cloudpilot approve: 3f2a9c01bd was already approved at ")
        assert (await cloudpilot("approve", "--config", str(config)))[1] == (
            "no budget action is waiting for approval\n"
        )
    finally:
        await store.close()


async def test_approve_exit_codes_for_usage_and_configuration(tmp_path: Path) -> None:
    config = tmp_path / "cloudpilot.toml"
    config.write_text('[state]\npath = "state.db"\n')
    code, out, err = await cloudpilot("approve", "--reject", "--config", str(config))
    assert (code, out) == (2, "")
    assert err == "cloudpilot approve: --reject needs the ID of the request to reject\n"

    code, _, err = await cloudpilot("approve", "--config", str(tmp_path / "missing.toml"))
    assert code == 78
    assert err.startswith(f"cloudpilot approve: {tmp_path / 'missing.toml'}: cannot read")

    code, _, err = await cloudpilot("approve", "--config", str(config))
    assert code == 1
    assert "no state database" in err
    assert not (tmp_path / "state.db").exists()
