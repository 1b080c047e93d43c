"""The Glesys API under `/glesys/`: list servers, read details and status, change cores.

Glesys accepts each function by GET or POST, with arguments in the query string, a form or a JSON
body, and with an optional `/format/json` suffix. We always answer JSON in Glesys's envelope; the
middleware in `app.py` already checked HTTP Basic auth and renders refusals in the same envelope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from daemon.simulator.app import GLESYS, SIM, Handler, glesys_response, json_body
from daemon.simulator.world import GlesysServer, SimError, World

CURRENCY = "EUR"
TRANSFER_GB = 10_000  # monthly transfer allowance
BANDWIDTH_MBIT = 1_000
IPV4_MONTHLY = 2.0

# List prices the simulator invents, per month: Glesys bills by cores, memory and disk.
CORE_MONTHLY = 6.0
MEMORY_GB_MONTHLY = 3.0
DISK_GB_MONTHLY = 0.1

# Figures the status report shows besides CPU; nothing in the daemon acts on them.
DISK_USED_SHARE = 0.35
TRANSFER_GB_PER_DAY = 2.0

MEMORY_MB = range(512, 262_145)
TRUE_WORDS = frozenset({"yes", "true", "1"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


# -- arguments -------------------------------------------------------------------------------------


async def arguments(request: web.Request) -> dict[str, Any]:
    """Return the call's arguments from the query string and a form or JSON body."""
    args: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return args
    if request.content_type in FORM_TYPES:
        form = await request.post()
        args.update((key, value) for key, value in form.items() if isinstance(value, str))
    else:
        args.update(await json_body(request))
    return args


def required(args: dict[str, Any], name: str) -> str:
    """Return a required argument as text, or refuse with a 400 naming it."""
    value = args.get(name)
    if value is None or str(value).strip() == "":
        raise SimError(400, f"Missing required argument: {name}")
    return str(value).strip()


def integer(args: dict[str, Any], name: str) -> int | None:
    """Return an optional integer argument, or refuse with a 400 naming it."""
    value = args.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SimError(400, f"Argument {name} must be an integer, not {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise SimError(400, f"Argument {name} must be an integer, not {value!r}") from None


def flag(args: dict[str, Any], name: str) -> bool:
    """Return a yes/no argument (`yes`, `true`, `1` or JSON true mean yes)."""
    value = args.get(name)
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUE_WORDS if value is not None else False


# -- records ---------------------------------------------------------------------------------------


def monthly_cost(cores: int, memory_mb: int, disk_gb: int) -> float:
    """Return a server's invented monthly price in EUR."""
    price = cores * CORE_MONTHLY + memory_mb / 1024 * MEMORY_GB_MONTHLY + disk_gb * DISK_GB_MONTHLY
    return round(price, 2)


def ip_list(world: World, server: GlesysServer) -> list[dict[str, Any]]:
    """Return the server's addresses, derived from its place in the account so they stay stable."""
    number = list(world.glesys).index(server.serverid) + 10
    return [
        {
            "ipaddress": f"185.17.{number // 256}.{number % 256}",
            "version": 4,
            "cost": IPV4_MONTHLY,
            "currency": CURRENCY,
        },
        {
            "ipaddress": f"2a02:750:9::{number:x}",
            "version": 6,
            "cost": 0.0,
            "currency": CURRENCY,
        },
    ]


def details(
    world: World, server: GlesysServer, now: datetime, *, with_state: bool
) -> dict[str, Any]:
    """Return `server/details`; cores change only when the reboot after an edit ends."""
    cores = server.cores_at(now)
    return {
        "serverid": server.serverid,
        "hostname": server.hostname,
        "description": server.description,
        "cpucores": cores,
        "memorysize": server.memorysize,
        "disksize": server.disksize,
        "transfer": TRANSFER_GB,
        "bandwidth": BANDWIDTH_MBIT,
        "templatename": server.templatename,
        "datacenter": server.datacenter,
        "managedhosting": "no",
        "platform": server.platform,
        "cost": {
            "amount": monthly_cost(cores, server.memorysize, server.disksize),
            "currency": CURRENCY,
            "timeperiod": "month",
        },
        "iplist": ip_list(world, server),
        "state": server.state if with_state else None,
        "isrunning": server.state == "running",
        "islocked": server.state == "locked",
    }


def status(world: World, server: GlesysServer, now: datetime) -> dict[str, Any]:
    """Return `server/status`: resource usage, with CPU in cores from the world's demand."""
    used, cores = world.glesys_cpu(server, now)
    running = server.state == "running"
    share = used / cores if cores else 0.0
    memory_used = int(server.memorysize * min(1.0, 0.2 + 0.6 * share)) if running else 0
    booted = server.cores_history[-1][0] if server.cores_history else server.created
    uptime = int((now - booted).total_seconds()) if running else 0
    age_days = min(30.0, (now - server.created).total_seconds() / 86400)
    return {
        "state": server.state,
        "cpu": {"usage": round(used, 2), "max": cores, "unit": "cores"},
        "memory": {"usage": memory_used, "max": server.memorysize, "unit": "MB"},
        "disk": {
            "usage": int(server.disksize * 1024 * DISK_USED_SHARE),
            "max": server.disksize * 1024,
            "unit": "MB",
        },
        "transfer": {
            "usage": round(age_days * TRANSFER_GB_PER_DAY, 2),
            "max": TRANSFER_GB,
            "unit": "GB last 30 days",
        },
        "uptime": {"current": max(0, uptime), "unit": "seconds"},
        "warnings": [],
    }


# -- handlers --------------------------------------------------------------------------------------


async def server_list(request: web.Request) -> web.Response:
    """List the project's servers."""
    sim = request.app[SIM]
    args = await arguments(request)
    servers = [
        {
            "serverid": s.serverid,
            "hostname": s.hostname,
            "datacenter": s.datacenter,
            "platform": s.platform,
        }
        for s in sim.world.glesys.values()
    ]
    return glesys_response({"servers": servers}, sim.world.now, args)


async def server_details(request: web.Request) -> web.Response:
    """Return one server's configuration, and its state with `includestate`."""
    sim = request.app[SIM]
    args = await arguments(request)
    server = sim.world.glesys_server(required(args, "serverid"))
    record = details(sim.world, server, sim.world.now, with_state=flag(args, "includestate"))
    return glesys_response({"server": record}, sim.world.now, args)


async def server_status(request: web.Request) -> web.Response:
    """Return one server's state and resource usage."""
    sim = request.app[SIM]
    args = await arguments(request)
    server = sim.world.glesys_server(required(args, "serverid"))
    return glesys_response(
        {"server": status(sim.world, server, sim.world.now)}, sim.world.now, args
    )


async def server_edit(request: web.Request) -> web.Response:
    """Change a server's cores, memory or description; a core change locks it for a reboot."""
    sim = request.app[SIM]
    world = sim.world
    args = await arguments(request)
    server = world.glesys_server(required(args, "serverid"))
    cores = integer(args, "cpucores")
    memory = integer(args, "memorysize")
    if memory is not None and memory not in MEMORY_MB:
        raise SimError(
            400, f"Argument memorysize must be between {MEMORY_MB.start} and {MEMORY_MB.stop - 1}"
        )
    if cores is not None:
        world.glesys_edit_cores(server.serverid, cores)
    if memory is not None:
        # The world models the reboot for cores only; memory takes effect at once.
        server.memorysize = memory
    description = args.get("description")
    if description is not None:
        server.description = str(description)
    record = details(world, server, world.now, with_state=True)
    return glesys_response({"server": record}, world.now, args)


def add_routes(app: web.Application) -> None:
    """Register the Glesys functions, by GET and POST, with the spellings clients use."""
    functions: dict[str, Handler] = {
        "list": server_list,
        "details": server_details,
        "status": server_status,
        "edit": server_edit,
    }
    for name, handler in functions.items():
        base = f"{GLESYS}/server/{name}"
        for path in (base, f"{base}/", f"{base}/format/json", f"{base}/format/json/"):
            for method in ("GET", "POST"):
                app.router.add_route(method, path, handler)
