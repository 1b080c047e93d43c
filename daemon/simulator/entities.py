"""The simulated cloud's things: plans, servers, actions, logs, snapshots, templates, pods...

Plain records and the price list; `World` (world.py) changes them as simulated time passes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.simulator.demand import DemandHistory

FAILED_STATUSES = ("failed", "error")


class SimError(Exception):
    """A request the simulated API refuses; the handler turns it into a 4xx answer."""

    def __init__(self, status: int, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code  # the API's own code in the body, where it differs from the HTTP status


@dataclass(slots=True)
class Plan:
    """A Seeweb ECS plan."""

    id: int
    name: str
    cpu: int
    ram: int
    disk: int
    hourly_price: float
    monthly_price: float | None  # None: the plan list gives no monthly price (a test's world)
    gpu: int = 0
    gpu_label: str | None = None
    host_type: str = "ECS"
    windows: bool = False
    available: bool = True
    regions: tuple[str, ...] = ("it-mi2", "it-fr2", "ch-lug1")
    listed: bool = True  # False: retired, still run by old servers but gone from `GET /plans`


@dataclass(slots=True)
class Interval:
    """A span of simulated time; `end` is None while it lasts."""

    start: datetime
    end: datetime | None = None

    def seconds_within(self, lo: datetime, hi: datetime) -> float:
        """Return how many seconds of this interval fall in [lo, hi)."""
        end = hi if self.end is None else min(self.end, hi)
        return max(0.0, (end - max(self.start, lo)).total_seconds())


@dataclass(slots=True)
class Server:
    """A Seeweb ECS server."""

    name: str
    plan: str
    location: str
    notes: str
    group: str | None
    os: str
    created: datetime
    demand: DemandHistory
    user: str
    api_version: str = "v5"
    running: bool = True
    provisioning: str = "Booted"  # the record's `status`: Booting, Booted, Deleting
    progress: int = 100
    deleted: datetime | None = None
    ipv4: str = ""
    ipv6: str = ""
    run: list[Interval] = field(default_factory=list)
    last_restored: int | None = None  # the snapshot the last rollback restored

    def set_running(self, running: bool, at: datetime) -> None:
        """Power the server on or off at the given time."""
        if running and not self.running:
            self.run.append(Interval(at))
        elif not running and self.running and self.run and self.run[-1].end is None:
            self.run[-1].end = at
        self.running = running

    def running_at(self, t: datetime) -> bool:
        """Return whether the server was running at time t."""
        return any(i.start <= t and (i.end is None or t < i.end) for i in reversed(self.run))


@dataclass(slots=True)
class Action:
    """A Seeweb ECS action: an asynchronous request and its state over time."""

    id: int
    type: str
    resource: str
    resource_type: str
    user: str
    created: datetime
    duration_s: float
    outcome: str  # the status it ends with: completed, failed or error
    status: str = "in-progress"
    completed: datetime | None = None

    def progress(self, now: datetime) -> int:
        """Return the progress percentage at `now`."""
        if self.status != "in-progress":
            return 100 if self.status == "completed" else self._progress_at(self.completed or now)
        return self._progress_at(now)

    def _progress_at(self, t: datetime) -> int:
        if self.duration_s <= 0:
            return 99
        share = (t - self.created).total_seconds() / self.duration_s
        return max(0, min(99, int(share * 100)))


@dataclass(slots=True)
class LogEntry:
    """An audit log line."""

    id: int
    actor: str
    action: str
    severity: str
    status: str
    target_type: str
    target: str
    created: datetime
    ip_address: str | None
    url: str | None
    user_agent: str | None = None
    location: str | None = None
    result_type: str | None = None
    result: str | None = None
    description: str | None = None
    extra_data: dict[str, Any] | None = None


@dataclass(slots=True)
class Snapshot:
    """A snapshot of a Seeweb server."""

    id: int
    name: str
    server: str
    user: str
    description: str
    notes: str
    protected: bool
    created: datetime
    updated: datetime
    size_kb: int
    status: str = "CG"  # CG creating, CD created, DE deleting, DD deleted, ER error
    is_last_restored: bool = False
    deleted: datetime | None = None
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    parent: int | None = None  # the snapshot this one builds on (the server's previous one)

    @property
    def status_label(self) -> str:
        """Return the human spelling of the status."""
        return {
            "CG": "Creating",
            "CD": "Created",
            "DE": "Deleting",
            "DD": "Deleted",
            "ER": "Error",
        }[self.status]


@dataclass(slots=True)
class Template:
    """A private image made from a server or a snapshot."""

    id: int
    name: str
    description: str
    so_base: str
    created: datetime
    size_kb: int
    status: str = "CG"
    deleted: datetime | None = None
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    notes: str = ""


@dataclass(slots=True)
class Cluster:
    """A Serverless GPU tenant."""

    name: str
    label: str
    customer: str
    created: datetime
    active: bool = True


@dataclass(slots=True)
class Pod:
    """A Serverless GPU pod."""

    uuid: str
    cluster: str
    runtime_class: str
    remote_name: str
    local_name: str
    user: str
    created: datetime
    online: bool = True
    status: str = "running"
    succeeded: bool = False
    failed: bool = False
    in_deletion: bool = False
    deactivated: datetime | None = None
    run: list[Interval] = field(default_factory=list)

    @property
    def local_namespace(self) -> str:
        """Return the namespace of the pod in the user's cluster."""
        return f"{self.cluster}-gpu"


@dataclass(slots=True)
class GpuEvent:
    """A Serverless GPU pod event."""

    id: int
    pod: Pod
    event_type: str
    date: datetime


@dataclass(slots=True)
class GlesysServer:
    """A Glesys server, whose cores can be changed in place (after a reboot)."""

    serverid: str
    hostname: str
    cpucores: int
    memorysize: int
    disksize: int
    created: datetime
    demand: DemandHistory
    datacenter: str = "Falkenberg"
    platform: str = "KVM"
    templatename: str = "Debian 12 64-bit"
    description: str = ""
    state: str = "running"  # running, stopped, locked
    cores_history: list[tuple[datetime, int]] = field(default_factory=list)

    def cores_at(self, t: datetime) -> int:
        """Return the core count in effect at time t."""
        cores = self.cores_history[0][1] if self.cores_history else self.cpucores
        for since, value in self.cores_history:
            if since <= t:
                cores = value
        return cores


@dataclass(slots=True)
class SshKey:
    """A public key the account can put on new servers."""

    id: int
    label: str
    key: str
    created: datetime


@dataclass(slots=True)
class CloudScript:
    """A script new servers can run at their first boot."""

    id: int
    title: str
    content: str
    windows: bool
    user: str


@dataclass(slots=True)
class Group:
    """A group of ECS servers."""

    id: int
    name: str
    notes: str
    enabled: bool = True


GPU_PRICES = {
    "seeweb-nvidia-1xl4": 0.50,
    "seeweb-nvidia-1xa30": 0.60,
    "seeweb-nvidia-1xa6000": 0.81,
    "seeweb-nvidia-2xa6000": 1.62,
    "seeweb-nvidia-1xa100": 2.20,
}

# Regions as the live `GET /regions` lists them: code, description, id.
REGIONS = (
    ("bg-sof1", "Sofia", 7),
    ("ch-lug1", "Lugano", 6),
    ("it-fr2", "Frosinone", 3),
    ("it-mi2", "Milano", 2),
)
EVERYWHERE = ("it-mi2", "it-fr2", "ch-lug1", "bg-sof1")
ITALY_SWISS = ("it-mi2", "it-fr2", "ch-lug1")
FROSINONE = ("it-fr2",)


def _cpu(
    ident: int,
    name: str,
    cpu: int,
    ram: int,
    disk: int,
    hourly: float,
    monthly: float,
    host_type: str = "ECS",
    regions: tuple[str, ...] = ITALY_SWISS,
    *,
    windows: bool = False,
) -> Plan:
    return Plan(
        ident,
        name,
        cpu,
        ram,
        disk,
        hourly,
        monthly,
        host_type=host_type,
        regions=regions,
        windows=windows,
    )


def _gpu(
    ident: int,
    name: str,
    cpu: int,
    ram: int,
    disk: int,
    hourly: float,
    monthly: float,
    gpu: int,
    label: str,
    host_type: str,
) -> Plan:
    return Plan(
        ident,
        name,
        cpu,
        ram,
        disk,
        hourly,
        monthly,
        gpu=gpu,
        gpu_label=label,
        host_type=host_type,
        regions=FROSINONE,
    )


# The live catalogue as recorded in February 2025, in the order the API lists it. Names mix
# case (`eCS1`, `ECS1GPU`); Windows plans end in W; HM is high memory. RAM in MiB, disk in GB,
# prices in EUR per hour and per month.
# fmt: off
DEFAULT_PLANS = (
    _cpu(1, "eCS1", 1, 1024, 20, 0.019, 14.0, regions=EVERYWHERE),
    _cpu(7, "eCS2", 2, 2048, 40, 0.032, 23.0),
    _cpu(12, "eCS2W", 2, 2048, 40, 0.048, 35.0, windows=True),
    _cpu(8, "eCS3", 4, 4096, 80, 0.048, 35.0),
    _cpu(13, "eCS3W", 4, 4096, 80, 0.078, 56.0, windows=True),
    _cpu(9, "eCS4", 4, 8192, 160, 0.063, 45.0),
    _cpu(14, "eCS4W", 4, 8192, 160, 0.127, 91.0, windows=True),
    _cpu(10, "eCS5", 8, 16384, 320, 0.127, 91.0),
    _cpu(15, "eCS5W", 8, 16384, 320, 0.253, 182.0, windows=True),
    _cpu(11, "eCS6", 12, 24576, 400, 0.152, 109.0),
    _cpu(16, "eCS6W", 12, 24576, 400, 0.343, 247.0, windows=True),
    _gpu(50, "ECS1AIA1", 16, 65536, 100, 0.068, 49.0, 1, "Tenstorrent Grayskull e75", "ECSAIA1"),
    _gpu(21, "ECS1GPU", 8, 32768, 500, 0.29, 209.0, 1, "RTX 6000", "ECSGPU"),
    _gpu(23, "ECS1GPU2", 8, 32768, 500, 0.74, 533.0, 1, "RTX A6000", "ECSGPU2"),
    _gpu(31, "ECS2GPU2", 16, 65536, 1000, 1.48, 1066.0, 2, "RTX A6000", "ECSGPU2"),
    _gpu(32, "ECS3GPU2", 32, 131072, 2000, 2.96, 2131.0, 4, "RTX A6000", "ECSGPU2"),
    _gpu(34, "ECS1GPU3", 16, 122880, 1000, 1.89, 1361.0, 1, "A100 80GB", "ECSGPU3"),
    _gpu(35, "ECS2GPU3", 32, 245760, 2000, 3.78, 2722.0, 2, "A100 80GB", "ECSGPU3"),
    _gpu(40, "ECS3GPU3", 64, 491520, 4000, 7.56, 5443.0, 4, "A100 80GB", "ECSGPU3"),
    _gpu(41, "ECS1GPU6", 4, 32768, 100, 0.38, 274.0, 1, "L4", "ECSGPU6"),
    _gpu(42, "ECS2GPU6", 8, 65536, 200, 0.76, 547.0, 2, "L4", "ECSGPU6"),
    _gpu(43, "ECS3GPU6", 16, 131072, 400, 1.52, 1094.0, 4, "L4", "ECSGPU6"),
    _gpu(44, "ECS4GPU6", 32, 262144, 800, 3.04, 2189.0, 8, "L4", "ECSGPU6"),
    _gpu(45, "ECS1GPU7", 8, 32768, 500, 0.85, 612.0, 1, "L40s", "ECSGPU7"),
    _gpu(46, "ECS2GPU7", 16, 65536, 1000, 1.7, 1224.0, 2, "L40s", "ECSGPU7"),
    _gpu(47, "ECS3GPU7", 32, 131072, 2000, 3.4, 2448.0, 4, "L40s", "ECSGPU7"),
    _gpu(48, "ECS4GPU7", 64, 262144, 4000, 6.8, 4896.0, 8, "L40s", "ECSGPU7"),
    _gpu(49, "ECS1GPU8", 64, 1048576, 6000, 8.4, 6048.0, 4, "H100 80 GB", "ECSGPU8"),
    _gpu(53, "ECS8GPU9", 255, 2097152, 16000, 18.8, 13536.0, 8, "AMD MI300X", "ECSGPU9"),
    _cpu(17, "eCS1HM", 4, 65536, 200, 0.217, 156.0, "ECSHM", FROSINONE),
    _cpu(18, "eCS2HM", 8, 131072, 400, 0.434, 312.0, "ECSHM", FROSINONE),
    _cpu(19, "eCS3HM", 16, 262144, 800, 0.719, 518.0, "ECSHM", FROSINONE),
    _cpu(20, "eCS4HM", 32, 524288, 1500, 1.338, 963.0, "ECSHM", FROSINONE),
    _cpu(22, "eCS5HM", 32, 983040, 1500, 2.537, 1827.0, "ECSHM", FROSINONE),
)
# fmt: on


@dataclass(slots=True)
class Pricing:
    """What things cost, and how the bills behave."""

    billing_lag_s: float = 2 * 3600.0
    offline_discount: float = 100.0  # percent off the hourly price while a server is off
    snapshot_gb_hour: float = 0.001
    template_gb_hour: float = 0.002
    gpu_prices: dict[str, float] = field(default_factory=lambda: dict(GPU_PRICES))
