"""Typed, frozen records parsed leniently from the provider APIs' JSON.

The docs and the live APIs disagree on details: numbers arrive as strings ("12", "0.00"), times
with or without a zone (a naive time is UTC), "" stands for "no value", and spellings of one status
vary. The annotated types below absorb that once, at the boundary, so the rest of the daemon sees
one normalized shape. Unknown fields are ignored; missing optional ones become None or a default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, TypeVar

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    WrapValidator,
)

# --- lenient scalar types ------------------------------------------------------------------------


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _to_datetime(value: object) -> datetime | None:
    if _blank(value):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"invalid datetime {value!r}")
        parsed = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            # Python 3.11 reads "2024-10-17 08:25:58", "...+00:00" and "...521Z" alike.
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"invalid datetime {value!r}") from None
    else:
        raise ValueError(f"invalid datetime {value!r}")
    if parsed.tzinfo is None:
        # The APIs write naive times in UTC (metrics, billing, k8sgpu login expiry).
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _to_required_datetime(value: object) -> datetime:
    parsed = _to_datetime(value)
    if parsed is None:
        raise ValueError(f"missing datetime {value!r}")
    return parsed


def _to_float(value: object) -> float | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise ValueError(f"invalid number {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"invalid number {value!r}") from None
    else:
        raise ValueError(f"invalid number {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"invalid number {value!r}")
    return number


def _to_required_float(value: object) -> float:
    number = _to_float(value)
    if number is None:
        raise ValueError(f"missing number {value!r}")
    return number


def _to_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = _to_float(value)
    except ValueError:
        raise ValueError(f"invalid integer {value!r}") from None
    if number is None:
        return None
    if not number.is_integer():
        raise ValueError(f"invalid integer {value!r}")
    return int(number)


def _to_required_int(value: object) -> int:
    number = _to_int(value)
    if number is None:
        raise ValueError(f"missing integer {value!r}")
    return number


def _to_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"invalid text {value!r}")


def _to_required_text(value: object) -> str:
    text = _to_text(value)
    if text is None:
        raise ValueError("missing text")
    return text


def _to_bool(value: object) -> bool | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    # Glesys answers "yes"/"no" where others send booleans.
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"invalid boolean {value!r}")


def _to_lower(value: object) -> str:
    return _to_required_text(value).strip().lower()


def _to_upper(value: object) -> str:
    return _to_required_text(value).strip().upper()


def _to_ref_id(value: object) -> object:
    """Read a reference given as an id or as the whole referenced object (`{"id": …}`)."""
    if isinstance(value, dict):
        return value.get("id")
    return value


Timestamp = Annotated[datetime | None, BeforeValidator(_to_datetime)]
RequiredTimestamp = Annotated[datetime, BeforeValidator(_to_required_datetime)]
Number = Annotated[float | None, BeforeValidator(_to_float)]
RequiredNumber = Annotated[float, BeforeValidator(_to_required_float)]
Integer = Annotated[int | None, BeforeValidator(_to_int)]
RequiredInteger = Annotated[int, BeforeValidator(_to_required_int)]
Text = Annotated[str | None, BeforeValidator(_to_text)]
RequiredText = Annotated[str, BeforeValidator(_to_required_text)]
Flag = Annotated[bool | None, BeforeValidator(_to_bool)]
LowerText = Annotated[str, BeforeValidator(_to_lower)]
UpperText = Annotated[str, BeforeValidator(_to_upper)]
# Pydantic runs before-validators last first: the object is unwrapped, then read as an integer.
RefId = Annotated[int | None, BeforeValidator(_to_int), BeforeValidator(_to_ref_id)]
"""An id that may arrive bare or as the whole object it names (the live API nests snapshots)."""


# --- lists whose items are parsed one by one -----------------------------------------------------

#: The validation context key under which `parse_record` collects the items it left out.
PROBLEMS = "problems"


@dataclass(frozen=True, slots=True)
class ItemProblem:
    """One item of a list answer that did not fit its record, and so was left out of the list.

    `field` is the path's template (`server[].plan_size.core`), the same for every item of that
    list, so that it can label a metric; `item` names the one left out (its id or name).
    """

    field: str
    item: str
    message: str


_IDENTITY_KEYS = ("name", "id", "serverid", "uuid", "snapshot", "hostname")


def _identity(item: object, index: int) -> str:
    """Return what names a list item in a log line: its name or id, else its position."""
    if isinstance(item, dict):
        for key in _IDENTITY_KEYS:
            value = item.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)[:80]
    return f"#{index}"


def _keep_good_items(
    value: Any, handler: Any, info: ValidationInfo, *, key: str | None = None
) -> Any:
    """Validate a list; when items fail, drop them, report each, and validate the rest again.

    Without a problem list in the validation context the list is strict, as any other field.
    """
    try:
        return handler(value)
    except ValidationError as exc:
        sink = info.context.get(PROBLEMS) if isinstance(info.context, dict) else None
        if not isinstance(sink, list) or not isinstance(value, list | tuple):
            raise
        bad: dict[int, Any] = {}
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            if not loc or not isinstance(loc[0], int):
                raise  # the list itself is wrong, not one of its items
            bad.setdefault(loc[0], error)
        name = key if key is not None else "" if info.field_name == "root" else info.field_name
        for index, error in sorted(bad.items()):
            inner = field_path(tuple(error["loc"])[1:])
            where = f"{name or ''}[]" + ("" if inner == "body" else f".{inner}")
            sink.append(ItemProblem(where, _identity(value[index], index), _message(error)))
        # Validating the good items again repeats what their own nested lists reported.
        mark = len(sink)
        kept = handler([item for index, item in enumerate(value) if index not in bad])
        del sink[mark:]
        return kept


def each_item(key: str | None = None) -> WrapValidator:
    """Return the annotation that reads a list item by item: a bad item is left out, reported.

    `key` is the list's name in the answer, where the record names the field otherwise.
    """
    return WrapValidator(partial(_keep_good_items, key=key))


def _message(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] == "value_error":
        return message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


EachItem = each_item()
"""Annotate a list field with this: one bad item is left out and reported, not fatal."""

ItemT = TypeVar("ItemT")


class PageItems(list[ItemT]):
    """The items read from one page of a listing, and what the page itself said.

    Unreadable items are left out, so `listed` can exceed `len()`: paging must go by `listed`,
    or a page with a bad item would look like the last one. `ids` are the page's ids in its order,
    unreadable items included (None where an item's id could not be read), so positions in the
    listing stay exact; `total` is how many items the whole listing held, when the answer says.
    """

    def __init__(
        self,
        items: Iterable[ItemT] = (),
        listed: int | None = None,
        *,
        ids: Iterable[int | None] | None = None,
        total: int | None = None,
    ) -> None:
        super().__init__(items)
        self.listed = len(self) if listed is None else max(listed, len(self))
        self.ids: tuple[int | None, ...] = (
            tuple(ids) if ids is not None else tuple(getattr(item, "id", None) for item in self)
        )
        self.total = total


def raw_ids(items: object) -> tuple[int | None, ...]:
    """Return the ids of a list of raw items, None where an id cannot be read."""
    if not isinstance(items, list):
        return ()
    found: list[int | None] = []
    for item in items:
        try:
            found.append(_to_int(item.get("id")) if isinstance(item, dict) else None)
        except ValueError:
            found.append(None)
    return tuple(found)


class Record(BaseModel):
    """A frozen API record that ignores fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


# --- ECS -----------------------------------------------------------------------------------------

ACTION_IN_PROGRESS = "in-progress"
ACTION_COMPLETED = "completed"


class Action(Record):
    """The state of an asynchronous request (create, power off, snapshot, ...)."""

    id: RequiredInteger
    status: LowerText
    user: Text = None
    created_at: Timestamp = None
    started_at: Timestamp = None
    completed_at: Timestamp = None
    resource: Text = None
    resource_type: Text = None
    type: Text = None
    progress: Integer = None

    @property
    def is_finished(self) -> bool:
        """Return whether the action has stopped, successfully or not."""
        return self.status != ACTION_IN_PROGRESS

    @property
    def is_failure(self) -> bool:
        """Return whether the action ended badly: anything but in-progress or completed."""
        return self.status not in (ACTION_IN_PROGRESS, ACTION_COMPLETED)


class LogEntry(Record):
    """One audit-log line: who did what, from where."""

    id: RequiredInteger
    actor: Text = None
    action: Text = None
    severity: Text = None
    status: Text = None
    target_type: Text = None
    target: Text = None
    created_at: Timestamp = None
    ip_address: Text = None
    user_agent: Text = None
    url: Text = None
    location: Text = None
    result_type: Text = None
    result: JsonValue = None
    description: Text = None
    extra_data: JsonValue = None


class Account(Record):
    """The account's identity and discount flags."""

    username: RequiredText
    email: Text = None
    reserved_available: Flag = None
    offline_available: Flag = None
    ecs_special_discount: Number = None
    ecshm_special_discount: Number = None
    ecsgpu_special_discount: Number = None


class PlanSize(Record):
    """The resources of a server's plan; the API sends the numbers as strings or numbers."""

    core: Integer = None
    ram: Integer = None
    disk: Integer = None
    gpu: Integer = None
    gpu_label: Text = None
    host_type: Text = None


class Server(Record):
    """A virtual server."""

    name: RequiredText
    ipv4: Text = None
    ipv6: Text = None
    group: Text = None
    plan: Text = None
    plan_size: PlanSize | None = None
    reserved_plans: tuple[JsonValue, ...] = ()
    is_reserved: Flag = None
    reserved_until: Timestamp = None
    support: JsonValue = None
    location: Text = None
    location_label: Text = None
    notes: Text = None
    # Creation answers with "os"; listings say "so".
    so: Text = Field(default=None, validation_alias=AliasChoices("so", "os"))
    so_label: Text = None
    creation_date: Timestamp = None
    deletion_date: Timestamp = None
    active_flag: Flag = None
    status: Text = None
    progress: Integer = None
    api_version: Text = None
    api_version_value: Integer = None
    user: Text = None
    virttype: Text = None
    # The live API nests the whole snapshot; only its id is kept.
    last_restored_snapshot: RefId = None

    @property
    def cores(self) -> int | None:
        """Return the plan's CPU cores, when the API told us."""
        return self.plan_size.core if self.plan_size is not None else None


class ServerStatus(Record):
    """A server's power state; `current_status` is upper case (RUNNING, SHUTOFF, ...)."""

    name: RequiredText
    current_status: UpperText


class MetricSample(Record):
    """One point of a metric series."""

    t: RequiredTimestamp
    value: RequiredNumber = Field(validation_alias=AliasChoices("y", "value"))


class ServerMetrics(Record):
    """A server's recent CPU, disk and network series (empty for v1 servers and eCSGPU8)."""

    resource: Text = None
    cpu: tuple[MetricSample, ...] = Field(default=(), validation_alias=AliasChoices("core", "cpu"))
    disk_reads: tuple[MetricSample, ...] = Field(
        default=(), validation_alias=AliasPath("disk", "reads")
    )
    disk_writes: tuple[MetricSample, ...] = Field(
        default=(), validation_alias=AliasPath("disk", "writes")
    )
    net_received: tuple[MetricSample, ...] = Field(
        default=(), validation_alias=AliasPath("network", "received")
    )
    net_transmitted: tuple[MetricSample, ...] = Field(
        default=(), validation_alias=AliasPath("network", "transmitted")
    )


class ServerCpu(Record):
    """A server's CPU series alone: the other series of the answer are not read."""

    cpu: tuple[MetricSample, ...] = Field(default=(), validation_alias=AliasChoices("core", "cpu"))


class Region(Record):
    """A datacenter."""

    location: RequiredText
    description: Text = None
    id: Integer = None


class Image(Record):
    """An operating-system image (public base or cloud image)."""

    id: Integer = None
    name: RequiredText
    creation_date: Timestamp = None
    active_flag: Flag = None
    status: Text = None
    uuid: Text = None
    description: Text = None
    notes: Text = None
    public: Flag = None
    cloud_image: Flag = None
    so_base: Text = None
    api_version: Text = None
    api_version_value: Integer = None
    version: Text = None
    required_disk: Integer = None
    deletion_date: Timestamp = None


class Template(Image):
    """A private image made from a server or a snapshot."""


class HostedServer(Record):
    """A server of ours that a host already runs (`/plans/availables`)."""

    name: RequiredText
    notes: Text = None


def _hosted(value: object) -> object:
    """Read a host's servers: `{name, notes}` objects live, bare names in older answers."""
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class HostAvailability(Record):
    """A physical host a plan can start on, and the servers of ours already on it."""

    host: RequiredText
    servers: Annotated[tuple[HostedServer, ...], BeforeValidator(_hosted), EachItem] = ()


class RegionAvailability(Record):
    """Where a plan can be activated right now."""

    region: RequiredText
    hosts: Annotated[tuple[HostAvailability, ...], EachItem] = ()


class Plan(Record):
    """A server plan with its size and prices."""

    id: Integer = None
    name: RequiredText
    cpu: RequiredInteger
    ram: Integer = None
    disk: Integer = None
    gpu: Integer = None
    gpu_label: Text = None
    hourly_price: Number = None
    # The live API spells it "montly_price"; the docs "monthly_price".
    monthly_price: Number = Field(
        default=None, validation_alias=AliasChoices("montly_price", "monthly_price")
    )
    windows: Flag = None
    host_type: Text = None
    available: Flag = None
    regions: Annotated[tuple[Region, ...], each_item("available_regions")] = Field(
        default=(), validation_alias=AliasChoices("available_regions", "regions")
    )
    os_availables: Annotated[tuple[Image, ...], EachItem] = ()
    region_availables: Annotated[tuple[RegionAvailability, ...], EachItem] = ()


class Snapshot(Record):
    """A point-in-time copy of a server."""

    id: RequiredInteger
    name: Text = None
    user: Text = None
    # The docs show an id; the live API nests the parent snapshot whole.
    snapshot_parent: RefId = None
    snapshot_parent_name: Text = None
    is_last_restored: Flag = None
    protected: Flag = None
    restoring: Flag = None
    source_server: Text = None
    status: Text = None
    status_label: Text = None
    uid: Text = None
    description: Text = None
    notes: Text = None
    active_flag: Flag = None
    size_on_disk: Integer = None
    created_at: Timestamp = None
    updated_at: Timestamp = None
    deleted_at: Timestamp = None
    api_version_value: Integer = None
    api_version: Text = None


class ReservedDiscount(Record):
    """A reserved-period discount applied to a server's bill."""

    reserved_plan: Integer = None
    reserved_hour: Number = None
    reserved_discount: Number = None
    reserved_price: Number = None
    reserved_reduction: Number = None
    reserved_start_date: Timestamp = None
    reserved_end_date: Timestamp = None


class BillSummary(Record):
    """How a server's monthly cost was made up."""

    online_hour: Number = None
    online_price: Number = None
    offline_hour: Number = None
    offline_discount: Number = None
    offline_price: Number = None
    offline_reduction: Number = None
    reserved_discounts: tuple[ReservedDiscount, ...] = ()
    original_cost: Number = None


class ServerBill(Record):
    """One server's consumption in a month."""

    plan: Text = None
    name: RequiredText
    group: Text = None
    notes: Text = None
    status: Text = None
    year: Integer = None
    month: Integer = None
    creation_date: Timestamp = None
    deletion_date: Timestamp = None
    billed_hours: Number = None
    cost: RequiredNumber
    summary: BillSummary | None = None


class TemplateBill(Record):
    """One template's storage consumption in a month."""

    cost: RequiredNumber
    name: RequiredText
    status: Text = None
    creation_date: Timestamp = None
    deletion_date: Timestamp = None
    notes: Text = None
    year: Integer = None
    month: Integer = None
    hours: Number = None
    size_on_disk: Integer = None


class SnapshotBill(Record):
    """One snapshot's storage consumption in a month."""

    snapshot: RequiredInteger
    snapshot_name: Text = None
    snapshot_status: Text = None
    snapshot_status_label: Text = None
    snapshot_description: Text = None
    snapshot_created_at: Timestamp = None
    snapshot_deleted_at: Timestamp = None
    size_on_disk: Integer = None
    hours: Number = None
    final_cost: RequiredNumber


class ServerBilling(Record):
    """The servers' bill for one month."""

    year: RequiredInteger
    month: RequiredInteger
    rows: tuple[ServerBill, ...] = ()

    @property
    def total_cost(self) -> float:
        """Return the month's cost over all servers."""
        return math.fsum(row.cost for row in self.rows)


class TemplateBilling(Record):
    """The templates' bill for one month."""

    year: RequiredInteger
    month: RequiredInteger
    rows: tuple[TemplateBill, ...] = ()

    @property
    def total_cost(self) -> float:
        """Return the month's cost over all templates."""
        return math.fsum(row.cost for row in self.rows)


class SnapshotBilling(Record):
    """The snapshots' bill for one month, with the total the API reports."""

    year: RequiredInteger
    month: RequiredInteger
    total_cost: RequiredNumber
    rows_count: Integer = None
    rows: tuple[SnapshotBill, ...] = Field(
        default=(), validation_alias=AliasChoices("snapshots", "rows")
    )


# --- k8sgpu --------------------------------------------------------------------------------------


class Cluster(Record):
    """A Serverless GPU tenant."""

    name: RequiredText
    label: Text = None
    customer: Text = None
    active: Flag = None
    created: Flag = None
    created_at: Timestamp = None


class GpuEvent(Record):
    """A pod lifecycle event (started, terminated, ...)."""

    id: RequiredInteger
    pod: Text = None
    cluster: Text = None
    uuid: Text = None
    user: Text = None
    date: Timestamp = None
    runtime_class: Text = None
    local_reference_namespace: Text = None
    local_reference_name: Text = None
    remote_reference_namespace: Text = None
    remote_reference_name: Text = None
    event_epoch: Integer = None
    event_type: Text = None


class Pod(Record):
    """A GPU pod offloaded to Seeweb."""

    uuid: RequiredText
    remote_reference_name: Text = None
    remote_reference_namespace: Text = None
    local_reference_name: Text = None
    local_reference_namespace: Text = None
    status: Text = None
    online: Flag = None
    active: Flag = None
    succeeded: Flag = None
    failed: Flag = None
    creation_date: Timestamp = None
    deactivated_from: Timestamp = None
    runtime_class: Text = None
    user: Text = None
    cluster: Text = None
    in_deletion: Flag = None


class GpuPodRef(Record):
    """The pod a GPU bill row is about."""

    cluster: Text = None
    online: Flag = None
    local_reference_name: Text = None
    local_reference_namespace: Text = None
    remote_reference_name: Text = None
    remote_reference_namespace: Text = None


class GpuPodBill(Record):
    """One pod's GPU consumption in a month."""

    pod: GpuPodRef | None = None
    cost: RequiredNumber
    online_hour: Number = None
    runtime_class: Text = None
    active: Flag = None


class GpuBill(Record):
    """The Serverless GPU bill for one month."""

    year: RequiredInteger
    month: RequiredInteger
    pods: tuple[GpuPodBill, ...] = ()

    @property
    def total_cost(self) -> float:
        """Return the month's cost over all pods."""
        return math.fsum(row.cost for row in self.pods)


# --- validation with readable errors -------------------------------------------------------------

RecordT = TypeVar("RecordT", bound=BaseModel)


class RecordError(ValueError):
    """A payload did not fit its record; the message is the field path and the problem."""


def field_path(loc: tuple[int | str, ...], root: str = "") -> str:
    """Render a pydantic error location as `actions[3].created_at`."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _describe(exc: ValidationError, root: str, show_input: bool) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    message = str(first["msg"])
    if first["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    else:
        message = message[:1].lower() + message[1:]
        if show_input and first["type"] != "missing":
            shown = repr(first.get("input"))
            message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field_path(tuple(first['loc']), root)}: {message}{more}"


def parse_record(
    kind: type[RecordT],
    data: Any,
    *,
    root: str = "",
    show_input: bool = True,
    problems: list[ItemProblem] | None = None,
) -> RecordT:
    """Validate `data` as `kind`, or raise RecordError naming the field path.

    With `problems`, items of `EachItem` lists that do not fit are left out and appended there;
    without it such a list is strict.
    """
    context = {PROBLEMS: problems} if problems is not None else None
    try:
        return kind.model_validate(data, context=context)
    except ValidationError as exc:
        raise RecordError(_describe(exc, root, show_input)) from None
