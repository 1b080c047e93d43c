"""A fake clock that carries an in-process simulator along: the demo's and the tests' time."""

from __future__ import annotations

from daemon.clock import FakeClock
from daemon.simulator.http import Simulation


class LinkedClock(FakeClock):
    """A fake clock that moves the in-process simulator's time with its own.

    Whatever waits on it (the guard polling a snapshot, the demo stepping) moves the simulated
    cloud by the same amount, so waits end as the cloud's actions do, without real time.
    """

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim.world.now)
        self._sim = sim

    def advance(self, seconds: float) -> None:
        """Move this clock and the simulator forward together."""
        super().advance(seconds)
        # The world is looked up each time: /_sim/scenario may have replaced it.
        world = self._sim.world
        world.clock.advance(seconds)
        world.sync()
