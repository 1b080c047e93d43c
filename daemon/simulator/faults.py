"""Faults injected through `/_sim/faults`: errors, throttling, latency, hangs and bad bodies."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.durations import Seconds


class FaultRequest(BaseModel):
    """The body of `POST /_sim/faults`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    path: str = ""
    status: int | None = Field(default=None, ge=400, le=599)
    rate: float = Field(default=1.0, ge=0, le=1)
    retry_after: int | str | None = None
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    truncate: bool = False
    pad_bytes: int = Field(default=0, ge=0, le=256 * 1024 * 1024)
    omit: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=50
    )
    garble: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=50
    )
    count: int | None = Field(default=None, ge=1)
    duration_s: Seconds | None = Field(default=None, alias="for", gt=0)
    expire_tokens: bool = False
    insert_actions_while_paging: int | None = Field(default=None, ge=0, le=1000)
    fail_actions: str | None = Field(default=None, min_length=1, max_length=100)
    outcome: Literal["failed", "error"] = "failed"

    @model_validator(mode="after")
    def _does_something(self) -> FaultRequest:
        effects = (
            self.status is not None,
            self.latency_ms > 0,
            self.truncate,
            self.pad_bytes > 0,
            bool(self.omit),
            bool(self.garble),
            self.expire_tokens,
            self.insert_actions_while_paging is not None,
            self.fail_actions is not None,
        )
        if not any(effects):
            raise ValueError(
                "a fault needs one of status, latency_ms, truncate, pad_bytes, omit, garble, "
                "expire_tokens, insert_actions_while_paging or fail_actions"
            )
        return self


@dataclass(slots=True)
class Fault:
    """One active fault on requests whose path starts with `path`."""

    id: int
    path: str
    status: int | None
    rate: float
    retry_after: int | str | None
    latency_ms: int
    truncate: bool
    pad_bytes: int
    omit: tuple[str, ...]
    garble: tuple[str, ...]
    count: int | None
    until: datetime | None

    def as_json(self) -> dict[str, Any]:
        """Return the fault as the control surface shows it."""
        data = asdict(self)
        data["until"] = self.until.isoformat() if self.until else None
        data["omit"] = list(self.omit)
        data["garble"] = list(self.garble)
        return data


@dataclass(slots=True)
class Applied:
    """What the fault board decided for one request."""

    latency_s: float = 0.0
    status: int | None = None
    retry_after: int | str | None = None
    truncate: bool = False
    pad_bytes: int = 0
    omit: frozenset[str] = frozenset()
    garble: frozenset[str] = frozenset()


class FaultBoard:
    """The active faults, the paging-insert setting and a way to release hung requests."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._ids = itertools.count(1)
        self.faults: list[Fault] = []
        self.paging_inserts = 0
        self.paging_inserts_left: int | None = None
        self._release = asyncio.Event()

    def add(self, request: FaultRequest, now: datetime) -> Fault | None:
        """Activate a fault; return it, or None for the token and paging settings alone."""
        if request.insert_actions_while_paging is not None:
            self.paging_inserts = request.insert_actions_while_paging
            self.paging_inserts_left = request.count
        if (
            request.status is None
            and not request.latency_ms
            and not request.truncate
            and not request.pad_bytes
            and not request.omit
            and not request.garble
        ):
            return None
        fault = Fault(
            id=next(self._ids),
            path=request.path,
            status=request.status,
            rate=request.rate,
            retry_after=request.retry_after,
            latency_ms=request.latency_ms,
            truncate=request.truncate,
            pad_bytes=request.pad_bytes,
            omit=tuple(dict.fromkeys(request.omit)),
            garble=tuple(dict.fromkeys(request.garble)),
            count=request.count,
            until=now + timedelta(seconds=request.duration_s) if request.duration_s else None,
        )
        self.faults.append(fault)
        return fault

    def add_window(self, spec: FaultRequest, now: datetime) -> None:
        """Open a fault window from a scenario's timeline."""
        self.add(spec, now)

    def clear(self) -> None:
        """Remove every fault and let hung requests finish."""
        self.faults.clear()
        self.paging_inserts = 0
        self.paging_inserts_left = None
        self._release.set()
        self._release = asyncio.Event()

    def decide(self, path: str, now: datetime) -> Applied:
        """Return what to do to a request for `path`, consuming one use of each fault applied."""
        applied = Applied()
        for fault in list(self.faults):
            if fault.until is not None and now >= fault.until:
                self.faults.remove(fault)
                continue
            if not path.startswith(fault.path) or self._rng.random() >= fault.rate:
                continue
            applied.latency_s += fault.latency_ms / 1000
            applied.truncate = applied.truncate or fault.truncate
            applied.pad_bytes = max(applied.pad_bytes, fault.pad_bytes)
            applied.omit |= frozenset(fault.omit)
            applied.garble |= frozenset(fault.garble)
            if fault.status is not None and applied.status is None:
                applied.status = fault.status
                applied.retry_after = fault.retry_after
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
        return applied

    def take_paging_inserts(self) -> int:
        """Return how many actions to insert after this page fetch."""
        if not self.paging_inserts:
            return 0
        if self.paging_inserts_left is not None:
            if self.paging_inserts_left <= 0:
                return 0
            self.paging_inserts_left -= 1
        return self.paging_inserts

    async def delay(self, seconds: float) -> None:
        """Wait like a slow server, but stop early when the faults are cleared."""
        release = self._release
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), timeout=seconds)
