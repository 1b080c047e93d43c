"""Run the simulator as a server, and write a cloudpilot.toml that points at it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from daemon.net import Listen
from daemon.simulator.app import create_app
from daemon.simulator.http import Credentials, Simulation

__all__ = ["Listen", "serve_forever", "start", "write_config"]


async def start(sim: Simulation, listen: Listen) -> tuple[web.AppRunner, str]:
    """Start serving and return the runner and the base URL actually bound."""
    runner = web.AppRunner(create_app(sim), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listen.host, listen.port)
    await site.start()
    server = site._server  # aiohttp exposes the bound sockets only here
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else listen.port
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    return runner, f"http://{host}:{port}"


STARTER_RULES = """\
# Written by `cloudpilot simulator --config-out`: rules to watch the simulator with.
# Inject a failure with: curl -X POST URL/_sim/actions -d '{"resource": "ec200001",
#   "type": "power_off", "outcome": "failed", "duration_s": 30}'
rules:
  - name: failed-actions
    on: seeweb.action.failed
    throttle: {once_within: 30m, group_by: [resource, data.type]}
    do:
      - log: {message: a Seeweb action failed, level: error}
  - name: stuck-actions
    on: seeweb.action.stuck
    do:
      - log: {message: a Seeweb action is stuck, level: warning}
  - name: failed-gpu-pods
    on: k8sgpu.pod.failed
    do:
      - log: {message: a GPU pod failed, level: error}
"""


def write_config(
    path: Path,
    url: str,
    credentials: Credentials,
    *,
    rules: Path | None = None,
    http_listen: str = "127.0.0.1:9464",
    webhooks: Mapping[str, str] | None = None,
    gpu_prices: Mapping[str, float] | None = None,
) -> None:
    """Write a cloudpilot.toml for this simulator and its credential files beside it (mode 0600).

    Without `rules` it points at a starter `rules/` folder beside it, written when missing;
    `webhooks` adds a webhook notifier route per name, and `gpu_prices` a `[budget]` section.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    secrets = {
        "seeweb-token": credentials.api_token,
        "k8sgpu-password": credentials.password,
        "glesys-key": credentials.api_token,
    }
    rules_entry = '"rules/"' if rules is None else json.dumps(str(rules))
    if rules is None:
        starter = path.parent / "rules"
        if not starter.exists():
            starter.mkdir()
            (starter / "simulator.yaml").write_text(STARTER_RULES, encoding="utf-8")
    extra = "".join(
        f'\n[notifiers.{name}]\ntype = "webhook"\nurl = {json.dumps(hook)}\n'
        for name, hook in (webhooks or {}).items()
    )
    if gpu_prices:
        prices = ", ".join(f"{json.dumps(name)} = {price}" for name, price in gpu_prices.items())
        extra += f"\n[budget]\ngpu_prices = {{ {prices} }}\n"
    for name, value in secrets.items():
        secret_path = path.parent / name
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
    path.write_text(
        f"""# Written by `cloudpilot simulator --config-out` or `cloudpilot demo`: a config for the
# simulator at {url}.
rules = [{rules_entry}]

[http]
listen = "{http_listen}"

[state]
path = "state.db"

[seeweb]
url = "{url}"
token_file = "seeweb-token"

[k8sgpu]
url = "{url}"
username = "{credentials.username}"
password_file = "k8sgpu-password"

[glesys]
url = "{url}/glesys"
project = "{credentials.glesys_project}"
key_file = "glesys-key"

[poll]
# Faster than the production defaults: a simulator answers at once and costs nothing.
actions = "5s"
logs = "10s"
metrics = "30s"
k8sgpu = "10s"
billing = "1m"
glesys = "10s"
{extra}""",
        encoding="utf-8",
    )


async def serve_forever(
    sim: Simulation, listen: Listen, config_out: Path | None, announce: bool = True
) -> None:
    """Serve until SIGINT or SIGTERM."""
    runner, url = await start(sim, listen)
    try:
        if config_out is not None:
            write_config(config_out, url, sim.credentials)
        if announce:
            print(f"simulator listening on {url} (scenario {sim.scenario.name})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
