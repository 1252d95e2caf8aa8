"""Snapshots: periodic, consistent with the deltas, restorable."""

from __future__ import annotations

import itertools

import pytest
import trio
from _agg_helpers import Routed, tick

from xypipe._md.client import MarketView
from xypipe._md.conflation import Conflator
from xypipe._md.records import Restore
from xypipe._md.snapshots import SnapshotOut
from xypipe._stages.snapshot import SnapshotStage
from xypipe.contracts import Delta, Snapshot
from xypipe.testing import stage_harness


def split(items: list) -> tuple[list[Delta], list[Snapshot]]:
    deltas, snaps = [], []
    for batch in items:
        for x in batch:
            if isinstance(x, SnapshotOut):
                snaps.append(Snapshot.FromString(x.payload))
            else:
                deltas.append(Delta.FromString(x.payload))
    return deltas, snaps


async def test_snapshots_every_interval_follow_the_deltas_they_include(
    autojump_clock: trio.abc.Clock,
) -> None:
    core, feed = Conflator(epoch=3), Routed(shards=2)
    out = []
    async with stage_harness(SnapshotStage, {"interval_ms": 2000, "request_subject": ""}) as h:
        t0 = trio.current_time()
        times = []
        for step in range(1, 200):
            core.apply(feed.batch([tick(symbol=f"S{step % 13}", seq=step // 13 + 1,
                                        last=100 + step % 7, vol=step)]))
            await h.send(core.emit(step, 0, 33))
            await trio.sleep(0.033)
            for batch in h.available():
                out.append(batch)
                if isinstance(batch[0], SnapshotOut):
                    times.append(trio.current_time() - t0)
    assert times[:3] == pytest.approx([2.0, 4.0, 6.0], abs=0.034)
    _, snaps = split(out)
    assert [s.version for s in snaps] == [1, 2, 3]
    assert all(s.epoch == 3 and s.shards == 2 for s in snaps)
    # In the output a snapshot comes after every delta it is consistent with.
    seen: dict[int, int] = {}
    for batch in out:
        for x in batch:
            if isinstance(x, SnapshotOut):
                assert x.shard_seq == seen
            else:
                seen[x.shard] = x.seq


async def test_applying_the_deltas_after_snapshot_n_gives_snapshot_n_plus_1(
    autojump_clock: trio.abc.Clock,
) -> None:
    core, feed = Conflator(epoch=3), Routed(shards=3)
    out = []
    async with stage_harness(SnapshotStage, {"interval_ms": 500, "request_subject": "",
                                             "top_k": 5}) as h:
        for step in range(1, 80):
            core.apply(feed.batch([tick(symbol=f"S{step % 11}", seq=step // 11 + 1,
                                        last=100 + step % 5, vol=step, trade=True, size=1)]))
            await h.send(core.emit(step, 0, 33))
            await trio.sleep(0.033)
            out += h.available()
    items: list = []
    for batch in out:
        for x in batch:
            items.append(Snapshot.FromString(x.payload) if isinstance(x, SnapshotOut)
                         else Delta.FromString(x.payload))
    snap_idx = [i for i, x in enumerate(items) if isinstance(x, Snapshot)]
    assert len(snap_idx) >= 3
    for a, b in itertools.pairwise(snap_idx):
        view = MarketView()
        view.apply_snapshot(items[a])
        for x in items[a + 1 : b]:
            view.apply_delta(x)
        expected = {(s.venue, s.symbol): s for s in items[b].symbols}
        assert view.state() == expected
        assert view.groups["default"].seqs == dict(items[b].shard_seq)
        assert view.stats.gaps == view.stats.repeats == view.stats.checksum_mismatches == 0
    top = items[snap_idx[-1]].top
    assert len(top) == 5 and [t.value for t in top] == sorted((t.value for t in top),
                                                             reverse=True)


async def test_a_restored_group_waits_for_the_deltas_it_missed_before_snapshotting(
    autojump_clock: trio.abc.Clock,
) -> None:
    core, feed = Conflator(epoch=3), Routed()
    core.apply(feed.batch([tick(seq=1)]))
    deltas = core.emit(1, 0, 33)
    from xypipe._md.snapshots import SnapshotBuilder

    b = SnapshotBuilder(3)
    b.apply(deltas[0])
    snap = Snapshot.FromString(b.build("default", 1, 33).payload)
    restore = Restore(epoch=3, snapshots=(snap,), checkpoints={("default", 0): 4},
                      continued=True, replay_from=2)
    core2 = Conflator(epoch=0)
    core2.restore(restore)
    async with stage_harness(SnapshotStage, {"interval_ms": 100, "request_subject": ""}) as h:
        await h.send(restore)
        await trio.sleep(0.35)
        assert h.available() == []  # it would claim seq 1 while clients saw up to 4
        core2.apply(feed.batch([tick(seq=2)]))
        sent = core2.emit(2, 0, 33)
        assert sent[0].seq == 5
        await h.send(sent)
        await trio.sleep(0.2)
        _, snaps = split(h.available())
    assert snaps and snaps[0].version == 2 and dict(snaps[0].shard_seq) == {0: 5}


def test_a_symbol_that_moves_group_leaves_the_old_groups_snapshot() -> None:
    from xypipe._md.snapshots import SnapshotBuilder

    core = Conflator(epoch=1)
    feed = Routed(rules=[{"group": "a", "symbols": ["*"]}])
    b = SnapshotBuilder(1)
    core.apply(feed.batch([tick(symbol="X", seq=1), tick(symbol="Y", seq=1)]))
    for d in core.emit(1, 0, 33):
        b.apply(d)
    feed.router.learn("V.X", "b")  # its contract now says group b
    core.apply(feed.batch([tick(symbol="X", seq=2)]))
    for d in core.emit(2, 0, 33):
        b.apply(d)
    a = Snapshot.FromString(b.build("a", 3, 33).payload)
    moved = Snapshot.FromString(b.build("b", 3, 33).payload)
    assert [s.symbol for s in a.symbols] == ["Y"]
    assert [(s.symbol, s.seq) for s in moved.symbols] == [("X", 2)]
