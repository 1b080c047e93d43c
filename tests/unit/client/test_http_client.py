"""The provider clients against real in-process aiohttp servers with inline handlers."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from daemon.client.base import ClientSettings, ProblemObserver
from daemon.client.errors import (
    AuthError,
    BadResponseError,
    ConflictError,
    NotFoundError,
    ProviderError,
    ProviderTimeout,
    ProviderUnreachable,
    RateLimitedError,
    ServerError,
)
from daemon.client.records import ItemProblem, PageItems
from daemon.clock import FakeClock
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.providers.seeweb.client import SeewebClient
from daemon.secret import Secret

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN = "CANARY-TOKEN-7f3a91"
PASSWORD = "CANARY-PASS-9b1c22"
NO_LIMIT = ClientSettings(requests_per_second=None)

ACTION = {
    "id": 709,
    "status": "in-progress",
    "user": "foo",
    "created_at": "2024-10-19T15:08:55.887799+00:00",
    "started_at": "",
    "completed_at": "",
    "resource": "ec200001",
    "resource_type": "ECS",
    "type": "power_off",
    "progress": 10,
}
SNAPSHOT = {"id": 104, "name": "ec200409-SNP-1", "status": "CG", "protected": True}


@dataclass
class Api:
    """A running fake API: its base URL and every request it served."""

    url: str
    hits: list[tuple[str, str, dict[str, str], dict[str, str], Any]] = field(default_factory=list)

    def count(self, path: str, method: str | None = None) -> int:
        return sum(1 for m, p, *_ in self.hits if p == path and method in (None, m))


@asynccontextmanager
async def serve(*routes: tuple[str, str, Handler]) -> AsyncIterator[Api]:
    api = Api(url="")

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        api.hits.append(
            (request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        return await handler(request)

    app = web.Application(middlewares=[record])
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    server = TestServer(app)
    await server.start_server()
    api.url = str(server.make_url("")).rstrip("/")
    try:
        yield api
    finally:
        await server.close()


def replies(*answers: web.Response) -> Handler:
    """Return a handler that gives the answers in turn, repeating the last."""
    queue = list(answers)

    async def handler(request: web.Request) -> web.Response:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        # A response object can be sent only once: send a copy.
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    return handler


def status(code: int, **headers: str) -> web.Response:
    return web.json_response({"message": f"status {code}"}, status=code, headers=headers)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def seeweb(
    session: aiohttp.ClientSession,
    api: Api,
    clock: FakeClock,
    settings: ClientSettings = NO_LIMIT,
    **kwargs: Any,
) -> SeewebClient:
    return SeewebClient(
        session,
        api.url,
        clock=clock,
        token=Secret(TOKEN),
        settings=settings,
        rng=random.Random(7),
        **kwargs,
    )


def collect(into: list[tuple[str, str, ItemProblem]]) -> ProblemObserver:
    """Return an `on_problem` hook that keeps what it is told."""

    def observe(provider: str, endpoint: str, problem: ItemProblem) -> None:
        into.append((provider, endpoint, problem))

    return observe


def k8sgpu(
    session: aiohttp.ClientSession,
    api: Api,
    clock: FakeClock,
    settings: ClientSettings = NO_LIMIT,
    **kwargs: Any,
) -> K8sGpuClient:
    return K8sGpuClient(
        session,
        api.url,
        clock=clock,
        username="demo",
        password=Secret(PASSWORD),
        settings=settings,
        rng=random.Random(7),
        **kwargs,
    )


# --- URLs, auth headers, settings ----------------------------------------------------------------


async def test_api_token_goes_in_x_apitoken_header(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    body = {"status": "ok", "server": {"name": "ec200001", "current_status": "Running"}}
    async with serve(
        ("GET", "/ecs/v2/servers/{name}/status", replies(web.json_response(body)))
    ) as api:
        status_ = await seeweb(session, api, clock).server_status("ec200001")
    assert status_.current_status == "RUNNING"
    assert api.hits[0][3]["X-APITOKEN"] == TOKEN
    assert "Authorization" not in api.hits[0][3]


def test_settings_never_use_aiohttp_default_timeout() -> None:
    timeout = ClientSettings(total_timeout=12, connect_timeout=3).timeout()
    assert (timeout.total, timeout.connect) == (12, 3)
    with pytest.raises(ValueError, match="max_attempts"):
        ClientSettings(max_attempts=0)


async def test_base_url_may_already_carry_the_api_prefix(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    body = {"username": "foo", "email": "foo@seeweb.it", "ecs_special_discount": "12"}
    async with serve(("GET", "/ecs/v2/account", replies(web.json_response(body)))) as api:
        client = SeewebClient(
            session, api.url + "/ecs/v2/", clock=clock, token=Secret(TOKEN), settings=NO_LIMIT
        )
        account = await client.account()
    assert account.ecs_special_discount == 12.0


# --- retries -------------------------------------------------------------------------------------


async def test_get_retries_5xx_at_most_three_times_with_capped_backoff(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with serve(("GET", "/ecs/v2/actions", replies(status(500)))) as api:
        with pytest.raises(ServerError) as caught:
            await seeweb(session, api, clock).list_actions()
    assert api.count("/ecs/v2/actions") == 3
    assert caught.value.status == 500
    assert len(clock.sleeps) == 2
    assert 0.25 <= clock.sleeps[0] <= 0.5  # base 0.5, equal jitter
    assert 0.5 <= clock.sleeps[1] <= 1.0
    assert "seeweb GET /ecs/v2/actions: server error (HTTP 500: status 500)" in str(caught.value)


async def test_backoff_is_capped(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    settings = ClientSettings(
        requests_per_second=None, max_attempts=6, backoff_base=1.0, backoff_cap=2.0
    )
    async with serve(("GET", "/ecs/v2/actions", replies(status(502)))) as api:
        with pytest.raises(ServerError):
            await seeweb(session, api, clock, settings).list_actions()
    assert api.count("/ecs/v2/actions") == 6
    assert all(s <= 2.0 for s in clock.sleeps)


async def test_get_recovers_after_transient_503(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    page = {"status": "ok", "actions": [ACTION], "total_actions": 1}
    handler = replies(status(503), web.json_response(page))
    async with serve(("GET", "/ecs/v2/actions", handler)) as api:
        actions, total = await seeweb(session, api, clock).list_actions()
    assert [a.id for a in actions] == [709]
    assert total == 1
    assert api.count("/ecs/v2/actions") == 2


async def test_retry_after_in_seconds_is_honoured(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    page = {"actions": [], "total_actions": 0}
    handler = replies(status(429, **{"Retry-After": "7"}), web.json_response(page))
    async with serve(("GET", "/ecs/v2/actions", handler)) as api:
        await seeweb(session, api, clock).list_actions()
    assert clock.sleeps == [7.0]
    assert api.count("/ecs/v2/actions") == 2


def streamed(body: bytes, *, gzip: bool = False) -> Handler:
    """Return a handler that sends `body` in chunks with no Content-Length, zipped if asked."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if gzip:
            response.enable_compression(web.ContentCoding.gzip)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 32 * 1024):
            await response.write(body[start : start + 32 * 1024])
        await response.write_eof()
        return response

    return handler


# A page of actions padded with blanks (still valid JSON) to just over 1 MiB: it zips to a few
# KiB, so only a limit on the body as decoded holds it.
BIG_PAGE = json.dumps({"actions": [ACTION], "total_actions": 1}).encode() + b" " * (1 << 20)


@pytest.mark.parametrize("gzip", [False, True], ids=["chunked", "gzip"])
async def test_a_body_past_the_limit_is_refused_while_it_streams(
    session: aiohttp.ClientSession, clock: FakeClock, gzip: bool
) -> None:
    settings = ClientSettings(requests_per_second=None, max_body_bytes=1 << 20)
    async with serve(("GET", "/ecs/v2/actions", streamed(BIG_PAGE, gzip=gzip))) as api:
        with pytest.raises(BadResponseError) as caught:
            await seeweb(session, api, clock, settings).list_actions()
        assert str(caught.value) == (
            "seeweb GET /ecs/v2/actions: answer larger than 1 MiB (HTTP 200); "
            "[providers] max_response sets the limit"
        )
        assert api.count("/ecs/v2/actions") == 1
        roomy = ClientSettings(requests_per_second=None, max_body_bytes=2 << 20)
        actions, total = await seeweb(session, api, clock, roomy).list_actions()
    assert ([action.id for action in actions], total) == ([709], 1)


async def test_retry_after_as_http_date_is_relative_to_the_clock(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    when = format_datetime(clock.now() + timedelta(seconds=9), usegmt=True)
    page = {"actions": [], "total_actions": 0}
    handler = replies(status(503, **{"Retry-After": when}), web.json_response(page))
    async with serve(("GET", "/ecs/v2/actions", handler)) as api:
        await seeweb(session, api, clock).list_actions()
    assert clock.sleeps == [9.0]


async def test_retry_after_beyond_the_cap_raises_at_once(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with serve(
        ("GET", "/ecs/v2/actions", replies(status(429, **{"Retry-After": "3600"})))
    ) as api:
        with pytest.raises(RateLimitedError) as caught:
            await seeweb(session, api, clock).list_actions()
    assert caught.value.retry_after == 3600.0
    assert api.count("/ecs/v2/actions") == 1
    assert clock.sleeps == []


async def test_persistent_429_gives_up_after_three_attempts(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with serve(("GET", "/ecs/v2/logs", replies(status(429)))) as api:
        with pytest.raises(RateLimitedError) as caught:
            await seeweb(session, api, clock).list_logs()
    assert api.count("/ecs/v2/logs") == 3
    assert caught.value.retry_after is None


@pytest.mark.parametrize("code", [500, 502, 504])
async def test_post_is_not_retried_when_the_work_may_have_happened(
    session: aiohttp.ClientSession, clock: FakeClock, code: int
) -> None:
    path = "/ecs/v2/servers/{name}/snapshots"
    async with serve(("POST", path, replies(status(code)))) as api:
        with pytest.raises(ServerError):
            await seeweb(session, api, clock).create_snapshot("ec200409", "before", "cp:1")
    assert api.count("/ecs/v2/servers/ec200409/snapshots") == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("code", [429, 503])
async def test_post_is_retried_when_nothing_happened(
    session: aiohttp.ClientSession, clock: FakeClock, code: int
) -> None:
    done = web.json_response({"status": "ok", "snapshot": SNAPSHOT, "action": ACTION})
    path = "/ecs/v2/servers/{name}/snapshots"
    async with serve(("POST", path, replies(status(code), done))) as api:
        snapshot, action = await seeweb(session, api, clock).create_snapshot(
            "ec200409", "before", "cp:1"
        )
    assert (snapshot.id, action.id) == (104, 709)
    assert api.count("/ecs/v2/servers/ec200409/snapshots") == 2
    assert api.hits[0][4] == {"description": "before", "notes": "cp:1"}


async def test_conflict_is_raised_with_the_providers_reason(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    busy = web.json_response({"message": "server busy: snapshot in progress"}, status=409)
    path = "/ecs/v2/servers/{name}/actions"
    async with serve(("POST", path, replies(busy))) as api:
        with pytest.raises(ConflictError) as caught:
            await seeweb(session, api, clock).server_action("ec200001", "power_off")
    assert caught.value.status == 409
    assert str(caught.value) == (
        "seeweb POST /ecs/v2/servers/ec200001/actions: "
        "conflict (HTTP 409: server busy: snapshot in progress)"
    )
    assert api.count("/ecs/v2/servers/ec200001/actions") == 1


async def test_not_found(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    async with serve(("GET", "/ecs/v2/servers/{name}", replies(status(404)))) as api:
        with pytest.raises(NotFoundError, match="/ecs/v2/servers/ec999999"):
            await seeweb(session, api, clock).get_server("ec999999")
    assert api.count("/ecs/v2/servers/ec999999") == 1


async def test_connection_refused_is_retried_then_raised(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    seen: list[tuple[str, str, str, float]] = []
    client = SeewebClient(
        session,
        f"http://127.0.0.1:{port}",
        clock=clock,
        token=Secret(TOKEN),
        settings=NO_LIMIT,
        observer=lambda *call: seen.append(call),
    )
    with pytest.raises(ProviderUnreachable, match="seeweb GET /ecs/v2/plans: connection failed"):
        await client.list_plans()
    assert [outcome for _, _, outcome, _ in seen] == ["error"] * 3
    assert len(clock.sleeps) == 2


# --- timeouts ------------------------------------------------------------------------------------


async def test_hanging_server_ends_within_the_timeout_bound(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({})

    settings = ClientSettings(requests_per_second=None, total_timeout=0.2, max_attempts=2)
    seen: list[str] = []
    async with serve(("GET", "/ecs/v2/regions", hang), ("POST", "/ecs/v2/servers", hang)) as api:
        client = seeweb(session, api, clock, settings, observer=lambda *c: seen.append(c[2]))
        started = time.monotonic()
        with pytest.raises(ProviderTimeout, match=r"seeweb GET /ecs/v2/regions: no answer"):
            await client.list_regions()
        with pytest.raises(ProviderTimeout):
            await client.create_server("ECS1", "debian-12", "it-fr2", "x")
        elapsed = time.monotonic() - started
        release.set()
    assert elapsed < 2.0  # three attempts of 0.2 s, far from aiohttp's 5-minute default
    assert api.count("/ecs/v2/regions") == 2
    assert api.count("/ecs/v2/servers") == 1  # a POST that timed out is never resent
    assert seen == ["timeout"] * 3


# --- malformed bodies ----------------------------------------------------------------------------


async def test_truncated_json_raises_bad_response_naming_the_endpoint(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    full = json.dumps({"status": "ok", "actions": [ACTION], "total_actions": 1})
    cut = web.Response(text=full[: len(full) // 2], content_type="application/json")
    async with serve(("GET", "/ecs/v2/actions", replies(cut))) as api:
        with pytest.raises(BadResponseError) as caught:
            await seeweb(session, api, clock).list_actions()
    assert str(caught.value).startswith("seeweb GET /ecs/v2/actions: invalid JSON at byte")
    assert caught.value.__cause__ is None
    assert api.count("/ecs/v2/actions") == 1


async def test_an_unreadable_item_is_left_out_named_by_its_field_and_counted_once_per_item(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    actions = [dict(ACTION, id=i) for i in range(5)]
    actions[3]["created_at"] = "x"
    body = {"actions": actions, "total_actions": 5}
    seen: list[tuple[str, str, ItemProblem]] = []
    with structlog.testing.capture_logs() as logs:
        async with serve(("GET", "/ecs/v2/actions", replies(web.json_response(body)))) as api:
            client = seeweb(
                session, api, clock, logger=structlog.get_logger(), on_problem=collect(seen)
            )
            page, total = await client.list_actions()
            again, _ = await client.list_actions()

    assert [a.id for a in page] == [a.id for a in again] == [0, 1, 2, 4]
    assert isinstance(page, PageItems)
    assert (page.listed, total) == (5, 5)  # paging goes by what the page listed
    problem = ItemProblem("actions[].created_at", "3", "invalid datetime 'x'")
    assert seen == [("seeweb", "GET /ecs/v2/actions", problem)] * 2
    unreadable = [e for e in logs if e["event"] == "provider_item_unreadable"]
    assert [e["log_level"] for e in unreadable] == ["warning", "debug"]
    assert dict(unreadable[0]) == {
        "event": "provider_item_unreadable",
        "log_level": "warning",
        "provider": "seeweb",
        "endpoint": "GET /ecs/v2/actions",
        "field": "actions[].created_at",
        "item": "3",
        "error": "invalid datetime 'x'",
        "kept": "the other items of the answer",
    }


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"actions": [{"status": "completed"}]}, "actions[].id", "field required"),
        ({"actions": [dict(ACTION, progress="lots")]}, "actions[].progress", "invalid integer"),
    ],
)
async def test_items_of_the_wrong_shape_are_left_out(
    session: aiohttp.ClientSession, clock: FakeClock, body: Any, field: str, message: str
) -> None:
    seen: list[tuple[str, str, ItemProblem]] = []
    async with serve(("GET", "/ecs/v2/actions", replies(web.json_response(body)))) as api:
        page, total = await seeweb(session, api, clock, on_problem=collect(seen)).list_actions()

    assert (list(page), total) == ([], 1)
    assert [(p.field, p.message.startswith(message)) for _, _, p in seen] == [(field, True)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"actions": "none"}, "actions: input should be a valid tuple"),
        ([ACTION], "body: input should be a valid dictionary"),
        ({}, "actions: field required"),
    ],
)
async def test_wrong_shapes_raise_bad_response(
    session: aiohttp.ClientSession, clock: FakeClock, body: Any, expected: str
) -> None:
    async with serve(("GET", "/ecs/v2/actions", replies(web.json_response(body)))) as api:
        with pytest.raises(
            BadResponseError, match=expected.replace("[", r"\[").replace("]", r"\]")
        ):
            await seeweb(session, api, clock).list_actions()


# --- k8sgpu JWT login ----------------------------------------------------------------------------


@dataclass
class LoginDesk:
    """A login endpoint that issues numbered tokens and remembers which are valid."""

    max_age: float = 14400
    issued: int = 0
    valid: set[str] = field(default_factory=set)
    refuse: bool = False

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.refuse or body != {"username": "demo", "password": PASSWORD}:
            return web.json_response({"message": "bad credentials"}, status=401)
        self.issued += 1
        token = f"{TOKEN}-{self.issued}"
        self.valid.add(token)
        answer = {
            "token": token,
            "expire": "2024-11-21 13:03:54.736403",
            "user": "demo",
            "max_age": self.max_age,
        }
        return web.json_response(answer)

    def guarded(self, answer: Any) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if token not in self.valid:
                return web.json_response({"message": "token expired"}, status=401)
            return web.json_response(answer)

        return handler


CLUSTER = {
    "name": "skg00018",
    "label": "tenant-lab",
    "customer": "skgu00004",
    "active": True,
    "created": True,
    "created_at": "2024-08-12T14:46:49.127000+00:00",
}


async def test_k8sgpu_401_relogs_in_exactly_once_and_retries(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    desk = LoginDesk()
    async with serve(
        ("POST", "/k8sgpu/v1/user/login/", desk.login),
        ("GET", "/k8sgpu/v1/cluster/", desk.guarded([CLUSTER])),
    ) as api:
        client = k8sgpu(session, api, clock)
        assert [c.name for c in await client.list_clusters()] == ["skg00018"]
        desk.valid.clear()  # the server forgets every token
        assert [c.name for c in await client.list_clusters()] == ["skg00018"]
    assert desk.issued == 2
    assert api.count("/k8sgpu/v1/cluster/") == 3
    assert clock.sleeps == []


async def test_k8sgpu_second_401_raises_auth_error(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    desk = LoginDesk()

    async def always_401(request: web.Request) -> web.Response:
        return web.json_response({"message": "no"}, status=401)

    async with serve(
        ("POST", "/k8sgpu/v1/user/login/", desk.login),
        ("GET", "/k8sgpu/v1/pod/", always_401),
    ) as api:
        with pytest.raises(AuthError, match="k8sgpu GET /k8sgpu/v1/pod/: credentials refused"):
            await k8sgpu(session, api, clock).list_pods()
    assert desk.issued == 2
    assert api.count("/k8sgpu/v1/pod/") == 2


async def test_refused_login_raises_auth_error_without_looping(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    desk = LoginDesk(refuse=True)
    async with serve(
        ("POST", "/k8sgpu/v1/user/login/", desk.login),
        ("GET", "/k8sgpu/v1/pod/", desk.guarded([])),
    ) as api:
        with pytest.raises(AuthError, match="POST /k8sgpu/v1/user/login/"):
            await k8sgpu(session, api, clock).list_pods()
    assert api.count("/k8sgpu/v1/user/login/") == 1
    assert api.count("/k8sgpu/v1/pod/") == 0


async def test_k8sgpu_token_is_refreshed_before_max_age(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    desk = LoginDesk(max_age=100)
    async with serve(
        ("POST", "/k8sgpu/v1/user/login/", desk.login),
        ("GET", "/k8sgpu/v1/cluster/{name}", desk.guarded(CLUSTER)),
    ) as api:
        client = k8sgpu(session, api, clock)
        await client.get_cluster("skg00018")
        clock.advance(89)
        await client.get_cluster("skg00018")
        assert desk.issued == 1
        clock.advance(2)  # past 90 % of max_age
        await client.get_cluster("skg00018")
    assert desk.issued == 2
    statuses = [h[3]["Authorization"] for h in api.hits if h[1].startswith("/k8sgpu/v1/cluster")]
    assert statuses[-1] == f"Bearer {TOKEN}-2"


async def test_concurrent_callers_share_one_login_and_one_relogin(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    desk = LoginDesk()
    async with serve(
        ("POST", "/k8sgpu/v1/user/login/", desk.login),
        ("GET", "/k8sgpu/v1/cluster/", desk.guarded([CLUSTER])),
    ) as api:
        client = k8sgpu(session, api, clock)
        await asyncio.gather(*(client.list_clusters() for _ in range(8)))
        assert desk.issued == 1
        desk.valid.clear()
        await asyncio.gather(*(client.list_clusters() for _ in range(8)))
    assert desk.issued == 2


# --- ECS JWT login -------------------------------------------------------------------------------


async def test_seeweb_password_login_uses_bearer_and_refreshes_before_expire(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    logins: list[Any] = []

    async def login(request: web.Request) -> web.Response:
        logins.append(await request.json())
        expire = int((clock.now() + timedelta(hours=4)).timestamp())
        token = f"{TOKEN}-{len(logins)}"
        return web.json_response({"token": token, "expire": expire, "status": "ok"})

    regions = {"status": "ok", "regions": [{"location": "it-fr2", "description": "Frosinone"}]}
    async with serve(
        ("POST", "/ecs/v2/login", login),
        ("GET", "/ecs/v2/regions", replies(web.json_response(regions))),
    ) as api:
        client = SeewebClient(
            session,
            api.url,
            clock=clock,
            username="foo",
            password=Secret(PASSWORD),
            settings=NO_LIMIT,
        )
        await client.list_regions()
        clock.advance(3.5 * 3600)
        await client.list_regions()
        assert len(logins) == 1
        clock.advance(0.2 * 3600)  # 3.7 h: past 90 % of the 4 h token
        regions_seen = await client.list_regions()
    assert len(logins) == 2
    assert logins[0] == {"username": "foo", "password": PASSWORD}
    assert regions_seen[0].location == "it-fr2"
    auth = [h[3]["Authorization"] for h in api.hits if h[1] == "/ecs/v2/regions"]
    assert auth == [f"Bearer {TOKEN}-1", f"Bearer {TOKEN}-1", f"Bearer {TOKEN}-2"]


def test_seeweb_needs_exactly_one_way_to_authenticate() -> None:
    with pytest.raises(ValueError, match="either an API token or a username and password"):
        SeewebClient(
            None,  # type: ignore[arg-type]
            "http://x",
            clock=FakeClock(),
            token=Secret(TOKEN),
            username="foo",
            password=Secret(PASSWORD),
        )


# --- secrets never leak --------------------------------------------------------------------------


async def test_canary_secrets_never_appear_in_repr_errors_or_logs(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    desk = LoginDesk()

    async def reject(request: web.Request) -> web.Response:
        return web.json_response({"message": "token expired"}, status=401)

    bad_login = web.json_response({"token": TOKEN, "expire": "soon", "status": "ok"})
    texts: list[str] = [repr(Secret(TOKEN)), str(Secret(TOKEN)), f"{Secret(TOKEN)}"]
    with structlog.testing.capture_logs() as logs:
        async with serve(
            ("POST", "/k8sgpu/v1/user/login/", desk.login),
            ("GET", "/k8sgpu/v1/pod/", reject),
            ("GET", "/ecs/v2/servers", replies(status(500))),
            ("GET", "/ecs/v2/account", reject),
            ("POST", "/ecs/v2/login", replies(bad_login)),
        ) as api:
            logger = structlog.get_logger()
            gpu = k8sgpu(session, api, clock, logger=logger)
            ecs = seeweb(session, api, clock, logger=logger)
            ecs_jwt = SeewebClient(
                session,
                api.url,
                clock=clock,
                username="foo",
                password=Secret(PASSWORD),
                settings=NO_LIMIT,
                logger=logger,
            )
            texts += [repr(gpu), str(gpu), repr(ecs), repr(ecs_jwt), repr(ecs.settings)]
            failures: list[ProviderError] = []
            for call in (gpu.list_pods(), ecs.list_servers(), ecs.account(), ecs_jwt.account()):
                with pytest.raises(ProviderError) as caught:
                    await call
                failures.append(caught.value)
    texts += [f"{e!s} {e!r} {e.args!r} {vars(e)!r}" for e in failures]
    texts += [repr(logs)]
    assert [type(e) for e in failures] == [AuthError, ServerError, AuthError, BadResponseError]
    assert "expire: invalid datetime 'soon'" in str(failures[3])
    assert any(entry["event"] == "provider_retry" for entry in logs)
    assert any(entry["event"] == "provider_request" for entry in logs)
    for text in texts:
        assert TOKEN not in text
        assert PASSWORD not in text


# --- rate limit, concurrency, observer -----------------------------------------------------------


async def test_rate_limiter_spaces_requests_on_the_clock(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    body = {"status": "ok", "plans": []}
    settings = ClientSettings(requests_per_second=2, burst=2)
    async with serve(("GET", "/ecs/v2/plans", replies(web.json_response(body)))) as api:
        client = seeweb(session, api, clock, settings)
        for _ in range(5):
            await client.list_plans()
    assert api.count("/ecs/v2/plans") == 5
    assert clock.sleeps == [0.5, 0.5, 0.5]  # two from the burst, then one every 0.5 s


async def test_rate_limiter_covers_retries_too(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    settings = ClientSettings(requests_per_second=1, burst=1, backoff_base=0, backoff_cap=0)
    async with serve(("GET", "/ecs/v2/plans", replies(status(500)))) as api:
        with pytest.raises(ServerError):
            await seeweb(session, api, clock, settings).list_plans()
    assert clock.sleeps == [0.0, 1.0, 0.0, 1.0]  # backoff 0, then the bucket's 1 s


async def test_concurrency_is_capped(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    in_flight = 0
    peak = 0
    pair = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight >= 2:
            pair.set()
        await asyncio.wait_for(pair.wait(), 5)
        in_flight -= 1
        return web.json_response({"status": "ok", "templates": []})

    settings = ClientSettings(requests_per_second=None, max_concurrency=2)
    async with serve(("GET", "/ecs/v2/templates", slow)) as api:
        client = seeweb(session, api, clock, settings)
        await asyncio.gather(*(client.list_templates() for _ in range(6)))
    assert peak == 2
    assert api.count("/ecs/v2/templates") == 6


async def test_observer_sees_every_attempt_with_the_endpoint_template(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    seen: list[tuple[str, str, str, float]] = []
    metrics = {
        "metrics": {"resource": "ec200001", "core": [{"t": "2024-10-17 08:25:58", "y": "1.5"}]}
    }
    handler = replies(status(500), status(502), web.json_response(metrics))
    async with serve(("GET", "/ecs/v2/servers/{name}/metrics", handler)) as api:
        client = seeweb(session, api, clock, observer=lambda *call: seen.append(call))
        result = await client.server_metrics("ec200001")
    assert result.cpu[0].value == 1.5
    assert [(p, e, s) for p, e, s, _ in seen] == [
        ("seeweb", "/servers/{name}/metrics", "500"),
        ("seeweb", "/servers/{name}/metrics", "502"),
        ("seeweb", "/servers/{name}/metrics", "200"),
    ]
    assert all(seconds >= 0 for *_, seconds in seen)


# --- endpoints and doc-shaped bodies -------------------------------------------------------------


SERVER = {
    "name": "ec200001",
    "ipv4": "127.0.0.1",
    "ipv6": "fe80::1",
    "group": "eg100001",
    "plan": "ECS6",
    "plan_size": {"core": "12", "ram": "24576", "disk": 400, "gpu": "0", "gpu_label": ""},
    "reserved_plans": [],
    "is_reserved": False,
    "reserved_until": "",
    "support": None,
    "location": "it-fr2",
    "location_label": "frosinone",
    "notes": "my-server",
    "so": "debian-12",
    "so_label": "Debian 12",
    "creation_date": "2024-10-10 12:00:00",
    "deletion_date": None,
    "active_flag": True,
    "status": "Booted",
    "progress": 100,
    "api_version": "v4",
    "user": "eCS99999",
}


async def test_server_endpoints_parse_doc_shapes(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    created = {"status": "ok", "action": 35, "server": {"name": "ec200002", "os": "debian-12"}}
    async with serve(
        ("GET", "/ecs/v2/servers", replies(web.json_response({"count": 1, "server": [SERVER]}))),
        ("POST", "/ecs/v2/servers", replies(web.json_response(created))),
        ("PUT", "/ecs/v2/servers/{name}", replies(web.json_response({"status": "ok"}))),
        ("DELETE", "/ecs/v2/servers/{name}", replies(web.json_response({"action": ACTION}))),
        ("POST", "/ecs/v2/servers/{name}/actions", replies(web.json_response(ACTION))),
    ) as api:
        client = seeweb(session, api, clock)
        servers = await client.list_servers()
        server, action_id = await client.create_server(
            "ECS6", "debian-12", "it-fr2", "web", group="eg100001"
        )
        await client.update_server("ec200001", notes="new label")
        deleted = await client.delete_server("ec200001")
        rolled = await client.server_action("ec200001", "rollback", snapshot=105)
    assert servers[0].cores == 12
    assert servers[0].reserved_until is None
    assert (server.name, server.so, action_id) == ("ec200002", "debian-12", 35)
    assert deleted.id == 709 and not deleted.is_finished
    assert rolled.type == "power_off"
    bodies = {(m, p): b for m, p, _, _, b in api.hits}
    assert bodies[("POST", "/ecs/v2/servers")] == {
        "plan": "ECS6",
        "image": "debian-12",
        "location": "it-fr2",
        "notes": "web",
        "group": "eg100001",
    }
    assert bodies[("PUT", "/ecs/v2/servers/ec200001")] == {"notes": "new label"}
    assert bodies[("POST", "/ecs/v2/servers/ec200001/actions")] == {
        "type": "rollback",
        "snapshot": 105,
    }


async def test_plans_regions_templates_and_billing(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    plan = {
        "id": 1,
        "name": "ECS1",
        "cpu": "1",
        "ram": "1024",
        "disk": "20",
        "gpu": "0",
        "hourly_price": 0.017,
        "monthly_price": 12.0,
        "available_regions": [{"id": 1, "location": "it-fr2", "description": "Frosinone"}],
    }
    template = {"id": 2, "name": "ei000001", "status": "CG", "required_disk": 20}
    snapshots_bill = {
        "year": 2025,
        "month": 2,
        "total_cost": 3.7,
        "rows_count": 1,
        "snapshots": [{"snapshot": 58, "snapshot_name": "ec200404-SNP-6", "final_cost": 0.1}],
    }
    server_bill = [{"plan": "ECS1", "name": "ec200200", "cost": 2.64, "billed_hours": 182}]
    async with serve(
        ("GET", "/ecs/v2/plans", replies(web.json_response({"plans": [plan]}))),
        ("POST", "/ecs/v2/regions/availables", replies(web.json_response({"regions": ["it-fr2"]}))),
        (
            "POST",
            "/ecs/v2/templates",
            replies(web.json_response({"action_id": 700, "template": template})),
        ),
        ("GET", "/ecs/v2/billing/servers/{y}/{m}", replies(web.json_response(server_bill))),
        ("GET", "/ecs/v2/billing/snapshots/{y}/{m}", replies(web.json_response(snapshots_bill))),
        ("GET", "/ecs/v2/billing/templates/{y}/{m}", replies(web.Response(text="name,cost\n"))),
    ) as api:
        client = seeweb(session, api, clock)
        plans = await client.list_plans()
        regions = await client.available_regions("ECS6")
        made, action_id = await client.create_template(server="ec000001", description="t")
        servers_bill = await client.billing_servers(2024, 4)
        snaps = await client.billing_snapshots(2025, 2)
        csv = await client.billing_csv("templates", 2025, 2)
    assert (plans[0].cpu, plans[0].regions[0].location) == (1, "it-fr2")
    assert regions == ["it-fr2"]
    assert (made.name, action_id) == ("ei000001", 700)
    assert servers_bill.total_cost == pytest.approx(2.64)
    assert (snaps.total_cost, snaps.rows[0].snapshot) == (3.7, 58)
    assert csv == "name,cost\n"
    queries = {p: q for _, p, q, _, _ in api.hits}
    assert queries["/ecs/v2/billing/servers/2024/4"] == {"type": "json"}
    assert queries["/ecs/v2/billing/templates/2025/2"] == {"type": "csv"}


async def test_k8sgpu_events_pods_and_billing_csv(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    desk = LoginDesk()
    events = {
        "items": [
            {"id": 1487, "pod": "d64c", "event_type": "started", "event_epoch": 1732163922},
            {"id": 1486, "pod": "fead", "event_type": "terminated", "date": ""},
        ],
        "length": 2,
        "total": 95,
    }
    pod = {"uuid": "ad5e", "status": "terminated", "cluster": "skg00018", "failed": False}

    async def csv(request: web.Request) -> web.Response:
        assert request.headers["Accept"] == "text/csv"
        return web.Response(text="pod,cost\nad5e,281.88\n", content_type="text/csv")

    async with serve(
        ("POST", "/k8sgpu/v1/user/login/", desk.login),
        ("GET", "/k8sgpu/v1/events/", desk.guarded(events)),
        ("GET", "/k8sgpu/v1/pod/", desk.guarded([pod])),
        ("DELETE", "/k8sgpu/v1/pod/{uuid}", desk.guarded({})),
        ("GET", "/k8sgpu/v1/billing/{y}/{m}", csv),
    ) as api:
        client = k8sgpu(session, api, clock)
        page, total = await client.list_events(offset=50, length=10)
        pods = await client.list_pods(cluster="skg00018")
        await client.delete_pod("ad5e")
        text = await client.billing_csv(2024, 11)
    assert ([e.id for e in page], total) == ([1487, 1486], 95)
    assert page[1].date is None
    assert pods[0].uuid == "ad5e"
    assert text.startswith("pod,cost")
    queries = {p: q for _, p, q, _, _ in api.hits}
    assert queries["/k8sgpu/v1/events/"] == {"offset": "50", "length": "10"}
    assert queries["/k8sgpu/v1/pod/"] == {"cluster": "skg00018"}
    assert api.count("/k8sgpu/v1/pod/ad5e", "DELETE") == 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"error_code": 404, "status": "error", "message": "Server not found"}, "Server not found"),
        (
            {"error_code": 1042, "status": "error", "message": "Plan not available here"},
            "Plan not available here (error_code 1042)",
        ),
    ],
)
async def test_the_ecs_error_envelope_gives_the_reason(
    session: aiohttp.ClientSession, clock: FakeClock, body: dict[str, Any], detail: str
) -> None:
    answer = web.json_response(body, status=404)
    async with serve(("GET", "/ecs/v2/servers/ec9", replies(answer))) as api:
        with pytest.raises(NotFoundError) as caught:
            await seeweb(session, api, clock).get_server("ec9")
    assert str(caught.value) == f"seeweb GET /ecs/v2/servers/ec9: not found (HTTP 404: {detail})"
