"""A symbol that changes group leaves the old group at once and explicitly (``Delta.removed``):
router, conflation, the snapshot mirror, the gateway's merge and the subscriber's view."""

from __future__ import annotations

from _agg_helpers import rec, tick

from xypipe._md.client import MarketView
from xypipe._md.conflation import Conflator, merge_deltas
from xypipe._md.records import Batch, ContractRec, Restore
from xypipe._md.snapshots import SnapshotBuilder
from xypipe._stages.shard import Router, Shard
from xypipe.contracts import Contract, Delta, Snapshot, SymbolState
from xypipe.testing import make_config


def contract(symbol: str, group: str, venue: str = "V") -> ContractRec:
    return ContractRec(f"{venue}.{symbol}", Contract(venue=venue, symbol=symbol, group=group),
                       0, 0.0)


class Pipe:
    """Router + conflator + snapshot mirror, fed the way the stages feed them."""

    def __init__(self, **shard: object) -> None:
        self.router = Router(make_config(Shard, {"default_group": "misc", **shard}))
        self.conf = Conflator(1)
        self.snaps = SnapshotBuilder(1)
        self.view = MarketView()

    def feed(self, *recs: object) -> None:
        for r in recs:
            if isinstance(r, ContractRec):
                r.moved_from = self.router.learn(r.key, r.contract.group)
                r.route = self.router.route(r.key)
            else:
                r.route = self.router.route(r.key)  # type: ignore[attr-defined]
        self.conf.apply(Batch(list(recs), 0))

    def window(self) -> list[Delta]:
        out = []
        for d in self.conf.emit(0, 0, 33):
            self.snaps.apply(d)
            delta = Delta.FromString(d.payload)
            self.view.apply_delta(delta)
            out.append(delta)
        return out

    def snapshot(self, group: str) -> Snapshot:
        built = self.snaps.build(group, 0, 33)
        assert built is not None
        snap = Snapshot.FromString(built.payload)
        self.view.apply_snapshot(snap)
        return snap


def keys(snap: Snapshot) -> set[str]:
    return {f"{s.venue}.{s.symbol}" for s in snap.symbols}


def test_a_contract_moves_a_symbol_out_of_the_default_group_at_once_not_at_its_next_tick() -> None:
    p = Pipe()
    p.feed(rec(tick(symbol="AAA", seq=1)), rec(tick(symbol="BBB", seq=1)))
    assert {d.group for d in p.window()} == {"misc"}
    assert p.router.without_contract == ["V.AAA", "V.BBB"]
    p.snapshot("misc")
    # The contract arrives; no further tick for AAA.
    p.feed(contract("AAA", "fx"))
    deltas = {d.group: d for d in p.window()}
    assert list(deltas["misc"].removed) == ["V.AAA"]
    assert [s.symbol for s in deltas["misc"].symbols] == []
    assert [s.symbol for s in deltas["fx"].symbols] == ["AAA"]  # shows in its group now
    assert p.conf.take_moves() == [("V.AAA", "misc", "fx")]
    misc, fx = p.snapshot("misc"), p.snapshot("fx")
    assert keys(misc) == {"V.BBB"} and {(t.symbol) for t in misc.top} == {"BBB"}
    assert keys(fx) == {"V.AAA"}
    # A live subscriber dropped it from misc without waiting for a resync.
    assert set(p.view.groups["misc"].symbols) == {("V", "BBB")}
    assert set(p.view.groups["fx"].symbols) == {("V", "AAA")}
    assert p.view.stats.removed == 1


def test_contract_repeats_do_not_move_anything() -> None:
    p = Pipe()
    p.feed(contract("AAA", "fx"), rec(tick(symbol="AAA", seq=1)))
    p.window()
    p.feed(contract("AAA", "fx"), rec(tick(symbol="AAA", seq=2)))
    deltas = p.window()
    assert [(d.group, list(d.removed)) for d in deltas] == [("fx", [])]
    assert p.conf.take_moves() == []
    assert p.router.without_contract == []


def test_a_symbol_restored_in_one_group_leaves_it_when_the_contract_names_another() -> None:
    old = Snapshot(group="misc", epoch=1, shard_seq={0: 4}, shards=1,
                   symbols=[SymbolState(venue="V", symbol="AAA", seq=3, last=100)])
    r = Restore(epoch=1, snapshots=(old,), checkpoints={("misc", 0): 4}, continued=True,
                replay_from=10)
    p = Pipe()
    p.conf.restore(r)
    p.snaps.restore(r)
    for s in old.symbols:
        p.router.learn(f"{s.venue}.{s.symbol}", old.group)
    p.feed(contract("AAA", "fx"))
    deltas = {d.group: d for d in p.window()}
    assert list(deltas["misc"].removed) == ["V.AAA"] and deltas["misc"].seq == 5
    assert [s.symbol for s in deltas["fx"].symbols] == ["AAA"]
    assert keys(p.snapshot("misc")) == set()
    assert keys(p.snapshot("fx")) == {"V.AAA"}


def test_a_removal_is_sent_even_when_the_old_group_is_paused() -> None:
    p = Pipe()
    p.conf.configured_priorities["misc"] = 1  # PRIORITY_LOW: paused at L3
    p.feed(rec(tick(symbol="AAA", seq=1)), rec(tick(symbol="BBB", seq=1)))
    p.window()
    p.feed(contract("AAA", "fx"), rec(tick(symbol="BBB", seq=2)))
    out = {d.group: d for d in p.conf.emit(0, 3, 33)}
    assert list(Delta.FromString(out["misc"].payload).removed) == ["V.AAA"]
    assert out["misc"].entries == []  # BBB's change stays pending while paused
    assert p.conf.pending() == 1


def test_moving_back_before_the_window_closes_cancels_the_removal() -> None:
    p = Pipe()
    p.feed(contract("AAA", "fx"), rec(tick(symbol="AAA", seq=1)))
    p.window()
    p.feed(contract("AAA", "rates"), contract("AAA", "fx"))
    deltas = {d.group: d for d in p.window()}
    assert list(deltas["fx"].removed) == []
    assert [s.symbol for s in deltas["fx"].symbols] == ["AAA"]
    assert list(deltas["rates"].removed) == ["V.AAA"]  # harmless: rates never showed it


def test_merging_deltas_keeps_removals_and_drops_what_was_removed() -> None:
    a = SymbolState(venue="V", symbol="AAA", seq=1)
    b = SymbolState(venue="V", symbol="BBB", seq=1)
    d1 = Delta(group="g", seq=1, epoch=1, symbols=[a, b])
    d2 = Delta(group="g", seq=2, epoch=1, removed=["V.AAA", "V.BBB"])
    d3 = Delta(group="g", seq=3, epoch=1, symbols=[SymbolState(venue="V", symbol="BBB", seq=2)])
    m = merge_deltas([d1, d2, d3])
    assert list(m.removed) == ["V.AAA"]
    assert [(s.symbol, s.seq) for s in m.symbols] == [("BBB", 2)]
    assert (m.first_seq, m.seq) == (1, 3)
