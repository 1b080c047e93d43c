"""The simulated Glesys API, driven over HTTP through a real in-process server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import BaseTestServer, TestServer
from conftest import key_mismatches

from daemon.simulator.app import create_app
from daemon.simulator.demand import Constant
from daemon.simulator.http import Simulation
from daemon.simulator.scenario import parse_scenario

GOLDEN_DIR = Path(__file__).parent.parent / "golden" / "glesys"
GOLDEN_FILES = {
    p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(GOLDEN_DIR.glob("*.json"))
}
AUTH = {"Authorization": aiohttp.encode_basic_auth("cl12345", "simulator-token")}
WEB = "kvm1234567"
DB = "kvm7654321"

SCENARIO = f"""
name: glesys-test
start: "2024-11-20T10:30:00Z"
glesys_reboot: 90s
glesys:
  - serverid: {WEB}
    hostname: web1.example.com
    cpucores: 2
    demand: {{kind: constant, cores: 1.5}}
  - {{serverid: {DB}, hostname: db1.example.com, cpucores: 4, memorysize: 8192, disksize: 100}}
"""

DETAIL_KEYS = {
    "serverid",
    "hostname",
    "description",
    "cpucores",
    "memorysize",
    "disksize",
    "transfer",
    "bandwidth",
    "templatename",
    "datacenter",
    "managedhosting",
    "platform",
    "cost",
    "iplist",
    "state",
}
STATE_KEYS = {"isrunning", "islocked", "status"}


@dataclass
class Api:
    """A client of one simulator, with the project's Basic auth."""

    sim: Simulation
    server: BaseTestServer
    session: aiohttp.ClientSession

    async def call(
        self, function: str, *, method: str = "POST", auth: bool = True, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        url = self.server.make_url(f"/glesys/server/{function}")
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        async with self.session.request(method, url, headers=headers, **kwargs) as response:
            assert response.content_type == "application/json"
            body: dict[str, Any] = await response.json()
            return response.status, body

    async def ok(self, function: str, **kwargs: Any) -> dict[str, Any]:
        status, body = await self.call(function, **kwargs)
        assert status == 200, body
        assert body["response"]["status"]["code"] == 200
        assert body["response"]["status"]["text"] == "OK"
        response: dict[str, Any] = body["response"]
        return response

    def advance(self, seconds: float) -> None:
        self.sim.world.clock.advance(seconds)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    sim = Simulation(parse_scenario(SCENARIO), speed=0)
    async with TestServer(create_app(sim)) as server, aiohttp.ClientSession() as session:
        yield Api(sim, server, session)


# -- auth and spellings ----------------------------------------------------------------------------


async def test_requests_without_or_with_a_wrong_key_answer_401_in_the_envelope(api: Api) -> None:
    missing, body = await api.call("list", auth=False)
    wrong, _ = await api.call("list", auth=False, headers={"Authorization": "Basic Y2w6bm8="})

    assert (missing, wrong) == (401, 401)
    assert body["response"]["status"]["code"] == 401
    # The live API's words (brother/gleshys quotes them).
    text = "Authentication failed. Double check the username and key."
    assert body["response"]["status"]["text"] == text


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("suffix", ["", "/", "/format/json", "/format/json/"])
async def test_list_answers_every_spelling_and_method(api: Api, method: str, suffix: str) -> None:
    response = await api.ok(f"list{suffix}", method=method)

    assert response["servers"] == [
        {
            "serverid": WEB,
            "hostname": "web1.example.com",
            "datacenter": "Falkenberg",
            "platform": "KVM",
        },
        {
            "serverid": DB,
            "hostname": "db1.example.com",
            "datacenter": "Falkenberg",
            "platform": "KVM",
        },
    ]
    assert response["debug"] == {"input": []}  # PHP echoes no arguments as an empty list
    assert response["status"]["timestamp"] == "2024-11-20T10:30:00+00:00"


@pytest.mark.parametrize(
    "how",
    [
        {"method": "GET", "params": {"serverid": DB}},
        {"method": "POST", "params": {"serverid": DB}},
        {"method": "POST", "data": {"serverid": DB}},
        {"method": "POST", "json": {"serverid": DB}},
    ],
    ids=["get-query", "post-query", "post-form", "post-json"],
)
async def test_arguments_come_from_query_form_or_json(api: Api, how: dict[str, Any]) -> None:
    response = await api.ok("details", **how)

    assert response["server"]["serverid"] == DB
    assert response["debug"]["input"] == {"serverid": DB}


async def test_unknown_function_answers_404_in_the_envelope(api: Api) -> None:
    status, body = await api.call("reboot")

    assert status == 404
    assert body["response"]["status"]["code"] == 404


# -- details and status ----------------------------------------------------------------------------


async def test_details_have_every_field_and_state_only_when_asked(api: Api) -> None:
    plain = (await api.ok("details", data={"serverid": DB}))["server"]
    stated = (await api.ok("details", json={"serverid": DB, "includestate": True}))["server"]
    yes = (await api.ok("details", data={"serverid": DB, "includestate": "yes"}))["server"]

    assert set(plain) == DETAIL_KEYS
    assert set(stated) == set(yes) == DETAIL_KEYS | STATE_KEYS
    # `state` is deprecated: null; `includestate` adds the fields that replace it.
    assert plain["state"] is stated["state"] is None
    assert (stated["isrunning"], stated["islocked"], stated["status"]) == (True, False, "running")
    assert stated == yes
    assert (plain["cpucores"], plain["memorysize"], plain["disksize"]) == (4, 8192, 100)
    assert plain["managedhosting"] == "no"
    assert plain["cost"]["currency"] == "EUR"
    assert plain["cost"]["timeperiod"] == "month"
    assert isinstance(plain["cost"]["amount"], float)
    assert {ip["version"] for ip in plain["iplist"]} == {4, 6}
    for ip in plain["iplist"]:
        assert set(ip) == {"ipaddress", "version", "cost", "currency"}


@pytest.mark.parametrize("kind", ["state", "cpu", "memory", "disk", "bandwidth", "uptime"])
async def test_status_answers_one_statustype_alone(api: Api, kind: str) -> None:
    server = (await api.ok("status", data={"serverid": WEB, "statustype": kind}))["server"]

    assert set(server) == {"transfer" if kind == "bandwidth" else kind}


async def test_status_refuses_a_list_of_statustypes(api: Api) -> None:
    status, body = await api.call("status", data={"serverid": WEB, "statustype": "state,cpu"})

    assert status == 400
    assert "statustype" in body["response"]["status"]["text"]


async def test_allowed_arguments_list_each_platform_s_core_counts(api: Api) -> None:
    every = (await api.ok("allowedarguments", json={}))["argumentslist"]["platforms"]
    mine = (await api.ok("allowedarguments", json={"serverid": WEB}))["argumentslist"]

    assert set(every) == {"KVM", "VMware"}
    assert [c["value"] for c in every["KVM"]["cpucores"]] == [
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        10,
        12,
        16,
        24,
        32,
    ]
    assert set(mine["platforms"]) == {"KVM"}


async def test_status_reports_cpu_in_cores_from_demand(api: Api) -> None:
    server = (await api.ok("status", data={"serverid": WEB}))["server"]

    assert server["state"] == "running"
    assert server["cpu"] == {"usage": 1.5, "max": 2, "unit": "cores"}
    assert server["memory"]["max"] == 4096
    assert server["memory"]["unit"] == "MB"
    assert server["disk"] == {"usage": int(40 * 1024 * 0.35), "max": 40 * 1024, "unit": "MB"}
    assert server["transfer"]["unit"] == "GB last 30 days"
    assert server["uptime"] == {"current": 30 * 86400, "unit": "seconds"}
    assert server["warnings"] == []


async def test_status_caps_cpu_usage_at_the_core_count(api: Api) -> None:
    api.sim.world.set_demand(WEB, Constant(cores=9))
    server = (await api.ok("status", data={"serverid": WEB}))["server"]

    assert server["cpu"]["usage"] == 2.0


# -- edit ------------------------------------------------------------------------------------------


async def test_edit_locks_the_server_and_applies_cores_after_the_reboot(api: Api) -> None:
    edited = await api.ok("edit", data={"serverid": WEB, "cpucores": "4"})
    during = (await api.ok("status", data={"serverid": WEB}))["server"]
    again, again_body = await api.call("edit", data={"serverid": WEB, "cpucores": "8"})
    api.advance(89)
    still = (await api.ok("details", data={"serverid": WEB, "includestate": "yes"}))["server"]
    api.advance(1)
    after = (await api.ok("details", data={"serverid": WEB, "includestate": "yes"}))["server"]
    status = (await api.ok("status", data={"serverid": WEB}))["server"]

    assert (edited["server"]["islocked"], edited["server"]["isrunning"]) == (True, False)
    assert edited["server"]["status"] == "updating"
    assert edited["server"]["cpucores"] == 2
    assert edited["debug"]["input"] == {"serverid": WEB, "cpucores": "4"}
    assert during["state"] == "stopped"
    assert during["cpu"] == {"usage": 0.0, "max": 2, "unit": "cores"}
    # As recorded (jclouds): a locked server answers HTTP 500 with Glesys's code 606.
    assert again == 500
    assert again_body["response"]["status"]["code"] == 606
    assert again_body["response"]["status"]["text"] == "Server Locked"
    assert (still["islocked"], still["status"], still["cpucores"]) == (True, "updating", 2)
    assert (after["islocked"], after["isrunning"], after["cpucores"]) == (False, True, 4)
    assert after["cost"]["amount"] > edited["server"]["cost"]["amount"]
    assert status["cpu"] == {"usage": 1.5, "max": 4, "unit": "cores"}
    assert status["uptime"]["current"] == 0


async def test_edit_to_the_same_cores_does_not_reboot(api: Api) -> None:
    edited = (await api.ok("edit", json={"serverid": WEB, "cpucores": 2}))["server"]

    assert (edited["isrunning"], edited["islocked"], edited["cpucores"]) == (True, False, 2)


async def test_edit_changes_memory_and_description(api: Api) -> None:
    edited = await api.ok(
        "edit", json={"serverid": DB, "memorysize": 16384, "description": "primary db"}
    )
    details = (await api.ok("details", data={"serverid": DB}))["server"]

    assert edited["server"]["status"] == "running"
    assert (details["memorysize"], details["description"]) == (16384, "primary db")


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["details", "status", "edit"])
async def test_missing_serverid_answers_400_naming_it(api: Api, function: str) -> None:
    status, body = await api.call(function, data={"cpucores": "2"})

    assert status == 400
    assert "serverid" in body["response"]["status"]["text"]


@pytest.mark.parametrize("function", ["details", "status", "edit"])
async def test_unknown_server_answers_400_in_glesys_words(api: Api, function: str) -> None:
    status, body = await api.call(function, data={"serverid": "kvm0000000", "cpucores": "2"})

    # As recorded (jclouds): a 400, not a 404, and the text ends in a newline.
    assert status == 400
    assert body["response"]["status"] == {
        "code": 400,
        "timestamp": "2024-11-20T10:30:00+00:00",
        "text": "Could not find server with this id on this account.\n",
    }


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"cpucores": "four"}, "cpucores"),
        ({"cpucores": "2.5"}, "cpucores"),
        ({"cpucores": True}, "cpucores"),
        ({"cpucores": 64}, "cpucores"),
        ({"cpucores": 0}, "cpucores"),
        ({"cpucores": 7}, "cpucores"),  # not a size KVM offers
        ({"memorysize": "lots"}, "memorysize"),
        ({"memorysize": 1}, "memorysize"),
    ],
)
async def test_edit_refuses_invalid_arguments_with_400(
    api: Api, args: dict[str, Any], needle: str
) -> None:
    status, body = await api.call("edit", json={"serverid": WEB, **args})
    details = (await api.ok("details", data={"serverid": WEB, "includestate": "yes"}))["server"]

    assert status == 400
    assert needle in body["response"]["status"]["text"]
    assert (details["status"], details["cpucores"], details["memorysize"]) == ("running", 2, 4096)


async def test_bad_json_body_answers_400(api: Api) -> None:
    status, body = await api.call(
        "details", data="{serverid", headers={"Content-Type": "application/json"}
    )

    assert status == 400
    assert "JSON" in body["response"]["status"]["text"]


# -- golden shapes ---------------------------------------------------------------------------------

GOLDEN_REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "server_list": ("list", {}),
    "server_details": ("details", {"data": {"serverid": WEB, "includestate": "yes"}}),
    "server_status": ("status", {"data": {"serverid": WEB}}),
    "server_edit": ("edit", {"json": {"serverid": WEB, "cpucores": 4}}),
    "server_allowedarguments": ("allowedarguments", {"json": {}}),
}


@pytest.mark.parametrize("golden", sorted(GOLDEN_FILES))
async def test_live_responses_have_the_documented_key_structure(api: Api, golden: str) -> None:
    expected = GOLDEN_FILES[golden]
    function, kwargs = GOLDEN_REQUESTS[golden]
    status, live = await api.call(function, **kwargs)

    assert status == 200, live
    assert key_mismatches(expected, live) == []


def test_every_golden_file_has_a_request() -> None:
    assert set(GOLDEN_FILES) == set(GOLDEN_REQUESTS)
