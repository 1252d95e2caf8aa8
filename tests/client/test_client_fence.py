"""The Python client's sequence handling drops deltas and snapshots of a replaced aggregator
(their fence is below the highest seen for the group), like the gateway's hub."""

from __future__ import annotations

from xypipe._md.client import HELD, MarketView, SeqTracker
from xypipe._md.seqrules import STALE_FENCE, Fences
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
