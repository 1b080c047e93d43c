"""Every ECS response, as the simulator serves it, has the key structure of the real API.

Where a response recorded from the live API exists (tests/fixtures/recorded/ecs/, see its
README), the simulator must answer with its keys: the recordings win over the docs. Elsewhere the
golden files in tests/golden/ecs/, the provider docs' examples transcribed by hand (see
tests/golden/README.md), are the reference. Values differ between those and the simulated world;
the keys, at every level, must not.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import SimFactory, SimHandle, key_mismatches

GOLDEN_DIR = Path(__file__).parent.parent / "golden" / "ecs"
RECORDED_DIR = Path(__file__).parent.parent / "fixtures" / "recorded" / "ecs"

# Lists the simulated world legitimately leaves empty where the example has items.
MAY_BE_EMPTY = frozenset(
    {
        "$[].summary.reserved_discounts",  # the account reserves no plans
        "$.plans[].region_availables[].hosts[].servers",  # hosts without servers of ours
    }
)
# Objects the simulated world legitimately leaves null where the recording has one: no server
# has been rolled back, and a first snapshot has no parent.
MAY_BE_NULL = frozenset(
    {
        "$.server[].last_restored_snapshot",
        "$.server.last_restored_snapshot",
        "$.server[].last_restored_snapshot.snapshot_parent",
        "$.server.last_restored_snapshot.snapshot_parent",
    }
)


def plan_sizes(body: Any) -> list[dict[str, Any]]:
    """Return every `plan_size` object found anywhere in a body."""
    found: list[dict[str, Any]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "plan_size" and isinstance(value, dict):
                found.append(value)
            else:
                found += plan_sizes(value)
    elif isinstance(body, list):
        for item in body:
            found += plan_sizes(item)
    return found


def golden(name: str) -> Any:
    """Return the reference body: the live API's recorded answer if there is one, else the docs'."""
    recorded = RECORDED_DIR / f"{name}.json"
    if recorded.exists():
        return json.loads(recorded.read_text(encoding="utf-8"))["body"]
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8"))


def mismatches(name: str, actual: Any) -> list[str]:
    """Return where the simulator's answer differs in keys from the reference for `name`."""
    return key_mismatches(golden(name), actual, may_be_empty=MAY_BE_EMPTY, may_be_null=MAY_BE_NULL)


# -- the helper itself -----------------------------------------------------------------------------


def test_key_compare_accepts_same_structure_with_other_values() -> None:
    shape = {"a": 1, "b": {"c": None}, "d": [{"e": "x"}]}
    same = {"a": "one", "b": {"c": 3.5}, "d": [{"e": None}, {"e": True}]}
    assert key_mismatches(shape, same) == []


def test_key_compare_reports_missing_extra_and_nested_differences() -> None:
    shape = {"a": 1, "b": {"c": 1}, "d": [{"e": 1}]}
    actual = {"b": {"c": 1, "z": 2}, "d": [{"e": 1}, {"f": 1}], "y": 0}
    assert key_mismatches(shape, actual) == [
        "$: missing keys ['a']",
        "$: unexpected keys ['y']",
        "$.b: unexpected keys ['z']",
        "$.d[1]: missing keys ['e']",
        "$.d[1]: unexpected keys ['f']",
    ]


def test_key_compare_reports_kind_changes_and_unverifiable_empty_lists() -> None:
    assert key_mismatches({"a": {"b": 1}}, {"a": None}) == ["$.a: expected an object, got NoneType"]
    assert key_mismatches({"a": [1]}, {"a": {}}) == ["$.a: expected a list, got dict"]
    assert key_mismatches({"a": 1}, {"a": [1]}) == ["$.a: expected a scalar, got list"]
    assert key_mismatches({"a": [{"b": 1}]}, {"a": []}) == [
        "$.a: empty, so its items cannot be checked"
    ]


# -- fetching each documented response from the simulator -----------------------------------------

Fetch = Callable[[SimHandle], Awaitable[Any]]
SERVER = "ec200001"


async def ok(h: SimHandle, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
    """Call the simulator and return the body of a 200 answer."""
    status, answer = await h.call(method, path, json=body, auth=auth)
    assert status == 200, (method, path, answer)
    return answer


async def completed_snapshot(h: SimHandle) -> int:
    """Create a snapshot of SERVER, let it complete, and return its id."""
    created = await ok(h, "POST", f"/ecs/v2/servers/{SERVER}/snapshots", {"description": "g"})
    await h.advance(90)
    snap_id = created["snapshot"]["id"]
    assert isinstance(snap_id, int)
    return snap_id


async def completed_template(h: SimHandle) -> str:
    """Create a template from SERVER, let it complete, and return its name."""
    created = await ok(h, "POST", "/ecs/v2/templates", {"server": SERVER, "description": "g"})
    await h.advance(120)
    name = created["template"]["name"]
    assert isinstance(name, str)
    return name


async def fetch_action(h: SimHandle) -> Any:
    listed = await ok(h, "GET", "/ecs/v2/actions")
    return await ok(h, "GET", f"/ecs/v2/actions/{listed['actions'][0]['id']}")


async def fetch_snapshots(h: SimHandle) -> Any:
    await completed_snapshot(h)
    return await ok(h, "GET", f"/ecs/v2/servers/{SERVER}/snapshots")


async def fetch_snapshot(h: SimHandle) -> Any:
    snap_id = await completed_snapshot(h)
    return await ok(h, "GET", f"/ecs/v2/servers/{SERVER}/snapshots/{snap_id}")


async def fetch_snapshot_delete(h: SimHandle) -> Any:
    snap_id = await completed_snapshot(h)
    return await ok(h, "DELETE", f"/ecs/v2/servers/{SERVER}/snapshots/{snap_id}")


async def fetch_templates(h: SimHandle) -> Any:
    await completed_template(h)
    return await ok(h, "GET", "/ecs/v2/templates")


async def fetch_template(h: SimHandle) -> Any:
    name = await completed_template(h)
    return await ok(h, "GET", f"/ecs/v2/templates/{name}")


async def fetch_template_delete(h: SimHandle) -> Any:
    name = await completed_template(h)
    return await ok(h, "DELETE", f"/ecs/v2/templates/{name}")


async def fetch_billing_templates(h: SimHandle) -> Any:
    await completed_template(h)
    await h.advance(4 * 3600)  # past the 2 h billing lag
    return await ok(h, "GET", "/ecs/v2/billing/templates/2026/11")


async def fetch_billing_snapshots(h: SimHandle) -> Any:
    await completed_snapshot(h)
    await h.advance(4 * 3600)
    return await ok(h, "GET", "/ecs/v2/billing/snapshots/2026/11")


def get(path: str) -> Fetch:
    """Return a fetch that GETs one path."""

    async def fetch(h: SimHandle) -> Any:
        return await ok(h, "GET", path)

    return fetch


def post(path: str, body: Any, *, auth: bool = True) -> Fetch:
    """Return a fetch that POSTs one body."""

    async def fetch(h: SimHandle) -> Any:
        return await ok(h, "POST", path, body, auth=auth)

    return fetch


NEW_SERVER = {
    "plan": "ECS6",
    "image": "debian-12",
    "location": "it-fr2",
    "notes": "my-first-server",
}

FETCHES: dict[str, Fetch] = {
    "login": post("/ecs/v2/login", {"username": "demo", "password": "demo"}, auth=False),
    "account": get("/ecs/v2/account"),
    "actions": get("/ecs/v2/actions"),
    "action": fetch_action,
    "logs": get("/ecs/v2/logs"),
    "log": get("/ecs/v2/logs/1"),
    "servers": get("/ecs/v2/servers"),
    "server": get(f"/ecs/v2/servers/{SERVER}"),
    "server_create": post("/ecs/v2/servers", NEW_SERVER),
    "server_status": get(f"/ecs/v2/servers/{SERVER}/status"),
    "server_metrics": get(f"/ecs/v2/servers/{SERVER}/metrics"),
    "server_action": post(f"/ecs/v2/servers/{SERVER}/actions", {"type": "power_off"}),
    "snapshot_create": post(
        f"/ecs/v2/servers/{SERVER}/snapshots", {"description": "d", "notes": "n"}
    ),
    "snapshots": fetch_snapshots,
    "snapshot": fetch_snapshot,
    "snapshot_delete": fetch_snapshot_delete,
    "templates": fetch_templates,
    "template": fetch_template,
    "template_create": post("/ecs/v2/templates", {"server": SERVER, "description": "t"}),
    "template_delete": fetch_template_delete,
    "plans": get("/ecs/v2/plans"),
    "plans_availables": get("/ecs/v2/plans/availables"),
    "regions": get("/ecs/v2/regions"),
    "regions_availables": post("/ecs/v2/regions/availables", {"plan": "ECS6"}),
    "billing_servers": get("/ecs/v2/billing/servers/2026/11"),
    "billing_templates": fetch_billing_templates,
    "billing_snapshots": fetch_billing_snapshots,
    "images": get("/ecs/v2/images/basics"),
}


async def fetch_snapshot_patch(h: SimHandle) -> Any:
    snap_id = await completed_snapshot(h)
    path = f"/ecs/v2/servers/{SERVER}/snapshots/{snap_id}"
    return await ok(h, "PATCH", path, {"description": "new", "notes": "new", "protected": True})


async def fetch_template_rename(h: SimHandle) -> Any:
    name = await completed_template(h)
    return await ok(h, "PUT", f"/ecs/v2/templates/{name}", {"description": "my new name"})


async def fetch_template_patch(h: SimHandle) -> Any:
    name = await completed_template(h)
    body = {"description": "patched", "notes": "patched notes"}
    return await ok(h, "PATCH", f"/ecs/v2/templates/{name}", body)


async def new_key(h: SimHandle) -> int:
    """Add an SSH key and return its id (the answer to the POST does not carry it)."""
    await ok(h, "POST", "/ecs/v2/sshkeys", {"key": "ssh-ed25519 AAAA demo@host", "label": "k"})
    listed = await ok(h, "GET", "/ecs/v2/sshkeys")
    ident = next(key["id"] for key in listed["pubkeys"] if key["label"] == "k")
    assert isinstance(ident, int)
    return ident


async def fetch_sshkeys(h: SimHandle) -> Any:
    await new_key(h)
    return await ok(h, "GET", "/ecs/v2/sshkeys")


async def fetch_sshkey(h: SimHandle) -> Any:
    return await ok(h, "GET", f"/ecs/v2/sshkeys/{await new_key(h)}")


async def fetch_sshkey_delete(h: SimHandle) -> Any:
    return await ok(h, "DELETE", f"/ecs/v2/sshkeys/{await new_key(h)}")


SCRIPT = {"title": "hello", "content": "echo hello > /root/.bashrc", "windows": False}


async def new_script(h: SimHandle) -> int:
    created = await ok(h, "POST", "/ecs/v2/scripts", SCRIPT)
    ident = created["script"]["id"]
    assert isinstance(ident, int)
    return ident


async def fetch_scripts(h: SimHandle) -> Any:
    await new_script(h)
    return await ok(h, "GET", "/ecs/v2/scripts")


async def fetch_script(h: SimHandle) -> Any:
    return await ok(h, "GET", f"/ecs/v2/scripts/{await new_script(h)}")


async def fetch_script_patch(h: SimHandle) -> Any:
    body = {"title": "renamed", "content": None, "windows": None}  # the live client sends nulls
    return await ok(h, "PATCH", f"/ecs/v2/scripts/{await new_script(h)}", body)


async def fetch_group_delete(h: SimHandle) -> Any:
    created = await ok(h, "POST", "/ecs/v2/groups", {"notes": "n", "password": "p"})
    return await ok(h, "DELETE", f"/ecs/v2/groups/{created['group']['id']}")


async def fetch_server_update(h: SimHandle) -> Any:
    return await ok(h, "PUT", f"/ecs/v2/servers/{SERVER}", {"notes": "renamed"})


async def fetch_rollback(h: SimHandle) -> Any:
    snap_id = await completed_snapshot(h)
    body = {"type": "rollback", "snapshot": snap_id}
    return await ok(h, "POST", f"/ecs/v2/servers/{SERVER}/actions", body)


async def fetch_template_from_snapshot(h: SimHandle) -> Any:
    snap_id = await completed_snapshot(h)
    return await ok(h, "POST", "/ecs/v2/templates", {"snapshot": snap_id, "description": "s"})


async def fetch_server_delete(h: SimHandle) -> Any:
    return await ok(h, "DELETE", f"/ecs/v2/servers/{SERVER}")


# Documented responses whose example has the same shape as one of the golden files.
SAME_SHAPE: dict[str, tuple[Fetch, str]] = {
    "PATCH snapshot": (fetch_snapshot_patch, "snapshot"),
    "PUT template": (fetch_template_rename, "template"),
    "PATCH template (live)": (fetch_template_patch, "template_update"),
    "PUT server": (fetch_server_update, "server_update"),
    "GET sshkeys": (fetch_sshkeys, "sshkeys"),
    "GET sshkey": (fetch_sshkey, "sshkey"),
    "POST sshkey": (
        post("/ecs/v2/sshkeys", {"key": "ssh-ed25519 AAAA demo@host", "label": "new"}),
        "sshkey_create",
    ),
    "DELETE sshkey": (fetch_sshkey_delete, "sshkey_delete"),
    "GET scripts": (fetch_scripts, "scripts"),
    "GET script": (fetch_script, "script"),
    "POST script": (post("/ecs/v2/scripts", SCRIPT), "script_create"),
    "PATCH script": (fetch_script_patch, "script_update"),
    "GET groups": (get("/ecs/v2/groups"), "groups"),
    "POST group": (post("/ecs/v2/groups", {"notes": "n", "password": "p"}), "group_create"),
    "DELETE group": (fetch_group_delete, "group_delete"),
    "GET cloud images": (get("/ecs/v2/images/cloud-images"), "images"),
    "POST rollback": (fetch_rollback, "server_action"),
    "POST power_on": (
        post(f"/ecs/v2/servers/{SERVER}/actions", {"type": "power_on"}),
        "server_action",
    ),
    "POST template from snapshot": (fetch_template_from_snapshot, "template_create"),
    "DELETE server": (fetch_server_delete, "server_delete"),
    "GET actions by resource": (get(f"/ecs/v2/actions?resource={SERVER}"), "actions"),
    "GET billing servers type=json": (
        get("/ecs/v2/billing/servers/2026/11?type=json"),
        "billing_servers",
    ),
}


# Recorded answers that are not the live API's shape today: older clients' fixtures, an error
# body, and a nesting the simulator shows on snapshots only (checked in test_sim_ecs.py).
NOT_A_SHAPE = {"error_not_found", "snapshots_nested_parent"}


def test_every_golden_file_is_checked_and_every_check_has_a_golden_file() -> None:
    on_disk = {p.stem for p in GOLDEN_DIR.glob("*.json")}
    recorded = {
        p.stem for p in RECORDED_DIR.glob("*.json") if not p.stem.endswith("_go_client")
    } - NOT_A_SHAPE
    assert on_disk == set(FETCHES)
    checked = set(FETCHES) | {shape for _, shape in SAME_SHAPE.values()}
    assert {shape for _, shape in SAME_SHAPE.values()} <= on_disk | recorded
    assert recorded <= checked, "a recorded answer the simulator is not compared with"


@pytest.mark.parametrize("name", sorted(FETCHES))
async def test_simulator_answers_with_the_documented_keys(simulator: SimFactory, name: str) -> None:
    h = await simulator("default")
    actual = await FETCHES[name](h)
    assert mismatches(name, actual) == []


@pytest.mark.parametrize("case", sorted(SAME_SHAPE))
async def test_related_responses_share_the_documented_keys(
    simulator: SimFactory, case: str
) -> None:
    h = await simulator("default")
    fetch, shape = SAME_SHAPE[case]
    actual = await fetch(h)
    assert mismatches(shape, actual) == []


@pytest.mark.parametrize("name", ["servers", "server", "server_create"])
async def test_plan_size_numbers_are_strings(simulator: SimFactory, name: str) -> None:
    h = await simulator("default")
    sizes = plan_sizes(await FETCHES[name](h))
    assert sizes, "no plan_size in the answer"
    for size in sizes:
        assert set(size) == {"core", "ram", "disk", "gpu", "gpu_label", "host_type"}
        # As recorded: numbers as text; `gpu_label` null on a plan without a GPU.
        assert all(isinstance(size[k], str) for k in ("core", "ram", "disk", "gpu")), size
        assert size["gpu_label"] is None or isinstance(size["gpu_label"], str), size
