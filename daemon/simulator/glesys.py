"""The Glesys API under `/glesys/`: list servers, read details, status and allowed sizes, edit.

Glesys accepts each function by GET or POST, with arguments in the query string, a form or a JSON
body, and with an optional `/format/json` suffix. We always answer JSON in Glesys's envelope; the
middleware in `app.py` already checked HTTP Basic auth (and the key's address and function
allow-lists) and renders refusals in the same envelope.

As the live API does: `server/details` reports the running and locked state as `isrunning`,
`islocked` and `status` (running, updating, ready) only with `includestate`, and leaves the
deprecated `state` null; `server/status` takes one `statustype` or none; `server/allowedarguments`
lists each platform's sizes as `argumentslist.platforms.<platform>.<argument>[].value`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from daemon.simulator.entities import GlesysServer, SimError
from daemon.simulator.http import GLESYS, SIM, Handler, glesys_response, json_body
from daemon.simulator.world import World

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
# The sizes each platform offers, as `server/allowedarguments` lists them.
PLATFORMS: dict[str, dict[str, tuple[Any, ...]]] = {
    "KVM": {
        "datacenter": ("Falkenberg", "Stockholm"),
        "cpucores": (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32),
        "memorysize": (1024, 2048, 4096, 8192, 16384, 32768),
        "disksize": (10, 20, 40, 80, 100, 200),
        "bandwidth": (100, 1000),
    },
    "VMware": {
        "datacenter": ("Falkenberg",),
        "cpucores": (1, 2, 4, 6, 8),
        "memorysize": (512, 1024, 2048, 4096, 8192),
        "disksize": (10, 20, 40, 80),
        "bandwidth": (10, 100),
    },
}
STATUS_TYPES = ("state", "cpu", "memory", "disk", "bandwidth", "uptime")
# The running state as `includestate` reports it, from the world's state.
STATUS_WORDS = {"running": "running", "locked": "updating", "stopped": "ready"}
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
    record: dict[str, Any] = {
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
        # Deprecated: the live API leaves it null and reports the state in the fields below.
        "state": None,
    }
    if with_state:
        record["isrunning"] = server.state == "running"
        record["islocked"] = server.state == "locked"
        record["status"] = STATUS_WORDS.get(server.state, server.state)
    return record


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
        "state": "running" if running else "stopped",
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
    """Return one server's state and resource usage: all of it, or the one `statustype` asked."""
    sim = request.app[SIM]
    args = await arguments(request)
    server = sim.world.glesys_server(required(args, "serverid"))
    report = status(sim.world, server, sim.world.now)
    kind = args.get("statustype")
    if kind not in (None, ""):
        # The documented calls pass a single type; a list such as "state,cpu" is not one.
        if kind not in STATUS_TYPES:
            raise SimError(
                400, f"Argument statustype must be one of {', '.join(STATUS_TYPES)}, not {kind!r}"
            )
        field = "transfer" if kind == "bandwidth" else kind
        report = {field: report[field]} if field in report else {}
    return glesys_response({"server": report}, sim.world.now, args)


async def allowed_arguments(request: web.Request) -> web.Response:
    """Return the sizes each platform allows; with `serverid`, only that server's platform."""
    sim = request.app[SIM]
    args = await arguments(request)
    platforms = PLATFORMS
    if args.get("serverid") not in (None, ""):
        server = sim.world.glesys_server(required(args, "serverid"))
        platforms = {server.platform: PLATFORMS.get(server.platform, PLATFORMS["KVM"])}
    listed = {
        platform: {name: [{"value": value} for value in values] for name, values in sizes.items()}
        for platform, sizes in platforms.items()
    }
    return glesys_response({"argumentslist": {"platforms": listed}}, sim.world.now, args)


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
        allowed = PLATFORMS.get(server.platform, PLATFORMS["KVM"])["cpucores"]
        if cores not in allowed:
            raise SimError(
                400,
                f"Argument cpucores must be one of {', '.join(map(str, allowed))} "
                f"on {server.platform}, not {cores}",
            )
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
        "allowedarguments": allowed_arguments,
    }
    for name, handler in functions.items():
        base = f"{GLESYS}/server/{name}"
        for path in (base, f"{base}/", f"{base}/format/json", f"{base}/format/json/"):
            for method in ("GET", "POST"):
                app.router.add_route(method, path, handler)
