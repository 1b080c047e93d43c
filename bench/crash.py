"""Crash `cloudpilot run` with SIGKILL under a flood of failed actions; count what was lost.

    python -m bench.crash [--kills 50] [--rate 50] [--failed 0.2] [--seed 1]

A simulator subprocess (real speed, the quiet scenario) gets `--rate` actions a second on its
servers, a share `--failed` of them failed. The daemon (a subprocess) alerts each failed action
to three routes served by this process: a webhook, PagerDuty's Events API v2 and Alertmanager's
`/api/v2/alerts` (fakes that keep what a real receiver would: every delivery and its
Idempotency-Key; PagerDuty's open incidents by dedup_key; Alertmanager's alerts by label set,
with each `startsAt`). It is SIGKILLed `--kills` times at random moments (0.5 to 4 s apart,
sometimes down a few seconds so a backlog builds) and restarted on the same state file, whose
integrity is checked after every kill. Then the flood stops and the daemon drains: until every
failed action reached every route, or nothing new arrived for a minute.

Prints one `name=value` per figure: `crash_kills`, `crash_failed_actions`, `crash_lost_webhook`,
`crash_lost_pagerduty`, `crash_lost_alertmanager` (failed actions that never reached a route),
`crash_webhook_repeats` (deliveries of an alert again, with the same Idempotency-Key),
`crash_webhook_repeats_per_kill`, `crash_pagerduty_duplicate_incidents` (a dedup_key opened
twice), `crash_alertmanager_duplicate_incidents` (a label set with two `startsAt`),
`crash_integrity_failures`, `crash_drain_seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.common import running_simulator, start_daemon, write_seeweb_config

SERVERS = ("ec300001", "ec300002", "ec300003")
TYPES = ("power_on", "power_off", "reboot", "create_snapshot", "rollback")
ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"
STALL_S = 60.0
MAX_DRAIN_S = 1800.0

RULES = """\
rules:
  - name: failed
    on: seeweb.action.failed
    throttle: {once_within: 1h, group_by: [data.id]}
    do:
      - alert:
          severity: critical
          summary: "{{ event.data.type }} failed on {{ event.resource }}"
          to: [am, pd, hook]
"""


@dataclass
class Received:
    """What the three receivers kept."""

    hook_keys: Counter[str] = field(default_factory=Counter)  # Idempotency-Key -> deliveries
    hook_ids: set[int] = field(default_factory=set)
    pd_open: set[str] = field(default_factory=set)
    pd_opened: Counter[str] = field(default_factory=Counter)
    pd_ids: set[int] = field(default_factory=set)
    am_starts: dict[frozenset[tuple[str, str]], set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )
    am_ids: set[int] = field(default_factory=set)


def receivers(got: Received) -> web.Application:
    """Return the app serving the webhook, PagerDuty and Alertmanager fakes."""

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        got.hook_keys[request.headers["Idempotency-Key"]] += 1
        got.hook_ids.add(int(body["alert"]["event"]["data"]["id"]))
        return web.Response(status=204)

    async def enqueue(request: web.Request) -> web.Response:
        body = await request.json()
        key = str(body["dedup_key"])
        if body["event_action"] == "trigger" and key not in got.pd_open:
            got.pd_open.add(key)
            got.pd_opened[key] += 1
        elif body["event_action"] == "resolve":
            got.pd_open.discard(key)
        got.pd_ids.add(int(key.rsplit("/", 1)[1]))
        return web.json_response({"status": "success", "dedup_key": key}, status=202)

    async def alerts(request: web.Request) -> web.Response:
        for alert in await request.json():
            labels = frozenset(alert["labels"].items())
            got.am_starts[labels].add(str(alert["startsAt"]))
            got.am_ids.add(int(alert["labels"]["id"]))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/v2/enqueue", enqueue)
    app.router.add_post("/api/v2/alerts", alerts)
    return app


def write_config(folder: Path, sim_url: str, port: int) -> Path:
    """Write the daemon's config: fast action polls, the three routes on `port`."""
    (folder / "pagerduty.key").write_text(ROUTING_KEY + "\n")
    base = f"http://127.0.0.1:{port}"
    tail = f"""\
[poll]
actions = "500ms"
logs = "1h"
metrics = "1h"
billing = "1h"
[engine]
stale_after = "1d"
[notifiers.am]
type = "alertmanager"
url = "{base}"
resend_every = "1m"
rate = 100
[notifiers.pd]
type = "pagerduty"
url = "{base}/v2/enqueue"
routing_key_file = "pagerduty.key"
rate = 100
[notifiers.hook]
type = "webhook"
url = "{base}/hook"
rate = 100
"""
    return write_seeweb_config(folder, sim_url, RULES, tail)


async def flood(
    http: aiohttp.ClientSession,
    url: str,
    rate: float,
    failed_share: float,
    rng: random.Random,
    failed: set[int],
    stop: asyncio.Event,
) -> int:
    """Inject `rate` actions a second until `stop`; note the failed ones' ids."""
    injected = 0
    started = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while injected < due:
            fails = rng.random() < failed_share
            body = {
                "resource": rng.choice(SERVERS),
                "type": rng.choice(TYPES),
                "outcome": "failed" if fails else "completed",
                "duration_s": 0,
            }
            async with http.post(f"{url}/_sim/actions", json=body) as response:
                response.raise_for_status()
                answer = await response.json()
            if fails:
                failed.add(int(answer["action"]["id"]))
            injected += 1
        await asyncio.sleep(0.02)
    return injected


def integrity(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50.0, help="actions a second")
    parser.add_argument("--failed", type=float, default=0.2, help="share of actions that fail")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, state)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    got = Received()
    runner = web.AppRunner(receivers(got), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    failed: set[int] = set()
    bad_integrity = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        async with (
            running_simulator(Path("quiet"), "--speed", "1") as url,
            aiohttp.ClientSession() as http,
        ):
            config = write_config(folder, url, port)
            log = folder / "daemon.log"
            stop = asyncio.Event()
            flooding = asyncio.create_task(
                flood(http, url, args.rate, args.failed, random.Random(args.seed + 1), failed, stop)
            )
            daemon = await start_daemon(config, log)
            for kill in range(args.kills):
                await asyncio.sleep(rng.uniform(0.5, 4.0))
                if daemon.returncode is not None:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"the daemon exited {daemon.returncode} by itself:\n{tail}")
                os.kill(daemon.pid, signal.SIGKILL)
                await daemon.wait()
                if integrity(folder / "state.db") != "ok":
                    bad_integrity += 1
                if rng.random() < 0.2:
                    await asyncio.sleep(rng.uniform(1.0, 5.0))  # down a while: a backlog builds
                daemon = await start_daemon(config, log)
                print(f"# kill {kill + 1}/{args.kills}: {len(failed)} failed", file=sys.stderr)
            stop.set()
            injected = await flooding
            # Drain: until every failed action reached every route, or nothing new arrived for
            # STALL_S (what is missing then is lost, not late), or MAX_DRAIN_S in all.
            started = last_progress = time.monotonic()
            seen = 0
            while time.monotonic() - started < MAX_DRAIN_S:
                if failed <= got.hook_ids and failed <= got.pd_ids and failed <= got.am_ids:
                    break
                now_seen = len(got.hook_ids) + len(got.pd_ids) + len(got.am_ids)
                if now_seen != seen:
                    seen, last_progress = now_seen, time.monotonic()
                elif time.monotonic() - last_progress > STALL_S:
                    break
                await asyncio.sleep(0.5)  # waiting on another process to deliver
            drain = time.monotonic() - started
            daemon.send_signal(signal.SIGTERM)
            await daemon.wait()
            if integrity(folder / "state.db") != "ok":
                bad_integrity += 1
    await runner.cleanup()
    repeats = sum(count - 1 for count in got.hook_keys.values())
    print(f"crash_kills={args.kills}")
    print(f"crash_actions={injected}")
    print(f"crash_failed_actions={len(failed)}")
    print(f"crash_lost_webhook={len(failed - got.hook_ids)}")
    print(f"crash_lost_pagerduty={len(failed - got.pd_ids)}")
    print(f"crash_lost_alertmanager={len(failed - got.am_ids)}")
    print(f"crash_webhook_repeats={repeats}")
    print(f"crash_webhook_repeats_per_kill={repeats / max(args.kills, 1):.2f}")
    print(f"crash_webhook_max_repeats_of_one_alert={max(got.hook_keys.values(), default=1) - 1}")
    print(f"crash_pagerduty_duplicate_incidents={sum(1 for n in got.pd_opened.values() if n > 1)}")
    duplicates = sum(1 for starts in got.am_starts.values() if len(starts) > 1)
    print(f"crash_alertmanager_duplicate_incidents={duplicates}")
    print(f"crash_integrity_failures={bad_integrity}")
    print(f"crash_drain_seconds={drain:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
