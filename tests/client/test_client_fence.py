"""The Python client's sequence handling drops deltas and snapshots of a replaced aggregator
(their fence is below the highest seen for the group), like the gateway's hub."""

from __future__ import annotations

from test_client_core import WALL, connected, frame, sent, sym

from xypipe._md.client import HELD, MarketView, SeqTracker
from xypipe._md.seqrules import STALE_FENCE, Fences
from xypipe.client import DeltaApplied, DeltaSkipped
from xypipe.contracts import Delta, Snapshot


def _d(seq: int, fence: int, group: str = "fx") -> Delta:
    return Delta(group=group, shard=0, seq=seq, epoch=7, fence=fence)


def test_fences_only_grow_and_zero_is_unfenced() -> None:
    f = Fences()
    assert f.admit("fx", 5) and f.admit("fx", 5) and f.admit("fx", 0)
    assert f.admit("fx", 9) and not f.admit("fx", 5) and f.admit("fx", 0)
    assert f.admit("other", 1) and f.highest == {"fx": 9, "other": 1}


def test_the_tracker_drops_a_replaced_owners_deltas_and_snapshots() -> None:
    t = SeqTracker()
    assert t.admit_snapshot(Snapshot(group="fx", epoch=7, shard_seq={0: 0}, fence=5))
    t.apply_snapshot(Snapshot(group="fx", epoch=7, shard_seq={0: 0}, fence=5))
    assert t.check(_d(1, 5)) == "apply"
    assert t.check(_d(2, 8)) == "apply"  # the new owner continues the sequence
    assert t.check(_d(3, 5)) == STALE_FENCE  # the old one's, late: never the baseline
    assert t.baseline("fx", 0) == (7, 2)
    assert not t.admit_snapshot(Snapshot(group="fx", epoch=7, shard_seq={0: 3}, fence=5))
    # While the group waits for a snapshot a stale-fence delta is dropped, not held.
    t.begin_resync("fx", 0.0)
    assert t.check(_d(3, 5)) == STALE_FENCE and t.check(_d(3, 8)) == HELD
    t.forget_group("fx")
    assert t.check(_d(1, 5)) == STALE_FENCE  # fences outlive a forgotten group


def test_the_market_view_counts_what_it_drops() -> None:
    v = MarketView()
    v.apply_snapshot(Snapshot(group="fx", epoch=7, shard_seq={0: 0}, fence=8))
    assert v.apply_delta(_d(1, 8))
    assert not v.apply_delta(_d(2, 3))
    v.apply_snapshot(Snapshot(group="fx", epoch=7, shard_seq={0: 9}, fence=3))
    assert v.groups["fx"].seqs == {0: 1}
    assert v.stats.rejected == {STALE_FENCE: 2}
    assert any("fence 3 dropped" in p for p in v.stats.problems)


def test_the_client_core_skips_a_replaced_owners_frames_without_asking_for_a_snapshot(
) -> None:
    core = connected("fx", heartbeat_ms=60_000, metrics_interval_s=0)
    snap = Snapshot(group="fx", epoch=7, version=1, shard_seq={0: 1}, symbols=[sym("A", 1)],
                    fence=9)
    core.receive(frame(snapshots=[snap]), 0.0, WALL)
    sent(core)
    zombie = Delta(group="fx", epoch=7, seq=2, symbols=[sym("A", 2)], fence=4)
    assert core.receive(frame(deltas=[zombie]), 0.1, WALL) == [
        DeltaSkipped("fx", 0, 7, 0, 2, STALE_FENCE)]
    old_snap = Snapshot(group="fx", epoch=7, version=2, shard_seq={0: 2}, fence=4)
    assert core.receive(frame(snapshots=[old_snap]), 0.2, WALL) == []
    assert sent(core) == []  # nothing to resync: the owner's own stream goes on
    d = Delta(group="fx", epoch=7, seq=2, symbols=[sym("A", 2)], fence=9)
    [applied] = core.receive(frame(deltas=[d]), 0.3, WALL)
    assert isinstance(applied, DeltaApplied) and applied.seq == 2
    assert core.statistics().skipped == {STALE_FENCE: 2}
