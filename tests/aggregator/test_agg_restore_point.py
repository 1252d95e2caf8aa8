"""The restore point stays fresh: every way a stored group snapshot could fall behind (and drag
the replay start back) is reproduced on the sans-I/O cores and the stages (mock clock)."""

from __future__ import annotations

import trio
from _agg_helpers import Routed, tick

from xypipe._md.conflation import Conflator
from xypipe._md.records import Batch, ContractRec, Restore, Watermark
from xypipe._md.restore_point import plan_restore
from xypipe._md.snapshots import SnapshotBuilder, SnapshotOut
from xypipe._stages.conflate import Conflate
from xypipe._stages.snapshot import SnapshotStage
from xypipe.contracts import Contract, Snapshot, SymbolState
from xypipe.testing import stage_harness


def build(b: SnapshotBuilder, group: str) -> Snapshot | None:
    out = b.build(group, 1, 33)
    return None if out is None else Snapshot.FromString(out.payload)


def test_a_group_emptied_by_moves_still_snapshots_empty_at_the_current_watermark() -> None:
    # Cold start: symbols land in the default group before their contracts say "fx".
    core, feed, b = Conflator(epoch=1), Routed(), SnapshotBuilder(1)
    core.apply(feed.batch([tick(symbol="X", seq=1), tick(symbol="Y", seq=1)]))
    for d in core.emit(1, 0, 33):
        b.apply(d)
    first = build(b, "default")
    assert first is not None and first.source_stream_seq == 2
    feed.router.learn("V.X", "fx")
    feed.router.learn("V.Y", "fx")
    for step in range(2, 50):
        core.apply(feed.batch([tick(symbol="X", seq=step), tick(symbol="Y", seq=step)]))
        for d in core.emit(step, 0, 33):
            b.apply(d)
    emptied = build(b, "default")
    assert emptied is not None, "an emptied group must still be snapshotted"
    assert list(emptied.symbols) == [] and emptied.source_stream_seq == feed.sseq
    assert {s.symbol for s in build(b, "fx").symbols} == {"X", "Y"}


def test_a_group_that_receives_nothing_follows_the_watermark_of_the_others() -> None:
    core = Conflator(epoch=1)
    feed = Routed(rules=[{"group": "quiet", "symbols": ["Q*"]},
                         {"group": "busy", "symbols": ["*"]}])
    b = SnapshotBuilder(1)
    core.apply(feed.batch([tick(symbol="Q1", seq=1), tick(symbol="B1", seq=1)]))
    for d in core.emit(1, 0, 33):
        b.apply(d)
    for step in range(2, 30):
        core.apply(feed.batch([tick(symbol="B1", seq=step)]))
        for d in core.emit(step, 0, 33):
            b.apply(d)
    quiet = build(b, "quiet")
    assert quiet is not None and quiet.source_stream_seq == feed.sseq


async def test_a_quiet_window_still_moves_the_watermark_on(autojump_clock) -> None:
    # Only a contract arrives (no delta to carry the watermark): conflate says so anyway.
    contract = ContractRec("V.X", Contract(venue="V", symbol="X", group="fx"), 41, 0.0)
    async with stage_harness(Conflate, {"interval_ms": 33}) as h:
        await h.send(Batch([contract], 41))
        with trio.fail_after(1):
            out = await h.receive()
    assert out == [Watermark(41)]
    core, feed = Conflator(epoch=1), Routed()
    core.apply(feed.batch([tick(symbol="X", seq=1)]))
    async with stage_harness(SnapshotStage, {"interval_ms": 1000, "request_subject": ""}) as h:
        await h.send(core.emit(1, 0, 33))
        await h.send([Watermark(41)])
        with trio.fail_after(5):
            items = [await h.receive(), await h.receive()]
    assert not any(type(x) is Watermark for batch in items for x in batch)  # not forwarded
    (snap,) = [Snapshot.FromString(x.payload) for x in items[1] if type(x) is SnapshotOut]
    assert snap.source_stream_seq == 41


async def test_snapshots_come_early_when_the_source_moves_fast(autojump_clock) -> None:
    core, feed = Conflator(epoch=1), Routed()
    times: list[float] = []
    async with stage_harness(SnapshotStage, {"interval_ms": 5000, "request_subject": "",
                                             "max_replay_msgs": 500,
                                             "min_interval_ms": 250}) as h:
        t0 = trio.current_time()
        for step in range(1, 120):  # 20 messages every 33 ms: ~600 messages a second
            core.apply(feed.batch([tick(symbol=f"S{i}", seq=step) for i in range(20)]))
            await h.send(core.emit(step, 0, 33))
            await trio.sleep(0.033)
            for batch in h.available():
                if type(batch[0]) is SnapshotOut:
                    times.append(round(trio.current_time() - t0, 2))
                    lag = feed.sseq - Snapshot.FromString(batch[0].payload).source_stream_seq
                    assert lag <= 20
        rounds = h.ctx.metrics.sample("snapshot_rounds_total", {"trigger": "count"})
    # 500 messages take ~0.83 s: well before the 5 s interval, and again every ~0.83 s.
    assert times and times[0] < 1.0 and len(times) >= 4
    assert rounds == len(times)


async def test_without_count_trigger_snapshots_wait_for_the_interval(autojump_clock) -> None:
    core, feed = Conflator(epoch=1), Routed()
    async with stage_harness(SnapshotStage, {"interval_ms": 5000, "request_subject": "",
                                             "max_replay_msgs": 0}) as h:
        for step in range(1, 120):
            core.apply(feed.batch([tick(symbol=f"S{i}", seq=step) for i in range(20)]))
            await h.send(core.emit(step, 0, 33))
            await trio.sleep(0.033)
            assert not any(type(b[0]) is SnapshotOut for b in h.available())


# --------------------------------------------------------------------------- plan_restore


def snap(group: str, seq: int, symbols: tuple[str, ...] = (), shard_seq: int = 5) -> Snapshot:
    return Snapshot(group=group, epoch=1, version=3, source_stream_seq=seq,
                    shard_seq={0: shard_seq}, shards=1,
                    symbols=[SymbolState(venue="V", symbol=s) for s in symbols])


def test_a_stale_empty_group_does_not_drag_the_restore_point_back() -> None:
    point = plan_restore([snap("default", 10), snap("fx", 9000, ("X",))],
                         {("default", 0): 5, ("fx", 0): 5})
    assert point.replay_from == 9001
    assert [(i.group, i.source_stream_seq, i.reason) for i in point.ignored] == [
        ("default", 10, "empty")]


def test_a_group_whose_symbols_all_moved_is_emptied_and_ignored() -> None:
    point = plan_restore([snap("default", 10, ("X", "Y")), snap("fx", 9000, ("X", "Y"))], {})
    assert point.replay_from == 9001
    default = next(s for s in point.snapshots if s.group == "default")
    assert list(default.symbols) == [] and default.shard_seq[0] == 5
    assert "all 2 of its symbols" in point.ignored[0].reason


def test_a_group_with_a_symbol_held_nowhere_else_keeps_the_restore_point() -> None:
    point = plan_restore([snap("slow", 10, ("X", "Z")), snap("fx", 9000, ("X",))], {})
    assert point.replay_from == 11 and point.ignored == ()
    assert {s.symbol for s in point.snapshots[0].symbols} == {"X", "Z"}


def test_a_group_that_emitted_deltas_after_its_snapshot_keeps_the_restore_point() -> None:
    # Its checkpoint is past its snapshot: it has something to get back from the replay.
    point = plan_restore([snap("default", 10, shard_seq=5), snap("fx", 9000, ("X",))],
                         {("default", 0): 6})
    assert point.replay_from == 11 and point.ignored == ()


def test_restore_with_the_plan_rebuilds_only_fresh_copies() -> None:
    point = plan_restore([snap("fx", 9000, ("X",)), snap("default", 10, ("X",))], {})
    restore = Restore(epoch=1, snapshots=point.snapshots, continued=True,
                      replay_from=point.replay_from)
    b = SnapshotBuilder(1)
    b.restore(restore)
    assert list(b.groups["default"].entries) == [] and list(b.groups["fx"].entries) == ["V.X"]
    emptied = build(b, "default")
    assert emptied is not None and emptied.source_stream_seq == 9000
