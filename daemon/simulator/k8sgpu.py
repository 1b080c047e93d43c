"""The Seeweb Serverless GPU ("k8sgpu") API under `/k8sgpu/v1`: login, tenants, events, pods, bills.

Shapes follow the public docs (hosting/serverless/rest-api). Every path answers with and without a
trailing slash, because the docs spell them both ways and Django-style clients add the slash.
"""

from __future__ import annotations

import csv
import io
import math
import secrets
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from daemon.simulator.entities import Cluster, GpuEvent, Pod, SimError
from daemon.simulator.http import K8SGPU, SIM, Handler, int_arg, json_body, validated
from daemon.simulator.timefmt import iso_micro, iso_seconds, naive_micro
from daemon.simulator.world import World, month_bounds

TOKEN_MAX_AGE_S = 14400
REMOTE_NAMESPACE = "remote-gpu"
DEFAULT_EVENTS_LENGTH = 50

# The years a bill can be asked for; outside them month arithmetic would leave datetime's range.
BILLING_YEARS = range(1970, 9999)

CSV_COLUMNS = (
    "cluster",
    "online",
    "local_reference_name",
    "local_reference_namespace",
    "remote_reference_name",
    "remote_reference_namespace",
    "runtime_class",
    "online_hour",
    "cost",
    "active",
)


class LoginRequest(BaseModel):
    """The body of `POST /user/login/`."""

    model_config = ConfigDict(extra="ignore")

    username: str
    password: str


# -- records ---------------------------------------------------------------------------------------


def cluster_record(cluster: Cluster) -> dict[str, Any]:
    """Return a tenant as the API shows it."""
    return {
        "name": cluster.name,
        "label": cluster.label,
        "customer": cluster.customer,
        "active": cluster.active,
        "created": True,
        "created_at": iso_micro(cluster.created),
    }


def pod_active(world: World, pod: Pod) -> bool:
    """Return a pod's `active` flag, which follows its tenant's."""
    # The docs show `active: true` on terminated pods, so it cannot mean the pod is running.
    cluster = world.clusters.get(pod.cluster)
    return cluster is not None and cluster.active


def pod_record(world: World, pod: Pod) -> dict[str, Any]:
    """Return a pod as the API shows it."""
    return {
        "uuid": pod.uuid,
        "remote_reference_name": pod.remote_name,
        "remote_reference_namespace": REMOTE_NAMESPACE,
        "local_reference_name": pod.local_name,
        "local_reference_namespace": pod.local_namespace,
        "status": pod.status,
        "online": pod.online,
        "active": pod_active(world, pod),
        "succeeded": pod.succeeded,
        "failed": pod.failed,
        "creation_date": iso_seconds(pod.created),
        "deactivated_from": None if pod.deactivated is None else iso_seconds(pod.deactivated),
        "runtime_class": pod.runtime_class,
        "user": pod.user,
        "cluster": pod.cluster,
        "in_deletion": pod.in_deletion,
    }


def event_record(event: GpuEvent) -> dict[str, Any]:
    """Return a pod event as the API shows it."""
    pod = event.pod
    return {
        "pod": pod.uuid,
        "cluster": pod.cluster,
        "id": event.id,
        "uuid": pod.uuid,
        "user": pod.user,
        "date": iso_micro(event.date),
        "runtime_class": pod.runtime_class,
        "local_reference_namespace": pod.local_namespace,
        "local_reference_name": pod.local_name,
        "remote_reference_namespace": REMOTE_NAMESPACE,
        "remote_reference_name": pod.remote_name,
        "event_epoch": int(event.date.timestamp()),
        "event_type": event.event_type,
    }


def event_matches(event: GpuEvent, needle: str) -> bool:
    """Return whether `needle` occurs (ignoring case) in the event's pod, tenant or references."""
    pod = event.pod
    haystack = (
        pod.uuid,
        pod.cluster,
        pod.local_name,
        pod.local_namespace,
        pod.remote_name,
        REMOTE_NAMESPACE,
    )
    return any(needle in field.lower() for field in haystack)


def billing_lines(world: World, year: int, month: int) -> list[dict[str, Any]]:
    """Return one bill line per pod that ran in the month, counting only time already billed."""
    lo, hi = month_bounds(year, month)
    hi = min(hi, world.billed_until())
    lines: list[dict[str, Any]] = []
    if hi <= lo:
        return lines
    for pod in sorted(world.pods.values(), key=lambda p: (p.created, p.uuid)):
        seconds = sum(interval.seconds_within(lo, hi) for interval in pod.run)
        if seconds <= 0:
            continue
        # The bill counts whole hours; a started hour is not charged until it is complete.
        hours = math.floor(seconds / 3600)
        price = world.pricing.gpu_prices.get(pod.runtime_class, 0.0)
        lines.append(
            {
                "pod": {
                    "cluster": pod.cluster,
                    "online": pod.online,
                    "local_reference_name": pod.local_name,
                    "local_reference_namespace": pod.local_namespace,
                    "remote_reference_name": pod.remote_name,
                    "remote_reference_namespace": REMOTE_NAMESPACE,
                },
                "cost": round(hours * price, 2),
                "online_hour": hours,
                "runtime_class": pod.runtime_class,
                "active": pod_active(world, pod),
            }
        )
    return lines


def billing_csv(lines: list[dict[str, Any]]) -> str:
    """Return bill lines as CSV with a header row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        flat = {**line["pod"], **{k: v for k, v in line.items() if k != "pod"}}
        writer.writerow(_csv_cell(flat[column]) for column in CSV_COLUMNS)
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def year_month(request: web.Request) -> tuple[int, int]:
    """Return the bill's year and month from the path, or refuse with a 400 naming the bad one."""
    parsed = []
    for name in ("year", "month"):
        raw = request.match_info[name]
        try:
            parsed.append(int(raw))
        except ValueError:
            raise SimError(400, f"{name} must be an integer, not {raw!r}") from None
    year, month = parsed
    if year not in BILLING_YEARS:
        raise SimError(
            400,
            f"year must be between {BILLING_YEARS.start} and {BILLING_YEARS.stop - 1}, not {year}",
        )
    if not 1 <= month <= 12:
        raise SimError(400, f"month must be between 1 and 12, not {month}")
    return year, month


# -- handlers --------------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    """Exchange a username and password for a JWT."""
    sim = request.app[SIM]
    body = validated(LoginRequest, await json_body(request), "login")
    creds = sim.credentials
    user_ok = secrets.compare_digest(body.username.encode(), creds.username.encode())
    if not (user_ok and secrets.compare_digest(body.password.encode(), creds.password.encode())):
        raise SimError(401, "No active account found with the given credentials")
    token, expires = sim.tokens.issue("k8sgpu", body.username, sim.world.now, TOKEN_MAX_AGE_S)
    return web.json_response(
        {
            "token": token,
            "expire": naive_micro(expires),
            "user": body.username,
            "max_age": TOKEN_MAX_AGE_S,
        }
    )


async def user(request: web.Request) -> web.Response:
    """Return the account's information."""
    return web.json_response({"username": request.app[SIM].credentials.username})


async def list_clusters(request: web.Request) -> web.Response:
    """Return every tenant."""
    world = request.app[SIM].world
    return web.json_response([cluster_record(c) for c in world.clusters.values()])


async def get_cluster(request: web.Request) -> web.Response:
    """Return one tenant."""
    world = request.app[SIM].world
    name = request.match_info["name"]
    cluster = world.clusters.get(name)
    if cluster is None:
        raise SimError(404, f"cluster {name!r} not found")
    return web.json_response(cluster_record(cluster))


async def list_events(request: web.Request) -> web.Response:
    """Return a newest-first page of pod events, optionally filtered by `search`."""
    world = request.app[SIM].world
    offset = int_arg(request.query.get("offset"), "offset", 0)
    length = int_arg(request.query.get("length"), "length", DEFAULT_EVENTS_LENGTH)
    needle = request.query.get("search", "").strip().lower()
    pool = [e for e in world.gpu_events if not needle or event_matches(e, needle)]
    pool.sort(key=lambda e: (e.date, e.id), reverse=True)
    page = pool[offset : offset + length]
    return web.json_response(
        {"items": [event_record(e) for e in page], "length": len(page), "total": len(pool)}
    )


async def list_pods(request: web.Request) -> web.Response:
    """Return every pod, or a tenant's pods with `?cluster=`."""
    world = request.app[SIM].world
    cluster = request.query.get("cluster")
    pods = [p for p in world.pods.values() if cluster is None or p.cluster == cluster]
    return web.json_response([pod_record(world, p) for p in pods])


async def get_pod(request: web.Request) -> web.Response:
    """Return one pod."""
    world = request.app[SIM].world
    return web.json_response(pod_record(world, world.pod(request.match_info["uuid"])))


async def delete_pod(request: web.Request) -> web.Response:
    """Ask for a pod's deletion."""
    world = request.app[SIM].world
    pod = world.delete_pod(request.match_info["uuid"])
    # The docs show no response body; we answer like the documented tenant deletion does
    # ({"message": "Cluster in deletion", "cluster": ...}), which is what a client can log.
    return web.json_response({"message": "Pod in deletion", "pod": pod.uuid})


async def billing(request: web.Request) -> web.Response:
    """Return the month's GPU usage as billed so far, as JSON or (with `Accept: text/csv`) CSV."""
    world = request.app[SIM].world
    year, month = year_month(request)
    lines = billing_lines(world, year, month)
    if "text/csv" in request.headers.get("Accept", ""):
        return web.Response(text=billing_csv(lines), content_type="text/csv")
    return web.json_response({"month": month, "year": year, "pods": lines})


def add_routes(app: web.Application) -> None:
    """Register the Serverless GPU paths, each with and without a trailing slash."""
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/user/login", login),
        ("GET", "/user", user),
        ("GET", "/cluster", list_clusters),
        ("GET", "/cluster/{name}", get_cluster),
        ("GET", "/events", list_events),
        ("GET", "/pod", list_pods),
        ("GET", "/pod/{uuid}", get_pod),
        ("DELETE", "/pod/{uuid}", delete_pod),
        ("GET", "/billing/{year}/{month}", billing),
    ]
    for method, path, handler in routes:
        for spelling in (path, f"{path}/"):
            app.router.add_route(method, f"{K8SGPU}{spelling}", handler)
