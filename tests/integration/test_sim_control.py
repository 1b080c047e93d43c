"""The simulator's `/_sim/` control surface: request log, world, time, faults, scenarios, demand."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from configs import TOKEN
from conftest import SimFactory, SimHandle

ECS = "/ecs/v2"
AUTH = {"X-APITOKEN": TOKEN}


async def ok(h: SimHandle, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
    """Call the simulator and return the body of a 200 answer."""
    status, answer = await h.call(method, path, json=body, **kwargs)
    assert status == 200, (method, path, answer)
    return answer


async def fault(h: SimHandle, **spec: Any) -> dict[str, Any]:
    """Inject a fault and return the control surface's answer."""
    answer = await ok(h, "POST", "/_sim/faults", spec)
    assert answer["status"] == "ok"
    assert isinstance(answer, dict)
    return answer


async def statuses(h: SimHandle, path: str, times: int) -> list[int]:
    """Return the status of `times` consecutive GETs of `path`."""
    return [(await h.call("GET", path))[0] for _ in range(times)]


# -- request log -----------------------------------------------------------------------------------


async def test_the_request_log_lists_provider_requests_oldest_first(simulator: SimFactory) -> None:
    h = await simulator("default")
    await h.call("GET", f"{ECS}/servers")
    await h.call("GET", f"{ECS}/actions?start=1&length=2")
    await ok(h, "GET", "/_sim/world")
    await h.advance(90)
    await h.call("GET", f"{ECS}/no-such-thing")
    await h.call("DELETE", f"{ECS}/servers/ec200001", auth=False)
    assert await h.requests() == [
        {
            "method": "GET",
            "path": f"{ECS}/servers",
            "query": {},
            "status": 200,
            "t": "2026-11-10T12:00:00.000000+00:00",
        },
        {
            "method": "GET",
            "path": f"{ECS}/actions",
            "query": {"start": "1", "length": "2"},
            "status": 200,
            "t": "2026-11-10T12:00:00.000000+00:00",
        },
        {
            "method": "GET",
            "path": f"{ECS}/no-such-thing",
            "query": {},
            "status": 404,
            "t": "2026-11-10T12:01:30.000000+00:00",
        },
        {
            "method": "DELETE",
            "path": f"{ECS}/servers/ec200001",
            "query": {},
            "status": 401,
            "t": "2026-11-10T12:01:30.000000+00:00",
        },
    ]


async def test_the_request_log_records_the_status_a_faulted_client_saw(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    await fault(h, path=f"{ECS}/actions", status=503, count=1)
    await h.call("GET", f"{ECS}/actions")
    await h.call("GET", f"{ECS}/actions")
    assert [r["status"] for r in await h.requests()] == [503, 200]
    assert await ok(h, "DELETE", "/_sim/requests") == {"status": "ok"}
    assert await h.requests() == []


# -- world and time --------------------------------------------------------------------------------


async def test_the_world_shows_servers_snapshots_actions_pods_and_money(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    await ok(h, "POST", f"{ECS}/servers/ec200002/snapshots", {"notes": "n"})
    state = await ok(h, "GET", "/_sim/world")
    assert state["now"] == "2026-11-10T12:00:00.000000+00:00"
    servers = {s["name"]: s for s in state["servers"]}
    assert len(servers) == 9  # seven Seeweb, two Glesys
    db = servers["ec200003"]
    assert {k: db[k] for k in ("provider", "plan", "cores", "status", "cpu_demand")} == {
        "provider": "seeweb",
        "plan": "ECS3",
        "cores": 4,
        "status": "RUNNING",
        "cpu_demand": 3.6,
    }
    assert servers["ec200007"]["status"] == "SHUTOFF"
    glesys = servers["api-glesys-2"]
    assert (glesys["provider"], glesys["cores"], glesys["cpu_demand"]) == ("glesys", 4, 1.2)
    assert [(s["server"], s["status"], s["notes"]) for s in state["snapshots"]] == [
        ("ec200002", "CG", "n")
    ]
    assert len(state["actions"]) == 13
    assert set(state["actions"][0]) == {"id", "type", "resource", "status"}
    assert len(state["pods"]) == 4
    assert {p["cluster"] for p in state["pods"]} == {"skg00018", "skg100004"}
    money = state["money"]
    assert set(money) == {"month_to_date", "billed_until", "billed_month_to_date"}
    assert set(money["month_to_date"]) == {"servers", "snapshots", "templates", "gpu", "total"}
    assert money["month_to_date"]["total"] > 0


async def test_advance_moves_simulated_time_and_runs_what_became_due(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    started = await ok(h, "POST", f"{ECS}/servers/ec200001/actions", {"type": "power_off"})
    answer = await ok(h, "POST", "/_sim/advance", {"seconds": 90})
    assert answer == {"status": "ok", "now": "2026-11-10T12:01:30.000000+00:00"}
    state = await ok(h, "GET", "/_sim/world")
    assert state["now"] == "2026-11-10T12:01:30.000000+00:00"
    assert [a["status"] for a in state["actions"] if a["id"] == started["id"]] == ["completed"]
    status, body = await h.call("POST", "/_sim/advance", json={"seconds": -1})
    assert status == 400
    assert "seconds" in body["message"]
    assert (await ok(h, "GET", "/_sim/world"))["now"] == "2026-11-10T12:01:30.000000+00:00"


# -- faults ----------------------------------------------------------------------------------------


async def test_a_500_fault_with_count_2_fails_two_requests_then_stops(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    answer = await fault(h, path=f"{ECS}/servers", status=500, rate=1, count=2)
    assert answer["fault"]["status"] == 500
    assert answer["fault"]["count"] == 2
    first = await h.call("GET", f"{ECS}/servers")
    assert first == (500, {"error_code": 500, "status": "error", "message": "injected fault"})
    assert await statuses(h, f"{ECS}/servers", 3) == [500, 200, 200]


async def retry_after_of(h: SimHandle, path: str) -> tuple[int, str | None]:
    """GET a path and return the status and the Retry-After header."""
    async with h.session.get(h.url + path, headers=AUTH) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(30, "30"), ("Wed, 11 Nov 2026 12:00:00 GMT", "Wed, 11 Nov 2026 12:00:00 GMT")],
    ids=["seconds", "http-date"],
)
async def test_a_429_fault_carries_retry_after_as_given(
    simulator: SimFactory, retry_after: int | str, header: str
) -> None:
    h = await simulator("default")
    await fault(h, path=ECS, status=429, retry_after=retry_after, count=1)
    assert await retry_after_of(h, f"{ECS}/actions") == (429, header)
    assert await retry_after_of(h, f"{ECS}/actions") == (200, None)


async def test_a_fault_at_rate_one_half_hits_about_half_the_requests(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    await fault(h, path=f"{ECS}/servers", status=503, rate=0.5)
    seen = await statuses(h, f"{ECS}/servers", 200)
    assert set(seen) == {200, 503}
    assert 60 <= seen.count(503) <= 140


async def test_the_fault_rng_is_seeded_so_runs_repeat(simulator: SimFactory) -> None:
    runs = []
    for _ in range(2):
        h = await simulator("default")
        await fault(h, path=f"{ECS}/servers", status=503, rate=0.5)
        runs.append(await statuses(h, f"{ECS}/servers", 40))
    assert runs[0] == runs[1]


async def test_a_fault_only_touches_paths_under_its_prefix(simulator: SimFactory) -> None:
    h = await simulator("default")
    await fault(h, path=f"{ECS}/actions", status=503)
    assert (await h.call("GET", f"{ECS}/servers"))[0] == 200
    assert (await h.call("GET", f"{ECS}/logs"))[0] == 200
    assert (await h.call("GET", f"{ECS}/actions"))[0] == 503
    assert (await h.call("GET", f"{ECS}/actions/701"))[0] == 503


async def test_a_truncated_body_is_not_valid_json(simulator: SimFactory) -> None:
    h = await simulator("default")
    await fault(h, path=f"{ECS}/servers", truncate=True, count=1)
    async with h.session.get(f"{h.url}{ECS}/servers", headers=AUTH) as response:
        assert response.status == 200
        cut = await response.text()
    with pytest.raises(ValueError):
        json.loads(cut)
    status, whole = await h.call("GET", f"{ECS}/servers")
    assert status == 200
    assert cut == json.dumps(whole)[: len(cut)]


async def test_latency_times_a_client_out_and_clearing_faults_releases_the_hung_request(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    began = time.monotonic()
    await fault(h, path=f"{ECS}/servers", latency_ms=60_000)
    with pytest.raises(TimeoutError):
        async with h.session.get(
            f"{h.url}{ECS}/servers", headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.3)
        ) as response:
            await response.read()

    hung = asyncio.create_task(h.call("GET", f"{ECS}/servers"))
    done, _ = await asyncio.wait({hung}, timeout=0.3)
    assert not done, "the request should be held by the 60 s latency"
    assert await ok(h, "DELETE", "/_sim/faults") == {"status": "ok", "faults": []}
    status, body = await asyncio.wait_for(hung, timeout=5)
    assert (status, body["count"]) == (200, 7)
    assert time.monotonic() - began < 10


async def test_expire_tokens_kills_jwts_but_not_api_tokens(simulator: SimFactory) -> None:
    h = await simulator("default")
    login = await ok(
        h, "POST", f"{ECS}/login", {"username": "demo", "password": "demo"}, auth=False
    )
    bearer = {"Authorization": f"Bearer {login['token']}"}
    assert (await h.call("GET", f"{ECS}/servers", auth=False, headers=bearer))[0] == 200
    answer = await fault(h, expire_tokens=True)
    assert answer["fault"] is None
    status, body = await h.call("GET", f"{ECS}/servers", auth=False, headers=bearer)
    assert (status, body["message"]) == (401, "token is invalid or expired")
    assert (await h.call("GET", f"{ECS}/servers"))[0] == 200  # X-APITOKEN
    fresh = await ok(
        h, "POST", f"{ECS}/login", {"username": "demo", "password": "demo"}, auth=False
    )
    headers = {"Authorization": f"Bearer {fresh['token']}"}
    assert (await h.call("GET", f"{ECS}/servers", auth=False, headers=headers))[0] == 200


async def total_actions(h: SimHandle, query: str = "") -> int:
    """Return total_actions from one page fetch."""
    total: int = (await ok(h, "GET", f"{ECS}/actions{query}"))["total_actions"]
    return total


async def test_insert_actions_while_paging_adds_actions_after_each_page(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    await fault(h, insert_actions_while_paging=3)
    assert await total_actions(h, "?length=5") == 12
    assert await total_actions(h, "?start=5&length=5") == 15
    assert await total_actions(h, "?start=10&length=5") == 18
    state = await ok(h, "GET", "/_sim/world")
    assert len(state["actions"]) == 21
    inserted = state["actions"][12:]
    assert {a["status"] for a in inserted} <= {"completed", "failed"}
    # Other paths do not insert.
    await h.call("GET", f"{ECS}/servers")
    assert len((await ok(h, "GET", "/_sim/world"))["actions"]) == 21


async def test_insert_actions_while_paging_honours_count(simulator: SimFactory) -> None:
    h = await simulator("default")
    await fault(h, insert_actions_while_paging=2, count=1)
    assert [await total_actions(h) for _ in range(3)] == [12, 14, 14]


async def test_clearing_faults_removes_errors_and_paging_inserts(simulator: SimFactory) -> None:
    h = await simulator("default")
    await fault(h, path=ECS, status=500)
    await fault(h, insert_actions_while_paging=5)
    assert (await h.call("GET", f"{ECS}/servers"))[0] == 500
    assert await ok(h, "DELETE", "/_sim/faults") == {"status": "ok", "faults": []}
    assert await statuses(h, f"{ECS}/servers", 3) == [200, 200, 200]
    assert [await total_actions(h) for _ in range(2)] == [12, 12]


async def test_a_fault_window_ends_after_its_duration(simulator: SimFactory) -> None:
    h = await simulator("default")
    await fault(h, path=ECS, status=503, **{"for": "60s"})
    assert (await h.call("GET", f"{ECS}/servers"))[0] == 503
    await h.advance(60)
    assert (await h.call("GET", f"{ECS}/servers"))[0] == 200


# -- scenarios and demand --------------------------------------------------------------------------

REPLACEMENT = """\
name: replaced
start: "2026-11-10T12:00:00Z"
servers:
  - {name: ec900001, plan: ECS1, notes: only-one}
"""

BROKEN = """\
name: broken
servers:
  - {name: ec900001, plan: ECS1}
  - {name: ec900002, plan: 5}
"""


async def test_posting_a_scenario_replaces_the_world(simulator: SimFactory) -> None:
    h = await simulator("default")
    login = await ok(
        h, "POST", f"{ECS}/login", {"username": "demo", "password": "demo"}, auth=False
    )
    await fault(h, path=ECS, status=500)
    answer = await ok(h, "POST", "/_sim/scenario", data=REPLACEMENT)
    assert answer == {
        "status": "ok",
        "scenario": "replaced",
        "now": "2026-11-10T12:00:00.000000+00:00",
    }
    servers = await ok(h, "GET", f"{ECS}/servers")  # the fault went with the old world
    assert [(s["name"], s["notes"]) for s in servers["server"]] == [("ec900001", "only-one")]
    assert await total_actions(h) == 0
    state = await ok(h, "GET", "/_sim/world")
    assert (state["snapshots"], state["actions"], state["pods"]) == ([], [], [])
    assert h.sim.world.servers.keys() == {"ec900001"}
    bearer = {"Authorization": f"Bearer {login['token']}"}
    assert (await h.call("GET", f"{ECS}/servers", auth=False, headers=bearer))[0] == 200


async def test_a_broken_scenario_answers_400_naming_line_and_field(simulator: SimFactory) -> None:
    h = await simulator("default")
    status, body = await h.call("POST", "/_sim/scenario", data=BROKEN)
    assert status == 400
    assert (
        body["message"] == "POST /_sim/scenario:4: servers[1].plan: Input should be a valid string"
    )
    assert (await ok(h, "GET", f"{ECS}/servers"))["count"] == 7  # the old world stays


async def test_demand_sets_cpu_demand_of_seeweb_and_glesys_servers(simulator: SimFactory) -> None:
    h = await simulator("default")
    assert await ok(h, "POST", "/_sim/demand", {"server": "ec200003", "cores": 2}) == {
        "status": "ok"
    }
    await ok(h, "POST", "/_sim/demand", {"server": "web-glesys-1", "cores": 1.5})
    servers = {s["name"]: s for s in (await ok(h, "GET", "/_sim/world"))["servers"]}
    assert (servers["ec200003"]["cpu_demand"], servers["ec200003"]["cpu_percent"]) == (2.0, 50.0)
    assert (servers["web-glesys-1"]["cpu_demand"], servers["web-glesys-1"]["cpu_percent"]) == (
        1.5,
        75.0,
    )


# -- bad input -------------------------------------------------------------------------------------


def case(
    method: str, path: str, status: int, *, body: Any = None, raw: str | bytes | None = None
) -> tuple[str, str, int, Any, str | bytes | None]:
    """Return one bad request and the 4xx it must get."""
    return (method, path, status, body, raw)


BAD_REQUESTS = {
    "unknown server": case("GET", f"{ECS}/servers/ec999999", 404),
    "unknown server status": case("GET", f"{ECS}/servers/ec999999/status", 404),
    "unknown server metrics": case("GET", f"{ECS}/servers/ec999999/metrics", 404),
    "action on unknown server": case(
        "POST", f"{ECS}/servers/ec999999/actions", 404, body={"type": "power_off"}
    ),
    "unknown action id": case("GET", f"{ECS}/actions/99999", 404),
    "non-integer action id": case("GET", f"{ECS}/actions/abc", 400),
    "non-integer log id": case("GET", f"{ECS}/logs/abc", 400),
    "non-integer snapshot id": case("GET", f"{ECS}/servers/ec200001/snapshots/abc", 400),
    "non-integer start": case("GET", f"{ECS}/actions?start=x", 400),
    "negative start": case("GET", f"{ECS}/actions?start=-1", 400),
    "zero length": case("GET", f"{ECS}/logs?length=0", 400),
    "bad JSON body": case("POST", f"{ECS}/servers/ec200001/actions", 400, raw="{not json"),
    "JSON array body": case("POST", f"{ECS}/servers/ec200001/actions", 400, raw="[1, 2]"),
    "missing action type": case("POST", f"{ECS}/servers/ec200001/actions", 400, body={}),
    "unknown action type": case(
        "POST", f"{ECS}/servers/ec200001/actions", 400, body={"type": "explode"}
    ),
    "non-integer rollback snapshot": case(
        "POST", f"{ECS}/servers/ec200001/actions", 400, body={"type": "rollback", "snapshot": "x"}
    ),
    "server without fields": case("POST", f"{ECS}/servers", 400, body={}),
    "login without fields": case("POST", f"{ECS}/login", 400, body={}),
    "regions without plan": case("POST", f"{ECS}/regions/availables", 400, body={}),
    "unknown plan's regions": case("POST", f"{ECS}/regions/availables", 400, body={"plan": "X"}),
    "wrong method": case("DELETE", f"{ECS}/servers", 405),
    "unknown endpoint": case("GET", f"{ECS}/nothing-here", 404),
    "sim action on unknown resource": case(
        "POST", "/_sim/actions", 404, body={"resource": "ec999999", "type": "power_off"}
    ),
    "sim action without type": case("POST", "/_sim/actions", 400, body={"resource": "ec200001"}),
    "sim action with unknown outcome": case(
        "POST", "/_sim/actions", 400, body={"resource": "ec200001", "type": "x", "outcome": "boom"}
    ),
    "sim action with negative duration": case(
        "POST", "/_sim/actions", 400, body={"resource": "ec200001", "type": "x", "duration_s": -5}
    ),
    "negative advance": case("POST", "/_sim/advance", 400, body={"seconds": -1}),
    "advance without seconds": case("POST", "/_sim/advance", 400, body={}),
    "advance by words": case("POST", "/_sim/advance", 400, body={"seconds": "soon"}),
    "advance with bad JSON": case("POST", "/_sim/advance", 400, raw="soon"),
    "demand on unknown server": case(
        "POST", "/_sim/demand", 404, body={"server": "ec999999", "cores": 1}
    ),
    "negative demand": case("POST", "/_sim/demand", 400, body={"server": "ec200001", "cores": -1}),
    "fault that does nothing": case("POST", "/_sim/faults", 400, body={}),
    "fault with a 2xx status": case("POST", "/_sim/faults", 400, body={"status": 200}),
    "fault rate above 1": case("POST", "/_sim/faults", 400, body={"status": 500, "rate": 2}),
    "fault with unknown field": case("POST", "/_sim/faults", 400, body={"status": 500, "x": 1}),
    "scenario that is not YAML": case("POST", "/_sim/scenario", 400, raw="servers: ["),
}

SIMULATOR_BUGS = {
    "billing year out of range": pytest.param(
        *case("GET", f"{ECS}/billing/servers/0/1", 400),
        id="billing year out of range",
    ),
    "scenario that is not UTF-8": pytest.param(
        *case("POST", "/_sim/scenario", 400, raw=b"\xff\xfe name: x"),
        id="scenario that is not UTF-8",
    ),
}


@pytest.mark.parametrize(
    ("method", "path", "expected", "body", "raw"),
    [pytest.param(*v, id=k) for k, v in BAD_REQUESTS.items()] + list(SIMULATOR_BUGS.values()),
)
async def test_bad_input_answers_4xx_with_a_json_message(
    simulator: SimFactory,
    method: str,
    path: str,
    expected: int,
    body: Any,
    raw: str | bytes | None,
) -> None:
    h = await simulator("default")
    status, answer = await h.call(method, path, json=body, data=raw)
    assert status == expected, answer
    assert isinstance(answer, dict), answer
    assert answer["status"] == "error"
    assert answer["error_code"] == expected
    assert isinstance(answer["message"], str)
    assert answer["message"]
