"""The Seeweb ECS API (`/ecs/v2`), answering as the live API does.

Where the docs' examples and responses recorded from the live API differ, the recordings win: the
plan list spells `montly_price`, servers carry `api_version_value`, `virttype` and a nested
`last_restored_snapshot`, `POST /regions/availables` nests its list, and errors come as
`{"error_code", "status", "message"}`. docs/simulator.md lists every such choice.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from daemon.simulator.entities import (
    REGIONS,
    Action,
    LogEntry,
    Plan,
    Server,
    SimError,
    Snapshot,
    Template,
)
from daemon.simulator.http import ECS, SIM, Simulation, int_arg, json_body, validated
from daemon.simulator.timefmt import iso_micro, iso_zulu, naive_seconds
from daemon.simulator.world import World, month_bounds, region_names

JWT_TTL_S = 4 * 3600
METRIC_SAMPLES = 12  # one hour at the default 5-minute step
OK = {"status": "ok"}


# -- records ---------------------------------------------------------------------------------------


def action_json(action: Action, now: datetime) -> dict[str, Any]:
    """Return an action record."""
    return {
        "id": action.id,
        "status": action.status,
        "user": action.user,
        "created_at": iso_micro(action.created),
        "started_at": iso_micro(action.created),
        "completed_at": iso_micro(action.completed),
        "resource": action.resource,
        "resource_type": action.resource_type,
        "type": action.type,
        "progress": action.progress(now),
    }


def log_json(entry: LogEntry) -> dict[str, Any]:
    """Return an audit log record."""
    return {
        "id": entry.id,
        "actor": entry.actor,
        "action": entry.action,
        "severity": entry.severity,
        "status": entry.status,
        "target_type": entry.target_type,
        "target": entry.target,
        "created_at": iso_zulu(entry.created),
        "ip_address": entry.ip_address,
        "user_agent": entry.user_agent,
        "url": entry.url,
        "location": entry.location,
        "result_type": entry.result_type,
        "result": entry.result,
        "description": entry.description,
        "extra_data": entry.extra_data,
    }


def _api_version_value(version: str) -> int:
    """Return `5` for `v5`, as the live API pairs them."""
    digits = version.lstrip("v")
    return int(digits) if digits.isdigit() else 0


def server_json(world: World, server: Server, *, created: bool = False) -> dict[str, Any]:
    """Return a server record as the live API sends it; `plan_size` values are strings.

    The answer to `POST /servers` is the same record without `virttype`, as recorded.
    """
    plan = world.plan(server.plan)
    restored = world.snapshots.get(server.last_restored) if server.last_restored else None
    record: dict[str, Any] = {
        "name": server.name,
        "ipv4": server.ipv4,
        "ipv6": server.ipv6,
        "group": server.group,
        "plan": server.plan,
        "plan_size": {
            "core": str(plan.cpu),
            "ram": str(plan.ram),
            "disk": str(plan.disk),
            "gpu": str(plan.gpu),
            "gpu_label": plan.gpu_label,
            "host_type": plan.host_type,
        },
        "reserved_plans": [],
        "last_restored_snapshot": snapshot_json(world, restored) if restored else None,
        "is_reserved": False,
        "reserved_until": "",
        "support": None,
        "location": server.location,
        "location_label": region_names().get(server.location, server.location),
        "notes": server.notes,
        "so": server.os,
        "so_label": server.os.replace("-", " ").title(),
        "creation_date": iso_micro(server.created),
        "deletion_date": iso_micro(server.deleted),
        "active_flag": server.deleted is None and server.provisioning == "Booted",
        "status": server.provisioning,
        "progress": server.progress,
        "api_version": server.api_version,
        "api_version_value": _api_version_value(server.api_version),
        "user": server.user,
    }
    if not created:
        record["virttype"] = "KVM"
    return record


def snapshot_json(world: World, snap: Snapshot, *, nest: bool = True) -> dict[str, Any]:
    """Return a snapshot record; its parent comes nested whole, as the live API sends it.

    The nested parent's own `snapshot_parent` is left null, so a long chain stays one level deep.
    """
    parent = world.snapshots.get(snap.parent) if snap.parent is not None and nest else None
    return {
        "id": snap.id,
        "name": snap.name,
        "user": snap.user,
        "snapshot_parent": snapshot_json(world, parent, nest=False) if parent else None,
        "snapshot_parent_name": parent.name if parent else None,
        "is_last_restored": snap.is_last_restored,
        "protected": snap.protected,
        "restoring": False,
        "source_server": snap.server,
        "status": snap.status,
        "status_label": snap.status_label,
        "uid": snap.uid,
        "description": snap.description,
        "notes": snap.notes,
        "active_flag": snap.status == "CD",
        "size_on_disk": snap.size_kb if snap.status in ("CD", "DE", "DD") else None,
        "created_at": iso_zulu(snap.created),
        "updated_at": iso_zulu(snap.updated),
        "deleted_at": iso_zulu(snap.deleted),
        "api_version_value": 5,
        "api_version": "v5",
    }


def template_json(template: Template) -> dict[str, Any]:
    """Return a template record."""
    return {
        "id": template.id,
        "name": template.name,
        "creation_date": iso_micro(template.created),
        "active_flag": template.status == "CD",
        "status": template.status,
        "uuid": template.uid,
        "description": template.description,
        "notes": template.notes,
        "public": False,
        "cloud_image": False,
        "so_base": template.so_base,
        "required_disk": max(20, template.size_kb // (1024 * 75)),
        "api_version": "v5",
        "api_version_value": 5,
        "version": "",
    }


# The public images, as `GET /images/basics` lists them: id, name, description, base, version.
IMAGES = (
    (453, "ubuntu-2004", "Ubuntu Linux 20.04 LTS", "ubuntu", "2004"),
    (461, "debian-11", "Debian Linux 11", "debian", "11"),
    (508, "almalinux-9", "AlmaLinux 9", "almalinux", "9"),
    (509, "ubuntu-2204", "Ubuntu Linux 22.04 LTS", "ubuntu", "2204"),
    (524, "windows-2022", "Windows Server 2022", "windows", "2022"),
    (541, "debian-12", "Debian Linux 12", "debian", "12"),
    (576, "ubuntu-2404", "Ubuntu Linux 24.04 LTS", "ubuntu", "2404"),
)


def image_json(image: tuple[int, str, str, str, str]) -> dict[str, Any]:
    """Return a base image record."""
    number, name, description, base, version = image
    api = "v5" if name == "ubuntu-2404" else "v4"
    return {
        "id": number,
        "name": name,
        "creation_date": "2022-09-02T11:54:09+00:00",
        "active_flag": True,
        "status": "CD",
        "uuid": f"00000000-0000-4000-8000-{number:012d}",
        "description": description,
        "notes": description,
        "public": True,
        "cloud_image": False,
        "so_base": base,
        "required_disk": 20,
        "api_version": api,
        "api_version_value": _api_version_value(api),
        "version": version,
    }


def _price(value: float | None, *, whole: bool) -> float | int | None:
    """Return a price as recorded: `14.0` in `/plans`, `14` in `/plans/availables`."""
    if value is None:
        return None
    return int(value) if whole and float(value).is_integer() else value


def plan_json(world: World, plan: Plan, *, activatable: bool = False) -> dict[str, Any]:
    """Return a plan record; `/plans/availables` adds what can be activated where.

    The live API spells the monthly price `montly_price`, and lists the hosts of each region with
    the account's servers already on them as `{name, notes}`.
    """
    record: dict[str, Any] = {
        "id": plan.id,
        "name": plan.name,
        "cpu": str(plan.cpu),
        "ram": str(plan.ram),
        "disk": str(plan.disk),
        "gpu": str(plan.gpu),
        "gpu_label": plan.gpu_label,
        "hourly_price": plan.hourly_price,
        "montly_price": _price(plan.monthly_price, whole=activatable),
        "windows": plan.windows,
        "host_type": plan.host_type,
        "available": plan.available,
    }
    if activatable:
        record["os_availables"] = [image_json(i) for i in IMAGES]
        record["region_availables"] = [
            {"region": region, "hosts": hosts_json(world, region)} for region in plan.regions
        ]
    else:
        ids = {code: (label, ident) for code, label, ident in REGIONS}
        record["available_regions"] = [
            {"id": ids[r][1], "location": r, "description": ids[r][0]}
            for r in plan.regions
            if r in ids
        ]
    return record


HOSTS_PER_REGION = 2


def hosts_json(world: World, region: str) -> list[dict[str, Any]]:
    """Return a region's hosts, each with the account's servers it runs."""
    number = {code: i for i, (code, _, _) in enumerate(REGIONS)}.get(region, 0)
    hosts: list[dict[str, Any]] = [
        {"host": f"ecs{number}{h:02d}.host.sim", "servers": []} for h in range(HOSTS_PER_REGION)
    ]
    placed = [s for s in world.live_servers() if s.location == region]
    for index, server in enumerate(placed):
        hosts[index % HOSTS_PER_REGION]["servers"].append(
            {"name": server.name, "notes": server.notes}
        )
    return hosts


# -- request bodies --------------------------------------------------------------------------------


class RequestBody(BaseModel):
    """A request body: fields the API does not know are ignored, as the live API does."""

    model_config = ConfigDict(extra="ignore")


class LoginBody(RequestBody):
    """POST /login."""

    username: str
    password: str


class NewServer(RequestBody):
    """POST /servers."""

    plan: str
    image: str
    location: str
    notes: str = ""
    group: str | None = None


class ServerUpdate(RequestBody):
    """PUT /servers/{name}: the label (`note` in one docs example, `notes` elsewhere) and group."""

    notes: str | None = None
    note: str | None = None
    group: str | None = None


class ServerActionBody(RequestBody):
    """POST /servers/{name}/actions."""

    type: str
    snapshot: int | None = None


class NewSnapshot(RequestBody):
    """POST /servers/{name}/snapshots."""

    description: str = Field(default="", max_length=255)
    notes: str = Field(default="", max_length=1024)
    protected: bool = False


class SnapshotUpdate(RequestBody):
    """PATCH /servers/{name}/snapshots/{id}."""

    description: str | None = Field(default=None, max_length=255)
    notes: str | None = Field(default=None, max_length=1024)
    protected: bool | None = None


class NewTemplate(RequestBody):
    """POST /templates."""

    server: str | None = None
    snapshot: int | None = None
    description: str = ""


class TemplateUpdate(RequestBody):
    """PATCH (live) or PUT (docs) /templates/{name}."""

    description: str | None = None
    notes: str | None = None


class RegionQuery(RequestBody):
    """POST /regions/availables."""

    plan: str


# -- handlers --------------------------------------------------------------------------------------


def _sim(request: web.Request) -> tuple[Simulation, World]:
    sim = request.app[SIM]
    return sim, sim.world


def id_arg(request: web.Request, name: str) -> int:
    """Return an integer path parameter, or refuse with a 400 naming it."""
    raw = request.match_info[name]
    try:
        return int(raw)
    except ValueError:
        raise SimError(400, f"{name} must be an integer, not {raw!r}") from None


async def login(request: web.Request) -> web.Response:
    """Issue a 4-hour JWT for the username and password."""
    sim, world = _sim(request)
    body = validated(LoginBody, await json_body(request), "POST /ecs/v2/login")
    creds = sim.credentials
    if body.username != creds.username or body.password != creds.password:
        raise SimError(401, "wrong username or password")
    token, expires = sim.tokens.issue("ecs", body.username, world.now, JWT_TTL_S)
    return web.json_response({"token": token, "expire": int(expires.timestamp()), "status": "ok"})


async def account(request: web.Request) -> web.Response:
    """Return the account."""
    sim, _ = _sim(request)
    if request.method == "POST":
        data = await json_body(request)
        if not isinstance(data.get("password"), str) or not data["password"]:
            raise SimError(400, "POST /ecs/v2/account: password: field required")
        return web.json_response(OK)
    return web.json_response(
        {
            "username": sim.credentials.username,
            "email": f"{sim.credentials.username}@example.invalid",
            "reserved_available": True,
            "offline_available": True,
            "ecs_special_discount": 0,
            "ecshm_special_discount": 0,
            "ecsgpu_special_discount": 0,
        }
    )


async def list_actions(request: web.Request) -> web.Response:
    """Return a newest-first page of actions."""
    sim, world = _sim(request)
    start = int_arg(request.query.get("start"), "start", 0)
    length = int_arg(request.query.get("length"), "length", 50, minimum=1)
    page, total = world.actions_page(start, length, request.query.get("resource") or None)
    body = {
        "status": "ok",
        "actions": [action_json(a, world.now) for a in page],
        "total_actions": total,
    }
    # The fault "insert_actions_while_paging" lands new actions between two page fetches.
    inserts = sim.faults.take_paging_inserts()
    if inserts:
        world.insert_random_actions(inserts)
    return web.json_response(body)


async def get_action(request: web.Request) -> web.Response:
    """Return one action."""
    _, world = _sim(request)
    action_id = id_arg(request, "id")
    action = world.actions_by_id.get(action_id)
    if action is None:
        raise SimError(404, f"action {action_id} not found")
    return web.json_response({"status": "ok", "action": action_json(action, world.now)})


async def list_logs(request: web.Request) -> web.Response:
    """Return a newest-first page of audit logs."""
    _, world = _sim(request)
    start = int_arg(request.query.get("start"), "start", 0)
    length = int_arg(request.query.get("length"), "length", 50, minimum=1)
    page, total = world.logs_page(start, length, request.query.get("resource") or None)
    return web.json_response({"total_logs": total, "logs": [log_json(e) for e in page]})


async def get_log(request: web.Request) -> web.Response:
    """Return one audit log line."""
    _, world = _sim(request)
    log_id = id_arg(request, "id")
    if not 1 <= log_id <= len(world.logs):
        raise SimError(404, f"log {log_id} not found")
    return web.json_response(log_json(world.logs[log_id - 1]))


async def list_servers(request: web.Request) -> web.Response:
    """Return every server."""
    _, world = _sim(request)
    servers = [server_json(world, s) for s in world.live_servers()]
    return web.json_response({"status": "ok", "count": len(servers), "server": servers})


async def create_server(request: web.Request) -> web.Response:
    """Start creating a server; the answer carries `action_id`, as the real API's does."""
    _, world = _sim(request)
    body = validated(NewServer, await json_body(request), "POST /ecs/v2/servers")
    server, action = world.create_server(
        plan=body.plan, image=body.image, location=body.location, notes=body.notes, group=body.group
    )
    return web.json_response(
        {"status": "ok", "action_id": action.id, "server": server_json(world, server, created=True)}
    )


async def get_server(request: web.Request) -> web.Response:
    """Return one server."""
    _, world = _sim(request)
    server = world.server(request.match_info["name"])
    return web.json_response({"status": "ok", "server": server_json(world, server)})


async def update_server(request: web.Request) -> web.Response:
    """Change a server's label or group; group `nogroup` removes it from its group."""
    _, world = _sim(request)
    server = world.server(request.match_info["name"])
    body = validated(ServerUpdate, await json_body(request), "PUT /ecs/v2/servers/{name}")
    label = body.notes if body.notes is not None else body.note
    if label is None and body.group is None:
        raise SimError(400, "PUT /ecs/v2/servers/{name}: give 'notes' or 'group'")
    if label is not None:
        server.notes = label
    if body.group is not None:
        server.group = None if body.group == "nogroup" else body.group
    return web.json_response(OK)


async def delete_server(request: web.Request) -> web.Response:
    """Start deleting a server."""
    _, world = _sim(request)
    action = world.delete_server(request.match_info["name"])
    return web.json_response({"status": "ok", "action": action_json(action, world.now)})


async def server_status(request: web.Request) -> web.Response:
    """Return whether a server is running."""
    _, world = _sim(request)
    server = world.server(request.match_info["name"])
    status = "RUNNING" if server.running else "SHUTOFF"
    return web.json_response(
        {"status": "ok", "server": {"name": server.name, "current_status": status}}
    )


def _series(times: list[datetime], values: list[float]) -> list[dict[str, str]]:
    return [{"t": naive_seconds(t), "y": f"{v:.2f}"} for t, v in zip(times, values, strict=True)]


async def server_metrics(request: web.Request) -> web.Response:
    """Return the last hour of CPU, disk and network samples; none for v1 or GPU servers."""
    _, world = _sim(request)
    server = world.server(request.match_info["name"])
    plan = world.plan(server.plan)
    times = [] if server.api_version == "v1" or plan.gpu else world.sample_times(METRIC_SAMPLES)
    cpu = [world.cpu_percent(server, t, sample=True) for t in times]
    # Disk and network follow the CPU, with a steady wobble so the series are not flat.
    wobble = [1 + 0.3 * math.sin(i) for i in range(len(times))]

    def follow(factor: float) -> list[dict[str, str]]:
        return _series(times, [c * factor * w for c, w in zip(cpu, wobble, strict=True)])

    return web.json_response(
        {
            "metrics": {
                "resource": server.name,
                "core": _series(times, cpu),
                "disk": {"reads": follow(0.6), "writes": follow(0.2)},
                "network": {"received": follow(1.5), "transmitted": follow(0.9)},
            }
        }
    )


async def server_action(request: web.Request) -> web.Response:
    """Start power_on, power_off or rollback; the answer is the bare action, as documented."""
    _, world = _sim(request)
    body = validated(
        ServerActionBody, await json_body(request), "POST /ecs/v2/servers/{name}/actions"
    )
    action = world.server_action(request.match_info["name"], body.type, body.snapshot)
    return web.json_response(action_json(action, world.now))


def _snapshot_and_action(world: World, snap: Snapshot, action: Action) -> web.Response:
    return web.json_response(
        {
            "status": "ok",
            "snapshot": snapshot_json(world, snap),
            "action": action_json(action, world.now),
        }
    )


async def create_snapshot(request: web.Request) -> web.Response:
    """Start a snapshot; the answer carries the snapshot and its create_snapshot action."""
    _, world = _sim(request)
    body = validated(NewSnapshot, await json_body(request), "POST /ecs/v2/servers/{name}/snapshots")
    snap, action = world.create_snapshot(
        request.match_info["name"], body.description, body.notes, body.protected
    )
    return web.json_response(
        {
            "status": "ok",
            "snapshot": snapshot_json(world, snap),
            "action": action_json(action, world.now),
        }
    )


async def list_snapshots(request: web.Request) -> web.Response:
    """Return a server's snapshots that are not deleted."""
    _, world = _sim(request)
    server = world.server(request.match_info["name"])
    snaps = [s for s in world.snapshots.values() if s.server == server.name and s.status != "DD"]
    return web.json_response(
        {"status": "ok", "snapshots": [snapshot_json(world, s) for s in snaps]}
    )


async def get_snapshot(request: web.Request) -> web.Response:
    """Return one snapshot."""
    _, world = _sim(request)
    snap = world.snapshot(request.match_info["name"], id_arg(request, "id"))
    return web.json_response({"status": "ok", "snapshot": snapshot_json(world, snap)})


async def update_snapshot(request: web.Request) -> web.Response:
    """Change a snapshot's description, notes or protection."""
    _, world = _sim(request)
    snap = world.snapshot(request.match_info["name"], id_arg(request, "id"))
    body = validated(
        SnapshotUpdate, await json_body(request), "PATCH /ecs/v2/servers/{name}/snapshots/{id}"
    )
    if body.description is not None:
        snap.description = body.description
    if body.notes is not None:
        snap.notes = body.notes
    if body.protected is not None:
        snap.protected = body.protected
    snap.updated = world.now
    return web.json_response({"status": "ok", "snapshot": snapshot_json(world, snap)})


async def delete_snapshot(request: web.Request) -> web.Response:
    """Start deleting a snapshot."""
    _, world = _sim(request)
    snap, action = world.delete_snapshot(request.match_info["name"], id_arg(request, "id"))
    return web.json_response(
        {
            "status": "ok",
            "snapshot": snapshot_json(world, snap),
            "action": action_json(action, world.now),
        }
    )


async def list_templates(request: web.Request) -> web.Response:
    """Return the templates, newest first."""
    _, world = _sim(request)
    live = [t for t in world.templates.values() if t.deleted is None]
    live.sort(key=lambda t: t.id, reverse=True)
    return web.json_response({"status": "ok", "templates": [template_json(t) for t in live]})


async def create_template(request: web.Request) -> web.Response:
    """Start a template from a server or a snapshot."""
    _, world = _sim(request)
    body = validated(NewTemplate, await json_body(request), "POST /ecs/v2/templates")
    template, action = world.create_template(
        server=body.server, snapshot=body.snapshot, description=body.description
    )
    return web.json_response(
        {"status": "ok", "action_id": action.id, "template": template_json(template)}
    )


async def get_template(request: web.Request) -> web.Response:
    """Return one template."""
    _, world = _sim(request)
    template = world.template(request.match_info["name"])
    return web.json_response({"status": "ok", "template": template_json(template)})


async def update_template(request: web.Request) -> web.Response:
    """Rename a template."""
    _, world = _sim(request)
    template = world.template(request.match_info["name"])
    body = validated(
        TemplateUpdate, await json_body(request), f"{request.method} /ecs/v2/templates/{{name}}"
    )
    if body.description is None and body.notes is None:
        raise SimError(
            400, f"{request.method} /ecs/v2/templates/{{name}}: give description or notes"
        )
    if body.description is not None:
        template.description = body.description
    if body.notes is not None:
        template.notes = body.notes
    return web.json_response({"status": "ok", "template": template_json(template)})


async def delete_template(request: web.Request) -> web.Response:
    """Start deleting a template."""
    _, world = _sim(request)
    action = world.delete_template(request.match_info["name"])
    return web.json_response({"status": "ok", "action": action_json(action, world.now)})


async def list_images(request: web.Request) -> web.Response:
    """Return the base images."""
    return web.json_response({"status": "ok", "images": [image_json(i) for i in IMAGES]})


async def list_plans(request: web.Request) -> web.Response:
    """Return every plan with its prices."""
    _, world = _sim(request)
    return web.json_response(
        {"status": "ok", "plans": [plan_json(world, p) for p in world.plans.values() if p.listed]}
    )


async def available_plans(request: web.Request) -> web.Response:
    """Return the plans that can be activated now, with images and regions."""
    _, world = _sim(request)
    plans = [
        plan_json(world, p, activatable=True)
        for p in world.plans.values()
        if p.available and p.listed
    ]
    return web.json_response({"status": "ok", "plans": plans})


async def list_regions(request: web.Request) -> web.Response:
    """Return the regions."""
    regions = [
        {"id": ident, "location": code, "description": label} for code, label, ident in REGIONS
    ]
    return web.json_response({"status": "ok", "regions": regions})


async def available_regions(request: web.Request) -> web.Response:
    """Return the regions where a plan can be activated, in a nested list as the live API does."""
    _, world = _sim(request)
    body = validated(RegionQuery, await json_body(request), "POST /ecs/v2/regions/availables")
    return web.json_response({"status": "ok", "regions": [list(world.plan(body.plan).regions)]})


# -- billing ---------------------------------------------------------------------------------------


def _month(request: web.Request) -> tuple[int, int, datetime, datetime]:
    year = id_arg(request, "year")
    month = id_arg(request, "month")
    lo, hi = month_bounds(year, month)
    return year, month, lo, hi


def server_bills(
    world: World, year: int, month: int, lo: datetime, hi: datetime
) -> list[dict[str, Any]]:
    """Return the server consumption rows of a month, as billed so far."""
    cutoff = min(hi, world.billed_until())
    rows: list[dict[str, Any]] = []
    for server in world.servers.values():
        if server.created >= hi or (server.deleted and server.deleted < lo):
            continue
        online, offline, _ = world.server_cost(server, lo, cutoff)
        plan = world.plan(server.plan)
        online_h, offline_h = math.floor(online), math.floor(offline)
        online_price = round(online_h * plan.hourly_price, 2)
        discount = world.pricing.offline_discount
        offline_price = round(offline_h * plan.hourly_price * (1 - discount / 100), 2)
        original = round((online_h + offline_h) * plan.hourly_price, 2)
        rows.append(
            {
                "plan": server.plan,
                "name": server.name,
                "group": server.group,
                "notes": server.notes,
                "status": "Booted" if server.deleted is None else "Deleted",
                "year": year,
                "month": month,
                "creation_date": iso_micro(server.created),
                "deletion_date": iso_micro(server.deleted),
                "billed_hours": online_h + offline_h,
                "cost": round(online_price + offline_price, 2),
                "summary": {
                    "online_hour": online_h,
                    "online_price": online_price,
                    "offline_hour": offline_h,
                    "offline_discount": discount,
                    "offline_price": offline_price,
                    "offline_reduction": round(original - online_price - offline_price, 2),
                    "reserved_discounts": [],
                    "original_cost": original,
                },
            }
        )
    return rows


def template_bills(
    world: World, year: int, month: int, lo: datetime, hi: datetime
) -> list[dict[str, Any]]:
    """Return the template consumption rows of a month, as billed so far."""
    cutoff = min(hi, world.billed_until())
    rows: list[dict[str, Any]] = []
    for t in world.templates.values():
        hours = math.floor(world.storage_hours(t.created, t.deleted, lo, cutoff))
        if hours <= 0:
            continue
        rows.append(
            {
                "cost": round(
                    world.storage_cost(t.size_kb, hours, world.pricing.template_gb_hour), 2
                ),
                "name": t.name,
                "status": "Created" if t.deleted is None else "Deleted",
                "creation_date": iso_micro(t.created),
                "deletion_date": iso_micro(t.deleted),
                "notes": t.description,
                "year": year,
                "month": month,
                "hours": hours,
                "size_on_disk": t.size_kb,
            }
        )
    return rows


def snapshot_bills(
    world: World, year: int, month: int, lo: datetime, hi: datetime
) -> dict[str, Any]:
    """Return the snapshot consumption of a month, as billed so far."""
    cutoff = min(hi, world.billed_until())
    rows: list[dict[str, Any]] = []
    for s in world.snapshots.values():
        hours = math.floor(world.storage_hours(s.created, s.deleted, lo, cutoff))
        if hours <= 0:
            continue
        rows.append(
            {
                "snapshot": s.id,
                "snapshot_name": s.name,
                "snapshot_status": s.status,
                "snapshot_status_label": s.status_label,
                "snapshot_description": s.description,
                "snapshot_created_at": iso_micro(s.created),
                "snapshot_deleted_at": iso_micro(s.deleted),
                "size_on_disk": s.size_kb,
                "hours": hours,
                "final_cost": round(
                    world.storage_cost(s.size_kb, hours, world.pricing.snapshot_gb_hour), 2
                ),
            }
        )
    return {
        "year": year,
        "month": month,
        "total_cost": round(sum(r["final_cost"] for r in rows), 2),
        "rows_count": len(rows),
        "snapshots": rows,
    }


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Return rows as CSV, nested fields flattened with dots."""
    flat = [_flatten(r) for r in rows]
    columns: list[str] = []
    for row in flat:
        columns.extend(c for c in row if c not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = len(value)
        else:
            flat[f"{prefix}{key}"] = "" if value is None else value
    return flat


async def billing(request: web.Request) -> web.Response:
    """Return a month's consumption of servers, templates or snapshots, as JSON or CSV."""
    _, world = _sim(request)
    kind = request.match_info["kind"]
    year, month, lo, hi = _month(request)
    fmt = request.query.get("type", "json")
    if fmt not in ("json", "csv"):
        raise SimError(400, f"query parameter 'type' must be json or csv, not {fmt!r}")
    if kind == "servers":
        body: Any = server_bills(world, year, month, lo, hi)
        rows = body
    elif kind == "templates":
        body = template_bills(world, year, month, lo, hi)
        rows = body
    else:
        body = snapshot_bills(world, year, month, lo, hi)
        rows = body["snapshots"]
    if fmt == "csv":
        return web.Response(text=to_csv(rows), content_type="text/csv")
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    """Register the ECS paths."""
    r = app.router
    r.add_post(f"{ECS}/login", login)
    r.add_route("*", f"{ECS}/account", account)
    r.add_get(f"{ECS}/actions", list_actions)
    r.add_get(f"{ECS}/actions/{{id}}", get_action)
    r.add_get(f"{ECS}/logs", list_logs)
    r.add_get(f"{ECS}/logs/{{id}}", get_log)
    r.add_get(f"{ECS}/servers", list_servers)
    r.add_post(f"{ECS}/servers", create_server)
    r.add_get(f"{ECS}/servers/{{name}}", get_server)
    r.add_put(f"{ECS}/servers/{{name}}", update_server)
    r.add_delete(f"{ECS}/servers/{{name}}", delete_server)
    r.add_get(f"{ECS}/servers/{{name}}/status", server_status)
    r.add_get(f"{ECS}/servers/{{name}}/metrics", server_metrics)
    r.add_post(f"{ECS}/servers/{{name}}/actions", server_action)
    r.add_post(f"{ECS}/servers/{{name}}/snapshots", create_snapshot)
    r.add_get(f"{ECS}/servers/{{name}}/snapshots", list_snapshots)
    r.add_get(f"{ECS}/servers/{{name}}/snapshots/{{id}}", get_snapshot)
    r.add_patch(f"{ECS}/servers/{{name}}/snapshots/{{id}}", update_snapshot)
    r.add_delete(f"{ECS}/servers/{{name}}/snapshots/{{id}}", delete_snapshot)
    r.add_get(f"{ECS}/templates", list_templates)
    r.add_post(f"{ECS}/templates", create_template)
    r.add_get(f"{ECS}/templates/{{name}}", get_template)
    r.add_put(f"{ECS}/templates/{{name}}", update_template)
    r.add_patch(f"{ECS}/templates/{{name}}", update_template)
    r.add_delete(f"{ECS}/templates/{{name}}", delete_template)
    r.add_get(f"{ECS}/images/basics", list_images)
    r.add_get(f"{ECS}/plans", list_plans)
    r.add_get(f"{ECS}/plans/availables", available_plans)
    r.add_get(f"{ECS}/regions", list_regions)
    r.add_post(f"{ECS}/regions/availables", available_regions)
    r.add_get(f"{ECS}/billing/{{kind:servers|templates|snapshots}}/{{year}}/{{month}}", billing)
