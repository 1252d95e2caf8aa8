"""The hub drops deltas and snapshots of an aggregator that lost its group's lease: their fence
is below the highest seen for the group (0: unfenced, always admitted)."""

from __future__ import annotations

from gw_support import FakeAggregator

from xypipe._gateway._hub import Hub, Outbox
from xypipe.contracts import Delta, ServerFrame


def _frame(hub: Hub, ob: Outbox, now: int) -> ServerFrame:
    built = hub.build(ob, now)
    assert built is not None
    data = built.data
    n = data[1] & 0x7F
    f = ServerFrame()
    f.ParseFromString(data[2:] if n < 126 else data[4:])
    return f


def _delta(agg: FakeAggregator, fence: int) -> bytes:
    d = Delta()
    d.ParseFromString(agg.delta_bytes("fx"))
    d.fence = fence
    return d.SerializeToString()


def _snapshot(agg: FakeAggregator, fence: int) -> bytes:
    s = agg.snapshot("fx")
    s.fence = fence
    return s.SerializeToString()


def test_a_delta_or_snapshot_below_the_groups_fence_is_dropped_and_counted() -> None:
    agg = FakeAggregator(None, ["fx"])
    hub = Hub(history=16)
    hub.on_snapshot("xy.md.snapshot.fx", _snapshot(agg, 5), 0.0)
    ob = Outbox(1)
    hub.subscribe(ob, "fx", frozenset())
    assert [s.fence for s in _frame(hub, ob, 1).snapshots] == [5]
    assert hub.on_delta("xy.md.tick.fx", _delta(agg, 5), 0.0)  # seq 1, the owner's
    # The new owner (fence 9) continues the sequence; the old one, not yet aware, sends too.
    assert hub.on_delta("xy.md.tick.fx", _delta(agg, 9), 0.0)  # seq 2
    zombie = Delta()
    zombie.ParseFromString(_delta(agg, 5))  # seq 3 of the replaced owner
    assert hub.on_delta("xy.md.tick.fx", zombie.SerializeToString(), 0.0) == set()
    agg.seq["fx"] -= 1  # the new owner's own seq 3
    assert hub.on_delta("xy.md.tick.fx", _delta(agg, 9), 0.0)
    assert hub.on_snapshot("xy.md.snapshot.fx", _snapshot(agg, 5), 0.0) == set()
    # Unfenced (ownership off, or a producer that predates fences): admitted.
    assert hub.on_delta("xy.md.tick.fx", _delta(agg, 0), 0.0)
    f = _frame(hub, ob, 2)
    assert [(d.seq, d.fence) for d in f.deltas] == [(1, 5), (2, 9), (3, 9), (4, 0)]
    assert hub.stats.fenced == {"fx": 2}
    assert hub.stats.rejected == {("delta", "stale_fence"): 1, ("snapshot", "stale_fence"): 1}
    events = hub.take_events(0.0)
    assert {(e.reason, e.count, e.head_epoch, e.head_seq) for e in events} == {
        ("delta:stale_fence", 1, 9, 5), ("snapshot:stale_fence", 1, 9, 5)}
    # Rate-limited: more drops within the interval are one event, with their count.
    for _ in range(3):
        hub.on_delta("xy.md.tick.fx", _delta(agg, 4), 0.1)
    assert hub.take_events(0.2) == []
    [later] = hub.take_events(1.5)
    assert later.count == 3 and hub.stats.fenced == {"fx": 5}


def test_fences_are_per_group() -> None:
    agg = FakeAggregator(None, ["fx", "news"])
    hub = Hub(history=16)
    d = Delta()
    d.ParseFromString(agg.delta_bytes("news"))
    d.fence = 100
    hub.on_delta("xy.md.tick.news", d.SerializeToString(), 0.0)
    hub.on_delta("xy.md.tick.fx", _delta(agg, 3), 0.0)  # another group's owner: its own fence
    assert hub.streams[("fx", 0)].last_seq == 1 and hub.streams[("news", 0)].last_seq == 1
    assert hub.stats.fenced == {}
