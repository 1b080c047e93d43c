"""The simulator's aiohttp application: auth, faults, the request log, and error answers.

Each provider's paths live in their own module (`ecs.py`, `k8sgpu.py`, `glesys.py`); the `/_sim/`
control surface lives in `control.py`. This module ties them together with three middlewares, from
the outside in: the request log, fault injection, then auth and error translation, so that a
faulted request is logged with the status the client saw and a bad request never becomes a 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from daemon.simulator.faults import FaultBoard, FaultRequest
from daemon.simulator.scenario import Scenario, build_world
from daemon.simulator.timefmt import iso_micro
from daemon.simulator.world import SimError, World

log = structlog.get_logger("cloudpilot.simulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ECS = "/ecs/v2"
K8SGPU = "/k8sgpu/v1"
GLESYS = "/glesys"
CONTROL = "/_sim/"

REQUEST_LOG_LIMIT = 200_000


@dataclass(slots=True)
class Credentials:
    """What the simulated accounts accept."""

    api_token: str = "simulator-token"  # noqa: S105 - a documented simulator default
    username: str = "demo"
    password: str = "demo"  # noqa: S105 - a documented simulator default
    glesys_project: str = "cl12345"
    # A Glesys permanent key works only from the addresses on its list and for the functions it
    # is granted (`server/list`, ...); None allows any.
    glesys_addresses: tuple[str, ...] | None = None
    glesys_functions: frozenset[str] | None = None


@dataclass(slots=True)
class TokenStore:
    """JWTs issued by the simulated logins, with their expiry in simulated time."""

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    tokens: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    def issue(self, realm: str, user: str, now: datetime, ttl_s: float) -> tuple[str, datetime]:
        """Return a new token for `realm` and when it expires."""
        expires = now + timedelta(seconds=ttl_s)
        header = _b64({"alg": "HS256", "typ": "JWT"})
        payload = _b64(
            {"exp": int(expires.timestamp()), "username": user, "jti": secrets.token_hex(8)}
        )
        signature = hmac.new(self.secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"
        self.tokens[token] = (realm, expires)
        return token, expires

    def valid(self, realm: str, token: str, now: datetime) -> bool:
        """Return whether the token was issued for `realm` and has not expired."""
        entry = self.tokens.get(token)
        return entry is not None and entry[0] == realm and now < entry[1]

    def expire_all(self, now: datetime) -> None:
        """Make every token issued so far answer 401."""
        for token, (realm, _) in self.tokens.items():
            self.tokens[token] = (realm, now)

    def rebase(self, old_now: datetime, new_now: datetime) -> None:
        """Keep each token's remaining lifetime when simulated time jumps to a new scenario."""
        for token, (realm, expires) in self.tokens.items():
            self.tokens[token] = (realm, new_now + (expires - old_now))


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Simulation:
    """Everything the handlers share: the world, faults, tokens and the request log."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        speed: float = 1.0,
        metrics_step_s: float | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.speed = speed
        self.metrics_step_s = metrics_step_s
        self.credentials = credentials or Credentials()
        self.tokens = TokenStore()
        self.requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_LIMIT)
        self.scenario = scenario
        self.world: World = self._build(scenario)
        # Its own generator: whether a fault hits must not change the seeded world's choices.
        self.faults = FaultBoard(random.Random(scenario.seed))

    def _build(self, scenario: Scenario) -> World:
        return build_world(
            scenario,
            speed=self.speed,
            metrics_step_s=self.metrics_step_s,
            faults=self,
        )

    def add_window(self, spec: FaultRequest, now: datetime) -> None:
        """Receive a fault window from the scenario timeline."""
        self.faults.add_window(spec, now)

    def load(self, scenario: Scenario) -> None:
        """Replace the world with a new scenario's; faults are cleared, logins stay valid."""
        old_now = self.world.clock.now()
        world = self._build(scenario)
        self.faults.clear()
        self.faults = FaultBoard(random.Random(scenario.seed))
        self.tokens.rebase(old_now, world.clock.now())
        self.scenario, self.world = scenario, world


SIM = web.AppKey("simulation", Simulation)


# -- answers ---------------------------------------------------------------------------------------


def realm_of(path: str) -> str:
    """Return which API a path belongs to: ecs, k8sgpu, glesys, control or other."""
    if path.startswith(ECS):
        return "ecs"
    if path.startswith(K8SGPU):
        return "k8sgpu"
    if path.startswith(GLESYS):
        return "glesys"
    if path.startswith(CONTROL):
        return "control"
    return "other"


def error_response(
    realm: str, status: int, message: str, now: datetime, *, code: int | None = None
) -> web.Response:
    """Return an error in the shape the API of `realm` uses (`code`: Glesys's own, if other)."""
    body: dict[str, Any]
    if realm == "glesys":
        body = {"response": {"status": _glesys_status(code or status, message, now)}}
    elif realm == "k8sgpu":
        body = {"detail": message}  # the Serverless GPU API answers like Django REST framework
    else:
        # The envelope Seeweb's own client reads: {"error_code", "status", "message"}.
        body = {"error_code": status, "status": "error", "message": message}
    return web.json_response(body, status=status)


def _glesys_status(code: int, text: str, now: datetime) -> dict[str, Any]:
    return {"code": code, "timestamp": now.isoformat(timespec="seconds"), "text": text}


def glesys_response(payload: dict[str, Any], now: datetime, args: dict[str, Any]) -> web.Response:
    """Wrap a Glesys payload in its envelope."""
    # The live API, in PHP, echoes no arguments as an empty list, not an empty object.
    echoed: dict[str, Any] | list[Any] = args or []
    body = {
        "response": {
            "status": _glesys_status(200, "OK", now),
            **payload,
            "debug": {"input": echoed},
        }
    }
    return web.json_response(body)


async def json_body(request: web.Request) -> dict[str, Any]:
    """Return the request's JSON object, or refuse with a 400 that says what is wrong."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SimError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SimError(400, "request body must be a JSON object")
    return data


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: dict[str, Any], what: str) -> M:
    """Validate a request body; a failure names the request and the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"]) or "body"
        raise SimError(400, f"{what}: {field_name}: {first['msg']}") from None


def int_arg(value: str | None, name: str, default: int, *, minimum: int = 0) -> int:
    """Parse an integer query parameter, or refuse with a 400 naming it."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SimError(400, f"query parameter {name!r} must be an integer, not {value!r}") from None
    if number < minimum:
        raise SimError(400, f"query parameter {name!r} must be at least {minimum}")
    return number


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
