"""The provider clients against the simulator's injected faults, through `POST /_sim/faults`.

Each test counts the attempts the simulator served (its request log) and the waits the client
made (`clock.sleeps` of its FakeClock), so retries and backoff are asserted, never slept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import structlog
from conftest import SimFactory, SimHandle
from structlog.testing import capture_logs
from test_clients_vs_sim import (
    API_KEY,
    ECS_LOGIN,
    K8SGPU_LOGIN,
    USERNAME,
    assert_no_secret,
    fake_clock,
    glesys,
    k8sgpu,
    raises,
    seeweb,
    served,
    sim_ok,
    start,
)

from daemon.client.base import ClientSettings, HttpProvider
from daemon.client.errors import (
    AuthError,
    BadResponseError,
    ConflictError,
    NotFoundError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    ServerError,
)
from daemon.clock import FakeClock
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.secret import Secret
from daemon.simulator.http import Credentials

SERVERS = "/ecs/v2/servers"
SMALL = ClientSettings(requests_per_second=None, max_body_bytes=64 * 1024)
POWER = "/ecs/v2/servers/ec200001/actions"
PODS = "/k8sgpu/v1/pod/"


async def inject(h: SimHandle, **spec: Any) -> None:
    """Add a fault through the control surface."""
    await sim_ok(h, "POST", "/_sim/faults", spec)


def power_offs(h: SimHandle, server: str = "ec200001") -> int:
    """Return how many power_off actions the world holds for a server."""
    return sum(1 for a in h.sim.world.actions if (a.type, a.resource) == ("power_off", server))


# -- server errors and throttling on reads ---------------------------------------------------------


async def test_get_failing_every_time_gives_up_after_three_attempts(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    await inject(h, path=SERVERS, status=500, rate=1)

    with raises(ServerError, match="seeweb GET /ecs/v2/servers: server error") as info:
        await seeweb(h, clock).list_servers()
    assert info.value.status == 500
    assert await served(h, "GET", SERVERS) == [500, 500, 500]
    # Equal-jitter backoff: half of 0.5 s to 0.5 s, then half of 1 s to 1 s.
    assert len(clock.sleeps) == 2
    assert 0.25 <= clock.sleeps[0] <= 0.5
    assert 0.5 <= clock.sleeps[1] <= 1.0


async def test_get_succeeds_on_the_third_attempt(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    await inject(h, path=SERVERS, status=500, count=2)

    servers = await seeweb(h, clock).list_servers()
    assert len(servers) == len(h.sim.world.live_servers())
    assert await served(h, "GET", SERVERS) == [500, 500, 200]
    assert len(clock.sleeps) == 2


async def test_429_waits_the_retry_after_seconds(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    await inject(h, path=SERVERS, status=429, retry_after=7, count=1)

    assert len(await seeweb(h, clock).list_servers()) == 7
    assert await served(h, "GET", SERVERS) == [429, 200]
    assert clock.sleeps == [7.0]


async def test_429_waits_until_the_retry_after_date(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    when = format_datetime(clock.now() + timedelta(seconds=5), usegmt=True)
    await inject(h, path=SERVERS, status=429, retry_after=when, count=1)

    assert len(await seeweb(h, clock).list_servers()) == 7
    assert await served(h, "GET", SERVERS) == [429, 200]
    assert clock.sleeps == [pytest.approx(5.0, abs=1.0)]


async def test_retry_after_beyond_the_limit_fails_at_once(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    settings = ClientSettings(requests_per_second=None, max_retry_after=60)
    await inject(h, path=SERVERS, status=429, retry_after=120)

    with raises(RateLimitedError, match="rate limited") as info:
        await seeweb(h, clock, settings=settings).list_servers()
    assert info.value.retry_after == 120.0
    assert await served(h, "GET", SERVERS) == [429]
    assert clock.sleeps == []


# -- mutating calls are retried only where nothing happened ----------------------------------------


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_post_is_not_resent_after_a_server_error(simulator: SimFactory, status: int) -> None:
    h = await start(simulator)
    clock = fake_clock()
    before = len(h.sim.world.actions)
    await inject(h, path=POWER, status=status)

    with raises(ServerError, match=f"HTTP {status}") as info:
        await seeweb(h, clock).server_action("ec200001", "power_off")
    assert info.value.status == status
    assert await served(h, "POST", POWER) == [status]
    assert clock.sleeps == []
    assert len(h.sim.world.actions) == before


@pytest.mark.parametrize("status", [429, 503])
async def test_post_is_resent_once_after_an_answer_that_means_nothing_happened(
    simulator: SimFactory, status: int
) -> None:
    h = await start(simulator)
    clock = fake_clock()
    await inject(h, path=POWER, status=status, count=1)

    action = await seeweb(h, clock).server_action("ec200001", "power_off")
    assert await served(h, "POST", POWER) == [status, 200]
    assert len(clock.sleeps) == 1
    assert power_offs(h) == 1
    assert h.sim.world.actions[-1].id == action.id


# -- hangs and cut bodies --------------------------------------------------------------------------


async def test_a_hung_server_times_out_on_every_attempt(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    settings = ClientSettings(requests_per_second=None, total_timeout=0.3, max_attempts=2)
    await inject(h, path=SERVERS, latency_ms=60_000)

    began = time.monotonic()
    try:
        with raises(ProviderTimeout, match="no answer within 0.3 s"):
            await seeweb(h, clock, settings=settings).list_servers()
        elapsed = time.monotonic() - began
    finally:
        await sim_ok(h, "DELETE", "/_sim/faults")
    assert elapsed < 2.5
    assert len(clock.sleeps) == 1  # one backoff between the two attempts
    assert len(await seeweb(h, clock).list_servers()) == 7


TruncatedCall = Callable[[SimHandle, FakeClock], Awaitable[object]]


@pytest.mark.parametrize(
    ("fault_path", "call", "named"),
    [
        (SERVERS, lambda h, c: seeweb(h, c).list_servers(), "seeweb GET /ecs/v2/servers"),
        ("/k8sgpu/v1/pod", lambda h, c: k8sgpu(h, c).list_pods(), "k8sgpu GET /k8sgpu/v1/pod/"),
        (
            "/glesys/server/list",
            lambda h, c: glesys(h, c).list_servers(),
            "glesys POST /server/list",
        ),
    ],
    ids=["seeweb", "k8sgpu", "glesys"],
)
async def test_a_truncated_body_is_a_bad_response_naming_the_endpoint(
    simulator: SimFactory, fault_path: str, call: TruncatedCall, named: str
) -> None:
    h = await start(simulator)
    clock = fake_clock()
    await inject(h, path=fault_path, truncate=True)

    with raises(BadResponseError) as info:
        await call(h, clock)
    assert str(info.value).startswith(f"{named}: invalid JSON at byte ")
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("fault_path", "call", "named"),
    [
        (
            SERVERS,
            lambda h, c: seeweb(h, c, settings=SMALL).list_servers(),
            "seeweb GET /ecs/v2/servers",
        ),
        (
            "/k8sgpu/v1/pod",
            lambda h, c: k8sgpu(h, c, settings=SMALL).list_pods(),
            "k8sgpu GET /k8sgpu/v1/pod/",
        ),
        (
            "/glesys/server/list",
            lambda h, c: glesys(h, c, settings=SMALL).list_servers(),
            "glesys POST /server/list",
        ),
    ],
    ids=["seeweb", "k8sgpu", "glesys"],
)
async def test_a_body_past_the_limit_is_refused_naming_the_endpoint(
    simulator: SimFactory, fault_path: str, call: TruncatedCall, named: str
) -> None:
    h = await start(simulator)
    clock = fake_clock()
    await inject(h, path=fault_path, pad_bytes=SMALL.max_body_bytes)

    with raises(BadResponseError) as info:
        await call(h, clock)
    assert str(info.value) == (
        f"{named}: answer larger than 64 KiB (HTTP 200); [providers] max_response sets the limit"
    )
    # The same answer would come again: it is not retried.
    assert [r["status"] for r in await h.requests() if r["path"].startswith(fault_path)] == [200]
    assert clock.sleeps == []
    await sim_ok(h, "DELETE", "/_sim/faults")
    assert await call(h, clock)  # the same call, its answer under the limit


# -- credentials -----------------------------------------------------------------------------------


async def test_expired_ecs_token_costs_exactly_one_login(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), "login")
    await client.list_servers()
    await inject(h, expire_tokens=True)

    assert len(await client.list_servers()) == 7
    assert await served(h, "POST", ECS_LOGIN) == [200, 200]
    assert await served(h, "GET", SERVERS) == [200, 401, 200]


async def test_expired_k8sgpu_token_costs_exactly_one_login(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = k8sgpu(h, fake_clock())
    await client.list_pods()
    await inject(h, expire_tokens=True)

    assert len(await client.list_pods()) == len(h.sim.world.pods)
    assert await served(h, "POST", K8SGPU_LOGIN) == [200, 200]
    assert await served(h, "GET", PODS) == [200, 401, 200]


async def test_a_401_that_persists_is_an_auth_error_after_one_relogin(
    simulator: SimFactory,
) -> None:
    h = await start(simulator)
    ecs = seeweb(h, fake_clock(), "login")
    gpu = k8sgpu(h, fake_clock())
    await inject(h, path=SERVERS, status=401)
    await inject(h, path="/k8sgpu/v1/pod", status=401)

    with raises(AuthError, match="seeweb GET /ecs/v2/servers: credentials refused"):
        await ecs.list_servers()
    with raises(AuthError, match="k8sgpu GET /k8sgpu/v1/pod/: credentials refused"):
        await gpu.list_pods()
    assert await served(h, "POST", ECS_LOGIN) == [200, 200]
    assert await served(h, "GET", SERVERS) == [401, 401]
    assert await served(h, "POST", K8SGPU_LOGIN) == [200, 200]
    assert await served(h, "GET", PODS) == [401, 401]


async def test_k8sgpu_token_is_renewed_at_90_percent_of_max_age(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    client = k8sgpu(h, clock)
    await client.list_clusters()
    refresh_at = 0.9 * 14400  # the login answers max_age 14400

    # Simulated time moves in step with the client's clock; the old token stays valid throughout.
    clock.advance(refresh_at - 1)
    await h.advance(refresh_at - 1)
    await client.list_clusters()
    assert await served(h, "POST", K8SGPU_LOGIN) == [200]

    clock.advance(1)
    await h.advance(1)
    await client.list_clusters()
    calls = [(r["method"], r["path"], r["status"]) for r in await h.requests()]
    assert calls[-2:] == [("POST", K8SGPU_LOGIN, 200), ("GET", "/k8sgpu/v1/cluster/", 200)]
    assert await served(h, "POST", K8SGPU_LOGIN) == [200, 200]
    assert 401 not in [status for _, _, status in calls]


async def test_ecs_login_token_is_renewed_before_it_expires(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    client = seeweb(h, clock, "login")
    await client.account()

    # The ECS JWT lives 4 h; the client renews it at 90 % of that, before the API says 401.
    clock.advance(0.9 * 4 * 3600)
    await h.advance(0.9 * 4 * 3600)
    await client.account()
    assert await served(h, "POST", ECS_LOGIN) == [200, 200]
    assert 401 not in [r["status"] for r in await h.requests()]


async def test_a_wrong_glesys_key_is_an_auth_error(simulator: SimFactory) -> None:
    h = await start(simulator)
    with raises(AuthError, match="Authentication failed. Double check the username and key."):
        await glesys(h, fake_clock(), key="not-the-key").list_servers()
    assert await served(h, "POST", "/glesys/server/list") == [401]


@pytest.mark.parametrize(
    ("credentials", "refused"),
    [
        (Credentials(api_token=API_KEY, glesys_addresses=("192.0.2.10",)), "used from 127.0.0.1"),
        (
            Credentials(api_token=API_KEY, glesys_functions=frozenset({"server/details"})),
            "may not call server/list",
        ),
    ],
    ids=["address", "function"],
)
async def test_a_key_refused_for_the_address_or_function_says_what_to_allow(
    simulator: SimFactory, credentials: Credentials, refused: str
) -> None:
    h = await simulator("default", credentials=credentials)
    with raises(AuthError) as info:
        await glesys(h, fake_clock()).list_servers()
    message = str(info.value)
    assert refused in message  # the provider's words, then what the key needs
    assert "allow-list" in message and "this machine's public address" in message
    for function in ("server/list", "server/status", "server/edit", "server/allowedarguments"):
        assert function in message
    assert await served(h, "POST", "/glesys/server/list") == [401]


async def test_a_wrong_password_is_an_auth_error(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = K8sGpuClient(
        h.session, h.url, clock=fake_clock(), username=USERNAME, password=Secret("wrong")
    )
    with raises(AuthError, match="No active account found"):
        await client.list_pods()
    assert await served(h, "POST", K8SGPU_LOGIN) == [401]
    assert await served(h, "GET", PODS) == []


# -- refusals --------------------------------------------------------------------------------------


async def test_unknown_resources_are_not_found(simulator: SimFactory) -> None:
    h = await start(simulator)
    clock = fake_clock()
    with raises(NotFoundError, match="server 'ec299999' not found"):
        await seeweb(h, clock).server_status("ec299999")
    with raises(NotFoundError, match="pod 'no-such-pod' not found"):
        await k8sgpu(h, clock).get_pod("no-such-pod")
    with raises(NotFoundError, match="Could not find server with this id"):
        await glesys(h, clock).server_details("kvm9999999")
    assert clock.sleeps == []


async def test_busy_answers_are_conflicts_with_the_simulators_reason(
    simulator: SimFactory,
) -> None:
    h = await start(simulator)
    clock = fake_clock()
    ecs = seeweb(h, clock)
    snap, _ = await ecs.create_snapshot("ec200001", "guard", "before power_off")

    with raises(ConflictError) as info:
        await ecs.server_action("ec200001", "power_off")
    assert info.value.status == 409
    assert f"server ec200001 is busy: snapshot {snap.id} is being created" in str(info.value)
    assert await served(h, "POST", POWER) == [409]
    assert power_offs(h) == 0

    kvm = glesys(h, clock)
    await kvm.set_cores("kvm1000001", 4)
    # As recorded, Glesys answers HTTP 500 with its own code 606; the client reads the code.
    with raises(
        ConflictError,
        match="glesys POST /server/edit: conflict \\(HTTP 500, status 606: Server Locked\\)",
    ):
        await kvm.set_cores("kvm1000001", 6)

    gpu = k8sgpu(h, clock)
    uuid = next(iter(h.sim.world.pods))
    await gpu.delete_pod(uuid)
    await h.advance(11)
    with raises(ConflictError, match=f"pod {uuid} is already terminated"):
        await gpu.delete_pod(uuid)
    assert clock.sleeps == []


# -- secrets ---------------------------------------------------------------------------------------


async def test_credentials_never_show_in_reprs_errors_or_logs(simulator: SimFactory) -> None:
    h = await start(simulator)
    errors: list[ProviderError] = []
    with capture_logs() as logs:
        logger = structlog.get_logger("cloudpilot.test")
        clock = fake_clock()
        token_ecs = seeweb(h, clock, "token", logger=logger)
        login_ecs = seeweb(h, clock, "login", logger=logger)
        gpu = k8sgpu(h, clock, logger=logger)
        kvm = glesys(h, clock, logger=logger)
        clients: list[HttpProvider] = [token_ecs, login_ecs, gpu, kvm]
        for read in (
            token_ecs.list_servers,
            login_ecs.list_servers,
            gpu.list_pods,
            kvm.list_servers,
        ):
            await inject(h, status=503, count=1)  # the first request (or login) is retried
            await read()
        await inject(h, expire_tokens=True)
        await login_ecs.list_servers()
        await gpu.list_pods()

        await inject(h, path=SERVERS, status=401)
        await inject(h, path="/glesys/server/details", truncate=True)
        failing: list[Callable[[], Awaitable[object]]] = [
            token_ecs.list_servers,
            login_ecs.list_servers,
            lambda: gpu.get_pod("no-such-pod"),
            lambda: kvm.server_details("kvm1000001"),
            glesys(h, clock, key="wrong", logger=logger).list_servers,
        ]
        for call in failing:
            try:
                await call()
            except ProviderError as exc:
                errors.append(exc)

    assert [type(e) for e in errors] == [
        AuthError,
        AuthError,
        NotFoundError,
        BadResponseError,
        AuthError,
    ]
    assert any(entry["event"] == "provider_retry" for entry in logs)
    assert any(entry["event"] == "provider_request" for entry in logs)
    for text in (
        *(repr(c) for c in clients),
        *(f"{e!s} {e!r} {e.args!r}" for e in errors),
        repr(logs),
    ):
        assert_no_secret(text)


async def test_concurrent_calls_share_one_login_and_one_renewal(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = k8sgpu(h, fake_clock())

    first = await asyncio.gather(*(client.get_cluster(name) for name in ("skg00018",) * 4))
    assert {c.name for c in first} == {"skg00018"}
    assert await served(h, "POST", K8SGPU_LOGIN) == [200]

    await inject(h, expire_tokens=True)
    pods = await asyncio.gather(*(client.list_pods() for _ in range(4)))
    assert [len(p) for p in pods] == [len(h.sim.world.pods)] * 4
    assert await served(h, "POST", K8SGPU_LOGIN) == [200, 200]
    statuses = await served(h, "GET", PODS)
    # Calls sent after the renewal never see a 401; how many were sent before it is up to timing.
    assert statuses.count(200) == 4
    assert 1 <= statuses.count(401) <= 4
