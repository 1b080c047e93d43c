"""Simulated time: real time times a speed factor, plus whatever tests add with advance."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class SimClock:
    """Simulated wall time; `speed=0` freezes it so that only `advance` moves it."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("simulator start time must be timezone-aware")
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._origin = time.monotonic()
        self._offset = 0.0

    @property
    def speed(self) -> float:
        """Return the speed factor."""
        return self._speed

    def now(self) -> datetime:
        """Return the simulated time."""
        elapsed = (time.monotonic() - self._origin) * self._speed + self._offset
        return self._start + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> datetime:
        """Move simulated time forward and return the new time."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._offset += seconds
        return self.now()
