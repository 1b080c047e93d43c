"""`cloudpilot demo`: a narrated tour of the embedded cloud through Cloudpilot's own clients.

It starts the simulator with its default world in process, on a free loopback port, and walks
through what the daemon will watch and do: servers and their CPU, failed actions found by paging,
the snapshot that blocks a risky action until it completes, a Glesys core change in place, GPU
pods, and the bill against the true spend. Simulated time moves only when the tour moves it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp

from daemon.clock import SystemClock
from daemon.providers.base import ClientSettings, Secret
from daemon.providers.errors import ConflictError
from daemon.providers.glesys import GlesysClient
from daemon.providers.k8sgpu import K8sGpuClient
from daemon.providers.pagination import new_actions
from daemon.providers.seeweb import SeewebClient
from daemon.simulator.app import Simulation
from daemon.simulator.demand import Constant
from daemon.simulator.scenario import load_scenario_file
from daemon.simulator.serve import Listen, start
from daemon.simulator.world import month_bounds


class Narrator:
    """Print one readable line per step."""

    def __init__(self, write: Callable[[str], object] = print) -> None:
        self._write = write
        self._step = 0

    def section(self, title: str) -> None:
        """Start a new part of the tour."""
        self._step += 1
        self._write(f"\n{self._step}. {title}")

    def say(self, text: str) -> None:
        """Tell one fact."""
        self._write(f"   {text}")


async def run_demo(write: Callable[[str], object] = print) -> int:
    """Run the tour and return the exit code; simulated time moves only when the tour moves it."""
    say = Narrator(write)
    sim = Simulation(load_scenario_file(Path("default")), speed=0)
    runner, url = await start(sim, Listen("127.0.0.1", 0))
    write(f"Cloudpilot demo: the embedded cloud simulator is serving at {url}")
    write(
        "(Seeweb ECS at /ecs/v2, Serverless GPU at /k8sgpu/v1, Glesys at /glesys, control /_sim/)"
    )
    clock = SystemClock()
    settings = ClientSettings(requests_per_second=50, burst=50)
    try:
        async with aiohttp.ClientSession() as session:
            seeweb = SeewebClient(
                session,
                url,
                clock=clock,
                token=Secret(sim.credentials.api_token),
                settings=settings,
            )
            gpu = K8sGpuClient(
                session,
                url,
                clock=clock,
                username=sim.credentials.username,
                password=Secret(sim.credentials.password),
                settings=settings,
            )
            glesys = GlesysClient(
                session,
                f"{url}/glesys",
                clock=clock,
                project=sim.credentials.glesys_project,
                key=Secret(sim.credentials.api_token),
                settings=settings,
            )
            await _servers(say, seeweb)
            high_water = await _failures(say, seeweb, sim)
            await _snapshot_blocks(say, seeweb, sim)
            await _glesys(say, glesys, sim)
            await _gpu(say, gpu)
            await _money(say, seeweb, sim)
            say.section("What comes next")
            say.say(f"the daemon will poll these APIs, remember high-water mark {high_water},")
            say.say("and act by rule: alerts, guarded actions, autoscaling and budget caps.")
    finally:
        await runner.cleanup()
    write("\nDemo finished.")
    return 0


async def _servers(say: Narrator, seeweb: SeewebClient) -> None:
    say.section("Seeweb servers and their CPU (GET /servers, /servers/{name}/metrics)")
    for server in await seeweb.list_servers():
        metrics = await seeweb.server_metrics(server.name)
        cpu = f"{metrics.cpu[-1].value:5.1f}% CPU" if metrics.cpu else " no metrics"
        status = (await seeweb.server_status(server.name)).current_status
        say.say(
            f"{server.name}  {server.plan:<8} {server.cores:>2} cores  {status:<8} {cpu}"
            f"  {server.notes}"
        )


async def _failures(say: Narrator, seeweb: SeewebClient, sim: Simulation) -> int:
    say.section("Failed actions, found by walking newest-first pages to a high-water mark")
    history, high_water = await new_actions(seeweb, 0)
    failed = [a for a in history if a.is_failure]
    say.say(f"{len(history)} actions in the history, {len(failed)} of them failed:")
    for action in failed:
        say.say(f"  action {action.id}: {action.type} on {action.resource} ended '{action.status}'")
    sim.world.start_action("ec200001", "power_off", duration_s=30, outcome="error")
    say.say("someone powers ec200001 off in the panel; it fails after 30 s...")
    sim.world.clock.advance(60)
    fresh, high_water = await new_actions(seeweb, high_water)
    for action in fresh:
        say.say(f"new since the last poll: action {action.id} {action.type} -> '{action.status}'")
    return high_water


async def _snapshot_blocks(say: Narrator, seeweb: SeewebClient, sim: Simulation) -> None:
    say.section("Snapshot first: a snapshot blocks risky actions on its server until it completes")
    snapshot, action = await seeweb.create_snapshot("ec200004", "before power_off", "cloudpilot")
    say.say(f"snapshot {snapshot.id} of ec200004 started (action {action.id}, {action.status})")
    try:
        await seeweb.server_action("ec200004", "power_off")
    except ConflictError as exc:
        say.say(f"power_off refused meanwhile: {exc.detail}")
    sim.world.clock.advance(120)
    done = await seeweb.get_action(action.id)
    say.say(f"two minutes later the snapshot action is '{done.status}'")
    power_off = await seeweb.server_action("ec200004", "power_off")
    say.say(f"now power_off is accepted: action {power_off.id} '{power_off.status}'")
    sim.world.clock.advance(90)
    status = await seeweb.server_status("ec200004")
    say.say(f"and ec200004 is {status.current_status}")


async def _glesys(say: Narrator, glesys: GlesysClient, sim: Simulation) -> None:
    say.section("Glesys changes cores in place (server/status, server/edit)")
    servers = await glesys.list_servers()
    target = servers[0].serverid
    sim.world.set_demand(target, Constant(cores=3.5))
    status = await glesys.server_status(target)
    details = await glesys.server_details(target)
    say.say(
        f"{details.hostname} ({target}): {details.cpucores} cores at "
        f"{status.cpu_percent or 0:.0f}% CPU, demand 3.5 cores"
    )
    edited = await glesys.set_cores(target, details.cpucores + 2)
    say.say(f"server/edit cpucores={details.cpucores + 2}: the server is {edited.state} (reboot)")
    sim.world.clock.advance(sim.world.glesys_reboot_s + 1)
    after = await glesys.server_details(target)
    status = await glesys.server_status(target)
    say.say(f"after the reboot: {after.cpucores} cores at {status.cpu_percent or 0:.0f}% CPU")


async def _gpu(say: Narrator, gpu: K8sGpuClient) -> None:
    say.section("Serverless GPU pods and events (login with max_age, /pod/, /events/)")
    for pod in await gpu.list_pods():
        state = "online" if pod.online else pod.status
        say.say(f"{pod.remote_reference_name} in {pod.cluster}: {pod.runtime_class}, {state}")
    events, total = await gpu.list_events(length=3)
    say.say(f"{total} events; the newest: " + ", ".join(f"{e.event_type}" for e in events))


async def _money(say: Narrator, seeweb: SeewebClient, sim: Simulation) -> None:
    say.section("The bill lags real use (GET /billing/servers/{y}/{m})")
    now = sim.world.now
    billed = (await seeweb.billing_servers(now.year, now.month)).total_cost
    truth = sim.world.spent(month_bounds(now.year, now.month)[0], now)["servers"]
    say.say(f"servers this month, as billed so far: {billed:.2f} EUR")
    say.say(f"true spend, which the daemon must estimate: {truth:.2f} EUR")
