"""``xypipe bench replay --quick``: a real short run (nats-server, the aggregator and the gateway
as ``xypipe run``, the publisher, the lean load generator, the nats-ws peers, the kills) prints
the table, writes JSON + PNG with every number present and every process's CPU read, and an
impossible objective exits non-zero naming it. How fast anything is stays the benchmark's
business: nothing here is timed. The lean client's end-to-end stamps are checked on frames."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from xypipe.contracts import Delta, ServerFrame, SymbolState, Tick

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import _fanout_lean  # noqa: E402  (bench/ is not a package)

PROCESSES = {"nats", "aggregator", "gateway", "input", "loadgen"}


def test_the_lean_client_measures_e2e_from_the_oldest_arrival_in_a_frame() -> None:
    stamp = _fanout_lean.stamp_class(ServerFrame.DESCRIPTOR)
    rec = _fanout_lean.Recorder(stamp)
    rec.measuring = True
    frame = ServerFrame(deltas=[
        Delta(group="g", seq=1, ts_emit_us=5, symbols=[SymbolState(symbol="a", ts_arrival_us=300),
                                                        SymbolState(symbol="b", ts_arrival_us=0)]),
        Delta(group="h", seq=1, ts_emit_us=6, symbols=[SymbolState(symbol="c", ts_arrival_us=200)]),
    ]).SerializeToString()
    rec.frame(frame, _fanout_lean.SAMPLE_EVERY)
    ((_, ms),) = rec.e2e
    # Now (µs since the epoch) minus the oldest stamp that is set (200), in ms.
    assert ms > 1e12 / 1000 and rec.e2e[0][0] > 1e9


def test_the_raw_peer_reads_a_ticks_arrival_stamp() -> None:
    rec = _fanout_lean.NatsRecorder(_fanout_lean.stamp_class(ServerFrame.DESCRIPTOR), raw=True)
    rec.measuring = True
    body = Tick(venue="X", symbol="a", seq=9, ts_arrival_us=123, last=-5).SerializeToString()
    msg = b"MSG xy.src.tick.X.a 1 %d\r\n%s\r\n" % (len(body), body)
    rec.frame(msg + msg, _fanout_lean.SAMPLE_EVERY)
    assert rec.deltas == 2 and len(rec.e2e) == 1 and rec.e2e[0][1] > 1e9 / 1000


@pytest.mark.nats
def test_quick_replay_prints_the_table_writes_the_results_and_an_impossible_slo_bites(
        tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xypipe", "bench", "replay", "--quick",
         "--slo", "e2e_p99<0.001ms,recovery<600s", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=170)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    # The broken objective is named, with its budget; the one that holds is not.
    assert "XY-BENCH-003" in out.stderr and "e2e_p99" in out.stderr, out.stderr[-2000:]
    assert "recovery" not in out.stderr.split("XY-BENCH-003", 1)[1]
    for row in ("E2E p99 ms", "bytes/s per client", "load generator CPU %", "xypipe / nats-ws"):
        assert row in out.stdout, out.stdout
    assert "BROKEN  e2e_p99" in out.stdout and "ok      recovery" in out.stdout

    result = json.loads((tmp_path / "replay.json").read_text())
    assert set(result["windows"]) == {"xypipe", "nats-ws conflated", "nats-ws raw ticks"}
    for name, w in result["windows"].items():
        assert w["frames"] > 0 and w["bytes_per_client_s"] > 0, (name, w)
        assert w["e2e"]["n"] > 0 and w["e2e"]["p99"] >= w["e2e"]["p50"] > 0, (name, w["e2e"])
        # CPU and RSS read for every process over the window (a figure ≥ 0: /proc counts in
        # 10 ms ticks); the gateway window's server is busy enough to show.
        assert set(w["cpu_pct"]) == PROCESSES and set(w["rss_mb"]) == PROCESSES, w
        assert all(v >= 0 for v in w["cpu_pct"].values())
        assert all(v > 0 for v in w["rss_mb"].values())
    assert sum(w["cpu_pct"]["gateway"] + w["cpu_pct"]["aggregator"]
               for w in result["windows"].values()) > 0
    m = result["measured"]
    for key in ("e2e_p50", "e2e_p99", "recovery_gateway", "recovery_nats", "rebuild",
                "bytes_per_client"):
        assert isinstance(m[key], float) and m[key] > 0, (key, m)
    assert result["ingest"]["peak_ticks_per_s"] > 0
    png = (tmp_path / "replay.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    md = (tmp_path / "replay.md").read_text()
    assert "| E2E p99 ms |" in md
    # The spec's bar, judged by the same evaluator: the tabs' objectives not measured here.
    assert "e2e_p99" in md and "not measured" in md and len(result["spec_bar"]) == 8


def test_a_bad_spec_fails_before_anything_starts(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xypipe", "bench", "replay", "--quick", "--slo",
         "e2e_p99<180ms,recovery<3", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "XY-BENCH-001" in out.stderr and "term 2 'recovery<3'" in out.stderr
    assert not list(tmp_path.iterdir())


def test_an_objective_measured_in_tabs_needs_tabs(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "replay.py"), "--quick", "--slo",
         "e2e_p99<180ms,frame_p95<16.7ms", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "XY-BENCH-002" in out.stderr and "frame_p95" in out.stderr and "--tabs" in out.stderr
    assert not list(tmp_path.iterdir())


def test_the_tape_loop_continues_each_symbols_sequence_across_passes() -> None:
    import _tape_loop

    from xypipe._tape import read_tape

    tape = read_tape(BENCH / "data" / "demo-market.tape")
    ref, ticks = _tape_loop.passes(tape)
    first = _tape_loop.shifted(tape, ref, ticks, 0)
    second = _tape_loop.shifted(tape, ref, ticks, 1)
    assert len(first) == len(tape) and len(second) == len(tape) - len(ref)
    by_symbol: dict[str, list[int]] = {}
    for t in (first, second):
        for r in t:
            if r.subject.startswith("xy.src.tick."):
                by_symbol.setdefault(r.subject, []).append(Tick.FromString(r.data).seq)
    # The second pass starts right after the first pass's last sequence of each symbol: the
    # tape's own faults (a duplicate, a reorder) recur, nothing else jumps.
    for seqs in by_symbol.values():
        half = len(seqs) // 2
        assert min(seqs[half:]) == max(seqs[:half]) + 1
    # Only the sequence changes: the rest of each tick is the tape's.
    r0, r1 = next(iter(ticks))[0], second.records[0]
    a, b = Tick.FromString(r0.data), Tick.FromString(r1.data)
    assert (a.venue, a.symbol, a.last, a.bids) == (b.venue, b.symbol, b.last, b.bids)


@pytest.mark.nats
@pytest.mark.browser
def test_tabs_put_both_browsers_side_by_side_with_sockets_counted_by_the_servers(
        tmp_path: pathlib.Path) -> None:
    """``--tabs 2``: two tabs of the demo page and two of the nats.ws peer in the same run. The
    servers count one socket for xypipe's browser (the SharedWorker's) and one per tab for the
    peer's; every figure of the browser table is read for both sides, and its ratio printed."""
    out = subprocess.run(
        [sys.executable, "-m", "xypipe", "bench", "replay", "--quick", "--tabs", "2", "--peer",
         "none", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tabs = json.loads((tmp_path / "replay.json").read_text())["tabs"]
    ours, peer = tabs["xypipe"], tabs["nats.ws"]
    assert "error" not in peer, peer
    assert ours["sockets"]["server_min"] == ours["sockets"]["server_max"] == 1, ours["sockets"]
    assert peer["sockets"]["server_min"] == peer["sockets"]["server_max"] == 2, peer["sockets"]
    assert ours["sockets"]["kernel_max"] == 1 and peer["sockets"]["kernel_max"] == 2
    for side in (ours, peer):
        assert side["tabs"] == 2 and side["bytes_per_s"] > 0 and side["deltas_per_s"] > 0
        assert len(side["main_thread_ms_per_s"]["per_tab"]) == 2
        assert all(v > 0 for v in side["main_thread_ms_per_s"]["per_tab"])
        assert side["frame_interval_ms"]["n"] > 0 and side["latency_ms"]["n"] > 0
        assert side["latency_ms"]["p99"] >= side["latency_ms"]["p50"] > 0
        assert side["rss_mb"]["browser"] > 0 and side["rss_mb"]["gateway"] > 0
        assert side["rss_mb"]["nats"] > 0
        assert set(side["server_cpu_pct"]) == {"gateway", "nats"}
        assert "server_cpu_us_per_delta" in side
    # A raw tick is a delta of one symbol; a group's delta holds many.
    assert peer["deltas_per_s"] > ours["deltas_per_s"]
    for row in ("sockets per browser", "main-thread ms per s per tab", "E2E -> drawn p99 ms",
                "server CPU µs per delivered delta", "browser RSS MB", "xypipe / nats.ws"):
        assert row in out.stdout, out.stdout
        assert row in (tmp_path / "replay.md").read_text()


def test_each_servers_cpu_for_the_browser_is_its_own_window_minus_the_other_sides() -> None:
    import _tabs

    tabs = {"xypipe": {"server_cpu_pct": {"gateway": 12.0, "nats": 9.0},
                       "deltas_per_s": 60.0, "bytes_per_s": 240_000},
            "nats.ws": {"server_cpu_pct": {"gateway": 7.0, "nats": 13.0},
                        "deltas_per_s": 4000.0, "bytes_per_s": 800_000}}
    _tabs.per_delta(tabs)
    ours, peer = tabs["xypipe"], tabs["nats.ws"]
    # The gateway spent 5 % of a core more with xypipe's tabs; nats-server 4 % more with the
    # peer's: per delivered delta, 0.05 s / 60 and 0.04 s / 4000.
    assert ours["server_cpu_for_browser_pct"] == 5.0 and peer["server_cpu_for_browser_pct"] == 4.0
    assert ours["server_cpu_us_per_delta"] == pytest.approx(833.33, abs=0.01)
    assert peer["server_cpu_us_per_delta"] == 10.0
    assert ours["server_cpu_us_per_kb"] == pytest.approx(208.33, abs=0.01)
    assert peer["server_cpu_us_per_kb"] == 50.0
    # A side that was not measured leaves the other untouched.
    alone = {"xypipe": {"server_cpu_pct": {"gateway": 1.0, "nats": 1.0}},
             "nats.ws": {"error": "no nats.ws"}}
    _tabs.per_delta(alone)
    assert "server_cpu_for_browser_pct" not in alone["xypipe"]
