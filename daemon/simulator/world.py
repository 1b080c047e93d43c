"""The simulated cloud's state and how it changes with simulated time.

Everything that takes time (actions, reboots, pod deletions, timeline entries) is an entry in one
queue ordered by due time. `World.sync()` runs the due entries up to the clock's now, in order, each
at its own due time, so that a test that advances the clock by an hour sees the same history as a
run that waited an hour.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from daemon.simulator.clock import SimClock
from daemon.simulator.demand import Constant, Demand, DemandHistory
from daemon.simulator.entities import (
    DEFAULT_PLANS,
    FAILED_STATUSES,
    REGIONS,
    Action,
    CloudScript,
    Cluster,
    GlesysServer,
    GpuEvent,
    Group,
    Interval,
    LogEntry,
    Plan,
    Pod,
    Pricing,
    Server,
    SimError,
    Snapshot,
    SshKey,
    Template,
)

T = TypeVar("T")
# A queued entry runs at its due time with that time as argument.
Due = Callable[[datetime], None]


class World:
    """The whole simulated account: ECS, Serverless GPU and Glesys."""

    def __init__(
        self,
        clock: SimClock,
        *,
        seed: int = 1,
        plans: tuple[Plan, ...] = DEFAULT_PLANS,
        pricing: Pricing | None = None,
        failure_status: str = "failed",
        metrics_step_s: float = 300.0,
        username: str = "demo",
    ) -> None:
        if failure_status not in FAILED_STATUSES:
            raise ValueError(f"failure_status must be one of {FAILED_STATUSES}")
        self.clock = clock
        self.origin = clock.now()
        self.rng = random.Random(seed)
        self.plans = {p.name: p for p in plans}
        # Servers may name their plan in another case than the list does (`ECS1`, `eCS1`).
        self._plans_by_key = {p.name.casefold(): p for p in plans}
        self.pricing = pricing or Pricing()
        self.failure_status = failure_status
        self.metrics_step_s = metrics_step_s
        self.username = username
        self.customer = "skgu00004"
        self.servers: dict[str, Server] = {}
        self.actions: list[Action] = []
        self.actions_by_id: dict[int, Action] = {}
        self.actions_by_resource: dict[str, list[Action]] = {}
        self.logs: list[LogEntry] = []
        self.snapshots: dict[int, Snapshot] = {}
        # Action types made to fail through /_sim/faults: outcome and how many are left.
        self.failing: dict[str, tuple[str, int | None]] = {}
        self.templates: dict[str, Template] = {}
        self.clusters: dict[str, Cluster] = {}
        self.pods: dict[str, Pod] = {}
        self.gpu_events: list[GpuEvent] = []
        self.glesys: dict[str, GlesysServer] = {}
        self.ssh_keys: dict[int, SshKey] = {}
        self.scripts: dict[int, CloudScript] = {}
        self.groups: dict[int, Group] = {}
        self._account_seq = itertools.count(1)
        self._queue: list[tuple[datetime, int, Due]] = []
        self._seq = itertools.count()
        self._server_seq = itertools.count(200001)
        self._snapshot_seq = itertools.count(100)
        self._template_seq = itertools.count(1)
        self.now = self.origin
        self.glesys_reboot_s = 60.0
        self.timeline_errors: list[str] = []

    # -- time ------------------------------------------------------------------------------------

    def at(self, when: datetime, due: Due) -> None:
        """Run `due` when simulated time reaches `when`."""
        heapq.heappush(self._queue, (when, next(self._seq), due))

    def sync(self) -> datetime:
        """Run everything due up to the clock's now, in order, and return now."""
        now = self.clock.now()
        self._run_due(now)
        self.now = now
        return now

    def _run_due(self, until: datetime) -> None:
        while self._queue and self._queue[0][0] <= until:
            when, _, due = heapq.heappop(self._queue)
            self.now = when
            due(when)

    # -- ECS: servers ------------------------------------------------------------------------------

    def plan(self, name: str) -> Plan:
        """Return a plan by name, or refuse the request."""
        plan = self._plans_by_key.get(name.casefold())
        if plan is None:
            raise SimError(400, f"plan {name!r} does not exist")
        return plan

    def server(self, name: str) -> Server:
        """Return a live server by name, or answer 404."""
        server = self.servers.get(name)
        if server is None or server.deleted is not None:
            raise SimError(404, f"server {name!r} not found")
        return server

    def live_servers(self) -> list[Server]:
        """Return the servers that are not deleted, by name."""
        return [s for s in self.servers.values() if s.deleted is None]

    def add_server(
        self,
        *,
        plan: str,
        location: str = "it-fr2",
        notes: str = "",
        group: str | None = None,
        os: str = "debian-12",
        name: str | None = None,
        running: bool = True,
        demand: Demand | None = None,
        created: datetime | None = None,
        api_version: str = "v5",
    ) -> Server:
        """Put a ready server into the world (scenario set-up, not an API call)."""
        self.plan(plan)
        name = name or self._next_server_name()
        if name in self.servers:
            raise SimError(409, f"server {name!r} already exists")
        created = created or self.now
        number = len(self.servers) + 1
        server = Server(
            name=name,
            plan=plan,
            location=location,
            notes=notes,
            group=group,
            os=os,
            created=created,
            demand=DemandHistory(demand or Constant(cores=0.2)),
            user=self.username,
            api_version=api_version,
            running=False,
            ipv4=f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}",
            ipv6=f"fd00::{number:x}",
        )
        server.set_running(running, created)
        self.servers[name] = server
        if group is not None and all(g.name != group for g in self.groups.values()):
            self.add_group(f"group {group}", name=group)
        return server

    # -- ECS: the account's keys, scripts and groups ---------------------------------------------

    def next_account_id(self) -> int:
        """Return a new id for an SSH key, a script or a group."""
        return next(self._account_seq)

    def add_group(self, notes: str, *, name: str | None = None) -> Group:
        """Add a group, named as the API names them (`eg1xxxxx`) unless a name is given."""
        ident = self.next_account_id()
        group = Group(ident, name or f"eg{100000 + ident:06d}", notes)
        self.groups[ident] = group
        return group

    def _next_server_name(self) -> str:
        while True:
            name = f"ec{next(self._server_seq):06d}"
            if name not in self.servers:
                return name

    def create_server(
        self, *, plan: str, image: str, location: str, notes: str, group: str | None
    ) -> tuple[Server, Action]:
        """Start creating a server, as `POST /servers` does."""
        if location not in region_names():
            raise SimError(400, f"location {location!r} does not exist")
        server = self.add_server(
            plan=plan, location=location, notes=notes, group=group, os=image, running=False
        )
        server.provisioning, server.progress = "Booting", 10
        action = self.start_action(server.name, "new_server", duration_s=120)

        def finish(t: datetime) -> None:
            if action.status == "completed":
                server.provisioning, server.progress = "Booted", 100
                server.set_running(True, t)
            else:
                server.deleted = t

        self.after(action, finish)
        return server, action

    def ensure_not_busy(self, server: Server) -> None:
        """Refuse a new action while a snapshot of the server is being created."""
        for snap in self.snapshots.values():
            if snap.server == server.name and snap.status == "CG":
                raise SimError(
                    409,
                    f"server {server.name} is busy: snapshot {snap.id} is being created; "
                    "retry when its create_snapshot action has completed",
                )

    def server_action(self, name: str, kind: str, snapshot: int | None = None) -> Action:
        """Start power_on, power_off or rollback on a server."""
        server = self.server(name)
        self.ensure_not_busy(server)
        if kind == "rollback":
            if snapshot is None:
                raise SimError(400, "rollback needs the field 'snapshot'")
            snap = self.snapshots.get(snapshot)
            if snap is None or snap.server != name or snap.status != "CD":
                raise SimError(404, f"snapshot {snapshot} of server {name} not found")
        elif kind not in ("power_on", "power_off"):
            raise SimError(400, f"unknown action type {kind!r} (power_on, power_off, rollback)")
        action = self.start_action(name, kind, duration_s=60 if kind != "rollback" else 180)

        def finish(t: datetime) -> None:
            if action.status != "completed":
                return
            if kind == "power_off":
                server.set_running(False, t)
            else:
                server.set_running(True, t)
            if kind == "rollback":
                server.last_restored = snapshot
                for snap in self.snapshots.values():
                    if snap.server == name:
                        snap.is_last_restored = snap.id == snapshot

        self.after(action, finish)
        return action

    def delete_server(self, name: str) -> Action:
        """Start deleting a server."""
        server = self.server(name)
        self.ensure_not_busy(server)
        server.provisioning = "Deleting"
        action = self.start_action(name, "delete_server", duration_s=60)

        def finish(t: datetime) -> None:
            if action.status == "completed":
                server.set_running(False, t)
                server.deleted = t
            else:
                server.provisioning = "Booted"

        self.after(action, finish)
        return action

    # -- ECS: actions ------------------------------------------------------------------------------

    def start_action(
        self,
        resource: str,
        kind: str,
        *,
        duration_s: float,
        outcome: str = "completed",
        resource_type: str = "ECS",
        user: str | None = None,
        created: datetime | None = None,
    ) -> Action:
        """Record a new action that ends with `outcome` after `duration_s` simulated seconds."""
        if outcome not in ("completed", *FAILED_STATUSES):
            raise SimError(400, f"outcome must be completed, failed or error, not {outcome!r}")
        if outcome == "completed":
            outcome = self._forced_outcome(kind) or outcome
        created = created or self.now
        action = Action(
            id=len(self.actions) + 1 + self._action_id_offset,
            type=kind,
            resource=resource,
            resource_type=resource_type,
            user=user or self.username,
            created=created,
            duration_s=max(0.0, duration_s),
            outcome=outcome,
        )
        self.actions.append(action)
        self.actions_by_id[action.id] = action
        self.actions_by_resource.setdefault(resource, []).append(action)
        self.at(created + timedelta(seconds=action.duration_s), lambda t: self._end(action, t))
        return action

    # Real accounts have history: ids start where a few hundred older actions would have left them.
    _action_id_offset = 700

    def fail_actions(self, kind: str, outcome: str, count: int | None) -> None:
        """Make the next `count` actions of type `kind` (all, when None) end with `outcome`."""
        self.failing[kind] = (outcome, count)

    def _forced_outcome(self, kind: str) -> str | None:
        forced = self.failing.get(kind)
        if forced is None:
            return None
        outcome, left = forced
        if left is not None:
            if left <= 1:
                del self.failing[kind]
            else:
                self.failing[kind] = (outcome, left - 1)
        return outcome

    def _end(self, action: Action, t: datetime) -> None:
        action.status = action.outcome
        action.completed = t

    def after(self, action: Action, effect: Due) -> None:
        """Run `effect` right after the action ends; queued after the end, it sees the status."""
        self.at(action.created + timedelta(seconds=action.duration_s), effect)

    def actions_page(
        self, start: int, length: int, resource: str | None
    ) -> tuple[list[Action], int]:
        """Return a newest-first page of actions and the total that matched."""
        pool = self.actions if resource is None else self.actions_by_resource.get(resource, [])
        return newest_first(pool, start, length), len(pool)

    def insert_random_actions(self, count: int) -> list[Action]:
        """Add finished actions on random servers, a quarter of them failed."""
        names = [s.name for s in self.live_servers()] or ["ec000000"]
        added = []
        for _ in range(count):
            resource = self.rng.choice(names)
            kind = self.rng.choice(["power_on", "power_off", "rollback", "new_server"])
            outcome = self.failure_status if self.rng.random() < 0.25 else "completed"
            added.append(self.start_action(resource, kind, duration_s=0, outcome=outcome))
        self._run_due(self.now)
        return added

    # -- ECS: logs ---------------------------------------------------------------------------------

    def add_log(
        self,
        *,
        action: str,
        status: str = "success",
        actor: str | None = None,
        target_type: str = "User",
        target: str | None = None,
        ip_address: str | None = "127.0.0.1",
        severity: str = "info",
        created: datetime | None = None,
        url: str | None = None,
        description: str | None = None,
        user_agent: str | None = None,
    ) -> LogEntry:
        """Append an audit log line."""
        entry = LogEntry(
            id=len(self.logs) + 1,
            actor=actor or self.username,
            action=action,
            severity=severity,
            status=status,
            target_type=target_type,
            target=target or actor or self.username,
            created=created or self.now,
            ip_address=ip_address,
            url=url,
            description=description,
            user_agent=user_agent,
        )
        self.logs.append(entry)
        return entry

    def logs_page(
        self, start: int, length: int, resource: str | None
    ) -> tuple[list[LogEntry], int]:
        """Return a newest-first page of logs and the total that matched."""
        pool = self.logs if resource is None else [e for e in self.logs if e.target == resource]
        return newest_first(pool, start, length), len(pool)

    # -- ECS: snapshots and templates --------------------------------------------------------------

    def create_snapshot(
        self, name: str, description: str, notes: str, protected: bool = False
    ) -> tuple[Snapshot, Action]:
        """Start a snapshot of a server; it blocks the server's other actions until done."""
        server = self.server(name)
        self.ensure_not_busy(server)
        snap_id = next(self._snapshot_seq)
        count = 1 + sum(1 for s in self.snapshots.values() if s.server == name)
        parent = max(
            (s.id for s in self.snapshots.values() if s.server == name and s.status == "CD"),
            default=None,
        )
        snap = Snapshot(
            id=snap_id,
            name=f"{name}-SNP-{count}",
            server=name,
            user=self.username,
            description=description,
            notes=notes,
            protected=protected,
            created=self.now,
            updated=self.now,
            size_kb=self.plan(server.plan).disk * 1024 * 96,
            parent=parent,
        )
        self.snapshots[snap_id] = snap
        action = self.start_action(
            str(snap_id), "create_snapshot", duration_s=90, resource_type="SNP"
        )
        self._watch_snapshot(snap, action)
        return snap, action

    def _watch_snapshot(self, snap: Snapshot, action: Action) -> None:
        def finish(t: datetime) -> None:
            snap.updated = t
            snap.status = "CD" if action.status == "completed" else "ER"

        self.after(action, finish)

    def snapshot(self, server: str, snap_id: int) -> Snapshot:
        """Return a server's snapshot that is not deleted, or answer 404."""
        snap = self.snapshots.get(snap_id)
        if snap is None or snap.server != server or snap.status == "DD":
            raise SimError(404, f"snapshot {snap_id} of server {server} not found")
        return snap

    def delete_snapshot(self, server: str, snap_id: int) -> tuple[Snapshot, Action]:
        """Start deleting a snapshot."""
        snap = self.snapshot(server, snap_id)
        if snap.status == "CG":
            raise SimError(409, f"snapshot {snap_id} is still being created")
        snap.status, snap.deleted, snap.updated = "DE", self.now, self.now
        action = self.start_action(
            str(snap_id), "delete_snapshot", duration_s=30, resource_type="SNP"
        )

        def finish(t: datetime) -> None:
            snap.status, snap.updated = "DD", t

        self.after(action, finish)
        return snap, action

    def create_template(
        self, *, server: str | None, snapshot: int | None, description: str
    ) -> tuple[Template, Action]:
        """Start making a template from a server or a snapshot."""
        if (server is None) == (snapshot is None):
            raise SimError(400, "give exactly one of 'server' or 'snapshot'")
        if server is not None:
            source = self.server(server)
            self.ensure_not_busy(source)
        else:
            snap = self.snapshots.get(snapshot or 0)
            if snap is None or snap.status != "CD":
                raise SimError(404, f"snapshot {snapshot} not found")
            source = self.server(snap.server)
        seq = next(self._template_seq)
        template = Template(
            id=seq,
            name=f"ei{seq:06d}",
            description=description,
            so_base=source.os.split("-")[0],
            created=self.now,
            size_kb=self.plan(source.plan).disk * 1024 * 75,
        )
        self.templates[template.name] = template
        action = self.start_action(
            template.name, "create_template", duration_s=120, resource_type="DI"
        )

        def finish(t: datetime) -> None:
            template.status = "CD" if action.status == "completed" else "ER"

        self.after(action, finish)
        return template, action

    def template(self, name: str) -> Template:
        """Return a template that is not deleted, or answer 404."""
        template = self.templates.get(name)
        if template is None or template.deleted is not None:
            raise SimError(404, f"template {name!r} not found")
        return template

    def delete_template(self, name: str) -> Action:
        """Start deleting a template."""
        template = self.template(name)
        action = self.start_action(name, "delete_template", duration_s=30, resource_type="DI")

        def finish(t: datetime) -> None:
            template.deleted = t

        self.after(action, finish)
        return action

    # -- Serverless GPU ----------------------------------------------------------------------------

    def add_cluster(self, name: str, label: str, created: datetime | None = None) -> Cluster:
        """Add a tenant."""
        cluster = Cluster(
            name=name, label=label, customer=self.customer, created=created or self.now
        )
        self.clusters[name] = cluster
        return cluster

    def start_pod(
        self,
        cluster: str,
        runtime_class: str,
        *,
        name: str | None = None,
        at: datetime | None = None,
    ) -> Pod:
        """Start a pod in a tenant and emit its `started` event."""
        if cluster not in self.clusters:
            raise SimError(404, f"cluster {cluster!r} not found")
        if runtime_class not in self.pricing.gpu_prices:
            raise SimError(400, f"unknown runtime class {runtime_class!r}")
        when = at or self.now
        pod_uuid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        suffix = "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        pod = Pod(
            uuid=pod_uuid,
            cluster=cluster,
            runtime_class=runtime_class,
            remote_name=name or f"inference-service-5cfb7489f4-{suffix}",
            local_name=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            user=self.customer,
            created=when,
            run=[Interval(when)],
        )
        self.pods[pod_uuid] = pod
        self._gpu_event(pod, "started", when)
        return pod

    def pod(self, ref: str) -> Pod:
        """Return a pod by uuid or by its remote name, or answer 404."""
        pod = self.pods.get(ref)
        if pod is None:
            pod = next((p for p in self.pods.values() if p.remote_name == ref), None)
        if pod is None:
            raise SimError(404, f"pod {ref!r} not found")
        return pod

    def end_pod(self, pod: Pod, t: datetime, *, failed: bool = False) -> None:
        """Terminate a pod (finished, failed or deleted) and emit its `terminated` event.

        `in_deletion` stays as it was: true for a pod whose deletion was asked for, false for one
        that ended on its own.
        """
        if pod.status == "terminated":
            return
        pod.succeeded = not failed and not pod.in_deletion
        pod.status, pod.online = "terminated", False
        pod.failed = failed
        pod.deactivated = t
        if pod.run and pod.run[-1].end is None:
            pod.run[-1].end = t
        self._gpu_event(pod, "terminated", t)

    def delete_pod(self, ref: str) -> Pod:
        """Ask for a pod's deletion; it terminates a few simulated seconds later."""
        pod = self.pod(ref)
        if pod.status == "terminated":
            raise SimError(409, f"pod {pod.uuid} is already terminated")
        pod.in_deletion = True
        self.at(self.now + timedelta(seconds=10), lambda t: self.end_pod(pod, t))
        return pod

    def _gpu_event(self, pod: Pod, kind: str, t: datetime) -> None:
        self.gpu_events.append(
            GpuEvent(id=1400 + len(self.gpu_events) + 1, pod=pod, event_type=kind, date=t)
        )

    # -- Glesys ------------------------------------------------------------------------------------

    def glesys_server(self, serverid: str) -> GlesysServer:
        """Return a Glesys server, or answer in Glesys's words."""
        server = self.glesys.get(serverid)
        if server is None:
            # As recorded (jclouds): a 400, its text ending in a newline.
            raise SimError(400, "Could not find server with this id on this account.\n")
        return server

    def add_glesys_server(self, **fields: Any) -> GlesysServer:
        """Put a Glesys server into the world (scenario set-up)."""
        fields["demand"] = DemandHistory(fields["demand"])
        server = GlesysServer(**fields)
        server.cores_history.append((server.created, server.cpucores))
        self.glesys[server.serverid] = server
        return server

    def glesys_edit_cores(self, serverid: str, cores: int) -> GlesysServer:
        """Change a Glesys server's cores; it reboots and runs with them when the reboot ends."""
        server = self.glesys_server(serverid)
        if server.state == "locked":
            # As recorded: HTTP 500, and Glesys's own code 606 in the envelope.
            raise SimError(500, "Server Locked", code=606)
        if not 1 <= cores <= 32:
            raise SimError(400, f"cpucores must be between 1 and 32, not {cores}")
        if cores == server.cpucores:
            return server
        server.state = "locked"
        server.cpucores = cores

        def done(t: datetime) -> None:
            server.cores_history.append((t, cores))
            server.state = "running"

        self.at(self.now + timedelta(seconds=self.glesys_reboot_s), done)
        return server

    # -- demand and metrics ------------------------------------------------------------------------

    def set_demand(self, name: str, demand: Demand) -> None:
        """Give a Seeweb or Glesys server a new demand model from now on."""
        target: Server | GlesysServer | None = self.servers.get(name) or self.glesys.get(name)
        if target is None:
            target = next((g for g in self.glesys.values() if g.hostname == name), None)
        if target is None:
            raise SimError(404, f"server {name!r} not found")
        target.demand.set(self.now, demand)

    def cpu_percent(self, server: Server, t: datetime, *, sample: bool = False) -> float:
        """Return a Seeweb server's CPU % at time t: demand over cores, capped at 100.

        A metrics `sample` at t covers the interval that ends at t, so a demand change made at t
        itself shows from the next sample on and never rewrites one already served.
        """
        if not server.running_at(t):
            return 0.0
        cores = self.plan(server.plan).cpu
        return min(100.0, 100.0 * server.demand.at(t, self.origin, before=sample) / cores)

    def glesys_cpu(self, server: GlesysServer, t: datetime) -> tuple[float, int]:
        """Return a Glesys server's cores in use and its cores at time t."""
        cores = server.cores_at(t)
        if server.state != "running":
            return 0.0, cores
        return min(float(cores), server.demand.at(t, self.origin)), cores

    def sample_times(self, count: int) -> list[datetime]:
        """Return the last `count` metric sample times, oldest first."""
        step = self.metrics_step_s
        elapsed = (self.now - self.origin).total_seconds()
        last = self.origin + timedelta(seconds=math.floor(elapsed / step) * step)
        return [last - timedelta(seconds=step * i) for i in reversed(range(count))]

    # -- money -------------------------------------------------------------------------------------

    def server_cost(self, server: Server, lo: datetime, hi: datetime) -> tuple[float, float, float]:
        """Return (online hours, offline hours, cost) of a server within [lo, hi)."""
        start = max(lo, server.created)
        end = min(hi, server.deleted) if server.deleted else hi
        if end <= start:
            return 0.0, 0.0, 0.0
        online = sum(i.seconds_within(start, end) for i in server.run) / 3600
        offline = max(0.0, (end - start).total_seconds() / 3600 - online)
        price = self.plan(server.plan).hourly_price
        offline_price = price * (1 - self.pricing.offline_discount / 100)
        return online, offline, online * price + offline * offline_price

    def storage_cost(self, size_kb: int, hours: float, gb_hour: float) -> float:
        """Return what storing `size_kb` for `hours` costs at `gb_hour` EUR per GB-hour."""
        return hours * size_kb / 1024**2 * gb_hour

    def storage_hours(
        self, created: datetime, deleted: datetime | None, lo: datetime, hi: datetime
    ) -> float:
        """Return the hours a stored object existed within [lo, hi)."""
        return Interval(created, deleted).seconds_within(lo, hi) / 3600

    def pod_cost(self, pod: Pod, lo: datetime, hi: datetime) -> tuple[float, float]:
        """Return (online hours, cost) of a pod within [lo, hi)."""
        hours = sum(i.seconds_within(lo, hi) for i in pod.run) / 3600
        return hours, hours * self.pricing.gpu_prices[pod.runtime_class]

    def spent(self, lo: datetime, hi: datetime) -> dict[str, float]:
        """Return the true spend in EUR within [lo, hi), by kind, without billing lag."""
        servers = sum(self.server_cost(s, lo, hi)[2] for s in self.servers.values())
        snapshots = sum(
            self.storage_cost(
                s.size_kb,
                self.storage_hours(s.created, s.deleted, lo, hi),
                self.pricing.snapshot_gb_hour,
            )
            for s in self.snapshots.values()
        )
        templates = sum(
            self.storage_cost(
                t.size_kb,
                self.storage_hours(t.created, t.deleted, lo, hi),
                self.pricing.template_gb_hour,
            )
            for t in self.templates.values()
        )
        gpu = sum(self.pod_cost(p, lo, hi)[1] for p in self.pods.values())
        return {
            "servers": round(servers, 4),
            "snapshots": round(snapshots, 4),
            "templates": round(templates, 4),
            "gpu": round(gpu, 4),
            "total": round(servers + snapshots + templates + gpu, 4),
        }

    def billed_until(self) -> datetime:
        """Return the instant bills are complete up to: now less the billing lag, to the hour."""
        cutoff = self.now - timedelta(seconds=self.pricing.billing_lag_s)
        return cutoff.replace(minute=0, second=0, microsecond=0)


def newest_first(pool: list[T], start: int, length: int) -> list[T]:
    """Return `length` items of an oldest-first list, newest first, skipping the `start` newest."""
    hi = len(pool) - start
    return list(reversed(pool[max(0, hi - length) : hi])) if hi > 0 else []


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """Return the first instant of a calendar month and of the next, in UTC."""
    if not 1 <= month <= 12:
        raise SimError(400, f"month must be 1-12, not {month}")
    if not 1 <= year <= 9998:
        raise SimError(400, f"year must be 1-9998, not {year}")
    lo = datetime(year, month, 1, tzinfo=UTC)
    hi = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return lo, hi


def region_names() -> dict[str, str]:
    """Return each region's code and description."""
    return {code: label for code, label, _ in REGIONS}
