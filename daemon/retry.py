"""Waiting before trying again: the one back-off and the one Retry-After reader.

Provider calls, source polls and notification deliveries all back off the same way, and read a
receiver's or a provider's `Retry-After` the same way; each caller keeps its own first delay,
cap and limit on what a Retry-After may ask.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def backoff_delay(failures: int, *, first: float, cap: float, rng: random.Random) -> float:
    """Return the wait after `failures` failures in a row (1 or more).

    `first`, doubling with each failure, at most `cap`; drawn from the upper half of that
    ("equal jitter"), so waits still grow and callers that failed together do not retry
    together.
    """
    ceiling = min(cap, first * 2.0 ** min(max(failures, 1) - 1, 60))
    return ceiling * (0.5 + 0.5 * rng.random())


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Return the seconds a `Retry-After` header asks for: delta-seconds or an HTTP date.

    An HTTP date without a zone is read as UTC (RFC 9110 dates are GMT). None when the header is
    absent or unreadable; a date in the past asks for 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
