"""``xypipe bench curves --quick``: a real short run of the scaling curves (nats-server, the
aggregator and the gateway as ``xypipe run`` — one worker, then two —, the lean publisher, the
lean load generator) produces every point with its numbers and names the budget each curve
breaks first. How fast anything is stays the benchmark's business: the budget that must break
here is an impossible one, so the test never depends on the machine's speed."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))


@pytest.mark.nats
def test_quick_curves_produce_every_point_and_name_the_budget_that_breaks_first(
        tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xypipe", "bench", "curves", "--quick", "--workers", "1,2",
         "--slo", "e2e_p99<0.001ms", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "curves.json").read_text())
    ingest, clients = result["ingest"], result["clients"]
    assert [p["offered_per_s"] for p in ingest] == [1000, 10000]
    assert [(p["workers"], p["clients"]) for p in clients] == [(1, 10), (1, 40), (2, 10),
                                                               (2, 40)]
    for p in ingest:
        # The publisher's ticks reached nats-server and the aggregator, and deltas the clients.
        assert p["published_per_s"] > 0 and p["ingested_per_s"] > 0, p
        assert {"nats", "aggregator", "gateway", "publisher", "loadgen"} <= set(p["cpu_pct"])
    for p in clients:
        assert {"nats", "aggregator", "gateway", "input", "loadgen"} <= set(p["cpu_pct"])
        if p["workers"] == 2:  # each worker's own CPU beside the process's
            assert {"gateway.0", "gateway.1"} <= set(p["cpu_pct"]), p["cpu_pct"]
    for p in ingest + clients:
        assert p["deltas_per_client_s"] > 0 and p["bytes_per_client_s"] > 0, p
        assert p["e2e_ms"]["n"] > 0 and p["e2e_ms"]["p99"] >= p["e2e_ms"]["p50"] > 0, p
        assert p["level_aggregator"] in (0, 1, 2, 3) and p["level_gateway"] in (0, 1, 2, 3)
        assert all(v >= 0 for v in p["cpu_pct"].values()), p["cpu_pct"]
        # Nothing can be under a microsecond: the impossible budget breaks on every point.
        assert "e2e_p99" in p["broken"], p
    # Each curve names where it first breaks, and which budget.
    v = result["verdicts"]
    assert v["ingest"]["breaks_first"] == {"at": 1000, "budgets": ingest[0]["broken"]}
    assert set(v["clients"]) == {"1", "2"}
    for w in v["clients"].values():
        assert w["breaks_first"]["at"] == 10 and "e2e_p99" in w["breaks_first"]["budgets"]
    assert "ingest: breaks first at 1,000 ticks/s offered: e2e_p99" in out.stdout
    assert "clients, 2 gateway worker(s): breaks first at 10 clients: e2e_p99" in out.stdout
    md = (tmp_path / "curves.md").read_text()
    assert "## Ingest" in md and "## Clients" in md and "breaks first at" in md
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.parametrize(("args", "named"), [
    (["--rates", "10000,1000"], "--rates '10000,1000'"),
    (["--clients", "ten"], "--clients 'ten'"),
    (["--slo", "recovery<3s"], "recovery"),
])
def test_a_bad_level_list_or_an_objective_no_point_measures_fails_before_anything_starts(
        tmp_path: pathlib.Path, args: list[str], named: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xypipe", "bench", "curves", "--quick", *args, "--results",
         str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "XY-BENCH-010" in out.stderr and named in out.stderr, out.stderr
    assert not list(tmp_path.iterdir())


def test_the_first_breaking_point_and_the_first_level_are_named_in_load_order() -> None:
    import curves

    def pt(n: int, e2e_p99: float, agg: int, gw: int, deltas: float) -> dict[str, object]:
        return {"clients": n, "workers": 1, "e2e_ms": {"p50": 1.0, "p95": e2e_p99, "p99": e2e_p99,
                                                       "max": e2e_p99},
                "bytes_per_client_s": 1000, "deltas_per_client_s": deltas,
                "connections_lost": 0, "ingested_per_s": 100.0, "level_aggregator": agg,
                "level_gateway": gw, "cpu_pct": {"gateway": 95.0, "loadgen": 10.0}}

    from xypipe._slo import parse_slo

    points = [pt(10, 50, 0, 0, 150), pt(100, 90, 0, 1, 149), pt(1000, 400, 0, 2, 60)]
    curves.judge(points, "clients", parse_slo(curves.SPEC_E2E))
    assert [p["broken"] for p in points] == [[], ["level L0"],
                                             ["e2e_p95", "e2e_p99", "level L0", "keeps up"]]
    assert points[0]["hot"] == ["gateway"]
    v = curves.verdict(points, "clients", "clients")
    assert v["breaks_first"] == {"at": 100, "budgets": ["level L0"]}
    assert v["level_engages"] == {"at": 100, "aggregator": 0, "gateway": 1}
    assert v["text"] == ("breaks first at 100 clients: level L0; a level engages at 100 "
                         "clients (aggregator L0, gateway L1)")
