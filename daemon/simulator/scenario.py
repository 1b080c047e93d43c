"""Scenario files: the initial world plus a timeline of what happens when.

A scenario is YAML. Times in the timeline (`at`) and ages in the history (`ago`) are durations
relative to the scenario's start. Errors name the file, the line where it can be found, and the
field, so a typo in a scenario is as easy to fix as a typo in a rule file.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from daemon.durations import Seconds
from daemon.simulator.clock import SimClock
from daemon.simulator.demand import Constant, Demand, Trace
from daemon.simulator.entities import DEFAULT_PLANS, GPU_PRICES, Plan, Pricing, SimError
from daemon.simulator.faults import FaultRequest
from daemon.simulator.world import World


class FaultSink(Protocol):
    """Where the timeline's fault windows go (the simulation's fault board)."""

    def add_window(self, spec: FaultRequest, now: datetime) -> None:
        """Open a fault window at `now`."""


class ScenarioError(ValueError):
    """A scenario file that cannot be loaded; the message names file, line and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PlanSpec(_Model):
    """A plan, when a scenario wants other plans than the defaults."""

    id: int
    name: str
    cpu: int = Field(gt=0)
    ram: int = Field(gt=0)
    disk: int = Field(gt=0)
    hourly_price: float = Field(ge=0)
    monthly_price: float | None = Field(ge=0)  # null: the list gives the plan no monthly price
    gpu: int = 0
    gpu_label: str | None = None
    host_type: str = "ECS"
    windows: bool = False
    available: bool = True
    regions: tuple[str, ...] = ("it-mi2", "it-fr2", "ch-lug1")
    listed: bool = True  # false: a retired plan old servers still run, absent from the list


class ServerSpec(_Model):
    """A Seeweb server present at the start."""

    name: str | None = None
    plan: str
    location: str = "it-fr2"
    notes: str = ""
    group: str | None = None
    os: str = "debian-12"
    running: bool = True
    api_version: str = "v5"
    age_s: Seconds = Field(default=30 * 86400.0, alias="age")
    demand: Demand = Field(default_factory=lambda: Constant(cores=0.2))


class GeneratedServers(_Model):
    """Many look-alike servers, for scale tests and benchmarks."""

    count: int = Field(ge=0, le=100_000)
    plan: str = "ECS2"
    notes: str = "generated"
    group: str | None = None
    demand: Demand = Field(default_factory=lambda: Constant(cores=0.5))


class GlesysSpec(_Model):
    """A Glesys server present at the start."""

    serverid: str
    hostname: str
    cpucores: int = Field(ge=1, le=32)
    memorysize: int = 4096
    disksize: int = 40
    datacenter: str = "Falkenberg"
    platform: Literal["KVM", "VMware"] = "KVM"
    demand: Demand = Field(default_factory=lambda: Constant(cores=0.2))


class ClusterSpec(_Model):
    """A Serverless GPU tenant."""

    name: str
    label: str


class PodSpec(_Model):
    """A GPU pod running at the start."""

    cluster: str
    runtime_class: str = "seeweb-nvidia-1xl4"
    name: str | None = None
    age_s: Seconds = Field(default=3600.0, alias="age")


class ActionSpec(_Model):
    """An action in the history, or one the timeline starts."""

    resource: str
    type: str
    outcome: Literal["completed", "failed", "error"] = "completed"
    duration_s: Seconds = Field(default=60.0, alias="duration", ge=0)
    resource_type: str = "ECS"
    user: str | None = None
    ago_s: Seconds = Field(default=0.0, alias="ago", ge=0)


class LogSpec(_Model):
    """An audit log line in the history, or one the timeline writes."""

    action: str
    status: str = "success"
    actor: str | None = None
    target_type: str = "User"
    target: str | None = None
    ip_address: str | None = "127.0.0.1"
    severity: str = "info"
    description: str | None = None
    url: str | None = None
    ago_s: Seconds = Field(default=0.0, alias="ago", ge=0)


class DemandChange(_Model):
    """A new demand for one server: a constant number of cores or a model."""

    server: str
    cores: float | None = Field(default=None, ge=0)
    model: Demand | None = None


class PodStart(_Model):
    """A pod that starts during the run."""

    cluster: str
    runtime_class: str = "seeweb-nvidia-1xl4"
    name: str | None = None


class PodEnd(_Model):
    """A pod (by uuid or remote name) that ends during the run, failed or not."""

    pod: str
    failed: bool = True


class TimelineEntry(_Model):
    """Something that happens `at` a time after the start; exactly one field besides `at`."""

    at_s: Seconds = Field(alias="at", ge=0)
    action: ActionSpec | None = None
    log: LogSpec | None = None
    demand: DemandChange | None = None
    pod_start: PodStart | None = None
    pod_end: PodEnd | None = None
    fault: FaultRequest | None = None

    @model_validator(mode="after")
    def _one_thing(self) -> TimelineEntry:
        self.what()
        return self

    def what(self) -> tuple[str, Any]:
        """Return the one thing this entry does, by field name."""
        fields = ("action", "log", "demand", "pod_start", "pod_end", "fault")
        given = [(name, getattr(self, name)) for name in fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"needs exactly one of {', '.join(fields)}")
        return given[0]


class PricingSpec(_Model):
    """Prices and the billing lag."""

    billing_lag_s: Seconds = Field(default=7200.0, alias="billing_lag", ge=0)
    offline_discount: float = Field(default=100.0, ge=0, le=100)
    snapshot_gb_hour: float = Field(default=0.001, ge=0)
    template_gb_hour: float = Field(default=0.002, ge=0)
    gpu_prices: dict[str, float] = Field(default_factory=lambda: dict(GPU_PRICES))


class Scenario(_Model):
    """A whole scenario file."""

    name: str = "unnamed"
    description: str = ""
    seed: int = 1
    start: datetime | None = None
    failure_status: Literal["failed", "error"] = "failed"
    metrics_step_s: Seconds | None = Field(default=None, alias="metrics_step", gt=0)
    glesys_reboot_s: Seconds = Field(default=60.0, alias="glesys_reboot", ge=0)
    pricing: PricingSpec = Field(default_factory=PricingSpec)
    plans: list[PlanSpec] | None = None
    servers: list[ServerSpec] = Field(default_factory=list)
    generate: GeneratedServers | None = None
    glesys: list[GlesysSpec] = Field(default_factory=list)
    clusters: list[ClusterSpec] = Field(default_factory=list)
    pods: list[PodSpec] = Field(default_factory=list)
    history: list[ActionSpec] = Field(default_factory=list)
    logs: list[LogSpec] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)


# -- loading ---------------------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """A safe loader that records the line of every mapping and sequence item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip_lines(v) for k, v in data.items() if k != "__lines__"}
    if isinstance(data, list):
        return [_strip_lines(v) for v in data]
    return data


def _line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    """Return the line of the deepest key along `loc` that the YAML recorded."""
    line = None
    node = data
    for part in loc:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(str(part), line)
            node = node.get(str(part))
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            if isinstance(node, dict) and node.get("__lines__"):
                line = min(node["__lines__"].values())
        else:
            break
    return line


def _reject_aliases(text: str, source: str) -> None:
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
            line = token.start_mark.line + 1
            raise ScenarioError(f"{source}:{line}: anchors and aliases are not allowed")


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate scenario YAML; raise ScenarioError naming file, line and field."""
    if len(text) > 4 * 1024 * 1024:
        raise ScenarioError(f"{source}: larger than 4 MiB")
    try:
        _reject_aliases(text, source)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(f"{source}{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}:1: a scenario is a mapping of fields")
    try:
        return Scenario.model_validate(_strip_lines(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        line = _line_of(data, loc)
        field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        where = f":{line}" if line else ""
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ScenarioError(f"{source}{where}: {field}: {first['msg']}{more}") from None


def load_scenario_file(path: Path) -> Scenario:
    """Read a scenario file, or one of the shipped scenarios by its name."""
    if not path.exists() and path.suffix == "" and str(path) in shipped_scenarios():
        path = Path(str(resources.files("daemon.simulator") / "scenarios" / f"{path}.yaml"))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    scenario = parse_scenario(text, str(path))
    try:
        return _resolve_traces(scenario, path.parent)
    except OSError as exc:
        reason = f"cannot read {exc.filename}: {exc.strerror}"
        raise ScenarioError(f"{path}: demand trace: {reason}") from None
    except ValueError as exc:
        raise ScenarioError(f"{path}: demand trace: {exc}") from None


def load_shipped_scenario(name: str) -> Scenario:
    """Read a shipped scenario by its name, whatever files the working directory holds."""
    if name not in shipped_scenarios():
        raise ScenarioError(f"{name}: no shipped scenario has this name")
    return load_scenario_file(
        Path(str(resources.files("daemon.simulator") / "scenarios" / f"{name}.yaml"))
    )


def shipped_scenarios() -> list[str]:
    """Return the names of the scenarios shipped with the package."""
    folder = resources.files("daemon.simulator") / "scenarios"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def _resolve_traces(scenario: Scenario, base: Path) -> Scenario:
    def load(demand: Demand) -> Demand:
        return demand.loaded(base) if isinstance(demand, Trace) else demand

    for server in scenario.servers:
        server.demand = load(server.demand)
    for glesys in scenario.glesys:
        glesys.demand = load(glesys.demand)
    for entry in scenario.timeline:
        if entry.demand is not None and entry.demand.model is not None:
            entry.demand.model = load(entry.demand.model)
    return scenario


# -- building a world ------------------------------------------------------------------------------


def build_world(
    scenario: Scenario,
    *,
    speed: float,
    metrics_step_s: float | None = None,
    faults: FaultSink | None = None,
) -> World:
    """Create the world a scenario describes, with its timeline queued."""
    start = scenario.start or datetime.now(UTC).replace(microsecond=0)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    plans = (
        tuple(
            Plan(
                p.id,
                p.name,
                p.cpu,
                p.ram,
                p.disk,
                p.hourly_price,
                p.monthly_price,
                gpu=p.gpu,
                gpu_label=p.gpu_label,
                host_type=p.host_type,
                windows=p.windows,
                available=p.available,
                regions=p.regions,
                listed=p.listed,
            )
            for p in scenario.plans
        )
        if scenario.plans
        else DEFAULT_PLANS
    )
    p = scenario.pricing
    world = World(
        SimClock(start, speed),
        seed=scenario.seed,
        plans=plans,
        pricing=Pricing(
            billing_lag_s=p.billing_lag_s,
            offline_discount=p.offline_discount,
            snapshot_gb_hour=p.snapshot_gb_hour,
            template_gb_hour=p.template_gb_hour,
            gpu_prices=dict(p.gpu_prices),
        ),
        failure_status=scenario.failure_status,
        metrics_step_s=metrics_step_s or scenario.metrics_step_s or 300.0,
    )
    world.glesys_reboot_s = scenario.glesys_reboot_s
    try:
        _populate(world, scenario, start)
        _queue_timeline(world, scenario, start, faults)
    except SimError as exc:
        raise ScenarioError(f"scenario {scenario.name}: {exc.message}") from None
    return world


def _populate(world: World, scenario: Scenario, start: datetime) -> None:
    for spec in scenario.servers:
        world.add_server(
            name=spec.name,
            plan=spec.plan,
            location=spec.location,
            notes=spec.notes,
            group=spec.group,
            os=spec.os,
            running=spec.running,
            demand=spec.demand,
            created=start - timedelta(seconds=spec.age_s),
            api_version=spec.api_version,
        )
    if scenario.generate is not None:
        gen = scenario.generate
        for i in range(gen.count):
            world.add_server(
                plan=gen.plan,
                notes=f"{gen.notes}-{i}",
                group=gen.group,
                demand=gen.demand,
                created=start - timedelta(days=30),
            )
    for g in scenario.glesys:
        world.add_glesys_server(
            serverid=g.serverid,
            hostname=g.hostname,
            cpucores=g.cpucores,
            memorysize=g.memorysize,
            disksize=g.disksize,
            datacenter=g.datacenter,
            platform=g.platform,
            demand=g.demand,
            created=start - timedelta(days=30),
        )
    for c in scenario.clusters:
        world.add_cluster(c.name, c.label, created=start - timedelta(days=90))
    for pod in sorted(scenario.pods, key=lambda pod: -pod.age_s):
        world.start_pod(
            pod.cluster, pod.runtime_class, name=pod.name, at=start - timedelta(seconds=pod.age_s)
        )
    for a in sorted(scenario.history, key=lambda a: -a.ago_s):
        world.start_action(
            a.resource,
            a.type,
            duration_s=min(a.duration_s, a.ago_s),
            outcome=a.outcome,
            resource_type=a.resource_type,
            user=a.user,
            created=start - timedelta(seconds=a.ago_s),
        )
    for entry in sorted(scenario.logs, key=lambda e: -e.ago_s):
        world.add_log(**_log_fields(entry), created=start - timedelta(seconds=entry.ago_s))
    world.sync()


def _log_fields(spec: LogSpec) -> dict[str, Any]:
    return spec.model_dump(exclude={"ago_s"})


def _queue_timeline(
    world: World, scenario: Scenario, start: datetime, faults: FaultSink | None
) -> None:
    for entry in scenario.timeline:
        kind, spec = entry.what()
        when = start + timedelta(seconds=entry.at_s)
        world.at(when, _timeline_effect(world, kind, spec, faults))


def _timeline_effect(
    world: World, kind: str, spec: Any, faults: FaultSink | None
) -> Callable[[datetime], None]:
    def run(t: datetime) -> None:
        try:
            if kind == "action":
                world.start_action(
                    spec.resource,
                    spec.type,
                    duration_s=spec.duration_s,
                    outcome=spec.outcome,
                    resource_type=spec.resource_type,
                    user=spec.user,
                    created=t,
                )
            elif kind == "log":
                world.add_log(**_log_fields(spec), created=t)
            elif kind == "demand":
                model = spec.model if spec.model is not None else Constant(cores=spec.cores or 0.0)
                world.set_demand(spec.server, model)
            elif kind == "pod_start":
                world.start_pod(spec.cluster, spec.runtime_class, name=spec.name, at=t)
            elif kind == "pod_end":
                world.end_pod(world.pod(spec.pod), t, failed=spec.failed)
            elif kind == "fault" and faults is not None:
                faults.add_window(spec, t)
        except SimError as exc:
            world.timeline_errors.append(f"{kind} at {t.isoformat()}: {exc.message}")

    return run
