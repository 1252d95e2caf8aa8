"""The synthetic market: determinism, realism rules, faults, tapes, pacing."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from xypipe._errors import XyError
from xypipe._md.wire import TruncatedStream
from xypipe._publisher import (
    FaultInjector,
    FaultRates,
    GroundTruth,
    MarketSim,
    Pacer,
    read_tape,
    stamp_arrival,
    write_tape,
)
from xypipe.contracts import Tick


def test_same_seed_same_ticks() -> None:
    a = [MarketSim(50, seed=7).next_tick(1).SerializeToString() for _ in range(1)]
    sa, sb = MarketSim(50, seed=7), MarketSim(50, seed=7)
    assert [sa.next_tick(1) for _ in range(500)] == [sb.next_tick(1) for _ in range(500)]
    assert a[0] != MarketSim(50, seed=8).next_tick(1).SerializeToString()


def test_ticks_are_realistic_books_with_monotone_volume_and_open_interest() -> None:
    sim = MarketSim(20, seed=1)
    last: dict[str, Tick] = {}
    for _ in range(5000):
        t = sim.next_tick(1)
        key = f"{t.venue}.{t.symbol}"
        assert len(t.bids) == len(t.asks) == 5
        assert [lv.price for lv in t.bids] == sorted((lv.price for lv in t.bids), reverse=True)
        assert [lv.price for lv in t.asks] == sorted(lv.price for lv in t.asks)
        assert t.bids[0].price < t.asks[0].price
        prev = last.get(key)
        if prev is not None:
            assert t.seq == prev.seq + 1
            assert t.vol >= prev.vol and t.oi >= prev.oi
        last[key] = t
    assert len({t.venue for t in last.values()}) == 3
    assert len(sim.contracts()) == 20 and {c.group for c in sim.contracts()} > {"equities"}


def test_faults_duplicate_reorder_drop_and_garble_at_their_rates() -> None:
    sim = MarketSim(10, seed=3)
    inj = FaultInjector(FaultRates(0.05, 0.05, 0.02, 0.01), random.Random(1))
    truth = GroundTruth()
    out: list[tuple[str, bytes]] = []
    for _ in range(10_000):
        t = sim.next_tick(1)
        key = f"{t.venue}.{t.symbol}"
        if inj.feed(key, key, t.SerializeToString(), out):
            truth.record(key, t)
    inj.flush(out)
    c = inj.counts
    assert 350 < c.duplicates < 650 and 350 < c.reordered < 650
    assert 100 < c.gaps < 300 and 40 < c.malformed < 160
    garbage = 0
    seqs: dict[str, list[int]] = {}
    for key, payload in out:
        try:
            t = Tick.FromString(payload)
        except DecodeError:
            garbage += 1
            continue
        seqs.setdefault(key, []).append(t.seq)
    assert garbage == c.malformed
    assert sum(len(v) for v in seqs.values()) == truth.ticks + c.duplicates
    inversions = sum(1 for v in seqs.values() for a, b in itertools.pairwise(v) if b < a)
    assert inversions == c.reordered


def test_tape_round_trip_and_truncation_is_reported(tmp_path: Path) -> None:
    sim = MarketSim(5, seed=2)
    ticks = [sim.next_tick(1) for _ in range(100)]
    path = tmp_path / "t.tape"
    assert write_tape(path, ticks) == 100
    assert [Tick.FromString(p) for p in read_tape(path)] == ticks
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(TruncatedStream, match="needs") as info:
        list(read_tape(path))
    assert isinstance(info.value, XyError) and info.value.code == "XY-CON-001"


def test_stamping_the_arrival_time_overrides_the_field() -> None:
    t = MarketSim(1, seed=0).next_tick(5)
    stamped = Tick.FromString(stamp_arrival(t.SerializeToString(), 123456789))
    assert stamped.ts_arrival_us == 123456789 and stamped.seq == t.seq


def test_pacer_spreads_the_rate_and_bursts() -> None:
    p = Pacer(4000, burst_factor=10, burst_every_s=10, burst_s=1)
    p.due(0.0)
    normal = sum(p.due(i * 0.01) for i in range(1, 101))
    assert 3999 <= normal <= 4000
    p.due(9.0)
    burst = sum(p.due(9 + i * 0.01) for i in range(1, 100))
    assert 39_500 <= burst <= 39_600


def test_a_loaded_tape_replays_bytes_and_truth_decodes_lazily(tmp_path: Path) -> None:
    from xypipe._publisher import load_tape

    sim = MarketSim(3, seed=4)
    ticks = [sim.next_tick(1) for _ in range(50)]
    write_tape(tmp_path / "t.tape", ticks)
    loaded = load_tape(tmp_path / "t.tape")
    truth = GroundTruth()
    for tt in loaded:
        truth.record_raw(tt.key, tt.seq, tt.payload, tt.trade, tt.size)
    newest = {f"{t.venue}.{t.symbol}": t for t in ticks}
    assert truth.last == newest
    assert sum(truth.trades.values()) == sum(1 for t in ticks if t.flags & 1)
    assert loaded[0].subject == f"xy.src.tick.{ticks[0].venue}.{ticks[0].symbol}"
