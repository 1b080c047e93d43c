"""What the simulator's API modules share: the realms, the Simulation state, and how to answer.

The route modules (ecs, ecs_account, glesys, k8sgpu, control) import this; `app.py` assembles
them with the middlewares into one aiohttp application.
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

from aiohttp import web
from pydantic import BaseModel, ValidationError

from daemon.simulator.entities import SimError
from daemon.simulator.faults import FaultBoard, FaultRequest
from daemon.simulator.scenario import Scenario, build_world
from daemon.simulator.world import World

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
