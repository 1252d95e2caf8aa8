"""bench/rollout.py still works: a ``--quick`` run (a real tree on the embedded NATS server, the
demo market, a leased aggregator, two gateway workers, SDK clients in their own process, a
SIGHUP rollout) writes a steady, a rollout and an after window with every number present, and
the clients saw no hole, no repeat and no epoch change. The timings are the benchmark's
business, not the suite's: nothing here is timed."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
NUMBERS = ("lat_p50_ms", "lat_p99_ms", "lat_max_ms", "worst_gap_ms",
           "median_client_worst_gap_ms", "client_cpu_pct", "seconds")


@pytest.mark.nats
def test_a_quick_run_measures_steady_and_rollout_windows(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "rollout.py"), "--quick", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "rollout.json").read_text())
    assert r["rollout_outcome"] == "done", r
    assert r["replaced"] == ["aggregator", "gateway.0", "gateway.1"], r
    assert r["rollout_s"] > 0 and r["clients"] == 5
    assert r["clients_with_epoch_change"] == 0, r
    assert set(r["windows"]) == {"steady", "rollout", "after"}
    for name, w in r["windows"].items():
        assert w["deltas"] > 0, (name, w)
        for key in NUMBERS:
            assert isinstance(w[key], float | int) and math.isfinite(w[key]), (name, key, w)
        assert w["lat_p99_ms"] >= w["lat_p50_ms"], (name, w)
        assert w["holes_or_repeats"] == 0 and w["skipped_by_verdict"] == {}, (name, w)
        assert w["resync_snapshots"] == 0, (name, w)
    # Each client moves at most once per restarted worker, and only while the rollout runs.
    assert r["windows"]["steady"]["reconnects_total"] == 0
    assert r["windows"]["rollout"]["reconnects_max"] <= 2
    md = (tmp_path / "rollout.md").read_text()
    assert "| delivery p99 (ms) |" in md and "| holes or repeats | 0 | 0 | 0 |" in md
