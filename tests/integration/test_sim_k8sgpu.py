"""The simulated Serverless GPU API, driven over HTTP through a real in-process server."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import BaseTestServer, TestServer
from conftest import key_mismatches

from daemon.simulator.app import create_app
from daemon.simulator.http import Simulation
from daemon.simulator.scenario import parse_scenario

GOLDEN_DIR = Path(__file__).parent.parent / "golden" / "k8sgpu"
GOLDEN_FILES = {
    p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(GOLDEN_DIR.glob("*.json"))
}

# Starts 2024-11-20 10:30 UTC. With the default 2 h billing lag, bills run to 08:00 at the start.
SCENARIO = """
name: k8sgpu-test
start: "2024-11-20T10:30:00Z"
clusters:
  - {name: skg00018, label: tenant-lab}
  - {name: skg100004, label: tenant-prod}
pods:
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xa6000, name: inference-a, age: 5h}
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xl4, name: inference-b, age: 20d}
  - {cluster: skg100004, runtime_class: seeweb-nvidia-2xa6000, name: ops-remote-gpu-c, age: 1h}
timeline:
  - {at: 30m, pod_end: {pod: inference-b, failed: false}}
"""

POD_KEYS = {
    "uuid",
    "remote_reference_name",
    "remote_reference_namespace",
    "local_reference_name",
    "local_reference_namespace",
    "status",
    "online",
    "active",
    "succeeded",
    "failed",
    "creation_date",
    "deactivated_from",
    "runtime_class",
    "user",
    "cluster",
    "in_deletion",
}
EVENT_KEYS = {
    "pod",
    "cluster",
    "id",
    "uuid",
    "user",
    "date",
    "runtime_class",
    "local_reference_namespace",
    "local_reference_name",
    "remote_reference_namespace",
    "remote_reference_name",
    "event_epoch",
    "event_type",
}


@dataclass
class Api:
    """A logged-in client of one simulator."""

    sim: Simulation
    server: BaseTestServer
    session: aiohttp.ClientSession
    token: str = field(default="")

    async def call(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        all_headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        all_headers.update(headers or {})
        url = self.server.make_url(path)
        async with self.session.request(method, url, headers=all_headers, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def get(self, path: str, **kwargs: Any) -> Any:
        status, body = await self.call("GET", path, **kwargs)
        assert status == 200, body
        return body

    def advance(self, seconds: float) -> None:
        self.sim.world.clock.advance(seconds)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    sim = Simulation(parse_scenario(SCENARIO), speed=0)
    async with TestServer(create_app(sim)) as server, aiohttp.ClientSession() as session:
        client = Api(sim, server, session)
        status, body = await client.call(
            "POST",
            "/k8sgpu/v1/user/login/",
            auth=False,
            json={"username": "demo", "password": "demo"},
        )
        assert status == 200, body
        client.token = body["token"]
        yield client


def pod_uuid(api: Api, remote_name: str) -> str:
    return api.sim.world.pod(remote_name).uuid


# -- login and auth --------------------------------------------------------------------------------


async def test_login_answers_a_token_with_naive_expiry_and_max_age(api: Api) -> None:
    status, body = await api.call(
        "POST", "/k8sgpu/v1/user/login", auth=False, json={"username": "demo", "password": "demo"}
    )

    assert status == 200
    assert set(body) == {"token", "expire", "user", "max_age"}
    assert body["user"] == "demo"
    assert body["max_age"] == 14400
    assert body["expire"] == "2024-11-20 14:30:00.000000"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", body["expire"])
    assert body["token"].count(".") == 2


async def test_login_refuses_wrong_password_with_detail(api: Api) -> None:
    status, body = await api.call(
        "POST", "/k8sgpu/v1/user/login/", auth=False, json={"username": "demo", "password": "x"}
    )

    assert status == 401
    assert set(body) == {"detail"}


@pytest.mark.parametrize(
    ("data", "needle"),
    [("{not json", "not valid JSON"), ('{"username": "demo"}', "password"), ("[1]", "JSON object")],
)
async def test_login_refuses_bad_bodies_with_400(api: Api, data: str, needle: str) -> None:
    status, body = await api.call(
        "POST",
        "/k8sgpu/v1/user/login/",
        auth=False,
        data=data,
        headers={"Content-Type": "application/json"},
    )

    assert status == 400
    assert needle in body["detail"]


@pytest.mark.parametrize(
    "path",
    ["/k8sgpu/v1/cluster/", "/k8sgpu/v1/events/", "/k8sgpu/v1/pod/", "/k8sgpu/v1/billing/2024/11"],
)
async def test_requests_without_a_valid_token_answer_401(api: Api, path: str) -> None:
    missing, _ = await api.call("GET", path, auth=False)
    forged, _ = await api.call("GET", path, auth=False, headers={"Authorization": "Bearer x.y.z"})

    assert (missing, forged) == (401, 401)


async def test_token_works_without_bearer_prefix_until_it_expires(api: Api) -> None:
    raw = {"Authorization": api.token}
    before, _ = await api.call("GET", "/k8sgpu/v1/cluster/", auth=False, headers=raw)
    api.advance(14400)
    after, body = await api.call("GET", "/k8sgpu/v1/cluster/")

    assert before == 200
    assert after == 401
    assert "expired" in body["detail"]


async def test_user_answers_the_username(api: Api) -> None:
    assert await api.get("/k8sgpu/v1/user/") == {"username": "demo"}
    assert await api.get("/k8sgpu/v1/user") == {"username": "demo"}


# -- clusters --------------------------------------------------------------------------------------


async def test_clusters_list_and_one_with_or_without_slash(api: Api) -> None:
    listed = await api.get("/k8sgpu/v1/cluster/")
    one = await api.get("/k8sgpu/v1/cluster/skg100004")

    assert [c["name"] for c in listed] == ["skg00018", "skg100004"]
    assert await api.get("/k8sgpu/v1/cluster") == listed
    assert await api.get("/k8sgpu/v1/cluster/skg100004/") == one
    assert one == {
        "name": "skg100004",
        "label": "tenant-prod",
        "customer": "skgu00004",
        "active": True,
        "created": True,
        "created_at": "2024-08-22T10:30:00.000000+00:00",
    }


async def test_unknown_cluster_answers_404(api: Api) -> None:
    status, body = await api.call("GET", "/k8sgpu/v1/cluster/skg99999")

    assert status == 404
    assert "skg99999" in body["detail"]


# -- events ----------------------------------------------------------------------------------------


async def test_events_have_the_documented_fields_newest_first(api: Api) -> None:
    body = await api.get("/k8sgpu/v1/events/")

    assert set(body) == {"items", "length", "total"}
    assert body["total"] == body["length"] == 3
    for item in body["items"]:
        assert set(item) == EVENT_KEYS
        assert item["pod"] == item["uuid"]
        assert isinstance(item["id"], int)
        assert isinstance(item["event_epoch"], int)
        assert item["event_epoch"] == int(datetime.fromisoformat(item["date"]).timestamp())
        assert re.fullmatch(r".+T.+\.\d{6}\+00:00", item["date"])
        assert item["remote_reference_namespace"] == "remote-gpu"
        assert item["local_reference_namespace"] == f"{item['cluster']}-gpu"
    dates = [item["date"] for item in body["items"]]
    assert dates == sorted(dates, reverse=True)
    assert body["items"][0]["remote_reference_name"] == "ops-remote-gpu-c"


async def test_events_page_by_offset_and_length_with_default_50(api: Api) -> None:
    world = api.sim.world
    for i in range(30):
        pod = world.start_pod("skg100004", "seeweb-nvidia-1xl4", name=f"batch-{i:02d}")
        api.advance(30)  # 15 min in all: before the timeline ends inference-b
        world.sync()
        world.end_pod(pod, world.now)
    everything = await api.get("/k8sgpu/v1/events/", params={"length": "1000"})
    default = await api.get("/k8sgpu/v1/events/")
    walked: list[dict[str, Any]] = []
    for offset in range(0, 70, 7):
        page = await api.get("/k8sgpu/v1/events/", params={"offset": offset, "length": 7})
        assert page["total"] == 63
        assert page["length"] == len(page["items"])
        walked += page["items"]

    assert everything["total"] == everything["length"] == 63
    assert default["length"] == 50
    assert default["total"] == 63
    assert default["items"] == everything["items"][:50]
    assert walked == everything["items"]


async def test_events_search_matches_uuid_cluster_and_reference_names(api: Api) -> None:
    uuid_a = pod_uuid(api, "inference-a")
    local_b = api.sim.world.pod("inference-b").local_name

    by_uuid = await api.get("/k8sgpu/v1/events/", params={"search": uuid_a})
    by_cluster = await api.get("/k8sgpu/v1/events/", params={"search": "skg100004"})
    by_remote = await api.get("/k8sgpu/v1/events/", params={"search": "inference-"})
    by_local = await api.get("/k8sgpu/v1/events/", params={"search": local_b})
    by_namespace = await api.get("/k8sgpu/v1/events/", params={"search": "skg00018-gpu"})
    nothing = await api.get("/k8sgpu/v1/events/", params={"search": "no-such-thing"})

    assert [i["uuid"] for i in by_uuid["items"]] == [uuid_a]
    assert {i["cluster"] for i in by_cluster["items"]} == {"skg100004"}
    assert by_remote["total"] == 2
    assert [i["local_reference_name"] for i in by_local["items"]] == [local_b]
    assert by_namespace["total"] == 2
    assert nothing == {"items": [], "length": 0, "total": 0}


@pytest.mark.parametrize("query", [{"offset": "x"}, {"length": "-1"}, {"offset": "-5"}])
async def test_events_refuse_bad_paging_with_400(api: Api, query: dict[str, str]) -> None:
    status, body = await api.call("GET", "/k8sgpu/v1/events/", params=query)

    assert status == 400
    assert next(iter(query)) in body["detail"]


# -- pods ------------------------------------------------------------------------------------------


async def test_pods_have_every_documented_field(api: Api) -> None:
    pods = await api.get("/k8sgpu/v1/pod/")

    assert len(pods) == 3
    for pod in pods:
        assert set(pod) == POD_KEYS
        assert pod["remote_reference_namespace"] == "remote-gpu"
        assert pod["user"] == "skgu00004"
        for key in ("online", "active", "succeeded", "failed", "in_deletion"):
            assert isinstance(pod[key], bool)
    running = next(p for p in pods if p["remote_reference_name"] == "inference-a")
    assert running["status"] == "running"
    assert running["online"] is True
    assert running["deactivated_from"] is None
    assert running["creation_date"] == "2024-11-20T05:30:00+00:00"


async def test_pods_filter_by_cluster(api: Api) -> None:
    lab = await api.get("/k8sgpu/v1/pod/", params={"cluster": "skg00018"})
    none = await api.get("/k8sgpu/v1/pod", params={"cluster": "skg99999"})

    assert {p["remote_reference_name"] for p in lab} == {"inference-a", "inference-b"}
    assert none == []


async def test_pod_by_uuid_and_unknown_pod_404(api: Api) -> None:
    uuid_c = pod_uuid(api, "ops-remote-gpu-c")
    pod = await api.get(f"/k8sgpu/v1/pod/{uuid_c}")
    status, body = await api.call("GET", "/k8sgpu/v1/pod/00000000-0000-4000-8000-000000000000")

    assert pod["uuid"] == uuid_c
    assert pod["cluster"] == "skg100004"
    assert status == 404
    assert "00000000-0000-4000-8000-000000000000" in body["detail"]


async def test_pod_that_ended_shows_terminated_and_succeeded(api: Api) -> None:
    api.advance(1800)
    pod = await api.get(f"/k8sgpu/v1/pod/{pod_uuid(api, 'inference-b')}")

    assert pod["status"] == "terminated"
    assert (pod["online"], pod["succeeded"], pod["failed"]) == (False, True, False)
    assert pod["deactivated_from"] == "2024-11-20T11:00:00+00:00"


async def test_deleting_a_pod_terminates_it_ten_seconds_later(api: Api) -> None:
    uuid_a = pod_uuid(api, "inference-a")
    status, body = await api.call("DELETE", f"/k8sgpu/v1/pod/{uuid_a}")
    during = await api.get(f"/k8sgpu/v1/pod/{uuid_a}")
    api.advance(10)
    after = await api.get(f"/k8sgpu/v1/pod/{uuid_a}/")
    events = await api.get("/k8sgpu/v1/events/", params={"search": uuid_a})
    again, again_body = await api.call("DELETE", f"/k8sgpu/v1/pod/{uuid_a}")

    assert (status, body) == (200, {"message": "Pod in deletion", "pod": uuid_a})
    assert (during["status"], during["in_deletion"], during["online"]) == ("running", True, True)
    # A deletion that was asked for stays visible on the terminated pod.
    assert (after["status"], after["in_deletion"], after["online"]) == ("terminated", True, False)
    assert after["deactivated_from"] == "2024-11-20T10:30:10+00:00"
    assert [e["event_type"] for e in events["items"]] == ["terminated", "started"]
    assert events["items"][0]["date"] == "2024-11-20T10:30:10.000000+00:00"
    assert again == 409
    assert uuid_a in again_body["detail"]


async def test_deleting_an_unknown_pod_answers_404(api: Api) -> None:
    status, _ = await api.call("DELETE", "/k8sgpu/v1/pod/nope")

    assert status == 404


# -- billing ---------------------------------------------------------------------------------------


def bill_by_name(bill: dict[str, Any]) -> dict[str, tuple[int, float]]:
    return {
        line["pod"]["remote_reference_name"]: (line["online_hour"], line["cost"])
        for line in bill["pods"]
    }


async def test_billing_counts_whole_hours_only_up_to_the_lag(api: Api) -> None:
    # Bills are complete to 08:00: inference-a ran 05:30-08:00 (2 whole hours at 0.81),
    # inference-b all of November to 08:00 (464 h at 0.50), ops-remote-gpu-c not yet billed.
    first = await api.get("/k8sgpu/v1/billing/2024/11")
    api.advance(3 * 3600)
    # Now 13:30, billed to 11:00: a 5 h, b ended at 11:00 (467 h), c 09:30-11:00 (1 h at 1.62).
    later = await api.get("/k8sgpu/v1/billing/2024/11/")

    assert (first["year"], first["month"]) == (2024, 11)
    assert bill_by_name(first) == {"inference-a": (2, 1.62), "inference-b": (464, 232.0)}
    assert bill_by_name(later) == {
        "inference-a": (5, 4.05),
        "inference-b": (467, 233.5),
        "ops-remote-gpu-c": (1, 1.62),
    }


async def test_billing_lines_have_the_documented_fields(api: Api) -> None:
    bill = await api.get("/k8sgpu/v1/billing/2024/11")

    for line in bill["pods"]:
        assert set(line) == {"pod", "cost", "online_hour", "runtime_class", "active"}
        assert set(line["pod"]) == {
            "cluster",
            "online",
            "local_reference_name",
            "local_reference_namespace",
            "remote_reference_name",
            "remote_reference_namespace",
        }
        assert isinstance(line["online_hour"], int)
        assert isinstance(line["cost"], float | int)
        assert isinstance(line["active"], bool)


async def test_billing_splits_at_month_boundaries(api: Api) -> None:
    october = await api.get("/k8sgpu/v1/billing/2024/10")
    december = await api.get("/k8sgpu/v1/billing/2024/12")

    # inference-b started 2024-10-31 10:30: 13.5 h in October, billed as 13.
    assert bill_by_name(october) == {"inference-b": (13, 6.5)}
    assert december == {"month": 12, "year": 2024, "pods": []}


async def test_billing_as_csv(api: Api) -> None:
    bill = await api.get("/k8sgpu/v1/billing/2024/11")
    status, text = await api.call(
        "GET", "/k8sgpu/v1/billing/2024/11", headers={"Accept": "text/csv"}
    )

    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(bill["pods"]) == 2
    for row, line in zip(rows, bill["pods"], strict=True):
        assert row["remote_reference_name"] == line["pod"]["remote_reference_name"]
        assert row["cluster"] == line["pod"]["cluster"]
        assert int(row["online_hour"]) == line["online_hour"]
        assert float(row["cost"]) == line["cost"]
        assert row["runtime_class"] == line["runtime_class"]
        assert row["online"] in ("true", "false")


async def test_billing_csv_has_a_content_type_and_header_when_empty(api: Api) -> None:
    url = api.server.make_url("/k8sgpu/v1/billing/2024/12")
    headers = {"Authorization": f"Bearer {api.token}", "Accept": "text/csv"}
    async with api.session.get(url, headers=headers) as response:
        assert response.status == 200
        assert response.content_type == "text/csv"
        text = await response.text()

    assert text.splitlines()[0].startswith("cluster,online,")
    assert len(text.splitlines()) == 1


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/k8sgpu/v1/billing/2024/13", "month"),
        ("/k8sgpu/v1/billing/2024/0", "month"),
        ("/k8sgpu/v1/billing/2024/nov", "month"),
        ("/k8sgpu/v1/billing/twenty/11", "year"),
        ("/k8sgpu/v1/billing/0/11", "year"),
        ("/k8sgpu/v1/billing/9999/12", "year"),
    ],
)
async def test_billing_refuses_bad_year_or_month_with_400(api: Api, path: str, needle: str) -> None:
    status, body = await api.call("GET", path)

    assert status == 400
    assert needle in body["detail"]


# -- golden shapes ---------------------------------------------------------------------------------


async def live_response(api: Api, name: str) -> Any:
    """Return the simulator's answer to the request each golden file documents."""
    uuid_a = pod_uuid(api, "inference-a")
    requests: dict[str, tuple[str, str, dict[str, Any]]] = {
        "login": (
            "POST",
            "/k8sgpu/v1/user/login/",
            {"auth": False, "json": {"username": "demo", "password": "demo"}},
        ),
        "user": ("GET", "/k8sgpu/v1/user/", {}),
        "cluster": ("GET", "/k8sgpu/v1/cluster/skg100004", {}),
        "cluster_list": ("GET", "/k8sgpu/v1/cluster/", {}),
        "events": ("GET", "/k8sgpu/v1/events/", {}),
        "pod": ("GET", f"/k8sgpu/v1/pod/{uuid_a}", {}),
        "pod_list": ("GET", "/k8sgpu/v1/pod/", {}),
        "billing": ("GET", "/k8sgpu/v1/billing/2024/11", {}),
    }
    method, path, kwargs = requests[name]
    status, body = await api.call(method, path, **kwargs)
    assert status == 200, body
    return body


@pytest.mark.parametrize("golden", sorted(GOLDEN_FILES))
async def test_live_responses_have_the_documented_key_structure(api: Api, golden: str) -> None:
    expected = GOLDEN_FILES[golden]
    live = await live_response(api, golden)

    assert type(live) is type(expected)
    assert key_mismatches(expected, live) == []


def test_every_golden_file_has_a_request() -> None:
    names = set(GOLDEN_FILES)

    assert names == {
        "billing",
        "cluster",
        "cluster_list",
        "events",
        "login",
        "pod",
        "pod_list",
        "user",
    }
