"""bench/fanout.py's load generators still work: a short real run (nats-server, ``xypipe run``
with the generated gateway config, the publisher, each lean client kind in its own process)
writes a result for every kind with frames, bytes, latency samples and both sides' CPU; and the
picows client's partial frame reading agrees with a full decode. The numbers themselves are the
benchmark's business, not the suite's: nothing here is timed."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from xypipe.contracts import DegradeChange, Delta, PriceLevel, ServerFrame, Snapshot, SymbolState

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import _fanout_lean  # noqa: E402  (bench/ is not a package)


def _delta(group: str, ts: int) -> Delta:
    return Delta(group=group, seq=3, epoch=1, ts_emit_us=ts, window_ms=33, removed=["X.gone"],
                 symbols=[SymbolState(venue="X", symbol="a", seq=3,
                                      bids=[PriceLevel(price=9, size=1)],
                                      asks=[PriceLevel(price=11, size=2)])])


def test_stamp_reads_the_emit_stamps_and_level_a_full_decode_reads() -> None:
    stamp = _fanout_lean.stamp_class(ServerFrame.DESCRIPTOR)
    frame = ServerFrame(deltas=[_delta("g0", 1_733_580_000_123_456), _delta("g1", 17)],
                        snapshots=[Snapshot(group="g0", version=2, ts_emit_us=5)],
                        degrade=DegradeChange(level=2, reason="queue"), ts_send_us=99)
    s = stamp.FromString(frame.SerializeToString())
    assert [d.ts_emit_us for d in s.deltas] == [1_733_580_000_123_456, 17]
    assert s.HasField("degrade") and s.degrade.level == 2
    bare = stamp.FromString(ServerFrame(degrade=DegradeChange(level=0)).SerializeToString())
    assert not bare.deltas and bare.HasField("degrade") and bare.degrade.level == 0
    assert not stamp.FromString(b"").HasField("degrade")


def test_recorder_counts_every_frame_and_samples_every_tenth_while_measuring() -> None:
    rec = _fanout_lean.Recorder(_fanout_lean.stamp_class(ServerFrame.DESCRIPTOR))
    payload = ServerFrame(deltas=[_delta("g0", 1), _delta("g1", 2)]).SerializeToString()
    rec.frame(payload, _fanout_lean.SAMPLE_EVERY)  # not measuring yet: ignored
    rec.measuring = True
    for n in range(1, 3 * _fanout_lean.SAMPLE_EVERY + 1):
        rec.frame(memoryview(payload), n)
    assert (rec.frames, rec.bytes) == (30, 30 * len(payload))
    assert (rec.sampled, rec.deltas_sampled, len(rec.lat)) == (3, 6, 3)
    assert all(lat > 0 for lat in rec.lat)  # now minus a stamp of 1 µs after the epoch


def _counted(r: dict) -> None:
    """Every frame and byte counted, latency sampled, both sides' CPU read (a figure; /proc counts
    in 10 ms ticks, so a lightly loaded side may read 0 over a short window — the caller checks
    that CPU was seen across the runs)."""
    assert r["clients"] == 3 and r["connections_lost"] == 0, r
    assert r["frames"] > 0 and r["bytes"] > r["frames"], r
    assert r["lat_samples"] > 0 and r["lat_p99_ms"] >= r["lat_p50_ms"] > 0, r
    assert r["deltas_per_frame"] >= 1 and r["deltas_per_s"] > 0, r
    for key in ("loadgen_cpu_pct", "gateway_cpu_pct", "loadgen_us_per_frame",
                "gateway_us_per_frame"):
        assert isinstance(r[key], float | int) and r[key] >= 0, (key, r)


@pytest.mark.nats
def test_a_short_run_of_each_lean_client_and_the_nats_ws_peer(tmp_path: pathlib.Path) -> None:
    # One stack for all three windows: picows and node against the gateway, picows against
    # nats-server's WebSocket listener.
    out = subprocess.run(
        [sys.executable, str(BENCH / "fanout.py"), "--compare-clients", "picows", "node",
         "--peer", "--clients", "3", "--runs", "1", "--seconds", "1.5", "--warmup", "0.5",
         "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "fanout_clients.json").read_text())
    runs = {(r["server"], r["client_kind"]): r for r in saved["runs"]}
    assert set(runs) == {("gateway", "picows"), ("gateway", "node"), ("nats-ws", "picows")}
    for r in runs.values():
        _counted(r)
    # The gateway (a Python process serving every frame) always shows CPU; the load generator's
    # is read too, summed over its three windows.
    assert runs["gateway", "picows"]["gateway_cpu_pct"] > 0, runs
    assert sum(r["loadgen_cpu_pct"] for r in runs.values()) > 0, runs
    # The peer delivers each delta as its own NATS message: all of them are counted.
    assert runs["nats-ws", "picows"]["deltas"] > 0
    md = (tmp_path / "fanout_clients.md").read_text()
    assert "| 3 | picows |" in md and "| 3 | node |" in md
