"""Every PromQL query of the Grafana dashboard and the Prometheus rules names only series the code
registers (or a recording rule defines), with labels they carry and values the field dictionary
documents; and the dashboard has the spec's panels.

Queries are parsed by promql-parser (the Rust promql-parser crate's Python binding), not read
with regular expressions: every vector selector of every expression is checked. The code side is
what ``tests/_field_dictionary.py`` reads from ``xypipe/``'s source (its registrations, the same
scan the dictionary test uses); the label values are the dictionary's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import promql_parser as pq
import pytest
import yaml
from _field_dictionary import ROOT, CodeScan, MetricDoc, Registration, parse_dictionary

DASHBOARD = ROOT / "infra" / "grafana" / "xypipe.json"
RULES = sorted((ROOT / "infra" / "prometheus" / "rules").glob("*.yml"))

#: Grafana's built-in interval variables, replaced by a duration before parsing. Dashboards may
#: use no other variable inside a query (the datasource is a panel setting, not query text).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
#: Series Prometheus itself adds for every target.
PROMETHEUS_SERIES = {"up": ()}
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}

Query = tuple[str, str]  # (where, PromQL)


# --------------------------------------------------------------------------- what exists


@pytest.fixture(scope="module")
def registered() -> dict[str, Registration]:
    """Series name (as Prometheus stores it) -> its registration in ``xypipe/``."""
    scan = CodeScan()
    out: dict[str, Registration] = {}
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created")}
    for reg in scan.registrations:
        for suffix in suffixes[reg.kind]:
            out.setdefault(reg.family + suffix, reg)
    return out


@pytest.fixture(scope="module")
def documented() -> dict[str, MetricDoc]:
    rows, _ = parse_dictionary()
    return {row.family: row for row in rows}


def rules() -> list[dict[str, object]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def recorded() -> dict[str, tuple[str, ...] | None]:
    """Recording rule name -> the labels its series keep (None: not read here)."""
    out: dict[str, tuple[str, ...] | None] = {}
    for rule in rules():
        if "record" in rule:
            assert rule["record"] not in out, f"recording rule {rule['record']} defined twice"
            out[str(rule["record"])] = kept_labels(pq.parse(str(rule["expr"])))
    return out


def kept_labels(expr: pq.Expr) -> tuple[str, ...] | None:
    """The labels of ``sum by (...) (...)`` or of ``histogram_quantile(q, sum by (le, ...))``."""
    if isinstance(expr, pq.Call) and expr.func.name == "histogram_quantile":
        inner = kept_labels(expr.args[1])
        return None if inner is None else tuple(label for label in inner if label != "le")
    if isinstance(expr, pq.AggregateExpr) and expr.modifier is not None and \
            expr.modifier.type == pq.AggModifierType.By:
        return tuple(expr.modifier.labels)
    return None


# --------------------------------------------------------------------------- what is queried


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> Iterator[dict]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries() -> list[Query]:
    out = [(f"dashboard panel {p['title']!r} query {t['refId']}", t["expr"])
           for p in panels() for t in p.get("targets", [])]
    out += [(f"rule {r.get('record') or r['alert']}", str(r["expr"])) for r in rules()]
    return out


def parse(where: str, text: str) -> pq.Expr:
    for var, value in GRAFANA_VARIABLES.items():
        text = text.replace(var, value)
    assert "$" not in text, f"{where}: a template variable the check cannot resolve: {text}"
    try:
        return pq.parse(text)
    except ValueError as exc:
        raise AssertionError(f"{where}: not PromQL ({exc}): {text}") from exc


def selectors(expr: pq.Expr) -> list[pq.VectorSelector]:
    found: list[pq.VectorSelector] = []

    def visit(node: pq.Expr) -> None:
        if isinstance(node, pq.VectorSelector):
            found.append(node)

    pq.walk(expr, visit)
    return found


def matchers(sel: pq.VectorSelector) -> list[pq.Matcher]:
    ms = sel.matchers
    return [*ms.matchers, *(m for group in (ms.or_matchers or []) for m in group)]


# --------------------------------------------------------------------------- the checks


def test_the_checks_read_selectors_and_matchers_out_of_nested_expressions():
    expr = parse("q", 'sum by (job) (rate(a_total{x="1"}[$__rate_interval])) / on (job) '
                      'clamp_min(sum by (job) (b), 1) > 0.2 and c offset 5m')
    assert [s.name for s in selectors(expr)] == ["a_total", "b", "c"]
    assert [(m.name, m.value) for m in matchers(selectors(expr)[0])] == [("x", "1")]
    with pytest.raises(AssertionError, match="not PromQL"):
        parse("q", "sum(rate(a_total[1m])")
    with pytest.raises(AssertionError, match="template variable"):
        parse("q", 'a_total{job="$job"}')


def test_every_query_parses_and_names_only_registered_or_recorded_series(registered):
    records = recorded()
    problems = []
    for where, text in queries():
        for sel in selectors(parse(where, text)):
            if sel.name is None:
                problems.append(f"{where}: a selector without a metric name: {text}")
            elif (sel.name not in registered and sel.name not in records
                    and sel.name not in PROMETHEUS_SERIES):
                problems.append(f"{where}: `{sel.name}` is neither registered by xypipe/ nor "
                                "recorded by infra/prometheus/rules/")
    assert not problems, "\n".join(problems)


def test_every_matcher_names_a_label_the_series_has_and_a_documented_value(registered,
                                                                           documented):
    records = recorded()
    problems = []
    for where, text in queries():
        for sel in selectors(parse(where, text)):
            reg = registered.get(sel.name or "")
            if reg is not None:
                labels = set(reg.labels) | TARGET_LABELS | (
                    {"le"} if sel.name.endswith("_bucket") else set())
            elif records.get(sel.name or "") is not None:
                labels = set(records[sel.name or ""] or ()) | {"__name__"}
            else:
                labels = TARGET_LABELS | set(PROMETHEUS_SERIES.get(sel.name or "", ()))
            for m in matchers(sel):
                if m.name not in labels:
                    problems.append(f"{where}: `{sel.name}` has no label `{m.name}` "
                                    f"(it has {sorted(labels)})")
                    continue
                doc = documented.get(reg.family).labels.get(m.name) if reg and \
                    reg.family in documented else None
                if doc is None or doc.allowed() is None:
                    continue  # free values (a group, a stream), or a target label
                exact, _ = doc.allowed() or (frozenset(), ())
                if m.op in (pq.MatchOp.Equal, pq.MatchOp.NotEqual):
                    if not doc.accepts(m.value):
                        problems.append(f"{where}: `{sel.name}{{{m.name}}}` value "
                                        f"{m.value!r} is not documented")
                elif exact and not any(re.fullmatch(m.value, v) for v in exact):
                    problems.append(f"{where}: `{sel.name}{{{m.name}=~{m.value!r}}}` matches "
                                    f"no documented value ({sorted(exact)})")
    assert not problems, "\n".join(problems)


def test_every_recording_rule_is_read_by_the_dashboard_or_an_alert():
    used = {sel.name for where, text in queries() for sel in selectors(parse(where, text))}
    unused = set(recorded()) - used
    assert not unused, f"recording rules nothing reads: {sorted(unused)}"


# --------------------------------------------------------------------------- the dashboard


SPEC_PANELS = {  # the spec's "Observability" list -> the panel that shows it
    "connections": "Connections",
    "rates": "Rates",
    "slow consumers": "Slow consumers",
    "end-to-end p50/p95/p99": "End-to-end latency",
    "rebuilds": "Rebuilds",
    "bandwidth": "Bandwidth",
    "degradation level": "Degradation level",
}


def test_the_dashboard_has_the_spec_panels_each_with_a_query():
    by_title: dict[str, list[dict]] = {}
    for p in panels():
        by_title.setdefault(p["title"], []).append(p)
    for what, title in SPEC_PANELS.items():
        found = [p for p in by_title.get(title, []) if p["type"] == "timeseries"]
        assert found, f"no time series panel {title!r} for the spec's {what}"
        assert all(t["expr"].strip() for p in found for t in p["targets"]), title
    e2e = " ".join(t["expr"] for p in by_title["End-to-end latency"] for t in p["targets"])
    for quantile in ("p50", "p95", "p99"):
        assert f"point:e2e_latency_seconds:{quantile}" in e2e


def test_the_dashboard_is_importable_as_it_is():
    dash = dashboard()
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    # One datasource variable, which every query panel uses: imports on any Prometheus.
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in panels():
        if p["type"] == "row":
            continue
        for t in [p, *p["targets"]]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    # Panels fit the 24-column grid and none covers another.
    cells: dict[tuple[int, int], str] = {}
    for p in panels():
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_a_query_naming_an_unknown_metric_is_caught(registered):
    """The check can fail: a misspelt metric and an undocumented label value are reported."""
    bad = [sel for sel in selectors(parse("q", 'rate(ws_resync_total{reason="gaps"}[1m])'))
           if sel.name not in registered]
    assert [s.name for s in bad] == ["ws_resync_total"]
    doc = parse_dictionary()[0]
    resyncs = next(d for d in doc if d.family == "ws_resyncs")
    assert not resyncs.labels["reason"].accepts("gaps")
    assert resyncs.labels["reason"].accepts("gap")


def test_the_dashboard_file_is_the_one_the_docs_name():
    ops = (ROOT / "docs" / "operations.md").read_text()
    assert str(DASHBOARD.relative_to(ROOT)) in ops
    assert Path(ROOT / "infra" / "prometheus" / "prometheus.local.yml").exists()
