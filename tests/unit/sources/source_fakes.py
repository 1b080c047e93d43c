"""Fake sources, a cursor store and a capturing logger for the scheduler tests."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture

from daemon.clock import FakeClock
from daemon.facts import Facts
from daemon.models import Event
from daemon.observability.metrics import Metrics
from daemon.sources.scheduler import SourceJob
from daemon.state.store import Cursor


class ScriptedSource:
    """A source whose polls follow a script: each step returns events or raises.

    A step is an exception to raise, or a callable run with the cursor that returns the events;
    once the script is used up, every poll returns one event numbered by the poll.
    """

    def __init__(self, name: str, script: list[Any] | None = None) -> None:
        self.name = name
        self.script = list(script or [])
        self.cursors: list[Cursor | None] = []

    @property
    def polls(self) -> int:
        """Return how many times poll was called."""
        return len(self.cursors)

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Follow the script."""
        self.cursors.append(cursor)
        count = int(cursor["count"]) if cursor else 0
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            await step(cursor)
        event = Event(
            type="test.polled",
            key=f"{self.name}:{count + 1}",
            time=FakeClock().now(),
            resource=self.name,
            source=self.name,
        )
        return [event], {"count": count + 1}


class HangingSource:
    """A source whose poll waits until released (or forever)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def poll(self, cursor: Cursor | None) -> tuple[list[Event], Cursor]:
        """Wait for the release."""
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return [], {"released": True}


@dataclass
class Rig:
    """Shared objects for jobs: a cursor store with a JSON round trip, facts, metrics, logs."""

    clock: FakeClock = field(default_factory=FakeClock)
    facts: Facts = field(default_factory=Facts)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    logs: LogCapture = field(default_factory=LogCapture)
    cursors: dict[str, str] = field(default_factory=dict)
    batches: list[tuple[str, list[Event], Cursor]] = field(default_factory=list)
    sink_error: Exception | None = None

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.registry)
        self.log = structlog.wrap_logger(
            None,
            processors=[self.logs],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )

    async def cursor_of(self, name: str) -> Cursor | None:
        """Return the stored cursor, as the store would."""
        text = self.cursors.get(name)
        return json.loads(text) if text is not None else None

    async def sink(self, name: str, events: list[Event], cursor: Cursor) -> None:
        """Store the batch, or fail like a store whose transaction rolled back."""
        if self.sink_error is not None:
            raise self.sink_error
        self.batches.append((name, events, cursor))
        self.cursors[name] = json.dumps(cursor)

    def job(self, source: Any, interval: float = 30.0, **options: Any) -> SourceJob:
        """Return a job for `source` on these shared objects."""
        options.setdefault("rng", random.Random(7))
        return SourceJob(
            source,
            interval=interval,
            cursor_of=self.cursor_of,
            sink=self.sink,
            facts=self.facts,
            metrics=self.metrics,
            clock=self.clock,
            log=self.log,
            **options,
        )

    def value(self, name: str, source: str) -> float | None:
        """Return a per-source sample's value."""
        return self.registry.get_sample_value(name, {"source": source})

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        """Return the captured log entries with this event name."""
        return [e for e in self.logs.entries if e["event"] == name]


def waiting_for(event: asyncio.Event) -> Callable[[Cursor | None], Any]:
    """Return a script step that waits for `event`."""

    async def step(cursor: Cursor | None) -> None:
        await event.wait()

    return step
