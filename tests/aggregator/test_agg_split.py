"""Aggregators that split the groups, the sans-I/O side: epochs per group, a restore of the owned
groups only, a mid-stream ``Restore`` as a full reset of every stage, foreign ticks skipped
before decoding, and the publish gate (mock clock, memory channels)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _agg_helpers import Routed, rec, tick

from xypipe import Level
from xypipe._md.book import state_checksum
from xypipe._md.conflation import Conflator, DeltaOut
from xypipe._md.records import Batch, ContractRec, Restore
from xypipe._md.restore_plan import Known, plan_owned_restore
from xypipe._md.restore_point import group_epochs
from xypipe._md.snapshots import SnapshotBuilder, SnapshotOut
from xypipe._metrics import Metrics
from xypipe._nats import NatsClient
from xypipe._stage import SharedValues, StageContext
from xypipe._stages._aggshare import share_of
from xypipe._stages._pubgate import DELTA_FENCE_TAG, PublishGate, fenced
from xypipe._stages.conflate import Conflate
from xypipe._stages.dedupe import Dedupe
from xypipe._stages.ingest import BadSourceCounter, ForeignFilter, decode_messages
from xypipe._stages.shard import Shard
from xypipe._stages.snapshot import SnapshotStage
from xypipe.contracts import Contract, Delta, Snapshot, SymbolState
from xypipe.testing import stage_harness

FRESH = 9_000


def snap(group: str, epoch: int, *, shard_seq: int = 10, source_seq: int = 100,
         symbol: str = "AAA", seq: int = 5) -> Snapshot:
    held = SymbolState(venue="V", symbol=symbol, seq=seq, last=100)
    held.checksum = state_checksum(held)
    return Snapshot(group=group, version=3, epoch=epoch, shard_seq={0: shard_seq}, shards=1,
                    source_stream_seq=source_seq, symbols=[held])


# --------------------------------------------------------------------------- epochs per group


def test_each_group_continues_its_own_epoch_or_starts_a_new_one_above_any_seen() -> None:
    snaps = [snap("a", 11), snap("b", 22), snap("c", 33, source_seq=5)]
    ckpts = {"a": {11}, "b": {22, 21}, "c": {33}, "d": {44}}
    decided = group_epochs(snaps, ckpts, first_seq=50, fresh=FRESH)
    assert decided["a"].continued and decided["a"].epoch == 11
    # Checkpoints of two epochs: no proof which one the snapshot belongs to.
    assert not decided["b"].continued and decided["b"].epoch == FRESH
    assert "epochs disagree" in decided["b"].reason
    # Its replay is gone from the source stream.
    assert not decided["c"].continued and "replay needs 6" in decided["c"].reason
    # Checkpoints but no snapshot: new epoch, greater than the one seen even if the clock is
    # behind it.
    late = group_epochs([], {"d": {44_000}}, first_seq=0, fresh=FRESH)
    assert late["d"] == late["d"].__class__("d", 44_001, False, late["d"].reason)
    assert decided.keys() == {"a", "b", "c", "d"}


def test_a_superseded_group_continues_whatever_the_stream_still_holds() -> None:
    decided = group_epochs([snap("c", 33, source_seq=5)], {"c": {33}}, first_seq=50,
                           fresh=FRESH, superseded={"c"})
    assert decided["c"].continued and decided["c"].epoch == 33


def two_group_restore(generation: int = 1) -> Restore:
    """Group a continues epoch 11 from checkpoint 12; group b starts epoch 99 afresh; any
    other group gets the fresh epoch 500."""
    return Restore(epoch=500, snapshots=(snap("a", 11, symbol="AAA"),
                                         snap("b", 22, symbol="BBB")),
                   checkpoints={("a", 0): 12, ("b", 0): 30}, replay_from=101,
                   epochs={"a": 11, "b": 99}, continued_groups=frozenset({"a"}),
                   generation=generation)


def routed(**rules: str) -> Routed:
    return Routed(rules=[{"group": g, "symbols": [s]} for s, g in rules.items()])


def test_the_conflator_stamps_each_groups_epoch_and_sequence() -> None:
    feed = routed(AAA="a", BBB="b", CCC="c")
    core = Conflator(1)
    core.restore(two_group_restore())
    core.apply(feed.batch([tick(symbol="AAA", seq=6), tick(symbol="BBB", seq=6),
                           tick(symbol="CCC", seq=1)]))
    out = {d.group: Delta.FromString(d.payload) for d in core.emit(1, Level.L0, 33)}
    assert (out["a"].epoch, out["a"].seq) == (11, 13)  # continues after its checkpoint
    assert (out["b"].epoch, out["b"].seq) == (99, 1)  # new epoch, sequence from 1
    assert (out["c"].epoch, out["c"].seq) == (500, 1)  # first seen: the fresh epoch


def test_a_symbol_moved_to_a_group_owned_elsewhere_only_leaves_the_owned_one() -> None:
    feed = routed(AAA="a")
    core = Conflator(1)
    core.restore(Restore(epoch=1, owned=frozenset({"a"})))
    core.apply(feed.batch([tick(symbol="AAA", seq=1)]))
    core.emit(1, Level.L0, 33)
    moved = ContractRec("V.AAA", Contract(venue="V", symbol="AAA", group="z"), 2, 0.0)
    moved.moved_from = feed.router.learn("V.AAA", "z")
    moved.route = feed.router.route("V.AAA")
    core.apply([moved])
    out = [(d.group, d.removed) for d in core.emit(2, Level.L0, 33)]
    assert out == [("a", ("V.AAA",))]  # z's owner shows it, not this aggregator


def test_snapshot_mirrors_carry_their_groups_epoch() -> None:
    feed = routed(AAA="a", BBB="b", CCC="c")
    core, builder = Conflator(1), SnapshotBuilder(0)
    r = two_group_restore()
    core.restore(r)
    builder.restore(r)
    core.apply(feed.batch([tick(symbol="AAA", seq=6), tick(symbol="BBB", seq=6),
                           tick(symbol="CCC", seq=1)]))
    for d in core.emit(1, Level.L0, 33):
        builder.apply(d)
    snaps = {s.group: Snapshot.FromString(s.payload) for s in builder.build_all(2, 33)}
    assert {g: (s.epoch, dict(s.shard_seq)) for g, s in snaps.items()} == {
        "a": (11, {0: 13}), "b": (99, {0: 1}), "c": (500, {0: 1})}
    assert snaps["a"].version == 4 and snaps["b"].version == 1  # b's versions start over


# --------------------------------------------------------------------------- restore per owned set


def ckpt(group: str, epoch: int, seq: int, shard: int = 0) -> Delta:
    return Delta(group=group, shard=shard, epoch=epoch, seq=seq)


def test_an_acquired_group_continues_its_previous_owners_epoch_and_sequence() -> None:
    plan = plan_owned_restore([snap("g", 11, shard_seq=10, source_seq=100)], [ckpt("g", 11, 14)],
                              owned=frozenset({"g"}), known=Known(), first_seq=1, fresh=FRESH)
    r = plan.restore
    assert r is not None and r.continues("g") and r.epoch_of("g") == 11
    assert r.checkpoints == {("g", 0): 14} and r.replay_from == 101


def test_a_kept_group_continues_after_what_was_published_even_if_not_stored_yet() -> None:
    known = Known(kept=frozenset({"g", "h"}), published={("g", 0): (11, 20), ("h", 0): (5, 3)})
    plan = plan_owned_restore([snap("g", 11), snap("h", 4)], [ckpt("g", 11, 14), ckpt("h", 4, 9)],
                              owned=frozenset({"g", "h"}), known=known, first_seq=1,
                              fresh=FRESH)
    r = plan.restore
    assert r is not None
    assert r.continues("g") and r.checkpoints[("g", 0)] == 20  # the published one, not 14
    # h published under epoch 5 but its stored snapshot says 4: no proof, a new epoch.
    assert not r.continues("h") and r.epoch_of("h") == FRESH
    assert "epochs disagree" in plan.decided["h"].reason


def test_a_group_without_a_snapshot_replays_from_its_first_tick_and_a_kept_one_continues(
) -> None:
    known = Known(kept=frozenset({"k"}), published={("k", 0): (7, 30)},
                  first_tick={"k": 400, "new": 350}, routed_through=900, seen_from=1)
    plan = plan_owned_restore([snap("s", 3, source_seq=600)], [ckpt("s", 3, 10), ckpt("k", 7, 29)],
                              owned=frozenset({"s", "k", "new"}), known=known, first_seq=1,
                              fresh=FRESH)
    r = plan.restore
    assert r is not None and r.replay_from == 350  # the earliest first tick of a bare group
    assert r.continues("k") and r.epoch_of("k") == 7 and r.checkpoints[("k", 0)] == 30
    assert r.continues("s") and "new" not in r.epochs  # new: the fresh epoch when first seen


def test_ticks_not_routed_yet_are_replayed_for_a_group_no_tick_reached_shard_for() -> None:
    plan = plan_owned_restore([], [], owned=frozenset({"late"}),
                              known=Known(routed_through=900, seen_from=1), first_seq=1,
                              fresh=FRESH)
    assert plan.restore is not None and plan.restore.replay_from == 901
    nothing = plan_owned_restore([], [], owned=frozenset({"late"}), known=Known(seen_from=1),
                                 first_seq=1, fresh=FRESH)
    assert nothing.restore is None  # read from the start, nothing routed: from now on
    empty = plan_owned_restore([], [], owned=frozenset({"late"}), known=Known(), first_seq=0,
                               fresh=FRESH)
    assert empty.restore is None  # an empty stream
    gone = plan_owned_restore([], [], owned=frozenset({"k"}),
                              known=Known(kept=frozenset({"k"}), first_tick={"k": 5}),
                              first_seq=50, fresh=FRESH)
    assert gone.restore is None  # its first ticks are gone from the stream: from now on


def test_a_group_acquired_without_a_snapshot_by_a_late_reader_replays_the_stream() -> None:
    """Its owner published it (checkpoints) or only routed it (it held the group a moment)
    and lost it before its first snapshot; this process started reading at 72 (a restart:
    live), so the first tick it routed says nothing of the ticks before: only the whole stream
    has the group's state (found as trades counted short after a NATS node's loss)."""
    for known in (Known(routed_through=71, seen_from=72),
                  Known(first_tick={"g": 400}, routed_through=900, seen_from=72)):
        plan = plan_owned_restore([snap("s", 3, source_seq=600)],
                                  [ckpt("s", 3, 10), ckpt("g", 5, 8)],
                                  owned=frozenset({"s", "g"}), known=known, first_seq=20,
                                  fresh=FRESH)
        r = plan.restore
        assert r is not None and r.replay_from == 20, known
        assert r.continues("s") and not r.continues("g")  # no snapshot: a new epoch
    # The same process had read the stream from its start: its first tick is the group's.
    whole = plan_owned_restore([], [ckpt("g", 5, 8)], owned=frozenset({"g"}),
                               known=Known(first_tick={"g": 400}, routed_through=900,
                                           seen_from=1), first_seq=1, fresh=FRESH)
    assert whole.restore is not None and whole.restore.replay_from == 400
    # Never published (no checkpoints), held a moment by another: the whole stream too.
    young = plan_owned_restore([], [], owned=frozenset({"g"}),
                               known=Known(first_tick={"g": 400}, routed_through=900,
                                           seen_from=72), first_seq=1, fresh=FRESH)
    assert young.restore is not None and young.restore.replay_from == 1
    assert "g" not in young.decided  # nothing published: the fresh epoch when first seen
    # ... unless the history this process never read is long: from what it routed.
    long_ago = plan_owned_restore([], [], owned=frozenset({"g"}),
                                  known=Known(first_tick={"g": 400_000}, routed_through=400_500,
                                              seen_from=300_000), first_seq=1, fresh=FRESH)
    assert long_ago.restore is not None and long_ago.restore.replay_from == 400_000
    published = plan_owned_restore([], [ckpt("g", 5, 8)], owned=frozenset({"g"}),
                                   known=Known(first_tick={"g": 400_000}, routed_through=400_500,
                                               seen_from=300_000), first_seq=1, fresh=FRESH)
    assert published.restore is not None and published.restore.replay_from == 1


# --------------------------------------------------------------------------- full resets


async def test_a_mid_stream_restore_resets_dedupe(autojump_clock: trio.abc.Clock) -> None:
    async with stage_harness(Dedupe, {"hold_ms": 1000}) as h:
        await h.send(Restore(epoch=1))
        await h.receive()
        await h.send(Batch([rec(tick(seq=1), 1)], 1))
        assert [r.seq for r in (await h.receive()).recs] == [1]
        await h.send(Batch([rec(tick(seq=3), 2)], 2))  # held, waiting for 2
        await h.receive()
        # A restore from a snapshot at seq 5: what was held is gone, 6 is next.
        r = Restore(epoch=2, snapshots=(snap("default", 7, seq=5),), replay_from=50,
                    generation=2)
        await h.send(r)
        assert await h.receive() is r
        await h.send(Batch([rec(tick(seq=5), 50), rec(tick(seq=6), 51)], 51))
        out = await h.receive()
        assert [x.seq for x in out.recs] == [6]  # 5 is the snapshot's: a duplicate
        await trio.sleep(2)
        assert h.available() == []  # nothing held from before the restore comes out


async def test_a_mid_stream_restore_resets_shard_and_drops_foreign_ticks(
        autojump_clock: trio.abc.Clock) -> None:
    shared = SharedValues()
    opts = {"rules": [{"group": "a", "symbols": ["A*"]}, {"group": "b", "symbols": ["B*"]}]}
    async with stage_harness(Shard, opts, shared=shared, name="shard") as h:
        share = share_of(h.stage.ctx)
        await trio.testing.wait_all_tasks_blocked()
        assert share.offered == {"a", "b", "default"}  # the config's groups, offered at start
        await h.send(Restore(epoch=1, owned=frozenset({"a"})))
        await h.receive()
        await h.send(Batch([rec(tick(symbol="AAA"), 1), rec(tick(symbol="BBB"), 2)], 2))
        out = await h.receive()
        assert [r.key for r in out.recs] == ["V.AAA"] and out.watermark == 2
        assert share.routes == {"V.AAA": "a", "V.BBB": "b"}
        # Where each group's ticks began (b's too, dropped or not), and how far routing got.
        assert share.first_tick == {"a": 1, "b": 2} and share.routed_through == 2
        assert h.metrics.sample("agg_foreign_ticks_total", {"where": "shard"}) == 1
        # Now b is owned, a is not; the restored snapshot puts CCC in b.
        await h.send(Restore(epoch=1, owned=frozenset({"b"}), generation=2,
                             snapshots=(snap("b", 3, symbol="CCC"),)))
        await h.receive()
        assert share.routes == {"V.CCC": "b"}  # routes start over
        await h.send(Batch([rec(tick(symbol="AAA"), 3), rec(tick(symbol="CCC"), 4)], 4))
        out = await h.receive()
        assert [(r.key, r.route.group) for r in out.recs] == [("V.CCC", "b")]


async def test_a_mid_stream_restore_resets_conflate_and_stamps_the_generation(
        autojump_clock: trio.abc.Clock) -> None:
    feed = routed(AAA="a", BBB="b")
    async with stage_harness(Conflate, {"catch_up_ms": 0}) as h:
        await h.send(Restore(epoch=7, generation=1))
        await h.receive()
        await h.send(feed.batch([tick(symbol="AAA", seq=1), tick(symbol="BBB", seq=1)]))
        first = await h.receive()
        assert {(d.group, d.seq, d.epoch, d.generation) for d in first} == {
            ("a", 1, 7, 1), ("b", 1, 7, 1)}
        await h.send(feed.batch([tick(symbol="AAA", seq=2)]))  # pending when the restore comes
        r = two_group_restore(generation=2)
        await h.send(r)
        assert await h.receive() is r
        await trio.sleep(0.1)
        # The pending change went with the old state (only the restore's watermark comes).
        assert [x for b in h.available() for x in b if isinstance(x, DeltaOut)] == []
        await h.send(feed.batch([tick(symbol="BBB", seq=7)]))
        (d,) = await h.receive()
        assert (d.group, d.seq, d.epoch, d.generation) == ("b", 1, 99, 2)
        assert set(h.stage.core.books) == {"V.AAA", "V.BBB"}  # from the restore's snapshots


def delta_out(group: str, seq: int, epoch: int, generation: int) -> DeltaOut:
    feed = routed(AAA=group)
    core = Conflator(epoch)
    core.seqs[(group, 0)] = seq - 1
    core.generation = generation
    core.apply(feed.batch([tick(symbol="AAA", seq=seq)]))
    (d,) = core.emit(1, Level.L0, 33)
    return d


async def test_a_mid_stream_restore_resets_the_mirrors_and_old_deltas_are_ignored(
        autojump_clock: trio.abc.Clock) -> None:
    async with stage_harness(SnapshotStage, {"interval_ms": 100, "request_subject": ""}) as h:
        await h.send(Restore(epoch=7, generation=1))
        await h.send([delta_out("x", 1, 7, 1)])
        await h.receive()
        await h.send(two_group_restore(generation=2))
        # Emitted before the restore reached conflate: not applied, not forwarded.
        await h.send([delta_out("x", 2, 7, 1)])
        await trio.sleep(0.15)
        snaps = [s for batch in h.available() for s in batch if isinstance(s, SnapshotOut)]
        # x's mirror is gone with the reset; b restarted its epoch (consistent at once); a
        # waits for the delta at its checkpoint (12) before it may claim consistency.
        assert {(s.group, s.epoch) for s in snaps} == {("b", 99)}
        await h.send([delta_out("a", 13, 11, 2)])
        await trio.sleep(0.15)
        snaps = [s for batch in h.available() for s in batch if isinstance(s, SnapshotOut)]
        assert {(s.group, s.epoch, s.shard_seq.get(0)) for s in snaps} == {("a", 11, 13),
                                                                            ("b", 99, None)}


# --------------------------------------------------------------------------- foreign ticks


def test_a_foreign_tick_is_skipped_before_it_is_decoded() -> None:
    class M:
        def __init__(self, subject: str, data: bytes, seq: int) -> None:
            self.subject, self.data, self.reply, self.seq = subject, data, "", seq

    ctx = StageContext("p", "ingest", None, None, degradation=None,  # type: ignore[arg-type]
                       metrics=Metrics(), log=None)  # type: ignore[arg-type]
    bad = BadSourceCounter(ctx, 5)
    foreign = ForeignFilter({"V.BBB": "b", "V.CCC": "c", "V.AAA": "a"}, frozenset({"a"}),
                            {"b": 1})
    msgs = [M("xy.src.tick.V.BBB", b"\xff not a tick", 1),  # never decoded: no bad count
            M("xy.src.tick.V.AAA", tick(symbol="AAA").SerializeToString(), 2),
            M("xy.src.tick.V.NEW", tick(symbol="NEW").SerializeToString(), 3),
            # c's first tick has not reached shard yet: decoded, so shard sees where c began.
            M("xy.src.tick.V.CCC", tick(symbol="CCC").SerializeToString(), 4)]
    recs = decode_messages(msgs, 0.0, bad, foreign=foreign)
    assert [r.key for r in recs] == ["V.AAA", "V.NEW", "V.CCC"]
    assert foreign.skipped == 1
    assert ctx.metrics.sample("src_bad_total", {"reason": "decode"}) in (None, 0)


# --------------------------------------------------------------------------- the publish gate


class Owning:
    """The ownership as the gate reads it: groups owned, with their fences."""

    on_release = None

    def __init__(self, fences: dict[str, int]) -> None:
        self.fences = fences

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self.fences)

    def lease(self, group: str) -> object:
        fence = self.fences.get(group)
        return None if fence is None else type("L", (), {"group": group, "fence": fence,
                                                          "epoch": 0})()

    def may_publish(self, group: str) -> bool:
        return group in self.fences

    def offer(self, groups: object) -> None:
        pass

    async def wait_change(self, seen: frozenset[str]) -> frozenset[str]:
        raise NotImplementedError

    def set_epoch(self, group: str, epoch: int) -> None:
        pass


async def test_the_gate_drops_foreign_and_superseded_items_and_hands_out_fences(
        autojump_clock: trio.abc.Clock) -> None:
    async with stage_harness(Dedupe, {}) as h:  # any stage: for its context
        ctx = h.stage.ctx
    share = share_of(ctx)
    gate = PublishGate(ctx, share)
    assert gate.admit("delta", "a", 1) == 0  # no ownership: everything, unfenced
    share.ownership = Owning({"a": 41})  # type: ignore[assignment]
    share.generation = 2
    assert gate.admit("delta", "a", 2) == 41
    assert gate.admit("snapshot", "b", 2) is None
    assert gate.admit("delta", "b", 2) is None
    assert gate.admit("delta", "a", 1) is None  # emitted under the previous restore
    m = ctx.metrics
    assert m.sample("publish_not_owner_total", {"kind": "delta"}) == 1
    assert m.sample("publish_not_owner_total", {"kind": "snapshot"}) == 1
    assert m.sample("publish_superseded_total", {"kind": "delta"}) == 1
    d = delta_out("a", 3, 7, 2)
    wire = Delta.FromString(fenced(DELTA_FENCE_TAG, 41, d.payload))
    assert (wire.fence, wire.seq, len(wire.symbols)) == (41, 3, 1)


@pytest.mark.nats
async def test_only_the_owner_answers_a_snapshot_request(nats_client: NatsClient) -> None:
    # Two aggregators on one bus, each owning one group: a request for a group is answered
    # by its owner only (the other one's "no snapshot" would race it and often win).
    subject = "xy.agg.snapshot.request"
    async with stage_harness(SnapshotStage, {"request_subject": subject},
                             nats=nats_client) as a, \
            stage_harness(SnapshotStage, {"request_subject": subject},
                          nats=nats_client) as b:
        await a.send(Restore(epoch=1, owned=frozenset({"a"}), snapshots=(snap("a", 1),)))
        await b.send(Restore(epoch=1, owned=frozenset({"b"}), snapshots=(snap("b", 2),)))
        with trio.fail_after(5):  # both restored (their NATS subscriptions come first)
            while not ("a" in a.stage.builder.groups  # noqa: ASYNC110 (no event to await)
                       and "b" in b.stage.builder.groups):
                await trio.sleep(0.01)
        for group in ["a", "b"] * 10:
            with trio.fail_after(5):
                reply = await nats_client.request(subject, group.encode(), timeout=2.0)
            assert reply.data and Snapshot.FromString(reply.data).group == group
