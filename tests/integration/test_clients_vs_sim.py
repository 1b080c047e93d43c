"""Every public method of the provider clients, against the in-process simulator.

The simulator's time is frozen and moves only with `h.advance`; the clients run on a FakeClock,
so any retry or rate-limit wait would be recorded in `clock.sleeps` instead of slept. Each test
checks what a call returned against the simulated world, not just that it did not raise.

The simulator runs with canary credentials, so that every error these tests raise can be checked
for a leaked secret (see `raises`). The helpers here are shared by test_clients_faults.py and
test_pagination_race.py.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Literal, TypeVar

import pytest
from conftest import START, SimFactory, SimHandle

from daemon.client.base import ClientSettings, RequestLog
from daemon.client.errors import NotFoundError
from daemon.clock import FakeClock
from daemon.providers.glesys.client import GlesysClient
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.providers.seeweb.client import SeewebClient
from daemon.secret import Secret
from daemon.simulator.ecs import IMAGES, server_bills, snapshot_bills, template_bills, to_csv
from daemon.simulator.entities import REGIONS
from daemon.simulator.glesys import PLATFORMS
from daemon.simulator.http import Credentials
from daemon.simulator.k8sgpu import CSV_COLUMNS, billing_lines
from daemon.simulator.k8sgpu import billing_csv as gpu_billing_csv
from daemon.simulator.world import month_bounds

# Canaries: if one of these shows up in a repr, an error or a log line, a credential leaked.
API_KEY = "CANARY-KEY-5d81c0f3"  # the ECS API token and the Glesys key
PASSWORD = "CANARY-PASS-e29a4b17"  # the ECS and k8sgpu login password
SECRETS = (API_KEY, PASSWORD)
USERNAME = "demo"
GLESYS_PROJECT = "cl12345"

# No client-side rate limit: a wait would show up in clock.sleeps and muddle what a test asserts.
NO_LIMIT = ClientSettings(requests_per_second=None)

ECS_LOGIN = "/ecs/v2/login"
K8SGPU_LOGIN = "/k8sgpu/v1/user/login/"
MONTH = (START.year, START.month)

AuthMode = Literal["token", "login"]
E = TypeVar("E", bound=BaseException)


# -- helpers shared with the other client test files -----------------------------------------------


async def start(simulator: SimFactory, source: str = "default") -> SimHandle:
    """Start a simulator that accepts only the canary credentials."""
    return await simulator(source, credentials=Credentials(api_token=API_KEY, password=PASSWORD))


def fake_clock() -> FakeClock:
    """Return a client clock that starts where the simulator's frozen time does."""
    return FakeClock(START)


def seeweb(
    h: SimHandle,
    clock: FakeClock,
    auth: AuthMode = "token",
    *,
    settings: ClientSettings = NO_LIMIT,
    logger: RequestLog | None = None,
) -> SeewebClient:
    """Return an ECS client that authenticates by API token or by login."""
    if auth == "token":
        return SeewebClient(
            h.session,
            h.url,
            clock=clock,
            token=Secret(API_KEY),
            settings=settings,
            rng=random.Random(1),
            logger=logger,
        )
    return SeewebClient(
        h.session,
        h.url,
        clock=clock,
        username=USERNAME,
        password=Secret(PASSWORD),
        settings=settings,
        rng=random.Random(1),
        logger=logger,
    )


def k8sgpu(
    h: SimHandle,
    clock: FakeClock,
    *,
    settings: ClientSettings = NO_LIMIT,
    logger: RequestLog | None = None,
) -> K8sGpuClient:
    """Return a Serverless GPU client."""
    return K8sGpuClient(
        h.session,
        h.url,
        clock=clock,
        username=USERNAME,
        password=Secret(PASSWORD),
        settings=settings,
        rng=random.Random(1),
        logger=logger,
    )


def glesys(
    h: SimHandle,
    clock: FakeClock,
    *,
    key: str = API_KEY,
    settings: ClientSettings = NO_LIMIT,
    logger: RequestLog | None = None,
) -> GlesysClient:
    """Return a Glesys client."""
    return GlesysClient(
        h.session,
        h.url + "/glesys",
        clock=clock,
        project=GLESYS_PROJECT,
        key=Secret(key),
        settings=settings,
        rng=random.Random(1),
        logger=logger,
    )


async def served(h: SimHandle, method: str, path: str) -> list[int]:
    """Return the statuses the simulator answered to `method path`, oldest first."""
    return [r["status"] for r in await h.requests() if (r["method"], r["path"]) == (method, path)]


async def sim_ok(h: SimHandle, method: str, path: str, body: Any = None) -> Any:
    """Call the simulator's control surface and return the body of its 200 answer."""
    status, answer = await h.call(method, path, json=body)
    assert status == 200, (method, path, answer)
    return answer


def assert_no_secret(text: str) -> None:
    """Fail if a canary credential occurs in `text`."""
    for secret in SECRETS:
        assert secret not in text


@contextmanager
def raises(kind: type[E], match: str | None = None) -> Iterator[pytest.ExceptionInfo[E]]:
    """Expect `kind` like pytest.raises, and check that the error shows no credential."""
    with pytest.raises(kind, match=match) as info:
        yield info
    assert_no_secret(f"{info.value!s} {info.value!r}")


@pytest.fixture(params=["token", "login"])
def auth(request: pytest.FixtureRequest) -> AuthMode:
    """Run an ECS test once with an API token and once with a username/password login."""
    mode: AuthMode = request.param
    return mode


async def assert_logins(h: SimHandle, auth: AuthMode) -> None:
    """Check that a login client logged in exactly once and a token client never did."""
    assert await served(h, "POST", ECS_LOGIN) == ([200] if auth == "login" else [])


# -- coverage --------------------------------------------------------------------------------------

SEEWEB_METHODS = {
    "account",
    "list_actions",
    "get_action",
    "list_logs",
    "get_log",
    "list_servers",
    "get_server",
    "create_server",
    "delete_server",
    "update_server",
    "server_status",
    "server_metrics",
    "server_cpu",
    "server_action",
    "create_snapshot",
    "list_snapshots",
    "get_snapshot",
    "update_snapshot",
    "delete_snapshot",
    "list_templates",
    "get_template",
    "create_template",
    "delete_template",
    "list_plans",
    "list_available_plans",
    "list_images",
    "list_regions",
    "available_regions",
    "billing_servers",
    "billing_templates",
    "billing_snapshots",
    "billing_csv",
}
K8SGPU_METHODS = {
    "list_clusters",
    "get_cluster",
    "list_events",
    "list_pods",
    "get_pod",
    "delete_pod",
    "billing",
    "billing_csv",
}
GLESYS_METHODS = {
    "list_servers",
    "server_details",
    "server_status",
    "allowed_arguments",
    "set_cores",
}


def public_coroutines(cls: type) -> set[str]:
    """Return the names of the public async methods a client class defines itself."""
    return {
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }


@pytest.mark.parametrize(
    ("cls", "covered"),
    [
        (SeewebClient, SEEWEB_METHODS),
        (K8sGpuClient, K8SGPU_METHODS),
        (GlesysClient, GLESYS_METHODS),
    ],
)
def test_every_public_client_method_is_exercised_in_this_file(cls: type, covered: set[str]) -> None:
    # A new client method fails this until a test below calls it against the simulator.
    assert public_coroutines(cls) == covered


# -- Seeweb ECS ------------------------------------------------------------------------------------


async def test_account_plans_and_regions(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world

    assert (await client.account()).username == USERNAME

    plans = await client.list_plans()
    assert [p.name for p in plans] == list(world.plans)
    for plan in plans:
        truth = world.plans[plan.name]
        assert (plan.cpu, plan.hourly_price) == (truth.cpu, truth.hourly_price)
        assert [r.location for r in plan.regions] == list(truth.regions)

    available = await client.list_available_plans()
    assert [p.name for p in available] == [p.name for p in world.plans.values() if p.available]
    assert all(p.os_availables for p in available)
    assert [r.region for r in available[0].region_availables] == list(world.plan("ECS1").regions)
    hosted = {s.name for r in available[0].region_availables for h in r.hosts for s in h.servers}
    assert hosted == {
        s.name for s in world.live_servers() if s.location in world.plan("ECS1").regions
    }

    regions = await client.list_regions()
    assert [(r.location, r.id) for r in regions] == [(code, ident) for code, _, ident in REGIONS]
    assert await client.available_regions("ECS2") == list(world.plan("ECS2").regions)
    assert [i.name for i in await client.list_images()] == [i[1] for i in IMAGES]
    await assert_logins(h, auth)


async def test_actions_and_logs_read_newest_first(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world
    newest_first = [a.id for a in reversed(world.actions)]

    first, total = await client.list_actions(start=0, length=5)
    second, _ = await client.list_actions(start=5, length=5)
    assert total == len(world.actions)
    assert [a.id for a in first + second] == newest_first[:10]

    mine, mine_total = await client.list_actions(resource="ec200005")
    assert [a.id for a in mine] == [a.id for a in reversed(world.actions_by_resource["ec200005"])]
    assert mine_total == 3
    failed = next(a for a in world.actions if a.status == "failed")
    action = await client.get_action(failed.id)
    assert (action.id, action.type, action.resource) == (failed.id, failed.type, failed.resource)
    assert action.is_failure
    assert action.created_at == failed.created

    logs, logs_total = await client.list_logs()
    assert logs_total == len(world.logs)
    assert [e.id for e in logs] == [e.id for e in reversed(world.logs)]
    failed_login = next(e for e in world.logs if e.status == "failure")
    entry = await client.get_log(failed_login.id)
    assert (entry.action, entry.status, entry.ip_address) == ("Login", "failure", "203.0.113.77")
    assert entry.created_at == failed_login.created
    await assert_logins(h, auth)


async def test_servers_and_their_status(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world

    servers = await client.list_servers()
    assert [s.name for s in servers] == [s.name for s in world.live_servers()]
    for server in servers:
        truth = world.servers[server.name]
        assert server.cores == world.plan(truth.plan).cpu
        assert (server.plan, server.notes, server.group) == (truth.plan, truth.notes, truth.group)

    expendable = await client.get_server("ec200004")
    assert expendable.notes is not None and "expendable" in expendable.notes
    assert (expendable.group, expendable.cores) == ("eg100002", 1)

    assert (await client.server_status("ec200001")).current_status == "RUNNING"
    assert (await client.server_status("ec200007")).current_status == "SHUTOFF"
    with raises(NotFoundError, match="server 'ec299999' not found"):
        await client.get_server("ec299999")
    await assert_logins(h, auth)


async def test_metrics_are_floats_at_utc_times(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world
    server = world.servers["ec200001"]

    metrics = await client.server_metrics("ec200001")
    assert metrics.resource == "ec200001"
    assert [s.t for s in metrics.cpu] == world.sample_times(12)
    for sample in metrics.cpu:
        assert isinstance(sample.value, float)
        assert sample.t.utcoffset() == timedelta(0)
        assert sample.value == round(world.cpu_percent(server, sample.t), 2)
    series = (
        metrics.disk_reads,
        metrics.disk_writes,
        metrics.net_received,
        metrics.net_transmitted,
    )
    assert [len(s) for s in series] == [12, 12, 12, 12]

    # The CPU alone, as the metrics source reads it: the same samples, nothing else parsed.
    assert await client.server_cpu("ec200001") == metrics.cpu

    # A v1 server and a GPU plan have no metrics; the client reads that as empty series.
    for name in ("ec200006", "ec200007"):
        empty = await client.server_metrics(name)
        assert (empty.cpu, empty.disk_reads, empty.net_received) == ((), (), ())
        assert await client.server_cpu(name) == ()
    await assert_logins(h, auth)


async def test_update_server_label_and_group(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    truth = h.sim.world.servers["ec200005"]

    await client.update_server("ec200005", notes="ci-runner retired", group="eg100009")
    assert (truth.notes, truth.group) == ("ci-runner retired", "eg100009")
    await client.update_server("ec200005", group="nogroup")
    assert truth.group is None
    assert (await client.get_server("ec200005")).group is None
    with pytest.raises(ValueError, match="give notes or group"):
        await client.update_server("ec200005")
    await assert_logins(h, auth)


async def test_power_off_then_on(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world

    off = await client.server_action("ec200001", "power_off")
    assert (off.type, off.resource, off.status) == ("power_off", "ec200001", "in-progress")
    assert world.actions[-1].id == off.id
    assert (await client.server_status("ec200001")).current_status == "RUNNING"
    await h.advance(61)
    assert (await client.server_status("ec200001")).current_status == "SHUTOFF"
    assert (await client.get_action(off.id)).status == "completed"

    on = await client.server_action("ec200001", "power_on")
    await h.advance(61)
    assert (await client.server_status("ec200001")).current_status == "RUNNING"
    assert (await client.get_action(on.id)).status == "completed"
    with pytest.raises(ValueError, match="a snapshot id goes with rollback"):
        await client.server_action("ec200001", "rollback")
    await assert_logins(h, auth)


async def test_snapshot_lifecycle_and_rollback(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world

    snap, action = await client.create_snapshot(
        "ec200002", "before upgrade", "cloudpilot: before power_off"
    )
    truth = world.snapshots[snap.id]
    assert (truth.server, truth.description) == ("ec200002", "before upgrade")
    assert truth.notes == snap.notes == "cloudpilot: before power_off"
    assert (snap.status, action.type, action.resource) == ("CG", "create_snapshot", str(snap.id))
    assert [s.id for s in await client.list_snapshots("ec200002")] == [snap.id]

    updated = await client.update_snapshot("ec200002", snap.id, description="kept", protected=True)
    assert (updated.description, updated.protected) == ("kept", True)
    assert (truth.description, truth.protected) == ("kept", True)

    await h.advance(91)
    assert (await client.get_snapshot("ec200002", snap.id)).status == "CD"
    rollback = await client.server_action("ec200002", "rollback", snapshot=snap.id)
    await h.advance(181)
    assert (await client.get_action(rollback.id)).status == "completed"
    assert (await client.get_snapshot("ec200002", snap.id)).is_last_restored is True

    await client.update_snapshot("ec200002", snap.id, notes="release", protected=False)
    assert (truth.notes, truth.protected) == ("release", False)
    deleting, deletion = await client.delete_snapshot("ec200002", snap.id)
    assert (deleting.status, deletion.type) == ("DE", "delete_snapshot")
    await h.advance(31)
    assert truth.status == "DD"
    assert await client.list_snapshots("ec200002") == []
    with raises(NotFoundError, match=f"snapshot {snap.id} of server ec200002 not found"):
        await client.get_snapshot("ec200002", snap.id)
    await assert_logins(h, auth)


async def test_templates_from_a_server_and_a_snapshot(
    simulator: SimFactory, auth: AuthMode
) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world

    template, action_id = await client.create_template(description="golden web", server="ec200001")
    assert world.templates[template.name].description == "golden web"
    assert (await client.get_action(action_id)).type == "create_template"
    snap, _ = await client.create_snapshot("ec200003", "db", "for a template")
    await h.advance(121)
    assert (await client.get_template(template.name)).status == "CD"

    from_snapshot, _ = await client.create_template(description="db image", snapshot=snap.id)
    assert world.templates[from_snapshot.name].so_base == "debian"
    listed = [t.name for t in await client.list_templates()]
    assert listed == [from_snapshot.name, template.name]

    deletion = await client.delete_template(template.name)
    assert (deletion.type, deletion.resource) == ("delete_template", template.name)
    await h.advance(31)
    with raises(NotFoundError, match=f"template '{template.name}' not found"):
        await client.get_template(template.name)
    assert [t.name for t in await client.list_templates()] == [from_snapshot.name]
    with pytest.raises(ValueError, match="exactly one of server or snapshot"):
        await client.create_template(description="both", server="ec200001", snapshot=snap.id)
    await assert_logins(h, auth)


async def test_create_and_delete_a_server(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world

    server, action_id = await client.create_server(
        "ECS1", "debian-12", "it-mi2", "cloudpilot-test", group="eg100001"
    )
    truth = world.servers[server.name]
    assert (truth.plan, truth.location, truth.notes, truth.group) == (
        "ECS1",
        "it-mi2",
        "cloudpilot-test",
        "eg100001",
    )
    assert (server.status, server.so) == ("Booting", "debian-12")
    assert (await client.get_action(action_id)).type == "new_server"
    await h.advance(121)
    assert (await client.get_server(server.name)).status == "Booted"
    assert (await client.server_status(server.name)).current_status == "RUNNING"

    deletion = await client.delete_server(server.name)
    assert (deletion.type, deletion.resource) == ("delete_server", server.name)
    await h.advance(61)
    assert truth.deleted is not None
    with raises(NotFoundError, match=f"server '{server.name}' not found"):
        await client.get_server(server.name)
    assert server.name not in [s.name for s in await client.list_servers()]
    await assert_logins(h, auth)


async def test_billing_rows_and_csv(simulator: SimFactory, auth: AuthMode) -> None:
    h = await start(simulator)
    client = seeweb(h, fake_clock(), auth)
    world = h.sim.world
    snap, _ = await client.create_snapshot("ec200001", "billed", "billed")
    template, _ = await client.create_template(description="billed", server="ec200002")
    # Bills lag 2 h, so after 3 h the snapshot and the template have one billed hour. (4 h would
    # also outlive the login client's JWT, which this test is not about.)
    await h.advance(3 * 3600)
    lo, hi = month_bounds(*MONTH)

    servers = await client.billing_servers(*MONTH)
    expected = server_bills(world, *MONTH, lo, hi)
    assert [(r.name, r.cost) for r in servers.rows] == [(r["name"], r["cost"]) for r in expected]
    assert servers.total_cost > 0
    assert all(r.summary is not None and r.summary.online_hour is not None for r in servers.rows)

    templates = await client.billing_templates(*MONTH)
    template_rows = template_bills(world, *MONTH, lo, hi)
    assert [(r.name, r.hours) for r in templates.rows] == [(template.name, 1.0)]
    assert [r.cost for r in templates.rows] == [r["cost"] for r in template_rows]
    assert templates.total_cost == pytest.approx(sum(r["cost"] for r in template_rows))

    snapshots = await client.billing_snapshots(*MONTH)
    truth = snapshot_bills(world, *MONTH, lo, hi)
    assert [(r.snapshot, r.hours) for r in snapshots.rows] == [(snap.id, 1.0)]
    assert snapshots.total_cost == truth["total_cost"]
    assert (snapshots.year, snapshots.month) == MONTH

    csv_text = await client.billing_csv("servers", *MONTH)
    assert csv_text == to_csv(expected)
    assert csv_text.splitlines()[0].startswith("plan,name,group,notes,status")
    assert len(csv_text.splitlines()) == 1 + len(expected)
    assert (await client.billing_csv("snapshots", *MONTH)).startswith("snapshot,snapshot_name,")
    assert (await client.billing_csv("templates", *MONTH)).startswith("cost,name,status,")
    await assert_logins(h, auth)


# -- Serverless GPU --------------------------------------------------------------------------------


async def test_k8sgpu_clusters_pods_and_events(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = k8sgpu(h, fake_clock())
    world = h.sim.world

    assert [c.name for c in await client.list_clusters()] == list(world.clusters)
    lab = await client.get_cluster("skg00018")
    assert (lab.name, lab.label, lab.active) == ("skg00018", "tenant-lab", True)

    assert [p.uuid for p in await client.list_pods()] == list(world.pods)
    lab_pods = await client.list_pods(cluster="skg00018")
    assert [p.uuid for p in lab_pods] == [
        p.uuid for p in world.pods.values() if p.cluster == lab.name
    ]
    assert len(lab_pods) == 3
    pod = await client.get_pod(lab_pods[0].uuid)
    truth = world.pods[pod.uuid]
    assert (pod.runtime_class, pod.status, pod.online) == (truth.runtime_class, "running", True)
    assert pod.creation_date == truth.created

    events, total = await client.list_events(length=2)
    assert total == len(world.gpu_events)
    assert [e.id for e in events] == sorted((e.id for e in world.gpu_events), reverse=True)[:2]
    found, _ = await client.list_events(search=pod.uuid)
    assert [(e.uuid, e.event_type) for e in found] == [(pod.uuid, "started")]
    await assert_single_k8sgpu_login(h)


async def test_k8sgpu_delete_pod_terminates_it(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = k8sgpu(h, fake_clock())
    uuid = next(iter(h.sim.world.pods))

    await client.delete_pod(uuid)
    assert (await client.get_pod(uuid)).in_deletion is True
    await h.advance(11)
    pod = await client.get_pod(uuid)
    assert (pod.status, pod.online, pod.in_deletion) == ("terminated", False, True)
    assert pod.deactivated_from is not None
    newest, _ = await client.list_events(length=1)
    assert [(e.uuid, e.event_type) for e in newest] == [(uuid, "terminated")]
    await assert_single_k8sgpu_login(h)


async def test_k8sgpu_billing_json_and_csv(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = k8sgpu(h, fake_clock())
    lines = billing_lines(h.sim.world, *MONTH)

    bill = await client.billing(*MONTH)
    assert (bill.year, bill.month) == MONTH
    assert [(r.runtime_class, r.online_hour, r.cost) for r in bill.pods] == [
        (line["runtime_class"], float(line["online_hour"]), line["cost"]) for line in lines
    ]
    assert len(bill.pods) == 4
    assert bill.total_cost == pytest.approx(sum(line["cost"] for line in lines))

    text = await client.billing_csv(*MONTH)
    assert text == gpu_billing_csv(lines)
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    await assert_single_k8sgpu_login(h)


async def assert_single_k8sgpu_login(h: SimHandle) -> None:
    """Check that the client logged in once and reused its token."""
    assert await served(h, "POST", K8SGPU_LOGIN) == [200]


# -- Glesys ----------------------------------------------------------------------------------------


async def test_glesys_list_and_details(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = glesys(h, fake_clock())
    world = h.sim.world

    servers = await client.list_servers()
    assert [(s.serverid, s.hostname) for s in servers] == [
        (g.serverid, g.hostname) for g in world.glesys.values()
    ]
    details = await client.server_details("kvm1000002")
    assert (details.serverid, details.hostname, details.cpucores) == (
        "kvm1000002",
        "api-glesys-2",
        4,
    )
    # `state` is deprecated and null; the running and locked state come in their own fields.
    assert (details.state, details.status) == (None, "running")
    assert (details.is_running, details.is_locked) == (True, False)
    assert details.cost is not None and details.cost.amount is not None and details.cost.amount > 0


@pytest.mark.parametrize(("demand", "percent"), [(1.2, 30.0), (3.0, 75.0), (6.0, 100.0)])
async def test_glesys_cpu_percent_is_demand_over_cores_capped(
    simulator: SimFactory, demand: float, percent: float
) -> None:
    h = await start(simulator)
    client = glesys(h, fake_clock())
    await sim_ok(h, "POST", "/_sim/demand", {"server": "kvm1000002", "cores": demand})

    status = await client.server_status("kvm1000002")
    assert (status.state, status.cpu.max, status.cpu.unit) == ("running", 4.0, "cores")
    assert status.cpu_percent == pytest.approx(min(100.0, 100.0 * demand / 4))
    assert status.cpu_percent == pytest.approx(percent)


async def test_glesys_set_cores_shows_after_the_reboot(simulator: SimFactory) -> None:
    h = await start(simulator)
    client = glesys(h, fake_clock())
    world = h.sim.world

    edited = await client.set_cores("kvm1000001", 4)
    assert (edited.serverid, edited.is_locked, edited.cpucores) == ("kvm1000001", True, 2)
    assert not edited.runs_with(4)
    assert (await client.server_status("kvm1000001")).state == "stopped"
    await h.advance(world.glesys_reboot_s - 1)
    assert (await client.server_details("kvm1000001")).cpucores == 2

    await h.advance(2)
    details = await client.server_details("kvm1000001")
    assert (details.cpucores, details.is_running, details.is_locked) == (4, True, False)
    assert details.runs_with(4)
    assert world.glesys["kvm1000001"].cores_history[-1][1] == 4
    with pytest.raises(ValueError, match="cores must be at least 1"):
        await client.set_cores("kvm1000001", 0)


async def test_glesys_allowed_arguments_give_each_platform_s_core_counts(
    simulator: SimFactory,
) -> None:
    h = await start(simulator)
    client = glesys(h, fake_clock())

    every = await client.allowed_arguments()
    mine = await client.allowed_arguments("kvm1000001")
    assert every.cores_for("KVM") == every.cores_for("kvm") == PLATFORMS["KVM"]["cpucores"]
    assert every.cores_for("VMware") == PLATFORMS["VMware"]["cpucores"]
    assert set(mine.cores) == {"kvm"}
    assert every.cores_for("OpenVZ") == every.cores_for(None) == ()
