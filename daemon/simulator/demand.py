"""CPU demand models: how many cores' worth of work a server has at a given time."""

from __future__ import annotations

import bisect
import csv
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.durations import Seconds


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Constant(_Model):
    """The same demand at all times."""

    kind: Literal["constant"] = "constant"
    cores: float = Field(ge=0)

    def at(self, t: datetime, origin: datetime) -> float:
        """Return the demand in cores."""
        return self.cores


class Step(_Model):
    """One demand until `at` (seconds after the world starts), another after it."""

    kind: Literal["step"] = "step"
    before: float = Field(ge=0)
    after: float = Field(ge=0)
    at_s: Seconds = Field(alias="at", ge=0)

    def at(self, t: datetime, origin: datetime) -> float:
        """Return the demand in cores."""
        return self.after if (t - origin).total_seconds() >= self.at_s else self.before


class Sine(_Model):
    """A daily (or any period) cycle around a base."""

    kind: Literal["sine"] = "sine"
    base: float = Field(ge=0)
    amplitude: float = Field(ge=0)
    period_s: Seconds = Field(alias="period", default=86400.0, gt=0)
    phase_s: Seconds = Field(alias="phase", default=0.0)

    def at(self, t: datetime, origin: datetime) -> float:
        """Return the demand in cores."""
        x = ((t - origin).total_seconds() + self.phase_s) / self.period_s
        return max(0.0, self.base + self.amplitude * math.sin(2 * math.pi * x))


class Spikes(_Model):
    """A base load with a spike of `peak` cores lasting `duration` every `every`."""

    kind: Literal["spikes"] = "spikes"
    base: float = Field(ge=0)
    peak: float = Field(ge=0)
    every_s: Seconds = Field(alias="every", gt=0)
    duration_s: Seconds = Field(alias="duration", gt=0)

    def at(self, t: datetime, origin: datetime) -> float:
        """Return the demand in cores."""
        into = (t - origin).total_seconds() % self.every_s
        return self.peak if into < self.duration_s else self.base


class Trace(_Model):
    """Demand replayed from a CSV file with one `cores` value per `step`, looping."""

    kind: Literal["trace"] = "trace"
    path: Path
    column: str = "cores"
    step_s: Seconds = Field(alias="step", default=300.0, gt=0)
    values: tuple[float, ...] = ()

    def loaded(self, base_dir: Path) -> Trace:
        """Return a copy with the CSV's values read, the path resolved against base_dir."""
        path = self.path if self.path.is_absolute() else base_dir / self.path
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or self.column not in rows[0]:
            raise ValueError(f"trace {path}: no column {self.column!r}")
        values: list[float] = []
        for number, row in enumerate(rows, start=2):
            try:
                values.append(max(0.0, float(row[self.column])))
            except ValueError:
                raise ValueError(
                    f"trace {path}:{number}: {self.column}: not a number: {row[self.column]!r}"
                ) from None
        return self.model_copy(update={"path": path, "values": tuple(values)})

    def at(self, t: datetime, origin: datetime) -> float:
        """Return the demand in cores."""
        if not self.values:
            return 0.0
        index = int((t - origin).total_seconds() // self.step_s)
        return self.values[index % len(self.values)]


Demand = Annotated[Constant | Step | Sine | Spikes | Trace, Field(discriminator="kind")]


class DemandHistory:
    """The demand models a server has had, each from the time it was set, so past samples stay."""

    def __init__(self, initial: Demand) -> None:
        self._since: list[datetime] = []
        self._models: list[Demand] = [initial]

    @property
    def current(self) -> Demand:
        """Return the model in effect now."""
        return self._models[-1]

    def set(self, since: datetime, model: Demand) -> None:
        """Use `model` from `since` on (times only move forward)."""
        self._since.append(since)
        self._models.append(model)

    def at(self, t: datetime, origin: datetime, *, before: bool = False) -> float:
        """Return the demand in cores at time t; `before` ignores a change made at t itself."""
        find = bisect.bisect_left if before else bisect.bisect_right
        return self._models[find(self._since, t)].at(t, origin)
