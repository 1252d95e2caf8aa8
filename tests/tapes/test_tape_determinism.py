"""Determinism: the same tape and seed give the same deltas, byte for byte, in any process; a
different seed gives different bytes; the books those deltas build are the publisher's truth."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xypipe._md.book import checksum, state_checksum
from xypipe._md.client import apply_entries
from xypipe._publisher import (
    FaultRates,
    GroundTruth,
    MarketTapeSpec,
    market_tape,
    write_market_tape,
)
from xypipe._stages.conflate import ConflateConfig
from xypipe._stages.shard import ShardConfig
from xypipe._tape import TapeRecord, read_tape
from xypipe._tape_deltas import ReplayConfig, replay_deltas, write_deltas
from xypipe.contracts import Delta, Snapshot, SymbolState

ROOT = Path(__file__).resolve().parents[2]
FAULTS = FaultRates(duplicate=0.01, reorder=0.01, gap=0.005, malformed=0.005)
SPEC = MarketTapeSpec(seed=11, rate=3000, duration_s=1.5, symbols=60, faults=FAULTS)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_seed_makes_the_same_tape_and_another_seed_another(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.tape", tmp_path / "b.tape", tmp_path / "c.tape"
    write_market_tape(a, SPEC)
    write_market_tape(b, SPEC)
    write_market_tape(c, MarketTapeSpec(seed=12, rate=3000, duration_s=1.5, symbols=60,
                                        faults=FAULTS))
    assert a.read_bytes() == b.read_bytes()
    assert _digest(a) != _digest(c)
    tape = read_tape(a)
    assert tape.header.seed == 11 and tape.header.source.startswith("xypipe tape make --seed 11")


def test_the_same_tape_gives_the_same_delta_bytes_twice_and_in_other_processes(
        tmp_path: Path) -> None:
    tape_path = tmp_path / "m.tape"
    write_market_tape(tape_path, SPEC)
    tape = read_tape(tape_path)
    first, second = tmp_path / "d1.tape", tmp_path / "d2.tape"
    write_deltas(first, tape)
    write_deltas(second, read_tape(tape_path))
    assert first.read_bytes() == second.read_bytes()
    # Other processes, other hash seeds (a set's order must never leak into the output).
    for i, hash_seed in enumerate(("1", "4242")):
        out = tmp_path / f"p{i}.tape"
        proc = subprocess.run(
            [sys.executable, "-m", "xypipe", "tape", "deltas", str(tape_path), "--out",
             str(out)], env={**os.environ, "PYTHONHASHSEED": hash_seed}, cwd=ROOT,
            capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes() == first.read_bytes()


def test_another_seed_gives_other_deltas(tmp_path: Path) -> None:
    outs = []
    for seed in (11, 12):
        path = tmp_path / f"s{seed}.tape"
        write_market_tape(path, MarketTapeSpec(seed=seed, rate=3000, duration_s=1.0,
                                               symbols=60))
        deltas, _ = replay_deltas(read_tape(path))
        outs.append(b"".join(r.subject.encode() + r.data for r in deltas))
    assert outs[0] != outs[1]


def _fold(out: list[TapeRecord]) -> dict[tuple[str, str], SymbolState]:
    """Books from the deltas alone, as a client from sequence 1: every sequence contiguous,
    every entry's checksum verified."""
    groups: dict[str, dict[tuple[str, str], SymbolState]] = {}
    seqs: dict[tuple[str, int], int] = {}
    epochs = set()
    for rec in out:
        if not rec.subject.startswith("xy.md.tick."):
            continue
        d = Delta.FromString(rec.data)
        epochs.add(d.epoch)
        assert d.seq == seqs.get((d.group, d.shard), 0) + 1, f"{d.group}/{d.shard} gap"
        seqs[(d.group, d.shard)] = d.seq
        applied = apply_entries(groups.setdefault(d.group, {}), d)
        assert not applied.mismatched
    assert len(epochs) == 1
    return {k: s for g in groups.values() for k, s in g.items()}


def test_the_books_from_the_deltas_are_the_publishers_truth(tmp_path: Path) -> None:
    truth = GroundTruth()
    path = tmp_path / "m.tape"
    write_market_tape(path, SPEC, truth)
    cfg = ReplayConfig(shard=ShardConfig(group_shards={"equities": 2}),
                       conflate=ConflateConfig(interval_ms=33))
    out, stats = replay_deltas(read_tape(path), cfg)
    assert stats.duplicates and stats.reordered and stats.gaps and stats.bad.get("decode")
    books = _fold(out)
    last = truth.last
    assert len(books) == len(last) > 50  # (the quietest symbols may never tick)
    assert set(books) == {(t.venue, t.symbol) for t in last.values()}
    for key, tick in last.items():
        s = books[(tick.venue, tick.symbol)]
        trades = truth.trades.get(key, 0)
        assert (s.seq, s.last, s.last_size, s.vol, s.oi, s.flags, s.total_trades) == (
            tick.seq, tick.last, tick.last_size, tick.vol, tick.oi, tick.flags, trades), key
        assert list(s.bids) == list(tick.bids) and list(s.asks) == list(tick.asks)
        want = checksum(tick.venue, tick.symbol, tick.seq, tick.last, tick.last_size, tick.vol,
                        tick.oi, tick.flags, trades, tick.bids, tick.asks)
        assert s.checksum == state_checksum(s) == want
    # The last round of snapshots holds exactly those books, at the deltas' last sequences.
    final: dict[str, Snapshot] = {}
    for rec in out:
        if rec.subject.startswith("xy.md.snapshot."):
            snap = Snapshot.FromString(rec.data)
            final[snap.group] = snap
    in_snapshots = {(s.venue, s.symbol): s for snap in final.values() for s in snap.symbols}
    assert in_snapshots == books
    assert {snap.ts_emit_us for snap in final.values()} == {
        read_tape(path).header.created_us + out[-1].t_us}


def test_windows_close_on_the_tapes_clock(tmp_path: Path) -> None:
    path = tmp_path / "m.tape"
    write_market_tape(path, SPEC)
    tape = read_tape(path)
    out, _ = replay_deltas(tape, ReplayConfig(conflate=ConflateConfig(interval_ms=50)))
    deltas = [(r.t_us, Delta.FromString(r.data)) for r in out if r.subject.startswith(
        "xy.md.tick.")]
    assert {t % 50_000 for t, _ in deltas} == {0}
    assert all(d.ts_emit_us == tape.header.created_us + t and d.window_ms == 50
               and d.epoch == tape.header.created_us and d.fence == 0 for t, d in deltas)
    assert [r.t_us for r in out] == sorted(r.t_us for r in out)


def test_the_shipped_tape_is_what_its_command_makes(tmp_path: Path) -> None:
    """bench/data/demo-market.tape is `make bench-tape`'s output, byte for byte."""
    makefile = (ROOT / "Makefile").read_text()
    line = makefile[makefile.index("BENCH_TAPE = "):].split("\nbench-tape:")[0]
    argv = line.removeprefix("BENCH_TAPE = .venv/bin/xypipe ").replace("\\\n", " ").split()
    argv[argv.index("--to") + 1] = str(tmp_path / "fresh.tape")
    proc = subprocess.run([sys.executable, "-m", "xypipe", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    shipped = ROOT / "bench" / "data" / "demo-market.tape"
    assert (tmp_path / "fresh.tape").read_bytes() == shipped.read_bytes()


@pytest.mark.parametrize("config", ["configs/demo.toml"])
def test_deltas_with_a_configs_aggregator_settings(tmp_path: Path, config: str) -> None:
    from xypipe._cli_tape import replay_config_of

    cfg = replay_config_of(str(ROOT / config))
    assert cfg.shard.group_shards == {"equities": 2} and cfg.shard.default_group == "misc"
    path = tmp_path / "m.tape"
    write_market_tape(path, MarketTapeSpec(seed=3, rate=2000, duration_s=0.5, symbols=40))
    out, _ = replay_deltas(read_tape(path), cfg)
    assert {"xy.md.tick.equities.0", "xy.md.tick.equities.1"} <= {r.subject for r in out}


def test_market_tape_matches_the_records_written(tmp_path: Path) -> None:
    path = tmp_path / "m.tape"
    write_market_tape(path, SPEC)
    assert [(r.t_us, r.subject, r.data) for r in read_tape(path)] == list(market_tape(SPEC))
