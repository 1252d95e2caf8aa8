"""A restart's rebuild: the replay catches up without closing windows (mock clock), the start-up
reads run side by side, and a one-shot read knows from its consumer how much to wait for (real
nats-server)."""

from __future__ import annotations

import pytest
import trio
from _agg_helpers import Routed, tick

from xypipe import Level
from xypipe._md.book import state_checksum
from xypipe._md.conflation import Conflator
from xypipe._md.records import Restore
from xypipe._md.snapshots import SnapshotBuilder
from xypipe._nats import NatsClient
from xypipe._stages._jsfeed import js_feed
from xypipe._stages.conflate import Conflate
from xypipe._trio_util import both
from xypipe.contracts import Delta, Snapshot, SymbolState
from xypipe.testing import stage_harness

EPOCH = 77


def decoded(deltas: list) -> list[Delta]:
    return [Delta.FromString(d.payload) for d in deltas]


def restore(target_seq: int, *, checkpoint: int = 43) -> Restore:
    """A restart from one stored snapshot of group ``default`` (symbol V.OLD, shard seq 41)
    whose stream emitted up to ``checkpoint`` before the kill; replay 1..``target_seq``."""
    held = SymbolState(venue="V", symbol="OLD", seq=5, last=100)
    held.checksum = state_checksum(held)
    snap = Snapshot(group="default", version=3, epoch=EPOCH, shard_seq={0: 41}, shards=1,
                    source_stream_seq=0, symbols=[held])
    return Restore(epoch=EPOCH, snapshots=(snap,), checkpoints={("default", 0): checkpoint},
                   continued=True, replay_from=1, target_seq=target_seq,
                   started_at=trio.current_time())


async def test_no_window_closes_while_the_replay_catches_up_then_one_delta_carries_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed()
    r = restore(target_seq=30)
    async with stage_harness(Conflate, {}) as h:
        await h.send(r)
        assert await h.receive() is r
        for s in range(1, 15):  # sseq 1..28, over ~15 windows of 33 ms
            await h.send(feed.batch([tick(symbol="AAA", seq=s, size=1, vol=s, trade=True),
                                     tick(symbol="BBB", seq=s, last=200 + s)]))
            await trio.sleep(0.04)
        assert h.available() == []
        before = trio.current_time()
        await h.send(feed.batch([tick(symbol="AAA", seq=15, size=1, vol=15, trade=True),
                                 tick(symbol="BBB", seq=15, last=215)]))  # sseq 29, 30
        (d,) = decoded(await h.receive())
        assert trio.current_time() == before  # at once, not at the next window's end
        assert h.metrics.sample("aggregator_rebuilds_total", {"continued": "true"}) == 1
        # Windows as usual afterwards, the sequence going on.
        await h.send(feed.batch([tick(symbol="AAA", seq=16)]))
        (after,) = decoded(await h.receive())
    assert (d.epoch, d.seq, after.seq) == (EPOCH, 44, 45)
    by_symbol = {s.symbol: s for s in d.symbols}
    assert sorted(by_symbol) == ["AAA", "BBB"]  # the restored, untouched symbol is not resent
    aaa, bbb = by_symbol["AAA"], by_symbol["BBB"]
    # One window over the whole replay: every tick and trade of it, the latest state.
    assert (aaa.seq, aaa.window_ticks, aaa.window_trades, aaa.window_volume) == (15, 15, 15, 15)
    assert (bbb.seq, bbb.last, bbb.window_ticks) == (15, 215, 15)
    assert all(s.checksum == state_checksum(s) for s in d.symbols)
    assert d.window_ms >= 14 * 40  # the whole replay


async def test_windows_resume_after_catch_up_ms_when_the_replay_never_arrives(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed()
    r = restore(target_seq=1000)
    async with stage_harness(Conflate, {"catch_up_ms": 200}) as h:
        await h.send(r)
        await h.receive()
        await h.send(feed.batch([tick(symbol="AAA", seq=1)]))
        (d,) = decoded(await h.receive())
        waited = trio.current_time() - r.started_at
        await h.send(feed.batch([tick(symbol="AAA", seq=2)]))
        (d2,) = decoded(await h.receive())
    assert waited == pytest.approx(0.2, abs=1e-6)
    assert (d.seq, d2.seq) == (44, 45)
    assert h.metrics.sample("aggregator_rebuilds_total", {"continued": "true"}) is None


async def test_catch_up_ms_0_closes_windows_during_the_replay_as_before(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed()
    r = restore(target_seq=1000)
    async with stage_harness(Conflate, {"catch_up_ms": 0}) as h:
        await h.send(r)
        await h.receive()
        t0 = trio.current_time()
        await h.send(feed.batch([tick(symbol="AAA", seq=1)]))
        (d,) = decoded(await h.receive())
        assert trio.current_time() - t0 <= 0.033 + 1e-9
    assert d.seq == 44


async def test_both_runs_two_calls_side_by_side_and_returns_both_results(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def after(seconds: float, value: str) -> str:
        await trio.sleep(seconds)
        return value

    t0 = trio.current_time()
    got = await both(lambda: after(1.0, "a"), lambda: after(2.0, "b"))
    assert got == ("a", "b")
    assert trio.current_time() - t0 == pytest.approx(2.0)


async def test_a_failure_in_both_cancels_the_other_and_comes_out_as_itself(
    autojump_clock: trio.abc.Clock,
) -> None:
    cancelled = []

    async def slow() -> None:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.append(True)
            raise

    async def fails() -> None:
        await trio.sleep(1)
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        await both(slow, fails)
    assert cancelled == [True]


@pytest.mark.nats
async def test_a_last_per_subject_feed_knows_at_creation_how_many_it_delivers(
    nats_client: NatsClient,
) -> None:
    js = nats_client.jetstream()
    await js.ensure_stream("XY_T", ["t.>"], storage="memory")
    await js.publish_many([("t.a", b"1"), ("t.b", b"2"), ("t.a", b"3"), ("t.c.x", b"4")])
    async with js_feed(nats_client, "XY_T", deliver="last_per_subject",
                       filter_subject="t.*") as feed:
        assert feed.pending_at_start == 2
        got = []
        with trio.fail_after(10):
            async for msgs in feed:
                got += msgs
                if len(got) == 2:
                    break
        assert sorted((m.subject, m.data) for m in got) == [("t.a", b"3"), ("t.b", b"2")]
    async with js_feed(nats_client, "XY_T", deliver="last_per_subject",
                       filter_subject="nothing.>") as feed:
        assert feed.pending_at_start == 0


def test_restored_entries_come_out_of_the_next_snapshot_as_stored_unless_replaced() -> None:
    feed = Routed()
    states = []
    for name, last in (("OLD", 100), ("KEPT", 300)):
        s = SymbolState(venue="V", symbol=name, seq=5, last=last, vol=7)
        s.checksum = state_checksum(s)
        states.append(s)
    stored = Snapshot(group="default", version=3, epoch=EPOCH, shard_seq={0: 41}, shards=1,
                      source_stream_seq=0, symbols=states)
    builder = SnapshotBuilder(EPOCH)
    builder.restore(Restore(epoch=EPOCH, snapshots=(stored,), continued=True, replay_from=1))
    core = Conflator(EPOCH)
    core.restore(Restore(epoch=EPOCH, snapshots=(stored,), checkpoints={("default", 0): 41},
                         continued=True, replay_from=1))
    core.apply(feed.batch([tick(symbol="OLD", seq=6, last=111)]))
    for d in core.emit(0, Level.L0, 33):
        builder.apply(d)
    out = builder.build("default", 0, 33)
    assert out is not None
    got = {s.symbol: s for s in Snapshot.FromString(out.payload).symbols}
    assert got["KEPT"] == states[1]  # the stored entry, byte for byte
    assert (got["OLD"].seq, got["OLD"].last) == (6, 111)  # the replay's
    again = builder.build("default", 0, 33)
    assert again is not None and Snapshot.FromString(again.payload).symbols == \
        Snapshot.FromString(out.payload).symbols
