"""Resize windows as people write them, and the server selectors autoscale rules act on."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from daemon.facts import ServerFact
from daemon.rules.selector import ServerSelector
from daemon.rules.windows import ALWAYS, Window, Windows, parse_window

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    """Return a UTC time in the week of Monday 2 November 2026; day 0 is that Monday."""
    return datetime(2026, 11, 2 + day, hour, minute, tzinfo=UTC)


# --- parse_window ---------------------------------------------------------------------------


def test_a_day_range_and_an_overnight_range() -> None:
    window = parse_window("Mon-Fri 22:00-06:00")
    assert window == Window(frozenset({MON, TUE, WED, THU, FRI}), 22 * 60, 6 * 60)


def test_a_list_of_days() -> None:
    assert parse_window("Sat,Sun 00:00-24:00").days == frozenset({SAT, SUN})
    assert parse_window("Mon, Wed , Fri 09:00-17:00").days == frozenset({MON, WED, FRI})


def test_lists_mix_single_days_and_ranges() -> None:
    assert parse_window("Mon,Wed-Fri 09:00-10:00").days == frozenset({MON, WED, THU, FRI})


def test_a_day_range_wraps_over_the_week_end() -> None:
    assert parse_window("Fri-Mon 10:00-11:00").days == frozenset({FRI, SAT, SUN, MON})


def test_one_day() -> None:
    assert parse_window("Wed 9:30-10:00") == Window(frozenset({WED}), 9 * 60 + 30, 10 * 60)


def test_day_names_ignore_case_and_spaces() -> None:
    assert parse_window("  mon - FRI   08:00 - 18:00  ") == parse_window("Mon-Fri 08:00-18:00")


def test_24_00_is_the_end_of_the_day() -> None:
    assert parse_window("Mon-Sun 00:00-24:00").end_min == 24 * 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a window: ''"),
        ("Mon-Fri", "not a window"),
        ("22:00-06:00", "not a window"),
        ("Monday 10:00-12:00", "not a window"),
        ("Mon-Fri 10:00", "not a window"),
        ("Mon-Fri 10-12", 'write e.g. "Mon-Fri 22:00-06:00"'),
        ("Mun 10:00-12:00", "unknown day 'Mun' (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"),
        ("Mon-Fry 10:00-12:00", "unknown day 'Fry'"),
        ("Mon 25:00-26:00", "not a time of day: '25:00' (00:00 to 24:00)"),
        ("Mon 10:60-11:00", "not a time of day: '10:60'"),
        ("Mon 22:00-24:30", "not a time of day: '24:30'"),
        ("Mon 10:00-10:00", "window 'Mon 10:00-10:00' is empty: it starts and ends at 10:00"),
        ("Mon 00:00-0:00", "is empty"),
    ],
)
def test_bad_windows_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_window(text)


# --- Window.contains and Windows.open_at ----------------------------------------------------


def test_a_daytime_window_is_half_open() -> None:
    window = Windows((parse_window("Mon-Fri 09:00-17:00"),))
    assert not window.open_at(utc(MON, 8, 59))
    assert window.open_at(utc(MON, 9, 0))
    assert window.open_at(utc(FRI, 16, 59))
    assert not window.open_at(utc(FRI, 17, 0))
    assert not window.open_at(utc(SAT, 12, 0))


def test_an_overnight_window_belongs_to_the_day_it_starts() -> None:
    nights = Windows((parse_window("Mon-Fri 22:00-06:00"),))
    assert nights.open_at(utc(MON, 22, 0))
    assert nights.open_at(utc(TUE, 5, 59))  # Monday night
    assert not nights.open_at(utc(TUE, 6, 0))
    assert not nights.open_at(utc(TUE, 12, 0))
    assert nights.open_at(utc(FRI, 23, 30))
    assert nights.open_at(utc(SAT, 3, 0))  # Friday night, after midnight
    assert not nights.open_at(utc(SAT, 22, 30))  # Saturday night is not in it
    assert not nights.open_at(utc(MON, 3, 0))  # nor Sunday night
    assert not nights.open_at(utc(MON, 21, 59))


def test_a_whole_day_window_covers_up_to_midnight() -> None:
    weekend = Windows((parse_window("Sat,Sun 00:00-24:00"),))
    assert weekend.open_at(utc(SAT, 0, 0))
    assert weekend.open_at(utc(SUN, 23, 59))
    assert not weekend.open_at(utc(FRI, 23, 59))
    assert not weekend.open_at(datetime(2026, 11, 9, 0, 0, tzinfo=UTC))  # the next Monday


def test_any_of_several_windows_opens() -> None:
    windows = Windows((parse_window("Mon-Fri 22:00-06:00"), parse_window("Sat,Sun 00:00-24:00")))
    assert windows.open_at(utc(SAT, 14, 0))
    assert windows.open_at(utc(WED, 23, 0))
    assert not windows.open_at(utc(WED, 14, 0))


def test_no_windows_means_always_open() -> None:
    assert ALWAYS.open_at(utc(WED, 14, 0))
    assert Windows(()).open_at(utc(SUN, 3, 0))


def test_windows_are_read_in_their_time_zone() -> None:
    office = Windows((parse_window("Mon-Fri 09:00-17:00"),), ZoneInfo("Europe/Rome"))
    # In November Rome is UTC+1.
    assert not office.open_at(utc(MON, 7, 30))  # 08:30 in Rome
    assert office.open_at(utc(MON, 8, 0))  # 09:00 in Rome
    assert office.open_at(utc(MON, 15, 59))  # 16:59 in Rome
    assert not office.open_at(utc(MON, 16, 0))  # 17:00 in Rome
    # In July it is UTC+2.
    assert office.open_at(datetime(2026, 7, 6, 7, 0, tzinfo=UTC))  # Monday 09:00 in Rome


def test_the_day_is_the_local_day() -> None:
    # Friday 23:30 UTC is already Saturday 08:30 in Tokyo.
    weekdays = Windows((parse_window("Mon-Fri 00:00-24:00"),), ZoneInfo("Asia/Tokyo"))
    assert not weekdays.open_at(utc(FRI, 23, 30))
    assert weekdays.open_at(utc(SUN, 15, 30))  # Monday 00:30 in Tokyo


# --- ServerSelector -------------------------------------------------------------------------


def server(
    name: str = "web-1",
    *,
    group: str | None = None,
    notes: str | None = None,
    location: str | None = None,
    plan: str | None = None,
) -> ServerFact:
    return ServerFact(
        provider="glesys",
        name=name,
        id=f"id-{name}",
        observed_at=utc(MON, 12),
        plan=plan,
        cores=2,
        group=group,
        notes=notes,
        location=location,
    )


def test_an_empty_selector_matches_every_server() -> None:
    selector = ServerSelector.of({})
    assert selector.matches(server("anything"))
    assert selector.describe() == "all servers"


def test_a_name_glob() -> None:
    selector = ServerSelector.of({"name": "web-*"})
    assert selector.matches(server("web-1"))
    assert selector.matches(server("web-"))
    assert not selector.matches(server("db-1"))
    assert not selector.matches(server("Web-1"))  # globs are case-sensitive
    assert not selector.matches(server("my-web-1"))


def test_a_list_of_globs_matches_any_of_them() -> None:
    selector = ServerSelector.of({"name": ["web-*", "api-?"]})
    assert selector.matches(server("web-9"))
    assert selector.matches(server("api-2"))
    assert not selector.matches(server("api-22"))
    assert selector.describe() == "name=web-*|api-?"


def test_every_given_field_must_match() -> None:
    selector = ServerSelector.of({"name": "web-*", "group": "prod", "location": "dk-*"})
    assert selector.matches(server("web-1", group="prod", location="dk-fbg"))
    assert not selector.matches(server("web-1", group="staging", location="dk-fbg"))
    assert not selector.matches(server("web-1", group="prod", location="se-sto"))
    assert not selector.matches(server("db-1", group="prod", location="dk-fbg"))


def test_a_server_without_the_field_does_not_match() -> None:
    selector = ServerSelector.of({"notes": "web-*"})
    assert not selector.matches(server("web-1", notes=None))
    assert selector.matches(server("ec200001", notes="web-frontend"))


def test_none_fields_are_left_out() -> None:
    selector = ServerSelector.of({"name": None, "plan": "ECS*"})
    assert selector.globs == (("plan", ("ECS*",)),)
    assert selector.matches(server("db-1", plan="ECS4"))
    assert not selector.matches(server("db-1", plan="GPU1"))


def test_describe_lists_the_fields_in_a_fixed_order() -> None:
    selector = ServerSelector.of({"plan": "ECS*", "name": ["web-*", "api-*"], "group": "prod"})
    assert selector.describe() == "name=web-*|api-* group=prod plan=ECS*"


def test_a_plan_glob_matches_in_any_case() -> None:
    # The live API names a server's plan `ECS2` and the plan list `eCS2`: either spelling selects.
    selector = ServerSelector.of({"plan": ["eCS2*"]})
    listed = [server("a", plan="ECS2"), server("b", plan="eCS2W"), server("c", plan="ECS3")]
    assert [s.name for s in listed if selector.matches(s)] == ["a", "b"]
    assert not ServerSelector.of({"name": ["A"]}).matches(listed[0])  # names keep their case
