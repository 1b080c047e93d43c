"""Property tests for the lenient record parsers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from daemon.client.records import (
    Action,
    ItemProblem,
    LogEntry,
    MetricSample,
    Plan,
    PlanSize,
    Record,
    RecordError,
    Server,
    ServerMetrics,
    ServerStatus,
    parse_record,
)
from daemon.providers.seeweb.client import _ServerCreated


class _Logs(Record):
    logs: tuple[LogEntry, ...]


# Hypothesis wants naive bounds; `timezones=` makes the drawn values aware.
moments = st.datetimes(
    min_value=datetime(1990, 1, 1),  # noqa: DTZ001
    max_value=datetime(2090, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


def int_spellings(n: int) -> st.SearchStrategy[Any]:
    return st.sampled_from([n, str(n), f"{n}.0", f" {n} ", float(n)])


@st.composite
def random_case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    cased = "".join(c.upper() if up else c.lower() for c, up in zip(word, flips, strict=True))
    return draw(st.sampled_from(["", " "])) + cased + draw(st.sampled_from(["", " ", "\n"]))


@given(n=st.integers(-(10**9), 10**9), data=st.data())
def test_integers_arrive_as_numbers_or_strings(n: int, data: st.DataObject) -> None:
    size = PlanSize.model_validate({"core": data.draw(int_spellings(n)), "ram": str(n)})
    plan = Plan.model_validate({"name": "ECS1", "cpu": data.draw(int_spellings(n))})
    assert (size.core, size.ram, plan.cpu) == (n, n, n)
    assert type(plan.cpu) is int


@given(value=st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_metric_values_arrive_as_strings(value: float) -> None:
    for spelled in (value, repr(value), f"{value:.2f}"):
        sample = MetricSample.model_validate({"t": "2024-10-17 08:25:58", "y": spelled})
        assert sample.value == float(spelled)


@given(moment=moments, hours=st.integers(-12, 14))
def test_timestamps_with_or_without_zone_are_the_same_instant(moment: datetime, hours: int) -> None:
    whole = moment.replace(microsecond=0)
    millis = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    spellings = {
        whole.strftime("%Y-%m-%d %H:%M:%S"): whole,  # no zone: UTC
        moment.isoformat(): moment,  # +00:00
        millis.isoformat(timespec="milliseconds").replace("+00:00", "Z"): millis,
        moment.astimezone(timezone(timedelta(hours=hours))).isoformat(): moment,
        int(whole.timestamp()): whole,  # epoch seconds
    }
    for spelled, expected in spellings.items():
        action = Action.model_validate({"id": 1, "status": "completed", "created_at": spelled})
        assert action.created_at == expected
        assert action.created_at is not None and action.created_at.utcoffset() == timedelta(0)


@given(blank=st.sampled_from(["", " ", None]))
def test_blank_timestamps_are_none(blank: str | None) -> None:
    action = Action.model_validate({"id": 1, "status": "in-progress", "started_at": blank})
    assert action.started_at is None
    assert action.completed_at is None  # missing entirely


def _is_iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


@given(text=st.text(min_size=1, max_size=20).filter(lambda t: t.strip() and not _is_iso(t)))
def test_unreadable_timestamps_name_the_field(text: str) -> None:
    with pytest.raises(RecordError, match=r"^logs\[0\]\.created_at: invalid datetime"):
        parse_record(_Logs, {"logs": [{"id": 1, "created_at": text}]})


@given(data=st.data(), word=st.sampled_from(["running", "shutoff", "paused", "booted"]))
def test_server_status_spellings_are_upper_case(data: st.DataObject, word: str) -> None:
    spelled = data.draw(random_case(word))
    status = ServerStatus.model_validate({"name": "ec200001", "current_status": spelled})
    assert status.current_status == word.upper()


@given(
    data=st.data(),
    word=st.sampled_from(["in-progress", "completed", "failed", "error", "cancelled"])
    | st.text(min_size=1, max_size=12).filter(str.strip),
)
def test_anything_but_in_progress_or_completed_is_a_failure(data: st.DataObject, word: str) -> None:
    spelled = data.draw(random_case(word)) if word.isascii() else word
    action = Action.model_validate({"id": 7, "status": spelled})
    normalized = word.strip().lower()
    assert action.status == normalized
    assert action.is_finished == (normalized != "in-progress")
    assert action.is_failure == (normalized not in ("in-progress", "completed"))


@given(
    action_id=st.integers(1, 10**9),
    key=st.sampled_from(["action", "action_id"]),
    data=st.data(),
)
def test_server_creation_accepts_action_or_action_id(
    action_id: int, key: str, data: st.DataObject
) -> None:
    value = data.draw(st.sampled_from([action_id, str(action_id), {"id": action_id}]))
    created = _ServerCreated.model_validate(
        {"status": "ok", key: value, "server": {"name": "ec200001", "os": "debian-12"}}
    )
    assert created.action_id == action_id
    assert created.server.so == "debian-12"


@given(
    extra=st.dictionaries(
        st.text(min_size=1).filter(lambda k: k not in Server.model_fields), st.integers()
    )
)
def test_unknown_fields_are_ignored(extra: dict[str, int]) -> None:
    server = Server.model_validate({**extra, "name": "ec200001", "plan_size": {"core": "4"}})
    assert server.cores == 4


def test_missing_optional_fields_take_defaults() -> None:
    server = Server.model_validate({"name": "ec200001"})
    assert server.cores is None
    assert server.reserved_plans == ()
    metrics = ServerMetrics.model_validate({"resource": "ec200001"})
    assert metrics.cpu == () and metrics.net_transmitted == ()


def test_records_are_frozen() -> None:
    action = Action.model_validate({"id": 1, "status": "completed"})
    with pytest.raises(ValidationError):
        action.status = "failed"  # type: ignore[misc]


def test_metrics_nested_series_are_flattened() -> None:
    sample = [{"t": "2024-10-17 08:35:58", "y": "28.45"}]
    metrics = ServerMetrics.model_validate(
        {
            "resource": "ec000001",
            "core": sample,
            "disk": {"reads": sample, "writes": sample},
            "network": {"received": sample, "transmitted": sample},
        }
    )
    for series in (metrics.cpu, metrics.disk_reads, metrics.disk_writes, metrics.net_received):
        assert series[0].value == 28.45
        assert series[0].t == datetime(2024, 10, 17, 8, 35, 58, tzinfo=UTC)


# --- lists read item by item -----------------------------------------------------------------


def test_one_bad_item_is_left_out_and_reported_once_with_its_name() -> None:
    from daemon.providers.seeweb.client import _PlansPage

    good = {"name": "eCS1", "cpu": "1", "montly_price": 14.0}
    nested_bad = {
        "name": "eCS2",
        "cpu": "2",
        "available_regions": [{"location": "it-fr2"}, {"description": "no location"}],
    }
    problems: list[ItemProblem] = []
    page = parse_record(
        _PlansPage,
        {"plans": [good, {"name": "eCS3", "cpu": "four"}, nested_bad]},
        problems=problems,
    )
    assert [(p.name, p.monthly_price) for p in page.plans] == [("eCS1", 14.0), ("eCS2", None)]
    assert [r.location for r in page.plans[1].regions] == ["it-fr2"]
    # Each once, though the good items were validated twice.
    assert problems == [
        ItemProblem("available_regions[].location", "#1", "field required"),
        ItemProblem("plans[].cpu", "eCS3", "invalid integer 'four'"),
    ]


def test_without_a_problem_list_a_bad_item_fails_the_whole_answer() -> None:
    from daemon.providers.seeweb.client import _PlansPage

    with pytest.raises(RecordError, match=r"plans\[1\]\.cpu: invalid integer"):
        parse_record(_PlansPage, {"plans": [{"name": "a", "cpu": 1}, {"name": "b", "cpu": "x"}]})


def test_a_list_that_is_not_a_list_still_fails_the_answer() -> None:
    from daemon.providers.seeweb.client import _PlansPage

    with pytest.raises(RecordError, match="plans: input should be a valid tuple"):
        parse_record(_PlansPage, {"plans": "none"}, problems=[])


@pytest.mark.parametrize(
    "servers",
    [[{"name": "ec1", "notes": "web"}], ["ec1"], None],
    ids=["objects (live)", "names", "null"],
)
def test_hosts_list_their_servers_as_objects_names_or_nothing(servers: Any) -> None:
    from daemon.client.records import HostAvailability

    host = HostAvailability.model_validate({"host": "ecs1.host", "servers": servers})
    assert [s.name for s in host.servers] == ([] if servers is None else ["ec1"])


@pytest.mark.parametrize(
    "regions", [[["it-fr2", "it-mi2"]], ["it-fr2", "it-mi2"], [{"location": "it-fr2"}, "it-mi2"]]
)
def test_available_regions_come_nested_or_flat(regions: Any) -> None:
    from daemon.providers.seeweb.client import _AvailableRegions

    assert list(_AvailableRegions.model_validate({"regions": regions}).regions) == [
        "it-fr2",
        "it-mi2",
    ]


@pytest.mark.parametrize("parent", [107, "107", {"id": 107, "name": "SNP-2"}, None])
def test_a_snapshot_parent_is_an_id_or_the_whole_snapshot(parent: Any) -> None:
    from daemon.client.records import Snapshot

    snap = Snapshot.model_validate({"id": 108, "snapshot_parent": parent})
    assert snap.snapshot_parent == (None if parent is None else 107)


@pytest.mark.parametrize("key", ["montly_price", "monthly_price"])
def test_the_monthly_price_is_read_in_either_spelling(key: str) -> None:
    assert Plan.model_validate({"name": "eCS1", "cpu": "1", key: 14}).monthly_price == 14.0
