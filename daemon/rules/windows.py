"""Resize windows as people write them: "Mon-Fri 22:00-06:00", "Sat,Sun 00:00-24:00"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"^\s*(?P<days>[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?(?:\s*,\s*[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?)*)"
    r"\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)


@dataclass(frozen=True, slots=True)
class Window:
    """Days of the week (0 = Monday) and a time range; a range that ends before it starts wraps."""

    days: frozenset[int]
    start_min: int
    end_min: int

    def contains(self, local: datetime) -> bool:
        """Return whether a local time falls in the window."""
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start_min < self.end_min:
            return day in self.days and self.start_min <= minute < self.end_min
        # Overnight: the part after midnight belongs to the day the window started.
        if day in self.days and minute >= self.start_min:
            return True
        return (day - 1) % 7 in self.days and minute < self.end_min


def _day(text: str) -> int:
    try:
        return _DAYS.index(text.strip().lower())
    except ValueError:
        raise ValueError(
            f"unknown day {text.strip()!r} (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"
        ) from None


def _minutes(text: str) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"not a time of day: {text!r} (00:00 to 24:00)")
    return hours * 60 + minutes


def parse_window(text: str) -> Window:
    """Return the window a string like "Mon-Fri 22:00-06:00" describes, or raise ValueError."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f'not a window: {text!r} (write e.g. "Mon-Fri 22:00-06:00")')
    days: set[int] = set()
    for part in match.group("days").split(","):
        first, _, last = part.partition("-")
        lo = _day(first)
        hi = _day(last) if last else lo
        days.update((lo + offset) % 7 for offset in range((hi - lo) % 7 + 1))
    start, end = _minutes(match.group("start")), _minutes(match.group("end"))
    if start == end:
        raise ValueError(f"window {text!r} is empty: it starts and ends at {match.group('start')}")
    return Window(frozenset(days), start, end)


UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Windows:
    """When resizes may happen: any of the windows, read in one time zone."""

    windows: tuple[Window, ...]
    zone: ZoneInfo = UTC_ZONE

    def open_at(self, when: datetime) -> bool:
        """Return whether `when` falls in one of the windows (always, when there are none)."""
        if not self.windows:
            return True
        local = when.astimezone(self.zone)
        return any(window.contains(local) for window in self.windows)


ALWAYS = Windows(())
