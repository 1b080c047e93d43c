"""The clients read what the live APIs really send: every recorded response, through public methods.

Each file in tests/fixtures/recorded/ holds one response written from a public recording of the
live API or a real client's tests (its `source` says which): the method, path, status and body.
An in-process server answers that one request with that body; the client's public method reads it,
and the test checks the values the daemon uses (prices, plan names, cores, states) and that no
item of the answer was left out as unreadable.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from daemon.client.base import ClientSettings
from daemon.client.errors import AuthError, ConflictError, NotFoundError
from daemon.client.plans import PlanCatalogue, family_of
from daemon.client.records import ItemProblem, PageItems
from daemon.clock import FakeClock
from daemon.providers.glesys.client import GlesysClient
from daemon.providers.seeweb.client import SeewebClient
from daemon.secret import Secret

RECORDED = Path(__file__).parent.parent / "fixtures" / "recorded"
NO_LIMIT = ClientSettings(requests_per_second=None)
# Recorded shapes no client method reads (Cloudpilot does not update templates or manage keys,
# scripts and groups; a team's other tools do); the simulator's shape tests use them
# (test_sim_golden_ecs.py).
SHAPE_ONLY = {
    f"ecs/{name}"
    for name in (
        "template_update",
        "sshkeys",
        "sshkey",
        "sshkey_create",
        "sshkey_delete",
        "scripts",
        "script",
        "script_create",
        "script_update",
        "groups",
        "group_create",
        "group_delete",
    )
}


def fixture(name: str) -> dict[str, Any]:
    """Return a recorded response: source, method, path, status and body."""
    data: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))
    return data


@dataclass
class Recorded:
    """One recorded answer served to a client, and what the client reported while reading it."""

    name: str
    problems: list[tuple[str, str, ItemProblem]] = field(default_factory=list)
    hits: list[tuple[str, str]] = field(default_factory=list)

    def seeweb(self, session: aiohttp.ClientSession, url: str) -> SeewebClient:
        return SeewebClient(
            session,
            url,
            clock=FakeClock(),
            token=Secret("recorded-token"),
            settings=NO_LIMIT,
            rng=random.Random(1),
            on_problem=self._problem,
        )

    def glesys(self, session: aiohttp.ClientSession, url: str) -> GlesysClient:
        return GlesysClient(
            session,
            url,
            clock=FakeClock(),
            project="cl12345",
            key=Secret("recorded-key"),
            settings=NO_LIMIT,
            rng=random.Random(1),
            on_problem=self._problem,
        )

    def _problem(self, provider: str, endpoint: str, problem: ItemProblem) -> None:
        self.problems.append((provider, endpoint, problem))


@asynccontextmanager
async def serving(recorded: Recorded) -> AsyncIterator[str]:
    """Serve the recorded answer at its method and path; yield the base URL."""
    doc = fixture(recorded.name)

    async def answer(request: web.Request) -> web.Response:
        recorded.hits.append((request.method, request.path))
        return web.json_response(doc["body"], status=doc["status"])

    app = web.Application()
    app.router.add_route(doc["method"], doc["path"], answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


Check = Callable[[SeewebClient], Awaitable[None]]
GlesysCheck = Callable[[GlesysClient], Awaitable[None]]


# -- Seeweb ECS ------------------------------------------------------------------------------------


async def servers(client: SeewebClient) -> None:
    (server,) = await client.list_servers()
    assert (server.name, server.plan, server.cores, server.location) == (
        "ec200410",
        "ECS1",
        1,
        "it-fr2",
    )
    assert (server.api_version, server.api_version_value, server.virttype) == ("v5", 5, "KVM")
    assert server.last_restored_snapshot == 107  # a whole snapshot in the answer
    assert (server.status, server.notes, server.group) == ("Booted", "test", None)


async def server(client: SeewebClient) -> None:
    found = await client.get_server("ec200410")
    assert (found.name, found.plan, found.cores, found.last_restored_snapshot) == (
        "ec200410",
        "ECS1",
        1,
        107,
    )


async def server_status(client: SeewebClient) -> None:
    status = await client.server_status("ec206918")
    assert (status.name, status.current_status) == ("ec206918", "RUNNING")


async def server_create(client: SeewebClient) -> None:
    created, action_id = await client.create_server("eCS3", "debian-12", "it-fr2", "test-api")
    assert (created.name, created.plan, created.cores, action_id) == ("ec206922", "eCS3", 4, 59168)
    assert (created.status, created.virttype) == ("Booting", None)


async def server_delete(client: SeewebClient) -> None:
    action = await client.delete_server("ec206890")
    assert (action.id, action.type, action.status, action.is_finished) == (
        59229,
        "delete_server",
        "in-progress",
        False,
    )


async def server_update(client: SeewebClient) -> None:
    await client.update_server("ec200410", notes="renamed")


async def plans(client: SeewebClient) -> None:
    listed = await client.list_plans()
    assert len(listed) == 34
    catalogue = PlanCatalogue(listed)
    ecs1 = catalogue.get("ECS1")  # the server's spelling finds the list's eCS1
    assert ecs1 is not None
    assert (ecs1.name, ecs1.cpu, ecs1.hourly_price, ecs1.monthly_price) == ("eCS1", 1, 0.019, 14.0)
    cores = {plan.name: plan.cpu for plan in listed if plan.name.startswith("eCS")}
    assert [cores[f"eCS{n}"] for n in range(1, 7)] == [1, 2, 4, 4, 8, 12]
    # Every plan is priced: the live spelling `montly_price` is read.
    assert all(plan.monthly_price is not None and plan.hourly_price for plan in listed)
    windows = {plan.name for plan in listed if family_of(plan).windows}
    assert windows == {"eCS2W", "eCS3W", "eCS4W", "eCS5W", "eCS6W"}
    high = {plan.name for plan in listed if family_of(plan).memory == "high"}
    assert high == {"eCS1HM", "eCS2HM", "eCS3HM", "eCS4HM", "eCS5HM"}
    assert max(cores[name] for name in high) == 32
    gpus = [plan for plan in listed if family_of(plan).accelerator]
    assert len(gpus) == 18 and all((plan.gpu or 0) > 0 for plan in gpus)
    assert [r.location for r in ecs1.regions] == ["it-mi2", "it-fr2", "ch-lug1", "bg-sof1"]


async def plans_availables(client: SeewebClient) -> None:
    (plan,) = await client.list_available_plans()
    assert (plan.name, plan.cpu, plan.monthly_price) == ("eCS1", 1, 14.0)  # an integer there
    assert len(plan.os_availables) == 7
    assert all(image.required_disk == 20 for image in plan.os_availables)
    regions = {r.region: r for r in plan.region_availables}
    assert set(regions) == {"ch-lug1", "it-fr2", "it-mi2", "bg-sof1"}
    hosted = {s.name: s.notes for h in regions["it-fr2"].hosts for s in h.servers}
    assert len(hosted) == 11 and hosted["ec206918"] == "customer-server-1"


async def regions(client: SeewebClient) -> None:
    listed = await client.list_regions()
    assert [(r.id, r.location, r.description) for r in listed] == [
        (7, "bg-sof1", "Sofia"),
        (6, "ch-lug1", "Lugano"),
        (3, "it-fr2", "Frosinone"),
        (2, "it-mi2", "Milano"),
    ]


async def regions_availables(client: SeewebClient) -> None:
    assert await client.available_regions("ECS1") == ["ch-lug1", "it-fr2", "it-mi2", "bg-sof1"]


async def images(client: SeewebClient) -> None:
    listed = await client.list_images()
    assert len(listed) == 14
    newest = next(image for image in listed if image.name == "ubuntu-2404")
    assert (newest.id, newest.api_version, newest.api_version_value) == (576, "v5", 5)
    assert {image.required_disk for image in listed} == {20}


async def templates(client: SeewebClient) -> None:
    listed = await client.list_templates()
    assert [(t.name, t.required_disk, t.api_version_value) for t in listed] == [
        ("ei200118", 20, 4),
        ("ei200164", 80, 5),
        ("ei200165", 20, 4),
    ]


async def template(client: SeewebClient) -> None:
    found = await client.get_template("ei200164")
    assert (found.id, found.status, found.required_disk) == (593, "CD", 80)


async def template_create(client: SeewebClient) -> None:
    created, action_id = await client.create_template(description="d", server="ec200410")
    assert (created.name, created.status, action_id) == ("ei200169", "CG", 59105)


async def template_delete(client: SeewebClient) -> None:
    action = await client.delete_template("ei200173")
    assert (action.id, action.type, action.resource_type) == (59163, "delete_template", "ECI")


async def actions(client: SeewebClient) -> None:
    page, total = await client.list_actions()
    assert isinstance(page, PageItems)
    assert (len(page), page.listed, total) == (7, 7, 2313)
    assert [a.id for a in page][:2] == [59217, 59216]
    assert all(a.status == "completed" and not a.is_failure for a in page)
    snapshot = next(a for a in page if a.resource_type == "SNP")
    assert (snapshot.type, snapshot.resource) == ("create_snapshot", "2")  # the snapshot's id


async def action(client: SeewebClient) -> None:
    found = await client.get_action(59217)
    assert (found.id, found.type, found.resource, found.progress) == (
        59217,
        "delete_server",
        "ec206929",
        100,
    )
    assert found.completed_at is not None


async def server_action(client: SeewebClient) -> None:
    started = await client.server_action("ec206918", "power_on")  # the bare action, no envelope
    assert (started.id, started.type, started.status) == (59230, "power_on", "completed")


async def plans_go_client(client: SeewebClient) -> None:
    (plan,) = await client.list_plans()
    assert (plan.name, plan.cpu, plan.monthly_price, plan.hourly_price, plan.gpu) == (
        "ECS1",
        1,
        12.0,
        0.017,
        None,
    )


async def servers_go_client(client: SeewebClient) -> None:
    (found,) = await client.list_servers()
    assert (found.name, found.plan, found.cores, found.virttype) == ("ec200016", "ECS1", 1, "KVM")


async def server_create_go_client(client: SeewebClient) -> None:
    created, action_id = await client.create_server("ECS1", "centos-7", "it-fr2", "my first")
    assert (created.name, created.cores, action_id) == ("ec200016", 1, 38)


async def actions_go_client(client: SeewebClient) -> None:
    page, total = await client.list_actions()
    assert ([a.id for a in page], total) == ([39, 38], 2)  # no total_actions: what was listed


async def templates_go_client(client: SeewebClient) -> None:
    listed = await client.list_templates()
    assert [(t.name, t.status) for t in listed] == [
        ("ei100006", "Created"),
        ("ei100007", "Created"),
    ]


async def error_not_found(client: SeewebClient) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.get_server("ec999999")
    assert "HTTP 404: Server not found" in str(info.value)


async def snapshots_nested_parent(client: SeewebClient) -> None:
    (snap,) = await client.list_snapshots("ec200410")
    assert (snap.id, snap.snapshot_parent, snap.snapshot_parent_name) == (
        108,
        107,
        "ec200410-SNP-2",
    )
    assert snap.notes == "cloudpilot:5f0c2a9e1b7d4c3e8a6f0b12"


ECS_CASES: dict[str, Check] = {
    "servers": servers,
    "server": server,
    "server_status": server_status,
    "server_create": server_create,
    "server_delete": server_delete,
    "server_update": server_update,
    "plans": plans,
    "plans_availables": plans_availables,
    "regions": regions,
    "regions_availables": regions_availables,
    "images": images,
    "templates": templates,
    "template": template,
    "template_create": template_create,
    "template_delete": template_delete,
    "actions": actions,
    "action": action,
    "server_action": server_action,
    "plans_go_client": plans_go_client,
    "servers_go_client": servers_go_client,
    "server_create_go_client": server_create_go_client,
    "actions_go_client": actions_go_client,
    "templates_go_client": templates_go_client,
    "error_not_found": error_not_found,
    "snapshots_nested_parent": snapshots_nested_parent,
}


# -- Glesys ----------------------------------------------------------------------------------------


async def server_list(client: GlesysClient) -> None:
    (found,) = await client.list_servers()  # the envelope's status code is text: "200"
    assert (found.serverid, found.hostname, found.platform) == ("vz1541880", "mammamia", "OpenVZ")


async def server_details_state(client: GlesysClient) -> None:
    details = await client.server_details("vz1840356")  # only the old `state`
    assert (details.isrunning, details.islocked, details.state) == (None, None, "running")
    assert (details.is_running, details.is_locked, details.cpucores) == (True, False, 1)
    assert details.runs_with(1) and not details.runs_with(2)


async def server_details_includestate(client: GlesysClient) -> None:
    details = await client.server_details("kvm1234567")  # no `state` at all
    assert (details.state, details.status) == (None, "running")
    assert (details.is_running, details.is_locked, details.cpucores) == (True, False, 4)
    assert details.runs_with(4)


async def server_details_updating(client: GlesysClient) -> None:
    details = await client.server_details("kvm1234567")
    assert (details.is_running, details.is_locked) == (False, True)
    assert not details.runs_with(4)  # the cores show, but the change is still under way


async def server_details_vmware(client: GlesysClient) -> None:
    details = await client.server_details("wps1234567")
    assert (details.platform, details.cpucores, details.state) == ("VMware", 2, None)
    assert (details.is_running, details.is_locked) == (None, None)  # not asked for: unknown
    assert not details.runs_with(2)
    assert details.cost is not None and details.cost.currency == "SEK"


async def glesys_server_status(client: GlesysClient) -> None:
    status = await client.server_status("vz1321233")
    assert (status.state, status.cpu_percent, status.cpu.cores) == ("running", 50.0, 1)


async def server_status_nulls(client: GlesysClient) -> None:
    status = await client.server_status("xm3276891")
    assert (status.cpu_percent, status.cpu.cores) == (0.0, 1)


async def server_status_percent(client: GlesysClient) -> None:
    status = await client.server_status("vz1188183")
    # 75 % idle: 25 % used, derived rather than dropped; the cores come from the details.
    assert (status.cpu_percent, status.cpu.cores, status.cpu.unit) == (25.0, None, "%")


async def allowed_arguments(client: GlesysClient) -> None:
    allowed = await client.allowed_arguments()
    assert allowed.cores_for("KVM") == (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)
    assert allowed.cores_for("kvm") == allowed.cores_for("KVM")
    assert allowed.cores_for("VMware") == (1, 2, 4, 8)


async def allowed_arguments_2012(client: GlesysClient) -> None:
    allowed = await client.allowed_arguments()
    assert allowed.cores_for("Xen") == allowed.cores_for("OpenVZ") == (1, 2, 3, 4, 5, 6, 7, 8)


async def server_edit(client: GlesysClient) -> None:
    edited = await client.set_cores("kvm1234567", 4)
    assert (edited.serverid, edited.cpucores, edited.state) == ("kvm1234567", 4, None)


async def error_auth(client: GlesysClient) -> None:
    with pytest.raises(AuthError) as info:
        await client.list_servers()
    message = str(info.value)
    assert "Authentication failed. Double check the username and key." in message
    assert "allow-list" in message and "server/allowedarguments" in message


async def error_locked(client: GlesysClient) -> None:
    with pytest.raises(ConflictError, match=r"HTTP 500, status 606: Server Locked"):
        await client.set_cores("xm3270596", 2)


async def glesys_error_not_found(client: GlesysClient) -> None:
    with pytest.raises(NotFoundError, match="Could not find server with this id"):
        await client.server_details("xm0000000")


GLESYS_CASES: dict[str, GlesysCheck] = {
    "server_list": server_list,
    "server_details_state": server_details_state,
    "server_details_includestate": server_details_includestate,
    "server_details_updating": server_details_updating,
    "server_details_vmware": server_details_vmware,
    "server_status": glesys_server_status,
    "server_status_nulls": server_status_nulls,
    "server_status_percent": server_status_percent,
    "allowed_arguments": allowed_arguments,
    "allowed_arguments_2012": allowed_arguments_2012,
    "server_edit": server_edit,
    "error_auth": error_auth,
    "error_locked": error_locked,
    "error_not_found": glesys_error_not_found,
}


def test_every_recorded_response_is_read_by_a_case() -> None:
    on_disk = {f"{path.parent.name}/{path.stem}" for path in RECORDED.glob("*/*.json")} - SHAPE_ONLY
    cased = {f"ecs/{name}" for name in ECS_CASES} | {f"glesys/{name}" for name in GLESYS_CASES}
    assert on_disk == cased


def test_every_recorded_response_names_its_source_and_request() -> None:
    for path in RECORDED.glob("*/*.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert set(doc) - {"note"} == {"source", "method", "path", "status", "body"}, path
        assert doc["source"] and doc["path"].startswith("/"), path


@pytest.mark.parametrize("name", sorted(ECS_CASES))
async def test_the_seeweb_client_reads_the_recorded_answer(name: str) -> None:
    recorded = Recorded(f"ecs/{name}")
    async with serving(recorded) as url, aiohttp.ClientSession() as session:
        await ECS_CASES[name](recorded.seeweb(session, url))
    doc = fixture(recorded.name)
    assert recorded.hits == [(doc["method"], doc["path"])]
    assert recorded.problems == [], "an item of the recorded answer was left out as unreadable"


@pytest.mark.parametrize("name", sorted(GLESYS_CASES))
async def test_the_glesys_client_reads_the_recorded_answer(name: str) -> None:
    recorded = Recorded(f"glesys/{name}")
    async with serving(recorded) as url, aiohttp.ClientSession() as session:
        await GLESYS_CASES[name](recorded.glesys(session, url))
    doc = fixture(recorded.name)
    assert recorded.hits == [(doc["method"], doc["path"])]
    assert recorded.problems == [], "an item of the recorded answer was left out as unreadable"
