"""A tape replayed onto a real nats-server through the live aggregator: the books converge to
the tape's ground truth and to what the deterministic replay of the same tape computes (same
checksums, symbol by symbol), though the live deltas' bytes and timing are its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _agg_nats import Subscriber, converged, mismatches, start_aggregator

from xypipe._md.client import apply_entries
from xypipe._nats import connect
from xypipe._publisher import FaultRates, GroundTruth, MarketTapeSpec, write_market_tape
from xypipe._stages.shard import ShardConfig
from xypipe._tape import read_tape, replay_tape
from xypipe._tape_deltas import ReplayConfig, replay_deltas
from xypipe.contracts import Delta, SymbolState

pytestmark = pytest.mark.nats


@pytest.mark.parametrize("speed", [None, 10.0], ids=["max", "10x"])
async def test_a_replayed_tape_gives_the_deterministic_books_live(
        nats_url: str, tmp_path: Path, speed: float | None) -> None:
    truth = GroundTruth()
    path = tmp_path / "m.tape"
    write_market_tape(path, MarketTapeSpec(seed=21, rate=4000, duration_s=1.0, symbols=40,
                                           faults=FaultRates(duplicate=0.01, reorder=0.01)),
                      truth)
    tape = read_tape(path)
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        sub = Subscriber(nc)
        await nursery.start(sub.run)
        _agg, scope = await start_aggregator(nursery, nats_url)
        async with connect(nats_url, name="replayer") as pub:
            assert await replay_tape(pub, tape, speed) == len(tape)
        await sub.wait_until(lambda: converged(sub.view, truth), limit=60)
        scope.cancel()
        nursery.cancel_scope.cancel()
    assert mismatches(sub.view, truth) == []
    stats = sub.view.stats
    assert (stats.gaps, stats.repeats, stats.checksum_mismatches) == (0, 0, 0), stats.problems

    out, _ = replay_deltas(tape, ReplayConfig(shard=ShardConfig(shards=2)))
    books: dict[str, dict[tuple[str, str], SymbolState]] = {}
    for rec in out:
        if rec.subject.startswith("xy.md.tick."):
            d = Delta.FromString(rec.data)
            apply_entries(books.setdefault(d.group, {}), d)
    deterministic = {k: s.checksum for g in books.values() for k, s in g.items()}
    live = {k: s.checksum for k, s in sub.view.state().items()}
    assert live == deterministic and len(live) == len(truth.last)
