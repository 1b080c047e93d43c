"""The timestamp spellings the provider APIs use, each where the docs show it."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_micro(t: datetime | None) -> str | None:
    """Return `2024-10-19T15:08:55.887799+00:00` (actions, billing, k8sgpu)."""
    return None if t is None else t.astimezone(UTC).isoformat(timespec="microseconds")


def iso_zulu(t: datetime | None) -> str | None:
    """Return `2025-01-17T08:35:42.521Z` (logs, snapshots)."""
    if t is None:
        return None
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def naive_seconds(t: datetime) -> str:
    """Return `2024-10-17 08:25:58`, UTC without a zone (metrics, server dates)."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso_seconds(t: datetime) -> str:
    """Return `2019-04-16T13:37:41+00:00` (images, templates)."""
    return t.astimezone(UTC).isoformat(timespec="seconds")


def naive_micro(t: datetime) -> str:
    """Return `2024-11-21 13:03:54.736403`, UTC without a zone (the k8sgpu login's `expire`)."""
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
