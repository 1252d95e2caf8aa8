"""Prometheus metrics: one registry per process, shared by every stage in it.

Stages ask for a metric by name and get the existing one if it is already registered, so a
restarted stage (or two stages using the same counter) never trips prometheus-client's
duplicate check. Names and meanings are listed in ``docs/observability/field-dictionary.md``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xypipe._degrade import Level

M = TypeVar("M", Counter, Gauge, Histogram)

#: Latency buckets in seconds, dense where the spec's targets are (P95 < 120 ms, P99 < 180 ms).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.12, 0.15, 0.18,
    0.25, 0.5, 1.0, 2.5, 5.0,
)


class RateMeter(Collector):
    """A counter plus a ``<name>`` gauge of its per-second rate over the last ``window`` seconds.

    The spec asks for rates as metrics (``src_ingest_rate``, ``ws_msgs_rate``); Prometheus users
    will still prefer ``rate(<counter>_total[1m])``, so both are exported.
    """

    def __init__(self, name: str, doc: str, counter: Counter, window: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.doc = doc
        self.counter = counter
        self.window = window
        self._clock = clock
        self._buckets: collections.deque[list[float]] = collections.deque()

    def add(self, n: float = 1.0) -> None:
        self.counter.inc(n)
        now = self._clock()
        second = float(int(now))
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, n])
            while self._buckets and self._buckets[0][0] < second - self.window - 1:
                self._buckets.popleft()

    def rate(self) -> float:
        now = self._clock()
        start = now - self.window
        total = sum(n for t, n in self._buckets if t >= start)
        return total / self.window

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.doc, value=self.rate())


class Metrics:
    """A process's metric registry with get-or-create accessors."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Counter | Gauge | Histogram | RateMeter] = {}
        #: Labels added to every sample when rendered (``worker`` for a copy of a process
        #: that runs several): the registry itself, and what tests read, stay without them.
        self.const_labels: dict[str, str] = {}

    def _get(self, kind: type[M], name: str, make: Callable[[], M]) -> M:
        found = self._metrics.get(name)
        if found is not None:
            if not isinstance(found, kind):
                raise TypeError(f"metric {name!r} already registered as {type(found).__name__}")
            return found
        metric = make()
        self._metrics[name] = metric
        return metric

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, lambda: Counter(
            name, doc, labelnames=tuple(labels), registry=self.registry))

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, lambda: Gauge(
            name, doc, labelnames=tuple(labels), registry=self.registry))

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._get(Histogram, name, lambda: Histogram(
            name, doc, labelnames=tuple(labels), registry=self.registry, buckets=tuple(buckets)))

    def rate(self, name: str, doc: str, counter_name: str | None = None) -> RateMeter:
        """``name`` is the rate gauge; the counter behind it is ``counter_name`` (``_total``)."""
        found = self._metrics.get(name)
        if isinstance(found, RateMeter):
            return found
        counter = self.counter(counter_name or name.removesuffix("_rate"), f"{doc} (counter)")
        meter = RateMeter(name, doc, counter)
        self.registry.register(meter)
        self._metrics[name] = meter
        return meter

    def render(self) -> bytes:
        if self.const_labels:
            return generate_latest(_Labelled(self.registry, self.const_labels))
        return generate_latest(self.registry)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of one sample, for tests and health checks."""
        return self.registry.get_sample_value(name, labels or {})


class _Labelled(Collector):
    """A registry's samples with some labels added (prometheus-client has no registry-wide
    constant labels)."""

    def __init__(self, registry: CollectorRegistry, labels: dict[str, str]) -> None:
        self._registry = registry
        self._labels = labels

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [s._replace(labels={**s.labels, **self._labels})
                           for s in family.samples]
            yield out


def backpressure_events(metrics: Metrics) -> Counter:
    """The one definition of ``backpressure_events``: pipelines and gateway connections share it."""
    return metrics.counter(
        "backpressure_events",
        "Degradation level transitions (pipeline budgets or gateway connections)",
        ["scope", "direction", "level"],
    )


def zero_transitions(counter: Counter, scope: str) -> None:
    """Every transition ``scope`` can make reads 0 before its first one: a series born at 1
    has no ``increase()``, so an alert would miss the first transition, and a dashboard would
    show "no data" instead of 0."""
    for level in Level:
        if level > Level.L0:
            counter.labels(scope, "up", f"L{int(level)}")
        if level < Level.L3:
            counter.labels(scope, "down", f"L{int(level)}")


class RunnerMetrics:
    """The metrics the runner itself maintains."""

    def __init__(self, metrics: Metrics) -> None:
        self.backpressure_events = backpressure_events(metrics)
        self.level = metrics.gauge(
            "degradation_level", "Current degradation level 0..3", ["scope"]
        )
        self.edge_items = metrics.gauge("edge_items", "Items queued on an edge", ["edge"])
        self.edge_bytes = metrics.gauge("edge_bytes", "Bytes queued on an edge", ["edge"])
        self.edge_age = metrics.gauge(
            "edge_oldest_age_seconds", "Age of the oldest item queued on an edge", ["edge"]
        )
        self.edge_pressure = metrics.gauge(
            "edge_pressure", "Edge budget use (1.0 = a limit reached)", ["edge"]
        )
        self.stage_failures = metrics.counter(
            "stage_failures", "Stages that raised", ["pipeline", "stage", "error"]
        )
        self.stage_restarts = metrics.counter(
            "stage_restarts", "Stages restarted by their restart policy", ["pipeline", "stage"]
        )
        self.pipeline_running = metrics.gauge(
            "pipeline_running", "1 while the pipeline runs", ["pipeline"]
        )
