"""`cloudpilot plan` as a subprocess against `cloudpilot simulator`: it reads, and says why."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from processes import REPO, simulator

RULES = """\
rules:
  - name: glesys-web
    autoscale:
      provider: glesys
      servers: {name: "web-*"}
      up: {above: 75, for: 10m}
      down: {below: 40, for: 30m}
      max_cores: 8
      snapshot: none
  - name: seeweb-web
    mode: dry_run
    autoscale:
      provider: seeweb
      servers: {notes: "web-*"}
      up: {above: 75, for: 15m}
      down: {below: 30, for: 2h}
      max_cores: 8
"""


def write_config(tmp_path: Path, url: str) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "autoscale.yaml").write_text(RULES)
    (tmp_path / "token").write_text("simulator-token\n")
    config = tmp_path / "cloudpilot.toml"
    config.write_text(
        f"""\
rules = ["rules/"]
[state]
path = "state.db"
[seeweb]
url = "{url}"
token_file = "token"
[glesys]
url = "{url}/glesys"
project = "cl12345"
key_file = "token"
"""
    )
    return config


async def test_plan_prints_a_verdict_per_watched_server_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with simulator(speed="0") as url:
        config = write_config(tmp_path, url)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "plan", "--config", str(config),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/_sim/requests") as reply,
        ):
            log = await reply.json()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    # The quiet scenario: web-1 and web-2 on Seeweb (by notes), web-glesys-1 on Glesys.
    servers = {line.split()[2].rstrip(":") for line in lines}
    assert servers == {"ec300001", "ec300002", "web-glesys-1"}
    assert all(line.startswith(("hold ", "resize ", "recommend ")) for line in lines)
    assert all(": " in line for line in lines)  # each says why
    assert [
        r
        for r in log
        if r["method"] not in ("GET", "POST")
        or (r["method"] == "POST" and not r["path"].startswith("/glesys/server/"))
    ] == []
    # Glesys reads are POSTs; none of them is an edit.
    assert not [r for r in log if r["path"].endswith("/server/edit")]
    assert not (tmp_path / "state.db").exists()
