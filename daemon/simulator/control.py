"""The `/_sim/` control surface that tests, the demo and benchmarks drive the simulator with."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from daemon.simulator.demand import Constant
from daemon.simulator.entities import SimError
from daemon.simulator.faults import FaultRequest
from daemon.simulator.http import SIM, json_body, validated
from daemon.simulator.scenario import ScenarioError, parse_scenario
from daemon.simulator.timefmt import iso_micro
from daemon.simulator.world import World, month_bounds


class Advance(BaseModel):
    """POST /_sim/advance."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=400 * 86400)


class InjectedAction(BaseModel):
    """POST /_sim/actions: an action as if started in the panel."""

    model_config = ConfigDict(extra="forbid")

    resource: str
    type: str = Field(min_length=1)
    outcome: Literal["completed", "failed", "error"] = "completed"
    duration_s: float = Field(default=60.0, ge=0)
    resource_type: str = "ECS"


class DemandBody(BaseModel):
    """POST /_sim/demand."""

    model_config = ConfigDict(extra="forbid")

    server: str
    cores: float = Field(ge=0)


async def requests_log(request: web.Request) -> web.Response:
    """Return every provider request served, oldest first."""
    return web.json_response(list(request.app[SIM].requests))


async def clear_requests(request: web.Request) -> web.Response:
    """Forget the requests served so far."""
    request.app[SIM].requests.clear()
    return web.json_response({"status": "ok"})


def world_json(world: World) -> dict[str, Any]:
    """Return the whole world as tests and the demo read it."""
    now = world.now
    lo, _ = month_bounds(now.year, now.month)
    servers: list[dict[str, Any]] = []
    for s in world.live_servers():
        plan = world.plan(s.plan)
        servers.append(
            {
                "name": s.name,
                "provider": "seeweb",
                "plan": s.plan,
                "cores": plan.cpu,
                "status": "RUNNING" if s.running else "SHUTOFF",
                "cpu_demand": round(s.demand.at(now, world.origin), 3),
                "cpu_percent": round(world.cpu_percent(s, now), 2),
                "group": s.group,
                "notes": s.notes,
                "location": s.location,
            }
        )
    for g in world.glesys.values():
        used, cores = world.glesys_cpu(g, now)
        servers.append(
            {
                "name": g.hostname,
                "serverid": g.serverid,
                "provider": "glesys",
                "plan": None,
                "cores": cores,
                "cores_requested": g.cpucores,
                "status": g.state.upper(),
                "cpu_demand": round(g.demand.at(now, world.origin), 3),
                "cpu_percent": round(100 * used / cores, 2),
                "resizes": len(g.cores_history) - 1,
                "cores_history": [[iso_micro(t), c] for t, c in g.cores_history],
            }
        )
    return {
        "now": iso_micro(now),
        "servers": servers,
        "snapshots": [
            {
                "id": s.id,
                "server": s.server,
                "status": s.status,
                "notes": s.notes,
                "protected": s.protected,
            }
            for s in world.snapshots.values()
        ],
        "actions": [
            {"id": a.id, "type": a.type, "resource": a.resource, "status": a.status}
            for a in world.actions
        ],
        "pods": [
            {
                "uuid": p.uuid,
                "cluster": p.cluster,
                "name": p.remote_name,
                "runtime_class": p.runtime_class,
                "status": p.status,
                "online": p.online,
                "failed": p.failed,
            }
            for p in world.pods.values()
        ],
        "money": {
            "month_to_date": world.spent(lo, now),
            "billed_until": iso_micro(world.billed_until()),
            "billed_month_to_date": world.spent(lo, max(lo, world.billed_until())),
        },
        "timeline_errors": list(world.timeline_errors),
    }


async def world_state(request: web.Request) -> web.Response:
    """Return servers, snapshots, actions, pods and money spent."""
    return web.json_response(world_json(request.app[SIM].world))


async def advance(request: web.Request) -> web.Response:
    """Move simulated time forward and run what became due."""
    world = request.app[SIM].world
    body = validated(Advance, await json_body(request), "POST /_sim/advance")
    world.clock.advance(body.seconds)
    now = world.sync()
    return web.json_response({"status": "ok", "now": iso_micro(now)})


async def add_fault(request: web.Request) -> web.Response:
    """Inject a fault, expire tokens, or insert actions between page fetches."""
    sim = request.app[SIM]
    body = validated(FaultRequest, await json_body(request), "POST /_sim/faults")
    if body.expire_tokens:
        sim.tokens.expire_all(sim.world.now)
    if body.fail_actions is not None:
        sim.world.fail_actions(body.fail_actions, body.outcome, body.count)
    fault = sim.faults.add(body, sim.world.now)
    return web.json_response(
        {
            "status": "ok",
            "fault": fault.as_json() if fault else None,
            "faults": [f.as_json() for f in sim.faults.faults],
        }
    )


async def clear_faults(request: web.Request) -> web.Response:
    """Remove every fault."""
    request.app[SIM].faults.clear()
    request.app[SIM].world.failing.clear()
    return web.json_response({"status": "ok", "faults": []})


async def load_scenario(request: web.Request) -> web.Response:
    """Replace the world with the scenario in the body (YAML or JSON)."""
    sim = request.app[SIM]
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise SimError(400, "POST /_sim/scenario: the body is not UTF-8 text") from None
    try:
        scenario = parse_scenario(text, "POST /_sim/scenario")
        sim.load(scenario)
    except ScenarioError as exc:
        raise SimError(400, str(exc)) from None
    return web.json_response(
        {"status": "ok", "scenario": scenario.name, "now": iso_micro(sim.world.now)}
    )


async def inject_action(request: web.Request) -> web.Response:
    """Record an action as if started in the panel; power actions take effect when completed."""
    world = request.app[SIM].world
    body = validated(InjectedAction, await json_body(request), "POST /_sim/actions")
    known = (
        body.resource in world.servers
        or body.resource in world.templates
        or (body.resource.isdigit() and int(body.resource) in world.snapshots)
    )
    if not known:
        raise SimError(404, f"POST /_sim/actions: resource: {body.resource!r} not found")
    action = world.start_action(
        body.resource,
        body.type,
        duration_s=body.duration_s,
        outcome=body.outcome,
        resource_type=body.resource_type,
    )
    server = world.servers.get(body.resource)
    if server is not None and body.type in ("power_on", "power_off"):
        running = body.type == "power_on"

        def finish(t: Any) -> None:
            if action.status == "completed":
                server.set_running(running, t)

        world.after(action, finish)
    world.sync()
    return web.json_response(
        {"status": "ok", "action": {"id": action.id, "type": action.type, "status": action.status}}
    )


async def set_demand(request: web.Request) -> web.Response:
    """Set a server's CPU demand, in cores, from now on."""
    world = request.app[SIM].world
    body = validated(DemandBody, await json_body(request), "POST /_sim/demand")
    world.set_demand(body.server, Constant(cores=body.cores))
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    """Register the control paths."""
    r = app.router
    r.add_get("/_sim/requests", requests_log)
    r.add_delete("/_sim/requests", clear_requests)
    r.add_get("/_sim/world", world_state)
    r.add_post("/_sim/advance", advance)
    r.add_post("/_sim/faults", add_fault)
    r.add_delete("/_sim/faults", clear_faults)
    r.add_post("/_sim/scenario", load_scenario)
    r.add_post("/_sim/actions", inject_action)
    r.add_post("/_sim/demand", set_demand)
