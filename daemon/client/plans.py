"""Seeweb's plan catalogue: plans by name whatever the case, grouped in the families they form.

The live plan list names plans `eCS1`…`eCS6` (Linux), `eCS2W`… (Windows), `eCS1HM`… (high
memory) and `ECS1GPU6`… (GPU, by card), while a server's record may spell its plan `ECS1`. A
recommendation must stay in the server's family: a Windows server needs a Windows plan, a CPU
server never gets a GPU plan, a GPU server keeps its kind of card, and the same memory class is
preferred when it has a plan big enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from daemon.client.records import Plan

MemoryClass = Literal["standard", "high"]

_GPU_HOST_PREFIXES = ("ECSGPU", "ECSAIA")


@dataclass(frozen=True, slots=True)
class PlanFamily:
    """What a server keeps when it changes plan: the OS licence and the kind of accelerator."""

    windows: bool
    accelerator: str | None
    """The GPU host type (`ECSGPU6`, `ECSAIA1`), or None for a CPU plan."""

    memory: MemoryClass

    def describe(self) -> str:
        """Return the family in words, e.g. `Windows, standard memory`."""
        words = ["Windows" if self.windows else "Linux"]
        if self.accelerator:
            words.append(f"{self.accelerator} accelerator")
        words.append("high memory" if self.memory == "high" else "standard memory")
        return ", ".join(words)


def family_of(plan: Plan) -> PlanFamily:
    """Return the family a plan belongs to, from its flags or, failing those, its name."""
    name = plan.name.strip().upper()
    host = (plan.host_type or "").strip().upper()
    windows = plan.windows if plan.windows is not None else name.endswith("W")
    accelerator: str | None = None
    if (plan.gpu or 0) > 0 or host.startswith(_GPU_HOST_PREFIXES):
        accelerator = host or (plan.gpu_label or "GPU")
    memory: MemoryClass = "high" if host == "ECSHM" or name.endswith("HM") else "standard"
    return PlanFamily(windows, accelerator, memory)


def same_kind(a: PlanFamily, b: PlanFamily) -> bool:
    """Return whether a server may move between the two families (memory class aside)."""
    return a.windows == b.windows and a.accelerator == b.accelerator


class PlanCatalogue:
    """The plans the account may use, looked up by name without regard to case.

    A catalogue never changes once built (the plan list is read again into a new one), so each
    plan's family and moves are worked out once: autoscale asks for every server on every poll.
    """

    def __init__(self, plans: Iterable[Plan] = ()) -> None:
        self._plans = tuple(plans)
        self._by_key = {_key(plan.name): plan for plan in self._plans}
        self._families = {id(plan): family_of(plan) for plan in self._plans}
        self._moves: dict[int, tuple[Plan, ...]] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def __iter__(self) -> Iterator[Plan]:
        return iter(self._plans)

    def __bool__(self) -> bool:
        return bool(self._plans)

    def get(self, name: str | None) -> Plan | None:
        """Return the plan called `name` in any case, or None."""
        if name is None:
            return None
        return self._by_key.get(_key(name))

    def hourly_price(self, name: str | None) -> float | None:
        """Return a plan's price per hour, if the plan and its price are known."""
        plan = self.get(name)
        return plan.hourly_price if plan is not None else None

    def family(self, plan: Plan) -> PlanFamily:
        """Return a plan's family (worked out once for the catalogue's own plans)."""
        known = self._families.get(id(plan))
        return known if known is not None else family_of(plan)

    def priced_family(self, plan: Plan) -> bool:
        """Return whether some plan a server on `plan` could be on carries a monthly price."""
        family = self.family(plan)
        return plan.monthly_price is not None or any(
            other.monthly_price is not None and same_kind(self.family(other), family)
            for other in self._plans
        )

    def moves(self, current: Plan) -> tuple[Plan, ...]:
        """Return the priced, available plans a server on `current` may move to, itself aside."""
        known = self._moves.get(id(current))
        if known is not None and id(current) in self._families:
            return known
        family = self.family(current)
        moves = tuple(
            plan
            for plan in self._plans
            if plan is not current
            and plan.monthly_price is not None
            and plan.available is not False
            and same_kind(self.family(plan), family)
            and (current.disk is None or (plan.disk or 0) >= current.disk)
        )
        if id(current) in self._families:
            self._moves[id(current)] = moves
        return moves

    def sizes(self, current: Plan) -> list[int]:
        """Return the core counts a server on `current` can have, its own included."""
        return sorted({plan.cpu for plan in self.moves(current)} | {current.cpu})

    def choose(self, current: Plan, cores: int) -> Plan | None:
        """Return the plan to recommend for `cores`: same family, the fewest cores, cheapest.

        Among plans with enough cores, those of the current memory class come first; only when
        none of them is big enough does another class qualify.
        """
        memory = self.family(current).memory
        if cores < current.cpu:
            # Scaling down: the smallest plan that still has `cores`, below the current size.
            candidates = [plan for plan in self.moves(current) if cores <= plan.cpu < current.cpu]
        else:
            candidates = [plan for plan in self.moves(current) if plan.cpu >= cores]
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda plan: (
                self.family(plan).memory != memory,
                plan.cpu,
                plan.monthly_price or 0.0,
                (plan.ram or 0),
            ),
        )


def _key(name: str) -> str:
    return name.strip().casefold()
