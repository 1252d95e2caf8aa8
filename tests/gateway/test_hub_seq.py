"""The hub's sequence checks: no delta is believed before it is checked.

A property test drives the hub with arbitrary interleavings of the genuine aggregator's deltas
(some lost, some repeated), forged far-future, stale-epoch and future-epoch deltas, aggregator
restarts (new epoch) and hostile resume points; JetStream's record (stored snapshot, checkpoint)
is modelled by the harness, which answers the hub's re-anchor requests the way the shell does.
After any such prefix, one snapshot interval of well-behaved stream reaches every subscriber,
no subscriber ever sees a gap or a repeat, and every rejected message is counted.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xypipe._gateway._hub import Hub, Outbox, SubState
from xypipe._md.seqrules import DEFAULT_MAX_GAP, ResumeOutcome, Verdict
from xypipe.contracts import Delta, ResumePoint, ServerFrame, Snapshot, SymbolState

GROUP = "fx"
TICK = f"xy.md.tick.{GROUP}"
SNAP = f"xy.md.snapshot.{GROUP}"


def decode(data: bytes) -> ServerFrame:
    n = data[1] & 0x7F
    f = ServerFrame()
    f.ParseFromString(data[2:] if n < 126 else data[4:] if n == 126 else data[10:])
    return f


def delta(epoch: int, seq: int, shard: int = 0) -> bytes:
    return Delta(group=GROUP, shard=shard, seq=seq, epoch=epoch, symbols=[
        SymbolState(venue="X", symbol="A", seq=seq, last=seq)]).SerializeToString()


class Aggregator:
    """The genuine publisher and what JetStream stores of it (last snapshot, checkpoint)."""

    def __init__(self, epoch: int = 1_000) -> None:
        self.epoch = epoch
        self.seq = 0
        self.version = 0
        self.sent: list[bytes] = []  # every genuine delta, for repeats
        self.stored_snapshot: bytes | None = None
        self.checkpoint: tuple[int, int] | None = None  # stored before each delta goes out

    def next_delta(self) -> bytes:
        self.seq += 1
        self.checkpoint = (self.epoch, self.seq)
        raw = delta(self.epoch, self.seq)
        self.sent.append(raw)
        return raw

    def snapshot(self) -> bytes:
        self.version += 1
        raw = Snapshot(group=GROUP, version=self.version, epoch=self.epoch,
                       shard_seq={0: self.seq}, shards=1).SerializeToString()
        self.stored_snapshot = raw
        return raw

    def restart(self) -> None:
        """A new incarnation that could not continue: new epoch, sequence and version anew."""
        self.epoch += 1
        self.seq = 0
        self.version = 0


@attrs.define
class Subscriber:
    """What one client holds; every frame it gets is checked for gaps and repeats."""

    ob: Outbox
    last: dict[int, tuple[int, int]] = attrs.field(factory=dict)  # shard -> (epoch, seq)
    deltas: int = 0

    def take(self, data: bytes) -> None:
        f = decode(data)
        for s in f.snapshots:
            self.last = {shard: (s.epoch, seq) for shard, seq in s.shard_seq.items()}
        for d in f.deltas:
            assert d.shard in self.last, f"delta #{d.seq} before any snapshot"
            epoch, seq = self.last[d.shard]
            first = d.first_seq or d.seq
            assert (d.epoch, first) == (epoch, seq + 1), (
                f"client {self.ob.conn_id}: expected #{seq + 1} of epoch {epoch}, got "
                f"#{first}..{d.seq} of epoch {d.epoch}")
            self.last[d.shard] = (d.epoch, d.seq)
            self.deltas += 1


class Harness:
    def __init__(self) -> None:
        self.hub = Hub(history=32, anchor_interval=1.0)
        self.agg = Aggregator()
        self.now = 0.0
        self.subs: list[Subscriber] = []
        self.forged: dict[str, int] = {}

    # -- inputs ----------------------------------------------------------------------------

    def deliver(self, raw: bytes) -> Verdict:
        before = self.hub.stats.verdict_counts()
        self.hub.on_delta(TICK, raw, self.now)
        (verdict,) = [v for v, n in self.hub.stats.verdict_counts().items()
                      if n != before.get(v, 0)]
        return Verdict(verdict)

    def forge(self, kind: str, x: int) -> None:
        hist = self.hub.streams.get((GROUP, 0))
        if hist is None or hist.epoch is None:
            return  # a stream's first delta has nothing to be judged against
        if kind == "far_future":
            raw = delta(hist.epoch, hist.last_seq + DEFAULT_MAX_GAP + 2 + x)
        elif kind == "stale_epoch":
            raw = delta(hist.epoch - 1 - x % 50, x + 1)
        else:
            raw = delta(max(hist.epoch, self.agg.epoch) + 1_000_000 + x, x + 1)
        head = (hist.epoch, hist.last_seq)
        rejected = self.hub.stats.rejected.get(("delta", kind), 0)
        assert self.deliver(raw) == Verdict(kind)
        assert self.hub.stats.rejected[("delta", kind)] == rejected + 1, "counted"
        assert (hist.epoch, hist.last_seq) == head, "a rejected delta never becomes the head"
        self.forged[kind] = self.forged.get(kind, 0) + 1

    def forge_gap(self, x: int) -> None:
        """A forged delta a little ahead: believed as a gap until the checkpoint is read."""
        hist = self.hub.streams.get((GROUP, 0))
        if hist is None or hist.epoch is None:
            return
        self.hub.on_delta(TICK, delta(hist.epoch, hist.last_seq + x), self.now)

    def jetstream(self) -> None:
        """Answer the hub's re-anchor requests as the shell does: snapshot, then checkpoint."""
        for group, shard in self.hub.take_anchor_requests(self.now):
            if self.agg.stored_snapshot is not None:
                self.hub.on_snapshot(SNAP, self.agg.stored_snapshot, self.now)
            if self.agg.checkpoint is not None:
                self.hub.on_checkpoint(group, shard, *self.agg.checkpoint, self.now)
        self.hub.take_events(self.now)

    def subscribe(self) -> None:
        ob = Outbox(len(self.subs) + 1)
        self.hub.subscribe(ob, GROUP, frozenset())
        self.subs.append(Subscriber(ob))

    def resume(self, kind: str, x: int) -> None:
        hist = self.hub.streams.get((GROUP, 0))
        epoch, last = (hist.epoch or 0, hist.last_seq) if hist is not None else (self.agg.epoch, 0)
        points = {
            "ahead": [(0, epoch, last + 1 + x)],
            "other_epoch": [(0, epoch + 1 + x, last)],
            "older_epoch": [(0, max(0, epoch - 1 - x), last)],
            "unknown_shard": [(0, epoch, last), (5 + x % 3, epoch, 1)],
            "mixed": [(0, epoch, last), (1, epoch + 1, 0)],
            "own": [(0, epoch, max(0, last - x % 40))],
        }[kind]
        ob = Outbox(len(self.subs) + 1)
        outcome = self.hub.resume(ob, GROUP, [ResumePoint(group=GROUP, shard=s, epoch=e, seq=q)
                                              for s, e, q in points])
        sub = Subscriber(ob)
        if outcome == ResumeOutcome.BRIDGED:
            assert kind == "own", f"a {kind} resume point was bridged"
            sub.last = {s: (e, q) for s, e, q in points}
        else:
            assert ob.subs[GROUP].state == SubState.SYNC, "a refused resume waits for a snapshot"
        self.subs.append(sub)

    def flush(self) -> None:
        for sub in self.subs:
            for _ in range(4):
                built = self.hub.build(sub.ob, int(self.now * 1e6))
                if built is None:
                    break
                sub.take(built.data)

    def tick(self) -> None:
        self.now += 1.0


OPS = st.one_of(
    st.tuples(st.just("deliver"), st.integers(1, 5)),
    st.tuples(st.just("lose"), st.integers(1, 3)),
    st.tuples(st.just("repeat"), st.integers(0, 400)),
    st.tuples(st.sampled_from(["far_future", "stale_epoch", "future_epoch"]),
              st.integers(0, 2**40)),
    st.tuples(st.just("forged_gap"), st.integers(2, DEFAULT_MAX_GAP)),
    st.tuples(st.just("snapshot"), st.just(0)),
    st.tuples(st.just("restart"), st.just(0)),
    st.tuples(st.just("subscribe"), st.just(0)),
    st.tuples(st.just("resume"), st.sampled_from(
        ["ahead", "other_epoch", "older_epoch", "unknown_shard", "mixed", "own"])),
    st.tuples(st.just("jetstream"), st.just(0)),
    st.tuples(st.just("flush"), st.just(0)),
    st.tuples(st.just("tick"), st.just(0)),
)


def run(h: Harness, ops: list[tuple[str, Any]]) -> None:
    for op, arg in ops:
        if op == "deliver":
            for _ in range(arg):
                h.deliver(h.agg.next_delta())
        elif op == "lose":
            for _ in range(arg):
                h.agg.next_delta()
        elif op == "repeat":
            if h.agg.sent:
                h.deliver(h.agg.sent[-1 - arg % len(h.agg.sent)])
        elif op in ("far_future", "stale_epoch", "future_epoch"):
            h.forge(op, arg)
        elif op == "forged_gap":
            h.forge_gap(arg)
        elif op == "snapshot":
            h.hub.on_snapshot(SNAP, h.agg.snapshot(), h.now)
        elif op == "restart":
            h.agg.restart()
        elif op == "subscribe":
            h.subscribe()
        elif op == "resume":
            h.resume(arg, 3)
        elif op == "jetstream":
            h.jetstream()
        elif op == "flush":
            h.flush()
        else:
            h.tick()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=60))
def test_after_any_hostile_prefix_one_snapshot_interval_brings_every_subscriber_live(
    ops: list[tuple[str, Any]],
) -> None:
    h = Harness()
    h.subscribe()
    run(h, ops)
    # One snapshot interval of a well-behaved aggregator, JetStream answering look-ups.
    h.tick()
    h.jetstream()
    h.deliver(h.agg.next_delta())
    h.hub.on_snapshot(SNAP, h.agg.snapshot(), h.now)
    for _ in range(3):
        h.deliver(h.agg.next_delta())
    h.jetstream()
    h.flush()
    for sub in h.subs:
        assert sub.ob.subs[GROUP].state == SubState.LIVE, f"client {sub.ob.conn_id} not live"
        assert sub.last.get(0) == (h.agg.epoch, h.agg.seq), (
            f"client {sub.ob.conn_id} holds {sub.last}, the stream is at "
            f"{(h.agg.epoch, h.agg.seq)}")
    # Every forged delta was counted under its reason (genuine deltas of a new epoch that
    # came before its snapshot are held, and counted, too).
    for kind, n in h.forged.items():
        assert h.hub.stats.rejected.get(("delta", kind), 0) >= n
    assert h.hub.stats.rejected.get(("delta", "far_future"), 0) == h.forged.get("far_future", 0)
    assert sum(h.hub.stats.verdict_counts().values()) == h.hub.stats.deltas_in


# --------------------------------------------------------------------------- examples


@pytest.fixture
def h() -> Harness:
    h = Harness()
    h.hub.on_snapshot(SNAP, h.agg.snapshot(), 0.0)
    h.subscribe()
    for _ in range(3):
        h.deliver(h.agg.next_delta())
    h.flush()
    return h


def test_far_future_delta_is_rejected_counted_and_the_group_keeps_flowing(h: Harness) -> None:
    h.forge("far_future", 10**12)
    h.subscribe()  # a new subscriber after the forged delta
    for _ in range(2):
        h.deliver(h.agg.next_delta())
    h.flush()
    assert [s.last[0] for s in h.subs] == [(h.agg.epoch, 5)] * 2
    events = h.hub.take_events(0.0)
    assert [(e.kind, e.reason, e.count) for e in events] == [("rejected", "delta:far_future", 1)]
    assert h.hub.take_anchor_requests(0.0) == [(GROUP, 0)]


def test_stale_epoch_delta_does_not_reset_the_group(h: Harness) -> None:
    resets = h.hub.streams[(GROUP, 0)].resets
    h.forge("stale_epoch", 3)
    h.deliver(h.agg.next_delta())
    h.flush()
    assert h.hub.streams[(GROUP, 0)].resets == resets
    assert h.hub.stats.resync_reasons == {} and h.subs[0].last[0] == (h.agg.epoch, 4)


def test_new_epoch_is_held_until_its_snapshot_then_replayed(h: Harness) -> None:
    h.agg.restart()
    for _ in range(2):
        assert h.deliver(h.agg.next_delta()) == Verdict.FUTURE_EPOCH
    h.flush()
    assert h.subs[0].last[0] == (h.agg.epoch - 1, 3)  # nothing half-consistent went out
    snap_at = h.agg.seq
    h.hub.on_snapshot(SNAP, h.agg.snapshot(), 0.0)  # version 1 of the new epoch
    h.deliver(h.agg.next_delta())
    h.flush()
    assert h.subs[0].last[0] == (h.agg.epoch, snap_at + 1)
    assert h.hub.stats.reanchors == {"epoch": 1} and h.hub.stats.resync_reasons == {"epoch": 1}


def test_a_gateway_that_lost_more_than_the_bound_re_anchors_from_the_checkpoint(
    h: Harness,
) -> None:
    for _ in range(DEFAULT_MAX_GAP + 10):
        h.agg.next_delta()
    assert h.deliver(h.agg.next_delta()) == Verdict.FAR_FUTURE
    h.jetstream()  # checkpoint: the aggregator really is there
    assert h.hub.stats.reanchors == {"checkpoint_ahead": 1}
    assert h.deliver(h.agg.next_delta()) == Verdict.APPLY
    h.hub.on_snapshot(SNAP, h.agg.snapshot(), 0.0)
    h.deliver(h.agg.next_delta())
    h.flush()
    assert h.subs[0].last[0] == (h.agg.epoch, h.agg.seq)


def test_a_forged_small_gap_is_undone_by_the_checkpoint(h: Harness) -> None:
    assert h.deliver(delta(h.agg.epoch, h.agg.seq + 5)) == Verdict.GAP
    h.jetstream()
    assert h.hub.stats.reanchors == {"checkpoint_behind": 1}
    assert h.hub.streams[(GROUP, 0)].last_seq == h.agg.seq
    assert h.deliver(h.agg.next_delta()) == Verdict.APPLY


def test_a_forged_first_delta_of_a_fresh_stream_is_undone_by_the_snapshot() -> None:
    h = Harness()
    h.deliver(delta(10**9, 10**9))  # nothing to judge it against: taken, unconfirmed
    assert h.hub.take_anchor_requests(0.0) == [(GROUP, 0)]
    for _ in range(3):
        assert h.deliver(h.agg.next_delta()) == Verdict.STALE_EPOCH
    h.hub.on_snapshot(SNAP, h.agg.snapshot(), 0.0)
    assert h.hub.stats.reanchors == {"epoch": 1}
    h.subscribe()
    h.deliver(h.agg.next_delta())
    h.flush()
    assert h.subs[0].last[0] == (h.agg.epoch, h.agg.seq)


def test_a_snapshot_of_a_replaced_epoch_is_ignored_and_counted(h: Harness) -> None:
    old = h.agg.stored_snapshot
    h.agg.restart()
    h.deliver(h.agg.next_delta())
    h.hub.on_snapshot(SNAP, h.agg.snapshot(), 0.0)
    assert old is not None
    assert h.hub.on_snapshot(SNAP, old, 0.0) == set()
    assert h.hub.snapshots[GROUP].epoch == h.agg.epoch
    assert h.hub.stats.rejected[("snapshot", "stale_epoch")] == 1


@pytest.mark.parametrize(("kind", "outcome"), [
    ("ahead", ResumeOutcome.AHEAD),
    ("other_epoch", ResumeOutcome.OTHER_EPOCH),
    ("unknown_shard", ResumeOutcome.UNKNOWN_SHARD),
    ("mixed", ResumeOutcome.MIXED_EPOCHS),
])
def test_hostile_resume_point_gets_a_snapshot_and_a_counted_reason(
    h: Harness, kind: str, outcome: ResumeOutcome,
) -> None:
    h.resume(kind, 10**6)
    assert h.hub.stats.resumes == {outcome.value: 1}
    h.flush()
    assert h.subs[-1].last[0] == (h.agg.epoch, h.agg.seq)  # the snapshot, at once


def test_rejections_are_logged_once_per_interval_with_their_count(h: Harness) -> None:
    for i in range(5):
        h.forge("far_future", i)
    (ev,) = h.hub.take_events(0.0)
    assert (ev.reason, ev.count, ev.group, ev.shard) == ("delta:far_future", 5, GROUP, 0)
    h.forge("far_future", 9)
    assert h.hub.take_events(0.5) == []  # within the interval: held for the next line
    (ev,) = h.hub.take_events(1.0)
    assert ev.count == 1


def test_a_delta_or_snapshot_may_only_speak_for_the_stream_on_whose_subject_it_is() -> None:
    from xypipe._gateway._hub import BadMessage

    hub = Hub()
    with pytest.raises(BadMessage, match=r"group 'fx' shard 0 on another stream's subject"):
        hub.on_delta("xy.md.tick.rates", delta(1, 1), 0.0)
    with pytest.raises(BadMessage, match=r"expected xy\.md\.tick\.fx or xy\.md\.tick\.fx\.3"):
        hub.on_delta("xy.md.tick.fx.2", Delta(group="fx", shard=3, seq=1, epoch=1)
                     .SerializeToString(), 0.0)
    with pytest.raises(BadMessage, match=r"snapshot of group 'fx' on another group's subject"):
        hub.on_snapshot("xy.md.snapshot.rates", Snapshot(group="fx", epoch=1)
                        .SerializeToString(), 0.0)
    hub.on_delta("xy.md.tick.fx.3", Delta(group="fx", shard=3, seq=1, epoch=1)
                 .SerializeToString(), 0.0)
    assert hub.stats.deltas_in == 1


def test_a_gateway_starting_mid_stream_keeps_its_first_deltas_behind_an_older_snapshot() -> None:
    h = Harness()
    h.hub.on_snapshot(SNAP, h.agg.snapshot(), 0.0)  # stored, then the hub restarts
    h.hub = Hub(history=32)
    for _ in range(20):
        h.agg.next_delta()  # published before this gateway was up
    for _ in range(2):
        assert h.deliver(h.agg.next_delta()) == Verdict.APPLY
    h.jetstream()  # the stored snapshot is 20 behind: normal, the checkpoint confirms
    assert h.hub.stats.reanchors == {}
    assert h.hub.streams[(GROUP, 0)].unconfirmed_from is None
    assert h.deliver(h.agg.next_delta()) == Verdict.APPLY


def test_a_forged_first_delta_far_ahead_of_the_snapshot_is_undone() -> None:
    h = Harness()
    h.hub.on_snapshot(SNAP, h.agg.snapshot(), 0.0)
    h.hub = Hub(history=32)
    h.deliver(delta(h.agg.epoch, 10**9))  # the first delta this gateway sees: forged
    h.jetstream()
    assert h.hub.stats.reanchors == {"snapshot": 1}
    assert h.deliver(h.agg.next_delta()) == Verdict.APPLY
