"""Service level objectives for ``xypipe bench replay --slo``: parse a spec, judge a run.

A spec is a comma-separated list of terms ``METRIC OP BUDGET``, e.g.
``e2e_p99<180ms,frame_p95<16.7ms,recovery<3s,ingest_l0>=20000/s``. Each metric has a kind
that fixes the units its budget may use (a time: ``us``, ``ms``, ``s``; a rate: ``/s``,
``B/s``, ``kB/s``, ``MB/s``), so ``e2e_p99<180`` or ``recovery<3MB/s`` is refused with the
term and what was expected, before a minute is spent measuring. Sans-I/O: the bench harness
measures, hands the numbers here (in base units: seconds, per second) and prints the verdicts.
"""

from __future__ import annotations

import enum
import math
import operator
import re
from collections.abc import Callable, Mapping

import attrs

from xypipe._errors import SloSpecError


class Kind(enum.Enum):
    TIME = "time"
    RATE = "rate"


#: Unit -> factor to the kind's base unit (seconds; per second).
_UNITS: dict[Kind, dict[str, float]] = {
    Kind.TIME: {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0},
    Kind.RATE: {"/s": 1.0, "B/s": 1.0, "kB/s": 1e3, "MB/s": 1e6},
}


@attrs.frozen
class Metric:
    name: str
    kind: Kind
    meaning: str
    #: What the run must do to measure it (``--tabs``), or "" when every run does.
    needs: str = ""


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("e2e_p50", Kind.TIME, "tick arrival -> client receive, median"),
    Metric("e2e_p95", Kind.TIME, "tick arrival -> client receive, 95th percentile"),
    Metric("e2e_p99", Kind.TIME, "tick arrival -> client receive, 99th percentile"),
    Metric("e2e_max", Kind.TIME, "tick arrival -> client receive, worst sample"),
    Metric("frame_p95", Kind.TIME, "browser frame interval, 95th percentile", needs="tabs"),
    Metric("frame_p99", Kind.TIME, "browser frame interval, 99th percentile", needs="tabs"),
    Metric("render_p99", Kind.TIME, "tick arrival -> row drawn in a tab, 99th percentile",
           needs="tabs"),
    Metric("recovery", Kind.TIME, "the worse of recovery_gateway and recovery_nats"),
    Metric("recovery_gateway", Kind.TIME, "gateway killed -> deltas reach a client again"),
    Metric("recovery_nats", Kind.TIME, "nats-server killed -> deltas reach a client again"),
    Metric("rebuild", Kind.TIME, "aggregator killed -> deltas reach a client again"),
    Metric("ingest_l0", Kind.RATE, "source ticks/s the aggregator ingests while at level L0"),
    Metric("bytes_per_client", Kind.RATE, "bytes/s each xypipe client receives"),
)}

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_TERM = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*(\S*)\s*$")


@attrs.frozen
class Objective:
    metric: str
    op: str
    #: In the metric's base unit (seconds, per second).
    budget: float
    #: The unit the budget was written in; measured values are shown in it.
    unit: str
    text: str

    def holds(self, measured: float) -> bool:
        return _OPS[self.op](measured, self.budget)

    def show(self, value: float) -> str:
        v = value / _UNITS[METRICS[self.metric].kind][self.unit]
        return f"{v:,.0f}{self.unit}" if abs(v) >= 1000 else f"{v:.4g}{self.unit}"


@attrs.frozen
class Verdict:
    objective: Objective
    #: None: the run did not measure it (a broken objective: it cannot be shown to hold).
    measured: float | None

    @property
    def ok(self) -> bool:
        return (self.measured is not None and not math.isnan(self.measured)
                and self.objective.holds(self.measured))

    def line(self) -> str:
        o = self.objective
        got = "not measured" if self.measured is None else o.show(self.measured)
        budget = f"{o.op} {o.show(o.budget)}"
        return f"{'ok    ' if self.ok else 'BROKEN'}  {o.metric:<17} {got:>14}  (budget {budget})"


def _expected() -> str:
    return ("a term is METRIC<BUDGET (or <=, >, >=) with a unit: "
            "times in us, ms or s (e2e_p99<180ms), rates in /s, B/s, kB/s or MB/s "
            "(ingest_l0>=20000/s); metrics: " + ", ".join(METRICS))


def parse_slo(spec: str) -> tuple[Objective, ...]:
    """The objectives of ``spec``; :class:`SloSpecError` names the first bad term."""
    if not spec.strip():
        raise SloSpecError(f"--slo: the spec is empty; {_expected()}")
    out: list[Objective] = []
    seen: set[str] = set()
    for i, raw in enumerate(spec.split(","), 1):
        term = raw.strip()
        if not term:
            raise SloSpecError(f"--slo: term {i} is empty (two commas, or a trailing comma) "
                               f"in {spec!r}")
        m = _TERM.match(term)
        if m is None:
            raise SloSpecError(f"--slo: term {i} {term!r} is not METRIC OP BUDGET; "
                               f"{_expected()}")
        name, op, number, unit = m.groups()
        metric = METRICS.get(name)
        if metric is None:
            raise SloSpecError(f"--slo: term {i} {term!r}: unknown metric {name!r}; known: "
                               + ", ".join(METRICS))
        if name in seen:
            raise SloSpecError(f"--slo: term {i} {term!r}: {name} has a budget already")
        units = _UNITS[metric.kind]
        if unit not in units:
            raise SloSpecError(
                f"--slo: term {i} {term!r}: {name} is a {metric.kind.value}; its budget needs "
                f"a unit of {', '.join(units)} (got {repr(unit) if unit else 'no unit'})")
        try:
            value = float(number)
        except ValueError:
            raise SloSpecError(f"--slo: term {i} {term!r}: {number!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise SloSpecError(f"--slo: term {i} {term!r}: the budget must be a finite number "
                               f"≥ 0 (got {number})")
        seen.add(name)
        out.append(Objective(name, op, value * units[unit], unit, term))
    return tuple(out)


def needs(objectives: tuple[Objective, ...]) -> set[str]:
    """What the run must do to measure every objective (``{"tabs"}``)."""
    return {METRICS[o.metric].needs for o in objectives} - {""}


def evaluate(objectives: tuple[Objective, ...],
             measured: Mapping[str, float | None]) -> tuple[Verdict, ...]:
    """Each objective against the run's numbers (base units; a missing one: not measured)."""
    return tuple(Verdict(o, measured.get(o.metric)) for o in objectives)
