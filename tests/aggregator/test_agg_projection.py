"""Filter projections: watchlist, predicate, Top-K with hysteresis; state = the group filtered."""

from __future__ import annotations

import pytest
import trio
from _agg_helpers import Routed, tick

from xypipe._errors import ConfigError
from xypipe._gateway._acl import Acl, covers, group_subjects
from xypipe._md.client import MarketView
from xypipe._md.conflation import Conflator, DeltaOut
from xypipe._md.projection import (
    Projections,
    ProjectionSpec,
    split_stream,
    stream_problem,
    stream_subject,
)
from xypipe._md.snapshots import SnapshotBuilder, SnapshotOut
from xypipe._stages.snapshot import SnapshotStage
from xypipe._validate import Invalid
from xypipe.contracts import Delta, Snapshot, SymbolState
from xypipe.testing import make_config


class Run:
    """A group fed through the conflator, its mirror and its projections, with one client view
    of the whole group and one per projection (each a real :class:`MarketView`)."""

    def __init__(self, *specs: ProjectionSpec, **shard_options: object) -> None:
        self.core = Conflator(epoch=7)
        self.feed = Routed(**shard_options)
        self.mirror = SnapshotBuilder(7)
        self.projections = Projections(specs)
        self.projections.restore({}, epoch=100, generation=0)
        self.group = MarketView()
        self.views = {s.stream: MarketView() for s in specs}
        self.step = 0
        self.deltas: dict[str, list[Delta]] = {s.stream: [] for s in specs}
        self.snapped: set[str] = set()

    def window(self, *ticks: object) -> list[DeltaOut]:
        self.step += 1
        self.core.apply(self.feed.batch(list(ticks)))  # type: ignore[arg-type]
        deltas = self.core.emit(self.step, 0, 33)
        for d in deltas:
            self.mirror.apply(d)
        for d in deltas:
            if d.group not in self.group.groups:
                self.group.apply_snapshot(Snapshot(group=d.group, epoch=d.epoch, shards=d.shards,
                                                   shard_seq={}))
            self.group.apply_delta(Delta.FromString(d.payload))
        out = self.projections.apply(deltas)
        for d in out:
            assert d.subject == stream_subject("xy.md.tick", d.group)
            self.deltas[d.group].append(Delta.FromString(d.payload))
            if d.group not in self.snapped:
                # A reader joins with the projection's first snapshot (right after its first
                # delta, as the stage sends it).
                self.snapped.add(d.group)
                snap = self.projections.build(d.group, self.step, 33, 0)
                assert snap is not None
                self.views[d.group].apply_snapshot(Snapshot.FromString(snap.payload))
            else:
                assert self.views[d.group].apply_delta(Delta.FromString(d.payload))
        return out

    def filtered(self, stream: str) -> dict[tuple[str, str], SymbolState]:
        p = self.projections.by_stream[stream]
        view = self.group.groups[p.spec.group].symbols
        return {k: s for k, s in view.items() if f"{k[0]}.{k[1]}" in p.members}

    def assert_consistent(self) -> None:
        """Every projection's view is the group's view filtered to its members — the same
        states (so the same checksums), verified by the views on every entry."""
        for stream, view in self.views.items():
            if stream not in self.snapped:
                continue
            assert view.state() == self.filtered(stream)
            assert view.stats.checksum_mismatches == view.stats.gaps == 0
            # And the projection's own snapshot says the same.
            snap = self.projections.build(stream, 0, 33, 0)
            assert snap is not None
            fresh = MarketView()
            fresh.apply_snapshot(Snapshot.FromString(snap.payload))
            assert fresh.state() == self.filtered(stream)
        assert self.group.stats.checksum_mismatches == 0

    def keys(self, stream: str) -> set[str]:
        return set(self.projections.by_stream[stream].members)


# --------------------------------------------------------------------------- naming


def test_stream_names_map_to_subjects_no_shard_subscription_matches() -> None:
    assert split_stream("fx") == ("fx", "")
    assert split_stream("fx/top") == ("fx", "top")
    assert stream_subject("xy.md.tick", "fx") == "xy.md.tick.fx"
    assert stream_subject("xy.md.tick", "fx/top") == "xy.md.tick.fx.p.top"
    assert stream_problem("fx/top") is None
    assert stream_problem("fx/") is not None
    assert "projection name" in str(stream_problem("fx/to.p"))
    assert stream_problem("f x") is not None
    # A subscription to every shard of fx never receives a projection's deltas.
    assert not covers("xy.md.tick.fx.*", "xy.md.tick.fx.p.top")
    assert group_subjects("fx/top") == ["xy.md.snapshot.fx.p.top", "xy.md.tick.fx.p.top"]


@pytest.mark.parametrize(("patterns", "allowed"), [
    (["xy.md.*.fx", "xy.md.*.fx.>"], True),  # the whole group grants its projections
    (["xy.md.*.fx.p.top"], True),  # only this projection
    (["xy.md.*.fx.p.other"], False),
    (["xy.md.*.fx", "xy.md.*.fx.*"], False),  # shards only, not projections
    (["xy.md.>"], True),
])
def test_acl_patterns_cover_projections(patterns: list[str], allowed: bool) -> None:
    assert Acl(tuple(patterns)).check_group("fx/top").allowed is allowed
    if patterns == ["xy.md.*.fx.p.top"]:
        assert not Acl(tuple(patterns)).check_group("fx").allowed


def test_projection_specs_refuse_bad_values_by_key() -> None:
    with pytest.raises(Invalid, match="name"):
        ProjectionSpec(name="a.b", group="g")
    with pytest.raises(Invalid, match="top_by"):
        ProjectionSpec(name="t", group="g", top_by="change")
    with pytest.raises(Invalid, match="price_min"):
        ProjectionSpec(name="t", group="g", price_min=10, price_max=5)
    with pytest.raises(ConfigError, match="each group/name once"):
        make_config(SnapshotStage, {"projections": [{"name": "t", "group": "g"},
                                                    {"name": "t", "group": "g"}]})
    cfg = make_config(SnapshotStage, {"projections": [
        {"name": "w", "group": "g", "symbols": ["V.A", "B"], "top_k": 3, "margin": 2}]})
    assert cfg.projections[0].symbols == ("V.A", "B")


# --------------------------------------------------------------------------- membership


def test_a_watchlist_gets_only_its_symbols_and_equals_the_group_filtered() -> None:
    spec = ProjectionSpec(name="watch", group="default", symbols=("V.A", "C"))
    run = Run(spec)
    for i in range(1, 30):
        ticks = [tick(symbol=s, seq=i, last=100 + (i * (n + 1)) % 9, vol=i * (n + 1))
                 for n, s in enumerate("ABCDE")]
        ticks.append(tick(venue="W", symbol="C", seq=i, last=50 + i, vol=i))
        ticks.append(tick(venue="W", symbol="A", seq=i, last=70, vol=i))  # W.A: not listed
        run.window(*ticks)
        run.assert_consistent()
    sent = {f"{s.venue}.{s.symbol}" for d in run.deltas["default/watch"] for s in d.symbols}
    assert sent == {"V.A", "V.C", "W.C"}
    # Only windows where a member ticked emit a projection delta; sequences are contiguous.
    assert [d.seq for d in run.deltas["default/watch"]] == list(range(1, 30))


def test_a_predicate_adds_and_removes_symbols_explicitly() -> None:
    spec = ProjectionSpec(name="liquid", group="default", venues=("V",), min_vol=50,
                          price_min=100, price_max=200)
    run = Run(spec)
    run.window(tick(symbol="A", vol=10, last=150), tick(symbol="B", vol=60, last=150),
               tick(venue="W", symbol="C", vol=100, last=150))
    assert run.keys("default/liquid") == {"V.B"}
    run.window(tick(symbol="A", seq=2, vol=55, last=150))  # crosses min_vol: enters
    assert run.deltas["default/liquid"][-1].removed == []
    assert [s.symbol for s in run.deltas["default/liquid"][-1].symbols] == ["A"]
    run.window(tick(symbol="B", seq=2, vol=70, last=250))  # out of the price band: leaves
    assert run.deltas["default/liquid"][-1].removed == ["V.B"]
    assert not run.deltas["default/liquid"][-1].symbols
    run.window(tick(symbol="D", vol=1, last=120))  # never a candidate: no delta at all
    assert len(run.deltas["default/liquid"]) == 3
    assert run.keys("default/liquid") == {"V.A"}
    run.assert_consistent()
    events = run.projections.take_events()
    assert [(k, c) for _s, k, c in events] == [("V.B", "enter"), ("V.A", "enter"),
                                               ("V.B", "leave")]


def test_top_k_does_not_flap_for_a_symbol_oscillating_at_the_edge() -> None:
    spec = ProjectionSpec(name="top", group="default", top_k=3, top_by="last", margin=1)
    run = Run(spec)
    prices = {"A": 500, "B": 400, "C": 300, "X": 299, "D": 100}
    run.window(*(tick(symbol=s, last=p) for s, p in prices.items()))
    assert run.keys("default/top") == {"V.A", "V.B", "V.C"}
    run.projections.take_events()
    # X oscillates around C: ranked 3rd, then 4th, then 3rd ... for 40 windows.
    for i in range(2, 42):
        x = 301 if i % 2 == 0 else 298
        run.window(tick(symbol="X", seq=i, last=x))
        run.assert_consistent()
    events = run.projections.take_events()
    # X entered once (ranked within K) and never left (4th is within K + margin); C, pushed
    # to 4th, stayed too. No membership change after that.
    assert events == [("default/top", "V.X", "enter")]
    assert run.keys("default/top") == {"V.A", "V.B", "V.C", "V.X"}
    assert all(not d.removed for d in run.deltas["default/top"])
    # Beyond K + margin a member leaves explicitly; the one that takes its rank enters with its
    # full state although it did not tick.
    run.window(tick(symbol="A", seq=2, last=1), tick(symbol="B", seq=2, last=2))
    last = run.deltas["default/top"][-1]
    assert list(last.removed) == ["V.A"]  # 5th: beyond K + margin
    # B (2) ranks 4th: stays; D (100) now ranks 3rd: enters with its state, not having ticked.
    assert [s.symbol for s in last.symbols] == ["B", "D"]
    assert run.keys("default/top") == {"V.B", "V.C", "V.X", "V.D"}
    run.assert_consistent()


def test_top_k_over_a_sharded_group() -> None:
    spec = ProjectionSpec(name="top", group="default", top_k=2, top_by="vol")
    run = Run(spec, shards=3)
    for i in range(1, 20):
        run.window(*(tick(symbol=f"S{n}", seq=i, vol=i * n + (n == 5) * 40) for n in range(8)))
        run.assert_consistent()
    # S5 (19 * 5 + 40) and S7 (19 * 7), from two of the three shards.
    assert run.keys("default/top") == {"V.S5", "V.S7"}
    view = run.views["default/top"]
    assert set(view.state()) == {("V", "S5"), ("V", "S7")}


def test_a_symbol_that_moves_to_another_group_leaves_the_projection() -> None:
    spec = ProjectionSpec(name="watch", group="a", symbols=("X", "Y"))
    run = Run(spec, rules=[{"group": "a", "symbols": ["*"]}])
    run.window(tick(symbol="X"), tick(symbol="Y"), tick(symbol="Z"))
    assert run.keys("a/watch") == {"V.X", "V.Y"}
    run.feed.router.learn("V.X", "b")  # its contract now says group b
    run.window(tick(symbol="X", seq=2))
    assert list(run.deltas["a/watch"][-1].removed) == ["V.X"]
    assert run.keys("a/watch") == {"V.Y"}
    run.assert_consistent()


# --------------------------------------------------------------------------- the stage


async def test_the_snapshot_stage_publishes_projections_on_their_own_streams(
    autojump_clock: trio.abc.Clock,
) -> None:
    from xypipe.testing import stage_harness

    core, feed = Conflator(epoch=3), Routed()
    out: list[object] = []
    options = {"interval_ms": 500, "request_subject": "", "projections": [
        {"name": "top", "group": "default", "top_k": 2, "top_by": "vol", "margin": 1}]}
    async with stage_harness(SnapshotStage, options) as h:
        for step in range(1, 60):
            core.apply(feed.batch([tick(symbol=f"S{n}", seq=step, vol=step * n + 1)
                                   for n in range(5) if (step + n) % 3]))
            await h.send(core.emit(step, 0, 33))
            await trio.sleep(0.033)
            for batch in h.available():
                out.extend(batch)
    group, projected = MarketView(), MarketView()
    group.apply_snapshot(Snapshot(group="default", epoch=3, shards=1, shard_seq={}))
    subjects = set()
    first_snapshot_at = None
    for i, x in enumerate(out):
        subjects.add(x.subject)  # type: ignore[attr-defined]
        if isinstance(x, SnapshotOut):
            s = Snapshot.FromString(x.payload)
            if s.group == "default/top":
                if first_snapshot_at is None:
                    first_snapshot_at = i
                projected.apply_snapshot(s)
                members = {f"{v.venue}.{v.symbol}" for v in s.symbols}
                assert projected.state() == {k: v for k, v in group.state().items()
                                             if f"{k[0]}.{k[1]}" in members}
            continue
        d = Delta.FromString(x.payload)  # type: ignore[attr-defined]
        (projected if d.group == "default/top" else group).apply_delta(d)
    assert subjects == {"xy.md.tick.default", "xy.md.tick.default.p.top",
                        "xy.md.snapshot.default", "xy.md.snapshot.default.p.top"}
    # The projection's first snapshot comes right after its first delta.
    first_delta_at = next(i for i, x in enumerate(out) if isinstance(x, DeltaOut)
                          and x.group == "default/top")
    assert first_snapshot_at == first_delta_at + 1
    assert set(projected.state()) <= {("V", f"S{n}") for n in range(5)}
    assert len(projected.state()) in (2, 3)
    assert projected.stats.gaps == projected.stats.checksum_mismatches == 0


async def test_after_a_restore_a_projection_starts_a_new_epoch_from_its_restored_group(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The restored group's symbols (serialised lazily by the mirror) are the projection's
    members at once; its first delta after the restore is seq 1 of a new epoch, followed by its
    snapshot holding the members that did not tick too, byte for byte the group's entries."""
    from xypipe._md.records import Restore
    from xypipe.testing import stage_harness

    core, feed = Conflator(epoch=3), Routed()
    core.apply(feed.batch([tick(symbol=s, vol=v) for s, v in (("A", 9), ("B", 5), ("C", 1))]))
    before = SnapshotBuilder(3)
    for d in core.emit(1, 0, 33):
        before.apply(d)
    stored = before.build("default", 1, 33)
    assert stored is not None
    snap = Snapshot.FromString(stored.payload)
    restore = Restore(epoch=3, snapshots=(snap,), checkpoints={("default", 0): 1},
                      continued=True, replay_from=2)
    options = {"interval_ms": 60_000, "request_subject": "", "projections": [
        {"name": "top", "group": "default", "top_k": 2, "top_by": "vol"}]}
    async with stage_harness(SnapshotStage, options) as h:
        await h.send(restore)
        core.apply(feed.batch([tick(symbol="B", seq=2, vol=6)]))
        await h.send(core.emit(2, 0, 33))
        await trio.sleep(0.1)
        items = [x for batch in h.available() for x in batch]
    pdeltas = [Delta.FromString(x.payload) for x in items
               if isinstance(x, DeltaOut) and x.group == "default/top"]
    psnaps = [Snapshot.FromString(x.payload) for x in items
              if isinstance(x, SnapshotOut) and x.group == "default/top"]
    assert [(d.seq, [s.symbol for s in d.symbols]) for d in pdeltas] == [(1, ["B"])]
    assert pdeltas[0].epoch > 3 and len(psnaps) == 1
    assert psnaps[0].epoch == pdeltas[0].epoch and dict(psnaps[0].shard_seq) == {0: 1}
    restored_a = next(s for s in snap.symbols if s.symbol == "A")
    assert [s.symbol for s in psnaps[0].symbols] == ["A", "B"]
    assert psnaps[0].symbols[0] == restored_a  # did not tick: the restored state itself
    assert psnaps[0].symbols[1].vol == 6
