"""A rollout's health gate: what a copy's /metrics says, and whether a new copy is worse.

A :class:`Reading` is taken from a process's own /metrics text (the Prometheus exposition
format it serves on its control port): its error counters, its client disconnects and its
delivery-latency histogram. The gate compares what the new copy counted since its window began
with what each old copy counted over the same window (:func:`judge`), so a market that turns
noisy for everybody fails nobody. Pure functions: the shell reads, this judges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
from prometheus_client.parser import text_string_to_metric_families

from xypipe._rollout import RolloutConfig

__all__ = ["ERROR_COUNTERS", "Reading", "judge", "reading_of"]

#: The counters that are a process's own errors (not its clients'): a stage that raised, a
#: message that did not decode, a snapshot the gateway could not fetch.
ERROR_COUNTERS = (
    "stage_failures_total",
    "contract_decode_errors_total",
    "gateway_bad_messages_total",
    "gateway_snapshot_get_failures_total",
)
#: Close codes that are a client leaving normally, not a disconnect the process caused.
_NORMAL_CLOSES = frozenset({"1000"})
_LATENCY = "e2e_latency_seconds"
_LATENCY_POINT = "gateway_send"


@attrs.frozen
class Reading:
    errors: float = 0.0
    disconnects: float = 0.0
    #: Cumulative delivery-latency bucket counts: upper bound (seconds) → count.
    buckets: Mapping[float, float] = attrs.field(factory=dict)

    def since(self, start: Reading) -> Reading:
        """What was counted between ``start`` and this reading (a restarted process's counters
        start again from zero: then everything counts)."""
        if self.errors < start.errors or self.disconnects < start.disconnects:
            return self
        return Reading(self.errors - start.errors, self.disconnects - start.disconnects,
                       {le: n - start.buckets.get(le, 0.0) for le, n in self.buckets.items()})

    def p99(self) -> float | None:
        """The delivery p99 in seconds (a bucket's upper bound), None without observations."""
        if not self.buckets:
            return None
        bounds = sorted(self.buckets)
        total = self.buckets[bounds[-1]]
        if total <= 0:
            return None
        for le in bounds:
            if self.buckets[le] >= 0.99 * total:
                return le
        return bounds[-1]


def reading_of(text: str) -> Reading:
    """A :class:`Reading` of one process's /metrics text. Raises ValueError on text that is
    not the exposition format."""
    errors = disconnects = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name in ERROR_COUNTERS:
                errors += value
            elif name == "ws_closes_total" and labels.get("code") not in _NORMAL_CLOSES:
                disconnects += value
            elif name == f"{_LATENCY}_bucket" and labels.get("point") == _LATENCY_POINT:
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + value
    return Reading(errors, disconnects, buckets)


def judge(new: Reading, old: list[Reading], cfg: RolloutConfig) -> str | None:
    """Why the new copy's window (``new``, counted since it began) is worse than the old
    copies' (each counted over the same window), or None when it passes."""
    per_copy = _mean([r.errors for r in old])
    allowed = per_copy * cfg.error_ratio + cfg.max_new_errors
    if new.errors > allowed:
        return (f"{new.errors:g} errors in its window, allowed {allowed:g} "
                f"(old copies: {per_copy:g} each)")
    per_copy = _mean([r.disconnects for r in old])
    allowed = per_copy * cfg.disconnect_ratio + cfg.max_new_disconnects
    if new.disconnects > allowed:
        return (f"{new.disconnects:g} client disconnects in its window, allowed {allowed:g} "
                f"(old copies: {per_copy:g} each)")
    p99 = new.p99()
    if p99 is not None:
        olds = [p for p in (r.p99() for r in old) if p is not None and not math.isinf(p)]
        limit = max(max(olds, default=0.0) * cfg.p99_ratio, cfg.p99_floor_ms / 1000)
        if p99 > limit:
            shown = "above the largest bucket" if math.isinf(p99) else f"{p99 * 1000:g} ms"
            return f"delivery p99 {shown}, allowed {limit * 1000:g} ms"
    return None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
