"""The JSON codec: what the store keeps comes back equal, of the same kind, at the same time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.models import Decision, Event, Mode
from daemon.state import StateError
from daemon.state.codec import (
    decode_decision,
    decode_event,
    decode_value,
    encode_decision,
    encode_event,
    encode_value,
    parse_utc,
    utc_text,
)

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# Hypothesis wants naive bounds; `timezones=` makes the drawn values aware.
moments = st.datetimes(
    min_value=datetime(1000, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.one_of(st.just(UTC), offsets),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    moments,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(
            st.one_of(st.text(), st.sampled_from(["$datetime", "$tuple", "$dict", "$x"])),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


def assert_same(expected: Any, actual: Any) -> None:
    """Equal, and of the same kind all the way down (True is not 1, a tuple is not a list)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        assert list(actual) == list(expected)
        for key, item in expected.items():
            assert_same(item, actual[key])
    elif isinstance(expected, list | tuple):
        assert type(actual) is type(expected)
        assert len(actual) == len(expected)
        for want, got in zip(expected, actual, strict=True):
            assert_same(want, got)
    elif isinstance(expected, datetime):
        assert isinstance(actual, datetime)
        assert (actual, actual.utcoffset()) == (expected, expected.utcoffset())
    else:
        assert type(actual) is type(expected)
        assert actual == expected


@given(value=values)
def test_free_form_values_round_trip(value: Any) -> None:
    assert_same(value, decode_value(encode_value(value)))


@given(a=moments, b=moments)
def test_utc_text_is_fixed_width_and_sorts_in_time_order(a: datetime, b: datetime) -> None:
    assert len(utc_text(a)) == len("2026-11-10T12:00:00.000000Z")
    assert (utc_text(a) < utc_text(b)) == (a < b)
    assert parse_utc(utc_text(a)) == a
    assert parse_utc(utc_text(a)).tzinfo is UTC


def test_utc_text_spelling() -> None:
    moment = datetime(2026, 11, 10, 13, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    assert utc_text(moment) == "2026-11-10T12:00:05.000000Z"


def test_tag_lookalikes_in_data_stay_data() -> None:
    data = {"$datetime": "2026-11-10T12:00:00+00:00"}
    assert encode_value(data) == '{"$dict":{"$datetime":"2026-11-10T12:00:00+00:00"}}'
    assert_same(data, decode_value(encode_value(data)))


def test_event_round_trips_with_its_offset_and_data() -> None:
    event = Event(
        type="seeweb.action.failed",
        key="seeweb.action:709:failed",
        time=datetime(2026, 11, 10, 14, 0, 1, 250, tzinfo=timezone(timedelta(hours=2))),
        resource="ec200001",
        data=MappingProxyType(
            {
                "id": 709,
                "type": "power_off",
                "progress": 0.5,
                "ok": False,
                "started": datetime(2026, 11, 10, 11, 59, tzinfo=UTC),
                "tags": ("a", "b"),
                "nested": {"list": [1, None, "x"]},
                "città": "Frosinone",
            }
        ),
        source="actions",
    )
    back = decode_event(encode_event(event))
    assert back == event
    assert back.time.utcoffset() == timedelta(hours=2)
    assert_same(dict(event.data), back.data)


def test_decision_round_trips_with_and_without_an_event() -> None:
    event = Event(
        "k8sgpu.pod.failed", "k8sgpu.pod:p1:failed", datetime(2026, 11, 10, tzinfo=UTC), "p1"
    )
    decision = Decision(
        key="gpu/0/k8sgpu.pod:p1:failed",
        rule="gpu",
        action="delete_pod",
        params={"cluster": "skg00018", "keep": 1},
        mode=Mode.DRY_RUN,
        event=event,
        time=datetime(2026, 11, 10, 0, 0, 3, tzinfo=UTC),
    )
    assert decode_decision(encode_decision(decision)) == decision
    bare = Decision("cap/1/2026-11", "cap", "alert", {}, Mode.ENFORCE, None, decision.time)
    assert decode_decision(encode_decision(bare)) == bare


def test_naive_times_are_refused_by_name() -> None:
    naive = datetime(2026, 11, 10, 12, 0)  # noqa: DTZ001
    event = Event("t", "k1", naive, "r")
    with pytest.raises(StateError, match=r"event 'k1' time: 2026-11-10T12:00:00 has no time zone"):
        encode_event(event)
    with pytest.raises(StateError, match=r"cursor\.since: .* has no time zone"):
        encode_value({"since": naive}, "cursor")
    with pytest.raises(StateError, match=r"now: .* has no time zone"):
        utc_text(naive, "now")


def test_values_json_cannot_hold_are_refused_by_path() -> None:
    decision = Decision(
        "r/0/k", "r", "webhook", {"headers": [{"x": {1, 2}}]}, Mode.ENFORCE, None, datetime.now(UTC)
    )
    with pytest.raises(
        StateError, match=r"decision 'r/0/k' params\.headers\[0\]\.x: cannot store a set"
    ):
        encode_decision(decision)
    with pytest.raises(StateError, match="data: key 1 is a int, not a string"):
        encode_value({1: "one"}, "data")
