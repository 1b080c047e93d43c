"""Gauges read from the daemon's state when Prometheus scrapes, instead of set as things change.

A per-object gauge (a server's cores, a rule's verdict, a budget's spend) kept with `Gauge.set`
needs bookkeeping beside the state: every object that goes must have its series removed, or it is
exported for ever. Here the state is the only record:

- `Metrics` declares each such gauge as a `StateGauge`: name, help text and label names;
- the module that owns the state registers a reader, `metrics.read_from(self.series)`, in its
  constructor. A reader is a plain callable returning `(gauge, label values, value)` triples;
- at each scrape `StateCollector.collect()` calls every reader once and yields one
  `GaugeMetricFamily` per declared gauge with the samples the readers gave (none: the family is
  still described, as an unset labelled `Gauge` is).

A server, rule or scope that no longer exists is not in the state, so it has no series. Readers
are callables rather than imports, so this low layer knows none of the sources, policies or
notifiers above it. Scrapes run on the event loop, like every change to the state, so a reader
sees no half-made update; it walks its state once, as it is, unsorted: a scrape of 10,000 servers
costs one pass over them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Labels = tuple[str, ...]
"""A series' label values, in the order of its gauge's label names."""

Sample = tuple["StateGauge", Labels, float]
"""One series as a reader gives it: the gauge, its label values and its value."""

Reader = Callable[[], Iterable[Sample]]
"""Return the samples of the state one module owns, as they are now."""


# eq=False: a gauge is itself (hashed by identity), which keeps the per-sample lookup cheap.
@dataclass(frozen=True, slots=True, eq=False)
class StateGauge:
    """A gauge whose series are read from the daemon's state at each scrape."""

    name: str
    documentation: str
    labelnames: tuple[str, ...]


class StateCollector(Collector):
    """Yield the declared state gauges with the samples their readers give at scrape time."""

    def __init__(self) -> None:
        self._gauges: list[StateGauge] = []
        self._readers: list[Reader] = []

    @property
    def gauges(self) -> tuple[StateGauge, ...]:
        """Return the gauges declared, in declaration order."""
        return tuple(self._gauges)

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str]) -> StateGauge:
        """Declare a gauge read from state; return it for readers to name in their samples."""
        declared = StateGauge(name, documentation, tuple(labelnames))
        self._gauges.append(declared)
        return declared

    def read_from(self, reader: Reader) -> None:
        """Call `reader` at every scrape from now on (once per object that owns state)."""
        self._readers.append(reader)

    def describe(self) -> Iterator[Metric]:
        """Return the families without samples, so the registry can refuse a duplicate name."""
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """Return every declared gauge, with the series the readers give now."""
        families = self._families()
        for reader in self._readers:
            for gauge, labels, value in reader():
                families[gauge].add_metric(labels, value)
        return iter(families.values())

    def _families(self) -> dict[StateGauge, GaugeMetricFamily]:
        return {
            gauge: GaugeMetricFamily(gauge.name, gauge.documentation, labels=gauge.labelnames)
            for gauge in self._gauges
        }
