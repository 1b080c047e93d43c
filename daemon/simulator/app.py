"""The simulator's aiohttp application: auth, faults, the request log, and error answers.

Each provider's paths live in their own module (`ecs.py`, `k8sgpu.py`, `glesys.py`); the `/_sim/`
control surface lives in `control.py`. This module ties them together with three middlewares, from
the outside in: the request log, fault injection, then auth and error translation, so that a
faulted request is logged with the status the client saw and a bad request never becomes a 500.
"""

from __future__ import annotations

import base64
import hmac
import json
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from daemon.simulator.entities import SimError
from daemon.simulator.http import (
    CONTROL,
    ECS,
    GLESYS,
    K8SGPU,
    SIM,
    Handler,
    Simulation,
    error_response,
    realm_of,
)
from daemon.simulator.timefmt import iso_micro

log = structlog.get_logger("cloudpilot.simulator")

# -- middlewares -----------------------------------------------------------------------------------


@web.middleware
async def record_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log every provider request with the status the client saw."""
    if request.path.startswith(CONTROL):
        return await handler(request)
    sim = request.app[SIM]
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        sim.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "status": status,
                "t": iso_micro(sim.world.clock.now()),
            }
        )


@web.middleware
async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the faults that match this request's path."""
    if request.path.startswith(CONTROL):
        return await handler(request)
    sim = request.app[SIM]
    now = sim.world.clock.now()
    applied = sim.faults.decide(request.path, now)
    if applied.latency_s:
        await sim.faults.delay(applied.latency_s)
    if applied.status is not None:
        response = error_response(
            realm_of(request.path), applied.status, "injected fault", sim.world.clock.now()
        )
        if applied.retry_after is not None:
            # Seconds, or an HTTP date passed through as given.
            response.headers["Retry-After"] = str(applied.retry_after)
        return response
    answer = await handler(request)
    if applied.omit and isinstance(answer, web.Response):
        answer = without_keys(answer, applied.omit)
    if applied.garble and isinstance(answer, web.Response):
        answer = with_garbled_item(answer, applied.garble)
    if applied.pad_bytes and isinstance(answer, web.Response) and isinstance(answer.body, bytes):
        # Trailing blanks keep a JSON body valid: only its size changes.
        answer = web.Response(
            body=answer.body + b" " * applied.pad_bytes,
            status=answer.status,
            content_type=answer.content_type,
            headers=_extra_headers(answer),
        )
    if applied.truncate and isinstance(answer, web.Response) and isinstance(answer.body, bytes):
        body = answer.body
        cut = web.Response(
            body=body[: max(1, len(body) // 2)],
            status=answer.status,
            content_type=answer.content_type,
        )
        return cut
    return answer


def without_keys(answer: web.Response, keys: frozenset[str]) -> web.Response:
    """Return a JSON object answer with these top-level keys dropped; leave any other as it is."""
    if answer.content_type != "application/json" or not isinstance(answer.body, bytes):
        return answer
    data = json.loads(answer.body)
    if not isinstance(data, dict):
        return answer
    kept = {key: value for key, value in data.items() if key not in keys}
    return web.json_response(kept, status=answer.status, headers=_extra_headers(answer))


#: What a garbled field holds: an object where the record expects text or a number.
GARBLED = {"unexpected": ["shape"]}


def with_garbled_item(answer: web.Response, fields: frozenset[str]) -> web.Response:
    """Return a JSON answer whose first listed item has these fields in an unexpected shape.

    The list is the answer itself, or the first list of objects among its top-level values (or
    those of Glesys's `response`): one odd item among good ones, as a live API may send.
    """
    if answer.content_type != "application/json" or not isinstance(answer.body, bytes):
        return answer
    data = json.loads(answer.body)
    item = _first_listed_item(data)
    if item is None:
        return answer
    for name in fields:
        if name in item:
            item[name] = GARBLED
    return web.json_response(data, status=answer.status, headers=_extra_headers(answer))


def _first_listed_item(data: Any) -> dict[str, Any] | None:
    if isinstance(data, list):
        return data[0] if data and isinstance(data[0], dict) else None
    if not isinstance(data, dict):
        return None
    scope = data["response"] if isinstance(data.get("response"), dict) else data
    for value in scope.values():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            first: dict[str, Any] = value[0]
            return first
    return None


def _extra_headers(answer: web.Response) -> dict[str, str]:
    """Return the headers an answer set beyond those its body decides."""
    skip = {"content-type", "content-length"}
    return {name: value for name, value in answer.headers.items() if name.lower() not in skip}


@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bring the world up to date, check auth, and turn refusals into the API's error shape."""
    sim = request.app[SIM]
    realm = realm_of(request.path)
    now = sim.world.sync()
    try:
        if realm in ("ecs", "k8sgpu", "glesys"):
            _authenticate(request, sim, realm, now)
        return await handler(request)
    except SimError as exc:
        return error_response(realm, exc.status, exc.message, now, code=exc.code)
    except web.HTTPNotFound:
        return error_response(realm, 404, f"no such endpoint: {request.method} {request.path}", now)
    except web.HTTPMethodNotAllowed:
        return error_response(
            realm, 405, f"method {request.method} not allowed on {request.path}", now
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("simulator_handler_failed", method=request.method, path=request.path)
        return error_response(realm, 500, "internal simulator error", now)


_OPEN_PATHS = frozenset({f"{ECS}/login", f"{K8SGPU}/user/login/", f"{K8SGPU}/user/login"})


def _authenticate(request: web.Request, sim: Simulation, realm: str, now: datetime) -> None:
    if request.path in _OPEN_PATHS:
        return
    creds = sim.credentials
    if realm == "glesys":
        if request.headers.get("Authorization", "") != _basic(
            creds.glesys_project, creds.api_token
        ):
            raise SimError(401, "Authentication failed. Double check the username and key.")
        # No recording shows these two refusals; the words are the simulator's own.
        address = request.remote or ""
        if creds.glesys_addresses is not None and address not in creds.glesys_addresses:
            raise SimError(401, f"Access denied: this API key may not be used from {address}")
        function = glesys_function(request.path)
        if creds.glesys_functions is not None and function not in creds.glesys_functions:
            raise SimError(401, f"Access denied: this API key may not call {function}")
        return
    if realm == "ecs":
        token = request.headers.get("X-APITOKEN") or request.headers.get("X-API-TOKEN")
        if token is not None:
            if hmac.compare_digest(token, creds.api_token):
                return
            raise SimError(401, "invalid API token")
    bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not bearer:
        raise SimError(401, "authentication credentials were not provided")
    if not sim.tokens.valid(realm, bearer, now):
        raise SimError(401, "token is invalid or expired")


def glesys_function(path: str) -> str:
    """Return the Glesys function a path calls: `/glesys/server/edit/format/json` is server/edit."""
    parts = [part for part in path.removeprefix(GLESYS).split("/") if part]
    return "/".join(parts[:2])


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def create_app(sim: Simulation) -> web.Application:
    """Return the simulator's aiohttp application."""
    from daemon.simulator import control, ecs, ecs_account, glesys, k8sgpu

    app = web.Application(
        middlewares=[record_requests, inject_faults, answer_errors],
        client_max_size=4 * 1024 * 1024,
    )
    app[SIM] = sim
    ecs.add_routes(app)
    ecs_account.add_routes(app)
    k8sgpu.add_routes(app)
    glesys.add_routes(app)
    control.add_routes(app)

    async def release_hung_requests(app: web.Application) -> None:
        app[SIM].faults.clear()

    app.on_shutdown.append(release_hung_requests)
    return app
