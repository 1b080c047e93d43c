"""The simulated Seeweb ECS API, driven over HTTP with frozen simulated time."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from configs import TOKEN
from conftest import START, SimFactory, SimHandle

ECS = "/ecs/v2"
HOUR = 3600


async def ok(h: SimHandle, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
    """Call the simulator and return the body of a 200 answer."""
    status, answer = await h.call(method, path, json=body, **kwargs)
    assert status == 200, (method, path, answer)
    return answer


async def action(h: SimHandle, action_id: int) -> dict[str, Any]:
    """Return one action record."""
    body = await ok(h, "GET", f"{ECS}/actions/{action_id}")
    record: dict[str, Any] = body["action"]
    return record


async def current_status(h: SimHandle, server: str) -> str:
    """Return the server's current_status (RUNNING or SHUTOFF)."""
    body = await ok(h, "GET", f"{ECS}/servers/{server}/status")
    assert body["server"]["name"] == server
    status: str = body["server"]["current_status"]
    return status


async def world(h: SimHandle) -> dict[str, Any]:
    """Return the /_sim/world state."""
    body = await ok(h, "GET", "/_sim/world")
    assert isinstance(body, dict)
    return body


async def new_snapshot(h: SimHandle, server: str, **fields: Any) -> tuple[int, int]:
    """Start a snapshot and return its id and the id of its create_snapshot action."""
    body = await ok(h, "POST", f"{ECS}/servers/{server}/snapshots", fields)
    assert body["snapshot"]["status"] == "CG"
    assert body["action"]["type"] == "create_snapshot"
    return body["snapshot"]["id"], body["action"]["id"]


# -- auth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-APITOKEN", "X-API-TOKEN"])
async def test_api_token_is_accepted_in_either_header(simulator: SimFactory, header: str) -> None:
    h = await simulator("default")
    body = await ok(h, "GET", f"{ECS}/servers", auth=False, headers={header: TOKEN})
    assert body["count"] == 7


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-APITOKEN": "wrong"}, "invalid API token"),
        ({"X-API-TOKEN": "wrong"}, "invalid API token"),
        ({}, "authentication credentials were not provided"),
        ({"Authorization": "Bearer not-a-jwt"}, "token is invalid or expired"),
    ],
)
async def test_bad_credentials_answer_401_with_a_json_body(
    simulator: SimFactory, headers: dict[str, str], message: str
) -> None:
    h = await simulator("default")
    status, body = await h.call("GET", f"{ECS}/servers", auth=False, headers=headers)
    assert status == 401
    assert body == {"error_code": 401, "status": "error", "message": message}


async def test_login_issues_a_bearer_token_that_expires_after_four_hours(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    body = await ok(h, "POST", f"{ECS}/login", {"username": "demo", "password": "demo"}, auth=False)
    assert body["status"] == "ok"
    assert body["expire"] == int((START + timedelta(hours=4)).timestamp())
    bearer = {"Authorization": f"Bearer {body['token']}"}
    assert (await h.call("GET", f"{ECS}/servers", auth=False, headers=bearer))[0] == 200
    # The docs' curl example sends the JWT without the "Bearer" prefix; both are accepted.
    raw = {"Authorization": body["token"]}
    assert (await h.call("GET", f"{ECS}/servers", auth=False, headers=raw))[0] == 200

    await h.advance(4 * HOUR - 1)
    assert (await h.call("GET", f"{ECS}/servers", auth=False, headers=bearer))[0] == 200
    await h.advance(2)
    status, answer = await h.call("GET", f"{ECS}/servers", auth=False, headers=bearer)
    assert status == 401
    assert answer["message"] == "token is invalid or expired"


async def test_login_with_a_wrong_password_answers_401(simulator: SimFactory) -> None:
    h = await simulator("default")
    status, body = await h.call(
        "POST", f"{ECS}/login", json={"username": "demo", "password": "nope"}, auth=False
    )
    assert status == 401
    assert body["message"] == "wrong username or password"


# -- actions ---------------------------------------------------------------------------------------


async def test_actions_come_newest_first_with_the_total(simulator: SimFactory) -> None:
    h = await simulator("default")
    body = await ok(h, "GET", f"{ECS}/actions")
    ids = [a["id"] for a in body["actions"]]
    assert body["total_actions"] == 12
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 12
    created = [a["created_at"] for a in body["actions"]]
    assert created == sorted(created, reverse=True)


async def test_actions_page_with_start_and_length(simulator: SimFactory) -> None:
    h = await simulator("default")
    everything = [a["id"] for a in (await ok(h, "GET", f"{ECS}/actions"))["actions"]]
    page = await ok(h, "GET", f"{ECS}/actions?start=2&length=3")
    assert [a["id"] for a in page["actions"]] == everything[2:5]
    assert page["total_actions"] == 12
    past_the_end = await ok(h, "GET", f"{ECS}/actions?start=12&length=5")
    assert past_the_end["actions"] == []
    assert past_the_end["total_actions"] == 12


async def test_actions_are_filtered_by_resource_before_paging(simulator: SimFactory) -> None:
    h = await simulator("default")
    everything = (await ok(h, "GET", f"{ECS}/actions"))["actions"]
    mine = [a["id"] for a in everything if a["resource"] == "ec200002"]
    assert len(mine) == 4
    filtered = await ok(h, "GET", f"{ECS}/actions?resource=ec200002")
    assert [a["id"] for a in filtered["actions"]] == mine
    assert filtered["total_actions"] == 4
    paged = await ok(h, "GET", f"{ECS}/actions?resource=ec200002&start=1&length=2")
    assert [a["id"] for a in paged["actions"]] == mine[1:3]
    assert paged["total_actions"] == 4


async def test_one_action_is_the_same_record_as_in_the_list(simulator: SimFactory) -> None:
    h = await simulator("default")
    listed = (await ok(h, "GET", f"{ECS}/actions"))["actions"]
    failed = [a for a in listed if a["status"] == "failed"]
    assert len(failed) == 2
    for record in (listed[0], failed[0]):
        body = await ok(h, "GET", f"{ECS}/actions/{record['id']}")
        assert body == {"status": "ok", "action": record}


@pytest.mark.parametrize("outcome", ["completed", "failed", "error"])
async def test_an_injected_action_progresses_then_ends_with_its_outcome(
    simulator: SimFactory, outcome: str
) -> None:
    h = await simulator("default")
    started = await ok(
        h,
        "POST",
        "/_sim/actions",
        {"resource": "ec200003", "type": "rollback", "outcome": outcome, "duration_s": 100},
    )
    action_id = started["action"]["id"]
    assert started["action"]["status"] == "in-progress"
    first = await action(h, action_id)
    assert (first["status"], first["progress"], first["completed_at"]) == ("in-progress", 0, None)

    await h.advance(30)
    early = await action(h, action_id)
    await h.advance(40)
    later = await action(h, action_id)
    assert (early["status"], later["status"]) == ("in-progress", "in-progress")
    assert 0 < early["progress"] < later["progress"] < 100
    assert (early["progress"], later["progress"]) == (30, 70)

    await h.advance(30)
    done = await action(h, action_id)
    assert done["status"] == outcome
    assert done["completed_at"] == "2026-11-10T12:01:40.000000+00:00"
    if outcome == "completed":
        assert done["progress"] == 100
    else:
        assert done["progress"] < 100  # frozen where it stopped
    newest = (await ok(h, "GET", f"{ECS}/actions?length=1"))["actions"][0]
    assert newest["id"] == action_id


async def test_an_injected_power_off_takes_effect_only_when_completed(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    body = {"resource": "ec200001", "type": "power_off", "outcome": "failed", "duration_s": 60}
    await ok(h, "POST", "/_sim/actions", body)
    await h.advance(61)
    assert await current_status(h, "ec200001") == "RUNNING"
    await ok(h, "POST", "/_sim/actions", {**body, "outcome": "completed"})
    await h.advance(59)
    assert await current_status(h, "ec200001") == "RUNNING"
    await h.advance(1)
    assert await current_status(h, "ec200001") == "SHUTOFF"


# -- power and snapshots ---------------------------------------------------------------------------


async def test_power_off_shuts_the_server_off_only_when_its_action_completes(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    assert await current_status(h, "ec200001") == "RUNNING"
    started = await ok(h, "POST", f"{ECS}/servers/ec200001/actions", {"type": "power_off"})
    assert started["type"] == "power_off"
    assert started["resource"] == "ec200001"
    assert started["status"] == "in-progress"
    await h.advance(59)
    assert await current_status(h, "ec200001") == "RUNNING"
    await h.advance(1)
    assert await current_status(h, "ec200001") == "SHUTOFF"
    assert (await action(h, started["id"]))["status"] == "completed"
    servers = {s["name"]: s for s in (await world(h))["servers"]}
    assert servers["ec200001"]["status"] == "SHUTOFF"

    on = await ok(h, "POST", f"{ECS}/servers/ec200001/actions", {"type": "power_on"})
    await h.advance(60)
    assert (await action(h, on["id"]))["status"] == "completed"
    assert await current_status(h, "ec200001") == "RUNNING"


async def test_snapshots_nest_their_parent_and_a_rollback_names_the_restored_one(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    first, _ = await new_snapshot(h, "ec200001", description="one")
    await h.advance(90)
    second, _ = await new_snapshot(h, "ec200001", description="two")
    await h.advance(90)
    listed = (await ok(h, "GET", f"{ECS}/servers/ec200001/snapshots"))["snapshots"]
    await ok(h, "POST", f"{ECS}/servers/ec200001/actions", {"type": "rollback", "snapshot": second})
    await h.advance(600)
    server = (await ok(h, "GET", f"{ECS}/servers/ec200001"))["server"]

    by_id = {snap["id"]: snap for snap in listed}
    # As the live API does: the parent is a whole snapshot, not an id; one level deep here.
    assert by_id[first]["snapshot_parent"] is None
    parent = by_id[second]["snapshot_parent"]
    assert (parent["id"], parent["snapshot_parent"]) == (first, None)
    assert by_id[second]["snapshot_parent_name"] == parent["name"]
    restored = server["last_restored_snapshot"]
    assert (restored["id"], restored["is_last_restored"]) == (second, True)
    assert restored["snapshot_parent"]["id"] == first


async def test_a_snapshot_in_progress_blocks_power_off_until_it_completes(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    snap_id, create_id = await new_snapshot(h, "ec200003", description="before upgrade")
    status, body = await h.call(
        "POST", f"{ECS}/servers/ec200003/actions", json={"type": "power_off"}
    )
    assert status == 409
    assert f"snapshot {snap_id}" in body["message"]
    assert body["error_code"] == 409
    # The same guard holds for the server's other changes.
    for method, path, payload in [
        ("POST", f"{ECS}/servers/ec200003/snapshots", {}),
        ("POST", f"{ECS}/templates", {"server": "ec200003"}),
        ("DELETE", f"{ECS}/servers/ec200003", None),
    ]:
        assert (await h.call(method, path, json=payload))[0] == 409, path
    # Other servers are not blocked.
    await ok(h, "POST", f"{ECS}/servers/ec200005/actions", {"type": "power_off"})

    await h.advance(90)
    assert (await action(h, create_id))["status"] == "completed"
    started = await ok(h, "POST", f"{ECS}/servers/ec200003/actions", {"type": "power_off"})
    assert started["status"] == "in-progress"


async def test_rollback_needs_an_existing_completed_snapshot_of_that_server(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    path = f"{ECS}/servers/ec200002/actions"
    status, body = await h.call("POST", path, json={"type": "rollback"})
    assert (status, body["message"]) == (400, "rollback needs the field 'snapshot'")
    status, body = await h.call("POST", path, json={"type": "rollback", "snapshot": 999})
    assert (status, body["message"]) == (404, "snapshot 999 of server ec200002 not found")

    other_id, _ = await new_snapshot(h, "ec200001")
    snap_id, _ = await new_snapshot(h, "ec200002")
    status, body = await h.call("POST", path, json={"type": "rollback", "snapshot": snap_id})
    assert status == 409  # still being created
    await h.advance(90)
    status, body = await h.call("POST", path, json={"type": "rollback", "snapshot": other_id})
    assert status == 404

    started = await ok(h, "POST", path, {"type": "rollback", "snapshot": snap_id})
    assert (started["type"], started["resource"]) == ("rollback", "ec200002")
    await h.advance(180)
    assert (await action(h, started["id"]))["status"] == "completed"
    snap = await ok(h, "GET", f"{ECS}/servers/ec200002/snapshots/{snap_id}")
    assert snap["snapshot"]["is_last_restored"] is True


async def test_snapshots_list_get_protect_and_delete(simulator: SimFactory) -> None:
    h = await simulator("default")
    base = f"{ECS}/servers/ec200004/snapshots"
    assert (await ok(h, "GET", base))["snapshots"] == []
    snap_id, _ = await new_snapshot(h, "ec200004", description="nightly", notes="keep a week")

    listed = (await ok(h, "GET", base))["snapshots"]
    assert [(s["id"], s["status"], s["active_flag"]) for s in listed] == [(snap_id, "CG", False)]
    assert listed[0]["name"] == "ec200004-SNP-1"
    assert (listed[0]["description"], listed[0]["notes"]) == ("nightly", "keep a week")
    assert listed[0]["size_on_disk"] is None
    status, body = await h.call("DELETE", f"{base}/{snap_id}")
    assert status == 409  # cannot delete while it is being created

    await h.advance(90)
    snap = (await ok(h, "GET", f"{base}/{snap_id}"))["snapshot"]
    assert (snap["status"], snap["status_label"], snap["active_flag"]) == ("CD", "Created", True)
    assert isinstance(snap["size_on_disk"], int)
    assert snap["protected"] is False

    patched = await ok(h, "PATCH", f"{base}/{snap_id}", {"protected": True})
    assert patched["snapshot"]["protected"] is True
    assert patched["snapshot"]["description"] == "nightly"  # untouched fields stay
    assert (await ok(h, "GET", f"{base}/{snap_id}"))["snapshot"]["protected"] is True
    in_world = [s for s in (await world(h))["snapshots"] if s["id"] == snap_id]
    assert in_world == [
        {
            "id": snap_id,
            "server": "ec200004",
            "status": "CD",
            "notes": "keep a week",
            "protected": True,
        }
    ]

    deleted = await ok(h, "DELETE", f"{base}/{snap_id}")
    assert deleted["snapshot"]["status"] == "DE"
    assert deleted["snapshot"]["deleted_at"] is not None
    assert (deleted["action"]["type"], deleted["action"]["resource"]) == (
        "delete_snapshot",
        str(snap_id),
    )
    await h.advance(30)
    assert (await ok(h, "GET", base))["snapshots"] == []
    status, body = await h.call("GET", f"{base}/{snap_id}")
    assert (status, body["message"]) == (404, f"snapshot {snap_id} of server ec200004 not found")


async def test_a_snapshot_belongs_to_its_server_only(simulator: SimFactory) -> None:
    h = await simulator("default")
    snap_id, _ = await new_snapshot(h, "ec200001")
    status, _ = await h.call("GET", f"{ECS}/servers/ec200002/snapshots/{snap_id}")
    assert status == 404
    assert (await ok(h, "GET", f"{ECS}/servers/ec200002/snapshots"))["snapshots"] == []


# -- templates -------------------------------------------------------------------------------------


async def test_templates_from_a_server_and_from_a_snapshot(simulator: SimFactory) -> None:
    h = await simulator("default")
    from_server = await ok(
        h, "POST", f"{ECS}/templates", {"server": "ec200001", "description": "a"}
    )
    template = from_server["template"]
    assert (template["status"], template["active_flag"]) == ("CG", False)
    creating = await action(h, from_server["action_id"])
    assert (creating["type"], creating["resource"], creating["resource_type"]) == (
        "create_template",
        template["name"],
        "DI",
    )
    await h.advance(120)
    got = (await ok(h, "GET", f"{ECS}/templates/{template['name']}"))["template"]
    assert (got["status"], got["active_flag"], got["so_base"]) == ("CD", True, "debian")

    status, body = await h.call("POST", f"{ECS}/templates", json={"snapshot": 12345})
    assert (status, body["message"]) == (404, "snapshot 12345 not found")
    snap_id, _ = await new_snapshot(h, "ec200003")
    status, _ = await h.call("POST", f"{ECS}/templates", json={"snapshot": snap_id})
    assert status == 404  # a snapshot still being created cannot be cloned
    await h.advance(90)
    from_snapshot = await ok(
        h, "POST", f"{ECS}/templates", {"snapshot": snap_id, "description": "b"}
    )
    second = from_snapshot["template"]["name"]
    await h.advance(120)

    listed = (await ok(h, "GET", f"{ECS}/templates"))["templates"]
    assert [t["name"] for t in listed] == [second, template["name"]]  # newest first
    assert [t["description"] for t in listed] == ["b", "a"]


@pytest.mark.parametrize(
    "body", [{}, {"server": "ec200001", "snapshot": 1}], ids=["neither", "both"]
)
async def test_a_template_needs_exactly_one_source(
    simulator: SimFactory, body: dict[str, Any]
) -> None:
    h = await simulator("default")
    status, answer = await h.call("POST", f"{ECS}/templates", json=body)
    assert (status, answer["message"]) == (400, "give exactly one of 'server' or 'snapshot'")


async def test_deleting_a_template(simulator: SimFactory) -> None:
    h = await simulator("default")
    created = await ok(h, "POST", f"{ECS}/templates", {"server": "ec200002"})
    name = created["template"]["name"]
    await h.advance(120)
    deleted = await ok(h, "DELETE", f"{ECS}/templates/{name}")
    assert (deleted["action"]["type"], deleted["action"]["resource"]) == ("delete_template", name)
    await h.advance(30)
    assert (await ok(h, "GET", f"{ECS}/templates"))["templates"] == []
    status, body = await h.call("GET", f"{ECS}/templates/{name}")
    assert (status, body["message"]) == (404, f"template {name!r} not found")


# -- servers ---------------------------------------------------------------------------------------


async def test_a_new_server_boots_and_is_listed(simulator: SimFactory) -> None:
    h = await simulator("default")
    body = await ok(
        h,
        "POST",
        f"{ECS}/servers",
        {"plan": "ECS3", "image": "ubuntu-2404", "location": "it-mi2", "notes": "new-one"},
    )
    server = body["server"]
    assert "action" not in body
    assert (server["status"], server["progress"]) == ("Booting", 10)
    assert (server["plan"], server["location"], server["notes"]) == ("ECS3", "it-mi2", "new-one")
    assert server["plan_size"]["core"] == "4"
    creating = await action(h, body["action_id"])
    assert (creating["type"], creating["resource"], creating["status"]) == (
        "new_server",
        server["name"],
        "in-progress",
    )
    assert await current_status(h, server["name"]) == "SHUTOFF"

    await h.advance(120)
    booted = (await ok(h, "GET", f"{ECS}/servers/{server['name']}"))["server"]
    assert (booted["status"], booted["progress"]) == ("Booted", 100)
    assert await current_status(h, server["name"]) == "RUNNING"
    assert (await action(h, body["action_id"]))["status"] == "completed"
    listed = await ok(h, "GET", f"{ECS}/servers")
    assert listed["count"] == 8
    assert server["name"] in [s["name"] for s in listed["server"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"plan": "ECS99", "image": "debian-12", "location": "it-fr2"},
            "plan 'ECS99' does not exist",
        ),
        (
            {"plan": "ECS1", "image": "debian-12", "location": "mars-1"},
            "location 'mars-1' does not exist",
        ),
        (
            {"image": "debian-12", "location": "it-fr2"},
            "POST /ecs/v2/servers: plan: Field required",
        ),
    ],
)
async def test_a_server_with_a_bad_plan_location_or_field_is_refused(
    simulator: SimFactory, body: dict[str, Any], message: str
) -> None:
    h = await simulator("default")
    status, answer = await h.call("POST", f"{ECS}/servers", json=body)
    assert (status, answer["message"]) == (400, message)
    assert (await ok(h, "GET", f"{ECS}/servers"))["count"] == 7


async def test_deleting_a_server(simulator: SimFactory) -> None:
    h = await simulator("default")
    body = await ok(h, "DELETE", f"{ECS}/servers/ec200005")
    assert (body["action"]["type"], body["action"]["resource"]) == ("delete_server", "ec200005")
    assert (await ok(h, "GET", f"{ECS}/servers/ec200005"))["server"]["status"] == "Deleting"
    await h.advance(60)
    status, answer = await h.call("GET", f"{ECS}/servers/ec200005")
    assert (status, answer["message"]) == (404, "server 'ec200005' not found")
    listed = await ok(h, "GET", f"{ECS}/servers")
    assert listed["count"] == 6
    assert "ec200005" not in [s["name"] for s in listed["server"]]
    assert "ec200005" not in [s["name"] for s in (await world(h))["servers"]]


async def test_label_and_group_changes(simulator: SimFactory) -> None:
    h = await simulator("default")
    path = f"{ECS}/servers/ec200001"
    assert await ok(h, "PUT", path, {"notes": "relabelled"}) == {"status": "ok"}
    assert (await ok(h, "GET", path))["server"]["notes"] == "relabelled"
    await ok(h, "PUT", path, {"note": "docs-spelling"})  # the docs' example says "note"
    assert (await ok(h, "GET", path))["server"]["notes"] == "docs-spelling"
    await ok(h, "PUT", path, {"group": "eg-000001"})
    assert (await ok(h, "GET", path))["server"]["group"] == "eg-000001"
    await ok(h, "PUT", path, {"group": "nogroup"})
    assert (await ok(h, "GET", path))["server"]["group"] is None
    status, body = await h.call("PUT", path, json={})
    assert (status, body["message"]) == (400, "PUT /ecs/v2/servers/{name}: give 'notes' or 'group'")


# -- metrics ---------------------------------------------------------------------------------------

ZONELESS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
TWO_DECIMALS = re.compile(r"^\d+\.\d{2}$")


def series_of(metrics: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Return the five series of a metrics answer by name."""
    return {
        "core": metrics["core"],
        "disk.reads": metrics["disk"]["reads"],
        "disk.writes": metrics["disk"]["writes"],
        "network.received": metrics["network"]["received"],
        "network.transmitted": metrics["network"]["transmitted"],
    }


async def metrics_of(h: SimHandle, server: str) -> dict[str, Any]:
    """Return a server's metrics object."""
    body = await ok(h, "GET", f"{ECS}/servers/{server}/metrics")
    assert body["metrics"]["resource"] == server
    metrics: dict[str, Any] = body["metrics"]
    return metrics


async def test_metrics_are_twelve_string_samples_with_zoneless_times(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    series = series_of(await metrics_of(h, "ec200001"))
    expected_times = [
        (START - timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(11, -1, -1)
    ]
    for name, samples in series.items():
        assert len(samples) == 12, name
        assert [s["t"] for s in samples] == expected_times, name
        for sample in samples:
            assert set(sample) == {"t", "y"}
            assert ZONELESS.match(sample["t"]), sample
            assert isinstance(sample["y"], str)
            assert TWO_DECIMALS.match(sample["y"]), sample


async def test_cpu_percent_is_demand_over_cores_capped_at_100(simulator: SimFactory) -> None:
    h = await simulator("default")
    # ec200005 runs plan ECS4 (the list's eCS4): 4 cores, and a constant demand of 0.5 cores.
    assert (await metrics_of(h, "ec200005"))["core"][-1]["y"] == "12.50"
    await ok(h, "POST", "/_sim/demand", {"server": "ec200005", "cores": 3})
    await h.advance(300)
    core = (await metrics_of(h, "ec200005"))["core"]
    assert core[-1] == {"t": "2026-11-10 12:05:00", "y": "75.00"}
    await ok(h, "POST", "/_sim/demand", {"server": "ec200005", "cores": 9})
    await h.advance(300)
    assert (await metrics_of(h, "ec200005"))["core"][-1]["y"] == "100.00"


async def test_a_demand_change_does_not_rewrite_past_samples(simulator: SimFactory) -> None:
    h = await simulator("default")
    await ok(h, "POST", "/_sim/demand", {"server": "ec200005", "cores": 3})
    await h.advance(300)
    core = [s["y"] for s in (await metrics_of(h, "ec200005"))["core"]]
    assert core == ["12.50"] * 11 + ["75.00"]


async def test_a_powered_off_server_reports_zero_cpu(simulator: SimFactory) -> None:
    h = await simulator("default")
    await ok(h, "POST", f"{ECS}/servers/ec200003/actions", {"type": "power_off"})
    await h.advance(300)
    core = (await metrics_of(h, "ec200003"))["core"]
    assert core[-2]["y"] == "90.00"  # 3.6 of 4 cores, before the power-off
    assert core[-1]["y"] == "0.00"


@pytest.mark.parametrize("server", ["ec200007", "ec200006"], ids=["v1", "gpu"])
async def test_no_metrics_for_v1_and_gpu_servers(simulator: SimFactory, server: str) -> None:
    h = await simulator("default")
    await h.advance(600)
    series = series_of(await metrics_of(h, server))
    assert {name: len(samples) for name, samples in series.items()} == dict.fromkeys(series, 0)


# -- billing ---------------------------------------------------------------------------------------

BILLING = f"{ECS}/billing/servers/2026/11"
# Nov 1 00:00 to the billed cutoff: now (Nov 10 12:00) less the 2 h lag, i.e. 9 days and 10 hours.
BILLED_HOURS_AT_START = 9 * 24 + 10


async def server_rows(h: SimHandle) -> dict[str, dict[str, Any]]:
    """Return this month's server billing rows by server name."""
    rows = await ok(h, "GET", BILLING)
    assert isinstance(rows, list)
    return {row["name"]: row for row in rows}


async def test_server_billing_as_json(simulator: SimFactory) -> None:
    h = await simulator("default")
    rows = await server_rows(h)
    assert set(rows) == {f"ec20000{i}" for i in range(1, 8)}
    web = rows["ec200001"]
    assert (web["plan"], web["year"], web["month"], web["status"]) == ("ECS2", 2026, 11, "Booted")
    assert web["billed_hours"] == BILLED_HOURS_AT_START
    assert web["summary"]["online_hour"] == BILLED_HOURS_AT_START
    assert web["cost"] == round(BILLED_HOURS_AT_START * 0.032, 2)  # eCS2's hourly price
    # ec200007 was off all month: billed hours are offline hours, at a 100 % discount.
    legacy = rows["ec200007"]["summary"]
    assert (legacy["online_hour"], legacy["offline_hour"]) == (0, BILLED_HOURS_AT_START)
    assert rows["ec200007"]["cost"] == 0.0


async def test_server_billing_as_csv(simulator: SimFactory) -> None:
    h = await simulator("default")
    async with h.session.get(
        f"{h.url}{BILLING}?type=csv", headers={"X-APITOKEN": TOKEN}
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/csv"
        text = await response.text()
    lines = text.splitlines()
    assert lines[0].startswith("plan,name,group,notes,status,year,month,")
    assert "summary.online_hour" in lines[0].split(",")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 7
    web = next(r for r in rows if r["name"] == "ec200001")
    assert web["billed_hours"] == str(BILLED_HOURS_AT_START)
    assert web["group"] == "eg100001"


async def test_billing_counts_only_hours_up_to_two_hours_ago(simulator: SimFactory) -> None:
    h = await simulator("default")
    assert (await server_rows(h))["ec200001"]["billed_hours"] == BILLED_HOURS_AT_START
    await h.advance(HOUR - 1)
    assert (await server_rows(h))["ec200001"]["billed_hours"] == BILLED_HOURS_AT_START
    await h.advance(1)
    row = (await server_rows(h))["ec200001"]
    assert row["billed_hours"] == BILLED_HOURS_AT_START + 1
    assert row["cost"] == round((BILLED_HOURS_AT_START + 1) * 0.032, 2)
    money = (await world(h))["money"]
    assert money["billed_until"] == "2026-11-10T11:00:00.000000+00:00"
    assert money["billed_month_to_date"]["total"] < money["month_to_date"]["total"]


async def test_new_snapshots_and_templates_are_billed_after_the_lag(
    simulator: SimFactory,
) -> None:
    h = await simulator("default")
    snap_id, _ = await new_snapshot(h, "ec200001")
    template = await ok(h, "POST", f"{ECS}/templates", {"server": "ec200002", "description": "x"})
    await h.advance(2 * HOUR)
    snapshots = await ok(h, "GET", f"{ECS}/billing/snapshots/2026/11")
    assert (snapshots["rows_count"], snapshots["snapshots"]) == (0, [])
    assert await ok(h, "GET", f"{ECS}/billing/templates/2026/11") == []

    await h.advance(2 * HOUR)
    snapshots = await ok(h, "GET", f"{ECS}/billing/snapshots/2026/11")
    assert [(r["snapshot"], r["hours"]) for r in snapshots["snapshots"]] == [(snap_id, 2)]
    assert snapshots["rows_count"] == 1
    templates = await ok(h, "GET", f"{ECS}/billing/templates/2026/11")
    assert [(r["name"], r["hours"]) for r in templates] == [(template["template"]["name"], 2)]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (f"{BILLING}?type=xml", "query parameter 'type' must be json or csv, not 'xml'"),
        (f"{ECS}/billing/servers/2026/13", "month must be 1-12, not 13"),
        (f"{ECS}/billing/servers/2026/nov", "month must be an integer, not 'nov'"),
    ],
)
async def test_bad_billing_requests_answer_400(
    simulator: SimFactory, path: str, message: str
) -> None:
    h = await simulator("default")
    status, body = await h.call("GET", path)
    assert (status, body["message"]) == (400, message)


# -- logs ------------------------------------------------------------------------------------------


async def test_logs_come_newest_first_with_paging_and_total(simulator: SimFactory) -> None:
    h = await simulator("default")
    body = await ok(h, "GET", f"{ECS}/logs")
    assert body["total_logs"] == 5
    assert [e["id"] for e in body["logs"]] == [5, 4, 3, 2, 1]
    page = await ok(h, "GET", f"{ECS}/logs?start=1&length=2")
    assert [e["id"] for e in page["logs"]] == [4, 3]
    assert page["total_logs"] == 5
    by_target = await ok(h, "GET", f"{ECS}/logs?resource=ec200002")
    assert [(e["id"], e["action"]) for e in by_target["logs"]] == [(4, "Power Off")]
    assert by_target["total_logs"] == 1


async def test_one_log_line(simulator: SimFactory) -> None:
    h = await simulator("default")
    entry = await ok(h, "GET", f"{ECS}/logs/3")
    assert (entry["id"], entry["action"], entry["status"], entry["severity"]) == (
        3,
        "Login",
        "failure",
        "warning",
    )
    assert entry["ip_address"] == "203.0.113.77"
    assert entry["created_at"] == "2026-11-09T12:00:00.000Z"
    status, body = await h.call("GET", f"{ECS}/logs/6")
    assert (status, body["message"]) == (404, "log 6 not found")


# -- what a team's other tools call: keys, scripts, groups -----------------------------------------


async def test_keys_scripts_and_groups_behave_as_an_account_s_own(simulator: SimFactory) -> None:
    h = await simulator("default")
    key = {"key": "ssh-ed25519 AAAA demo@host", "label": "deploy"}
    assert await ok(h, "POST", f"{ECS}/sshkeys", key) == {"status": "ok"}
    again, body = await h.call("POST", f"{ECS}/sshkeys", json=key)
    (listed,) = (await ok(h, "GET", f"{ECS}/sshkeys"))["pubkeys"]
    await ok(h, "DELETE", f"{ECS}/sshkeys/{listed['id']}")
    gone, _ = await h.call("GET", f"{ECS}/sshkeys/{listed['id']}")

    script = (await ok(h, "POST", f"{ECS}/scripts", {"title": "t", "content": "echo 1"}))["script"]
    patched = await ok(
        h, "PATCH", f"{ECS}/scripts/{script['id']}", {"title": "t2", "content": None}
    )

    groups = {g["name"]: g for g in (await ok(h, "GET", f"{ECS}/groups"))["groups"]}
    await ok(h, "DELETE", f"{ECS}/groups/{groups['eg100001']['id']}")
    web = (await ok(h, "GET", f"{ECS}/servers/ec200001"))["server"]

    assert (again, body["error_code"]) == (409, 409)
    assert (listed["label"], gone) == ("deploy", 404)
    assert (patched["script"]["title"], patched["script"]["content"]) == ("t2", "echo 1")
    assert set(groups) == {"eg100001", "eg100002"}  # the groups the servers are in
    assert web["group"] is None  # its group is gone
