"""bench/scale.py still runs end to end: ``--quick`` (a real nats-server, ``xypipe run`` trees of
aggregator and gateway workers, the lean publisher and load generators in their own processes)
writes both curves with every side's CPU read from /proc, and the report names the bottleneck.
The numbers themselves are the benchmark's business, not the suite's: nothing here is timed."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import _sides  # noqa: E402  (bench/ is not a package)
import scale  # noqa: E402


def test_a_window_reads_each_side_and_names_the_saturated_ones() -> None:
    a = _sides.Reading(0.0, {"gateway.0": 1.0, "loadgen.0": 0.0, "gone": 1.0}, (100, 400))
    b = _sides.Reading(2.0, {"gateway.0": 2.96, "loadgen.0": 0.5, "gone": None}, (480, 800))
    win = _sides.window(a, b)
    assert win["cpu"] == {"gateway.0": 0.98, "loadgen.0": 0.25}  # a side that exited: left out
    assert win["machine_busy"] == 0.95
    cores = win["cores"]
    assert win["others"] == pytest.approx(max(0.0, 0.95 * cores - 1.23), abs=1e-3)
    b = _sides.bottleneck(win)
    assert b["saturated"] == ["gateway.0"] and b["machine_saturated"]
    assert not b["clients_bottleneck"]
    assert "gateway.0 at 98% of a core" in str(b["text"])
    hot_clients = _sides.bottleneck({"cpu": {"loadgen.1": 0.95}, "machine_busy": 0.5})
    assert hot_clients["clients_bottleneck"] and not hot_clients["machine_saturated"]


def test_the_ceiling_names_the_limit_that_comes_first() -> None:
    # 10,000 frames/s: the worker costs 50 µs a frame (full core at 20,000), everything
    # together 150 µs (2 cores full at 13,333): the machine comes first.
    win = {"cpu": {"gateway.0": 0.5, "loadgen.0": 1.0}, "cores": 2}
    c = _sides.ceiling(win, 10_000, "gateway.")
    assert c["rate"] == pytest.approx(2 / 150e-6) and "machine" in str(c["limited_by"])
    win = {"cpu": {"gateway.0": 0.5, "loadgen.0": 0.1}, "cores": 2}
    c = _sides.ceiling(win, 10_000, "gateway.")
    assert c["rate"] == pytest.approx(20_000) and c["limited_by"] == "gateway.0 at a full core"


def test_this_process_is_read_from_proc() -> None:
    me = _sides.cpu_seconds(os.getpid())
    assert me is not None and me > 0
    busy, total = _sides.machine_jiffies()
    assert 0 < busy < total


def _row(workers: int, clients: int, fps: float, *, loadgen: float = 0.3,
         busy: float = 0.5, others: float = 0.0) -> dict:
    win = {"cpu": {"gateway.0": 0.5, "loadgen.0": loadgen}, "machine_busy": busy,
           "others": others}
    return {"workers": workers, "clients": clients, "frames_per_s": fps,
            "ideal_frames_per_s": clients * 30, "lat_p99_ms": 10.0,
            "window": win, "bottleneck": _sides.bottleneck(win)}


def test_the_verdict_says_when_the_ratio_cannot_speak_for_the_gateway() -> None:
    rows = [_row(1, 100, 3000), _row(2, 100, 3000),  # one worker keeps up
            _row(1, 2000, 30_000), _row(2, 2000, 55_000),  # goal met
            _row(1, 3000, 30_000), _row(2, 3000, 40_000, loadgen=0.97),  # clients saturated
            _row(1, 4000, 30_000), _row(2, 4000, 60_000, others=0.6)]  # a busy machine
    v = {x["clients"]: x for x in scale.gw_verdicts(rows)}
    assert "already delivers every frame" in v[100]["verdict"]
    assert v[2000]["frames_ratio"] == pytest.approx(55 / 30) and "met" in v[2000]["verdict"]
    assert "load generators are the bottleneck" in v[3000]["verdict"]
    assert v[4000]["verdict"].startswith("not a measurement: other processes")
    assert "other processes took 60% of a core" in v[4000]["two_workers"]
    assert all(x["ceiling"]["ratio"] > 0 for x in v.values())


@pytest.mark.nats
def test_quick_run_writes_both_curves_with_every_sides_cpu(tmp_path: pathlib.Path) -> None:
    # Its own process group: a run that overstays is stopped with every process it started.
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "scale.py"), "--quick", "--results", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"bench/scale.py --quick overstayed 420 s: {stdout[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    doc = json.loads((tmp_path / "scale.json").read_text())
    counts = [1, 2] if scale.workers_supported() and scale.ownership_supported() else [1]

    agg = doc["aggregator"]["curve"]
    assert [c["workers"] for c in agg] == counts
    for c in agg:
        assert c["steps"], c
        for s in c["steps"]:
            cpu = s["window"]["cpu"]
            workers = sorted(k for k in cpu if k.startswith("aggregator."))
            assert workers == [f"aggregator.{i}" for i in range(c["workers"])], cpu
            assert {"nats-server", "publisher", "supervisor"} <= set(cpu), cpu
            # The aggregator works through every tick: its CPU is always seen.
            assert all(cpu[w] > 0 for w in workers), cpu
            assert s["ticks"] > 0 and 0 <= s["ingested_share"] <= 1.01, s
            assert len(s["per_worker_ingested"]) == c["workers"], s
            assert 0 < s["window"]["machine_busy"] <= 1, s
    assert "text" in doc["aggregator"]["verdict"]

    gw_counts = [1, 2] if scale.workers_supported() else [1]
    rows = doc["gateway"]["rows"]
    assert sorted(r["workers"] for r in rows) == gw_counts
    for r in rows:
        cpu = r["window"]["cpu"]
        gws = sorted(k for k in cpu if k.startswith("gateway."))
        assert gws == [f"gateway.{i}" for i in range(r["workers"])], cpu
        assert {"loadgen.0", "loadgen.1", "nats-server", "publisher"} <= set(cpu), cpu
        assert r["frames_per_s"] > 0 and r["lat_samples"] > 0, r
        assert r["lat_p99_ms"] >= r["lat_p50_ms"] > 0, r
        assert r["connections_lost"] == 0, r
        # Every connection was accepted by one of the workers.
        assert sum(r["connections_per_worker"].values()) == r["clients"], r
        assert sum(cpu[g] for g in gws) > 0, cpu  # the gateway serves every frame
        assert "text" in r["bottleneck"]
    assert len(doc["gateway"]["verdicts"]) == (1 if len(gw_counts) == 2 else 0)
    md = (tmp_path / "scale.md").read_text()
    assert "## Aggregator" in md and "## Gateway" in md
