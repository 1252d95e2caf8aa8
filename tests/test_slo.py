"""The SLO spec of ``xypipe bench replay --slo``: what parses (in base units), what is refused
(naming the term and what was expected), and how measured numbers are judged."""

from __future__ import annotations

import math

import pytest

from xypipe._errors import SloSpecError
from xypipe._slo import METRICS, Objective, evaluate, needs, parse_slo

GOOD = [
    ("e2e_p99<180ms", [("e2e_p99", "<", 0.180, "ms")]),
    ("e2e_p99<180ms,frame_p95<16.7ms,recovery<3s",
     [("e2e_p99", "<", 0.180, "ms"), ("frame_p95", "<", 0.0167, "ms"),
      ("recovery", "<", 3.0, "s")]),
    (" e2e_p50 <= 500us , rebuild<1s ", [("e2e_p50", "<=", 500e-6, "us"),
                                          ("rebuild", "<", 1.0, "s")]),
    ("e2e_max<2.5e2ms", [("e2e_max", "<", 0.25, "ms")]),
    ("ingest_l0>=20000/s", [("ingest_l0", ">=", 20000.0, "/s")]),
    ("bytes_per_client<1.5MB/s", [("bytes_per_client", "<", 1.5e6, "MB/s")]),
    ("bytes_per_client>10kB/s", [("bytes_per_client", ">", 1e4, "kB/s")]),
    ("e2e_p99<0.001ms", [("e2e_p99", "<", 1e-6, "ms")]),
]

BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("e2e_p99<180ms,", "term 2 is empty"),
    ("e2e_p99<180ms,,recovery<3s", "term 2 is empty"),
    ("e2e_p99", "term 1 'e2e_p99' is not METRIC OP BUDGET"),
    ("e2e_p99=180ms", "is not METRIC OP BUDGET"),
    ("e2e_p99<<180ms", "is not METRIC OP BUDGET"),
    ("latency<180ms", "unknown metric 'latency'"),
    ("e2e_p99<180", "e2e_p99 is a time; its budget needs a unit of us, µs, ms, s (got no unit)"),
    ("recovery<3MB/s", "recovery is a time"),
    ("ingest_l0>20000ms", "ingest_l0 is a rate; its budget needs a unit of /s"),
    ("e2e_p99<1.2.3ms", "'1.2.3' is not a number"),
    ("e2e_p99<-5ms", "the budget must be a finite number ≥ 0 (got -5)"),
    ("e2e_p99<infms", "is not METRIC OP BUDGET"),
    ("e2e_p99<180ms,e2e_p99<200ms", "term 2 'e2e_p99<200ms': e2e_p99 has a budget already"),
    ("e2e_p99<180ms,recovery<3", "term 2 'recovery<3'"),
]


@pytest.mark.parametrize(("spec", "want"), GOOD)
def test_a_good_spec_parses_into_base_units(spec: str, want: list[tuple]) -> None:
    got = parse_slo(spec)
    assert [(o.metric, o.op, o.unit) for o in got] == [(m, op, u) for m, op, _, u in want]
    for o, (_, _, budget, _) in zip(got, want, strict=True):
        assert math.isclose(o.budget, budget, rel_tol=1e-9)


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_a_bad_spec_is_refused_naming_the_term(spec: str, message: str) -> None:
    with pytest.raises(SloSpecError) as e:
        parse_slo(spec)
    assert message in str(e.value)
    assert e.value.code == "XY-BENCH-001"


def test_an_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(SloSpecError) as e:
        parse_slo("p99<1ms")
    assert all(name in str(e.value) for name in METRICS)


def test_verdicts_compare_in_base_units_and_show_the_budgets_unit() -> None:
    objectives = parse_slo("e2e_p99<180ms,recovery<=3s,ingest_l0>=20000/s,rebuild<1s")
    verdicts = evaluate(objectives, {"e2e_p99": 0.0424, "recovery": 3.0, "ingest_l0": 19999.0})
    assert [v.ok for v in verdicts] == [True, True, False, False]
    lines = [v.line() for v in verdicts]
    assert lines[0].startswith("ok") and "42.4ms" in lines[0] and "< 180ms" in lines[0]
    assert lines[2].startswith("BROKEN") and "19,999/s" in lines[2] and ">= 20,000/s" in lines[2]
    # Not measured cannot be shown to hold: broken, and said so.
    assert lines[3].startswith("BROKEN") and "not measured" in lines[3]


def test_an_impossible_budget_is_broken_and_a_nan_never_passes() -> None:
    (v,) = evaluate(parse_slo("e2e_p99<0.001ms"), {"e2e_p99": 0.0001})
    assert not v.ok
    (n,) = evaluate(parse_slo("e2e_p99<1s"), {"e2e_p99": math.nan})
    assert not n.ok


def test_objectives_that_need_browser_tabs_say_so() -> None:
    assert needs(parse_slo("e2e_p99<1s,recovery<3s")) == set()
    assert needs(parse_slo("frame_p95<16.7ms,e2e_p99<1s")) == {"tabs"}


def test_an_objective_holds_by_its_operator() -> None:
    at = Objective("e2e_p99", "<", 1.0, "s", "e2e_p99<1s")
    assert at.holds(0.5) and not at.holds(1.0)
    assert Objective("e2e_p99", "<=", 1.0, "s", "").holds(1.0)
    assert Objective("ingest_l0", ">", 1.0, "/s", "").holds(2.0)
    assert not Objective("ingest_l0", ">=", 1.0, "/s", "").holds(0.5)
