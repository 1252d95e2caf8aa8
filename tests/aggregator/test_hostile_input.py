"""Hostile source ticks are kept out of state: one row per validation reason, properties over
interleavings, and the whole aggregator against a real nats-server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
from _agg_helpers import tick
from _agg_nats import start_aggregator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xypipe import ConfigError, parse_config
from xypipe._degrade import LevelWatch
from xypipe._log import get_logger
from xypipe._md.book import state_checksum
from xypipe._md.conflation import Conflator
from xypipe._md.records import TickRec
from xypipe._md.reorder import ReorderWindow
from xypipe._md.validate import MAX_SAFE, Reason, TickBounds, TickValidator
from xypipe._metrics import Metrics
from xypipe._nats import connect
from xypipe._stage import StageContext
from xypipe._stages._md_common import wall_us
from xypipe._stages.ingest import BadSourceCounter, decode_messages
from xypipe._stages.shard import Router, Shard
from xypipe.contracts import Delta, PriceLevel, Snapshot, SymbolState, Tick
from xypipe.testing import make_config

NOW_US = 1_765_000_000_000_000  # the server's arrival time in the unit tests
JUMP = 100
K = 3
BOUNDS = TickBounds(max_seq_jump=JUMP, price_band_pct=50.0, max_ahead_ms=2_000,
                    max_behind_ms=60_000, reanchor_after=K)


@attrs.frozen
class M:
    subject: str
    data: bytes
    seq: int = 0
    reply: str = ""


def genuine(seq: int, mid: int = 10_000, symbol: str = "AAA", trade: bool = True) -> Tick:
    t = tick("V", symbol, seq, last=mid, mid=mid, size=5, vol=seq * 5, oi=7, trade=trade,
             arrival_us=NOW_US - 100)
    return t


class Pipe:
    """The aggregator's cores in their order: decode + door (ingest), the reorder window
    (dedupe), routing (shard) and the conflator — fed one tick at a time."""

    def __init__(self, bounds: TickBounds = BOUNDS) -> None:
        self.ctx = StageContext("p", "ingest", None, None, LevelWatch(), Metrics(),
                                get_logger("hostile"))
        self.bad = BadSourceCounter(self.ctx, per_s=10_000)
        self.door = TickValidator(bounds)
        self.window = ReorderWindow(0.02, 32, stamp=lambda r: r.tick.ts_exchange_us)
        self.router = Router(make_config(Shard, {}))
        self.conflator = Conflator(1)
        self.now = 0.0
        self.sseq = 0
        self.accepted: list[TickRec] = []

    def feed(self, t: Tick, arrival_us: int = NOW_US) -> list[TickRec]:
        """Feed one tick; returns what the door let through."""
        self.sseq += 1
        self.now += 0.05  # past the window's hold time: what it held is out
        msg = M(f"xy.src.tick.{t.venue}.{t.symbol}", t.SerializeToString(), self.sseq)
        recs = decode_messages([msg], self.now, self.bad, self.door, arrival_us)
        out: list[Any] = []
        self.window.expire(self.now, out)
        for r in recs:
            self.window.push(r, self.now, out)
        self._apply(out)
        self.accepted.extend(recs)
        return recs

    def settle(self) -> None:
        out: list[Any] = []
        self.window.flush(out)
        self._apply(out)

    def _apply(self, out: list[Any]) -> None:
        for r in out:
            r.route = self.router.route(r.key)
        self.conflator.apply(out)

    def state(self, symbol: str = "AAA") -> SymbolState | None:
        book = self.conflator.books.get(f"V.{symbol}")
        return None if book is None else book.to_state(book.checksum())

    def states(self) -> dict[str, tuple[Any, ...]]:
        return {k: _visible(b.to_state(b.checksum())) for k, b in self.conflator.books.items()}

    def bad_count(self, reason: str) -> float:
        return self.ctx.metrics.sample("src_bad_total", {"reason": reason}) or 0.0


def _visible(s: SymbolState) -> tuple[Any, ...]:
    """What a client sees of a symbol (the checksum covers the rest)."""
    return (s.seq, s.last, s.last_size, s.vol, s.oi, s.flags, list(s.bids), list(s.asks),
            s.total_trades, s.checksum)


# --------------------------------------------------------------------------- the table


def _set(**fields: Any) -> Callable[[Tick], None]:
    def mutate(t: Tick) -> None:
        for name, value in fields.items():
            setattr(t, name, value)
    return mutate


def _level(side: str, i: int, **fields: int) -> Callable[[Tick], None]:
    def mutate(t: Tick) -> None:
        lv: PriceLevel = getattr(t, side)[i]
        for name, value in fields.items():
            setattr(lv, name, value)
    return mutate


def _seq_back(t: Tick) -> None:
    t.seq = t.seq - JUMP - 5


def _seq_ahead(t: Tick) -> None:
    t.seq = t.seq + JUMP  # one past the limit from the last accepted (the one before)


HOSTILE: list[tuple[str, Reason, Callable[[Tick], None]]] = [
    ("seq_zero", Reason.SEQ_RANGE, _set(seq=0)),
    ("seq_beyond_2^53", Reason.SEQ_RANGE, _set(seq=MAX_SAFE + 1)),
    ("seq_10^15_ahead", Reason.SEQ_JUMP, _set(seq=10**15)),
    ("seq_just_past_the_jump", Reason.SEQ_JUMP, _seq_ahead),
    ("seq_far_behind", Reason.SEQ_JUMP, _seq_back),
    ("negative_last_size", Reason.SIZE_RANGE, _set(last_size=-1)),
    ("negative_volume", Reason.SIZE_RANGE, _set(vol=-10)),
    ("negative_open_interest", Reason.SIZE_RANGE, _set(oi=-(1 << 62))),
    ("volume_beyond_2^53", Reason.SIZE_RANGE, _set(vol=MAX_SAFE + 1)),
    ("negative_bid_size_deep", Reason.SIZE_RANGE, _level("bids", 3, size=-5)),
    ("negative_ask_size_top", Reason.SIZE_RANGE, _level("asks", 0, size=-1)),
    ("negative_last_price", Reason.PRICE_RANGE, _set(last=-10_000)),
    ("zero_bid_price", Reason.PRICE_RANGE, _level("bids", 0, price=0)),
    ("ask_price_beyond_2^53", Reason.PRICE_RANGE, _level("asks", 4, price=1 << 60)),
    ("last_price_100x", Reason.PRICE_BAND, _set(last=1_000_000)),
    ("last_price_a_tenth", Reason.PRICE_BAND, _set(last=1_000)),
    ("deep_ask_10x", Reason.PRICE_BAND, _level("asks", 4, price=100_000)),
    ("exchange_time_a_year_ahead", Reason.TS_SKEW,
     _set(ts_exchange_us=NOW_US + 365 * 86_400_000_000)),
    ("exchange_time_3s_ahead", Reason.TS_SKEW, _set(ts_exchange_us=NOW_US + 3_000_000)),
    ("exchange_time_a_day_behind", Reason.TS_SKEW,
     _set(ts_exchange_us=NOW_US - 86_400_000_000)),
    ("negative_exchange_time", Reason.TS_SKEW, _set(ts_exchange_us=-1)),
]


def test_the_table_covers_every_rejection_reason() -> None:
    assert {r for _, r, _ in HOSTILE} == set(Reason) - {Reason.REANCHOR}


@pytest.mark.parametrize(("name", "reason", "mutate"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_tick_is_rejected_counted_logged_and_the_next_genuine_one_accepted(
    name: str, reason: Reason, mutate: Callable[[Tick], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="xypipe")
    pipe = Pipe()
    for seq in range(998, 1001):
        assert pipe.feed(genuine(seq))
    before = pipe.states()
    assert before["V.AAA"][0] == 1000
    hostile = genuine(1001)
    mutate(hostile)
    assert pipe.feed(hostile) == []
    assert pipe.bad_count(reason) == 1
    assert sum(pipe.bad_count(r) for r in Reason) == 1
    logged = [getattr(r, "xy_fields", {}) for r in caplog.records]
    assert {"code": "XY-SRC-001", "reason": reason,
            "subject": "xy.src.tick.V.AAA"}.items() <= logged[-1].items()
    assert pipe.door.detail.split(":")[0] in caplog.records[-1].getMessage()
    assert pipe.states() == before  # nothing published changed
    assert pipe.door.anchor_of("V.AAA") == (1000, NOW_US - 110, 10_000)
    assert [r.seq for r in pipe.feed(genuine(1001))] == [1001]
    pipe.settle()
    state = pipe.state()
    assert state is not None and (state.seq, state.last) == (1001, 10_000)


def test_a_restarted_source_still_starts_over_at_1() -> None:
    pipe = Pipe()
    for seq in range(998, 1001):
        pipe.feed(genuine(seq))
    restarted = genuine(1)
    restarted.ts_exchange_us += 10  # newer than anything accepted: a new session
    assert [r.seq for r in pipe.feed(restarted)] == [1]
    assert [r.seq for r in pipe.feed(genuine(2))] == [2]
    pipe.settle()
    assert pipe.state().seq == 2  # type: ignore[union-attr]
    assert pipe.window.resets == 1


def test_a_genuine_jump_is_followed_after_k_consistent_ticks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="xypipe")
    pipe = Pipe()
    for seq in range(998, 1001):
        pipe.feed(genuine(seq))
    far = 5_000_000  # the venue renumbered far ahead
    for i in range(K - 1):
        assert pipe.feed(genuine(far + i)) == []
    recs = pipe.feed(genuine(far + K - 1))
    assert [r.seq for r in recs] == [far + K - 1] and recs[0].reanchor
    assert pipe.bad_count(Reason.SEQ_JUMP) == K - 1
    assert pipe.bad_count(Reason.REANCHOR) == 1
    fields = getattr(caplog.records[-1], "xy_fields", {})
    assert fields["code"] == "XY-SRC-003" and fields["reason"] == "reanchor"
    assert [r.seq for r in pipe.feed(genuine(far + K))] == [far + K]
    pipe.settle()
    assert pipe.state().seq == far + K  # type: ignore[union-attr]
    assert pipe.window.reanchors == 1


def test_a_real_price_move_beyond_the_band_is_followed_after_k_consistent_ticks() -> None:
    pipe = Pipe()
    pipe.feed(genuine(1000))
    for i in range(1, K):
        assert pipe.feed(genuine(1000 + i, mid=30_000)) == []
    assert pipe.feed(genuine(1000 + K, mid=30_000))[0].reanchor
    assert pipe.bad_count(Reason.PRICE_BAND) == K - 1
    assert [r.seq for r in pipe.feed(genuine(1001 + K, mid=31_000))] == [1001 + K]


def test_a_hostile_first_tick_heals_after_k_genuine_ones() -> None:
    # No anchor yet: a fresh symbol's first tick cannot be judged, but it cannot freeze it.
    pipe = Pipe()
    pipe.feed(genuine(10**15))
    for seq in range(1, K + 1):
        pipe.feed(genuine(seq))
    pipe.feed(genuine(K + 1))
    pipe.settle()
    assert pipe.state().seq == K + 1  # type: ignore[union-attr]


def test_a_hostile_run_that_re_anchored_far_ahead_heals_after_k_genuine_ticks() -> None:
    pipe = Pipe()
    for seq in range(998, 1001):
        pipe.feed(genuine(seq))
    for seq in range(10**12, 10**12 + K):
        pipe.feed(genuine(seq, mid=10_050))
    pipe.settle()
    assert pipe.state().seq == 10**12 + K - 1  # type: ignore[union-attr]
    for seq in range(1001, 1001 + K):
        pipe.feed(genuine(seq, mid=10_010))
    pipe.settle()
    state = pipe.state()
    assert state is not None and (state.seq, state.last) == (1000 + K, 10_010)
    assert pipe.window.reanchors == 2 and pipe.bad_count(Reason.REANCHOR) == 2


def test_interleaved_hostile_ticks_never_build_a_run() -> None:
    # A genuine tick between hostile ones ends their run: they never re-anchor the symbol.
    pipe = Pipe()
    pipe.feed(genuine(1000))
    for i in range(1, 20):
        pipe.feed(genuine(10**12 + i))
        assert pipe.feed(genuine(1000 + i))
    assert pipe.bad_count(Reason.REANCHOR) == 0


def test_a_restored_state_anchors_the_door() -> None:
    door = TickValidator(BOUNDS)
    door.restore([SymbolState(venue="V", symbol="AAA", seq=1000, ts_exchange_us=NOW_US - 5,
                              last=10_000)])
    assert door.check("V.AAA", genuine(1001), NOW_US) is None
    assert door.check("V.AAA", genuine(1001 + JUMP * 2), NOW_US) is Reason.SEQ_JUMP
    assert door.check("V.AAA", genuine(1002, mid=100), NOW_US) is Reason.PRICE_BAND


def test_zero_timestamps_are_not_provided_and_per_venue_jumps_apply() -> None:
    door = TickValidator(attrs.evolve(BOUNDS, seq_jump_by_venue={"V": 10}))
    t = genuine(1000)
    t.ts_exchange_us = t.ts_arrival_us = 0
    assert door.check("V.AAA", t, NOW_US) is None
    assert door.check("V.AAA", genuine(1011), NOW_US) is Reason.SEQ_JUMP
    assert door.check("V.AAA", genuine(1010), NOW_US) is None


def test_disabled_bounds_only_refuse_malformed_ticks() -> None:
    pipe = Pipe(TickBounds(enabled=False))
    pipe.feed(genuine(1))
    assert pipe.feed(genuine(10**15))
    assert pipe.feed(genuine(0)) == [] and pipe.bad_count(Reason.SEQ_RANGE) == 1


def test_bounds_are_checked_when_the_config_loads() -> None:
    def load(bounds: dict[str, Any]) -> Any:
        return parse_config({"http": {"enabled": False}, "nats": {"url": "nats://x:4222"},
                             "pipelines": {"a": {"stages": [
                                 {"use": "ingest", "bounds": bounds},
                                 {"use": "xypipe.testing:ListSink"}]}}})

    cfg = load({"max_seq_jump": 50, "seq_jump_by_venue": {"XNAS": 5}})
    ingest = cfg.pipelines["a"].stages[0].config
    assert ingest.bounds.max_seq_jump == 50 and ingest.bounds.seq_jump_by_venue == {"XNAS": 5}
    for bad, where in (({"max_seq_jump": 0}, "max_seq_jump"),
                       ({"reanchor_after": 1}, "reanchor_after"),
                       ({"seq_jump_by_venue": {"XNAS": -1}}, "seq_jump_by_venue.XNAS"),
                       ({"max_seq_jumps": 5}, "max_seq_jumps")):
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            load(bad)


# --------------------------------------------------------------------------- properties


@st.composite
def hostile_tick(draw: st.DrawFn, seq: int, mid: int, symbol: str,
                 run: list[int]) -> tuple[Tick, bool]:
    """A tick out of bounds for a symbol at ``seq``/``mid``; and whether the bound it breaks is
    a relative one (such ticks can form a run). ``run`` is the next sequence of a far range
    where consecutive hostile ticks are mutually consistent (they can re-anchor the symbol)."""
    t = genuine(seq, mid, symbol)
    kind = draw(st.sampled_from(["seq_far", "seq_run", "seq_range", "size", "price_range",
                                 "price_far", "ts"]))
    if kind == "seq_run":
        t.seq = run[0]
        run[0] += draw(st.integers(1, JUMP))
    elif kind == "seq_far":
        t.seq = draw(st.one_of(st.integers(seq + 10 * JUMP, MAX_SAFE),
                               st.integers(1, max(1, seq - 10 * JUMP))))
        if t.seq == 1:
            t.ts_exchange_us -= 1_000  # an old session's first tick, not a restart
    elif kind == "seq_range":
        t.seq = draw(st.sampled_from([0, MAX_SAFE + 1, (1 << 64) - 1]))
    elif kind == "size":
        field = draw(st.sampled_from(["last_size", "vol", "oi", "bids", "asks"]))
        bad = draw(st.integers(-(1 << 63), -1))
        if field in ("bids", "asks"):
            getattr(t, field)[draw(st.integers(0, 4))].size = bad
        else:
            setattr(t, field, bad)
    elif kind == "price_range":
        t.last = draw(st.one_of(st.integers(-(1 << 63), 0).filter(bool),
                                st.integers(MAX_SAFE + 1, (1 << 63) - 1)))
    elif kind == "price_far":
        t.last = draw(st.one_of(st.integers(mid * 10, MAX_SAFE), st.integers(1, mid // 10)))
    else:
        t.ts_exchange_us = draw(st.one_of(st.integers(NOW_US + 2_001_000, MAX_SAFE),
                                          st.integers(-(1 << 63), NOW_US - 60_001_000)
                                          .filter(bool)))
    return t, kind in ("seq_far", "seq_run", "price_far")


@st.composite
def interleaving(draw: st.DrawFn, *, cap_runs: bool) -> tuple[list[Tick], list[Tick]]:
    """Genuine ticks of two symbols (a small random walk) and the same with hostile ticks mixed
    in; with ``cap_runs``, fewer than K relative-bound breakers in a row per symbol."""
    n = draw(st.integers(1, 30))
    genuine_ticks: list[Tick] = []
    mixed: list[Tick] = []
    seqs = {"AAA": 1000, "BBB": 50_000}
    mids = {"AAA": 10_000, "BBB": 500}
    run = dict.fromkeys(seqs, 0)
    # Far ranges, ahead of or behind the genuine sequences, where hostile runs go.
    # (A run grows by at most 120 * JUMP: it never reaches the genuine range.)
    far = {"AAA": [draw(st.integers(1000 + 10 * JUMP, 10**15))],
           "BBB": [draw(st.one_of(st.integers(2, 20_000),
                                  st.integers(50_000 + 10 * JUMP, 10**15)))]}
    # Each symbol's first tick is genuine: a symbol's very first tick has nothing to be judged
    # against (see test_a_hostile_first_tick_heals_after_k_genuine_ones).
    for symbol in sorted(seqs):
        first = genuine(seqs[symbol], mids[symbol], symbol)
        genuine_ticks.append(first)
        mixed.append(first)
    for _ in range(n):
        symbol = draw(st.sampled_from(sorted(seqs)))
        for _ in range(draw(st.integers(0, 4))):
            other = draw(st.sampled_from(sorted(seqs)))
            bad, relative = draw(hostile_tick(seqs[other] + 1, mids[other], other, far[other]))
            if relative:
                if cap_runs and run[other] >= K - 1:
                    continue
                run[other] += 1
            mixed.append(bad)
        seqs[symbol] += 1
        mids[symbol] += draw(st.integers(-2, 2))
        t = genuine(seqs[symbol], mids[symbol], symbol, trade=draw(st.booleans()))
        run[symbol] = 0
        genuine_ticks.append(t)
        mixed.append(t)
    return genuine_ticks, mixed


def _run(ticks: list[Tick]) -> Pipe:
    pipe = Pipe()
    for t in ticks:
        pipe.feed(t)
    pipe.settle()
    return pipe


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleaving(cap_runs=True))
def test_hostile_ticks_never_change_what_the_genuine_ones_alone_produce(
    case: tuple[list[Tick], list[Tick]],
) -> None:
    genuine_ticks, mixed = case
    alone, with_hostile = _run(genuine_ticks), _run(mixed)
    assert with_hostile.states() == alone.states()
    assert [r.seq for r in with_hostile.accepted] == [t.seq for t in genuine_ticks]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleaving(cap_runs=False))
def test_hostile_ticks_never_freeze_a_symbol(case: tuple[list[Tick], list[Tick]]) -> None:
    # Whatever came before (runs long enough to re-anchor included), K genuine ticks in a row
    # bring each symbol back to the genuine state.
    genuine_ticks, mixed = case
    pipe = _run(mixed)
    last = {t.symbol: (t.seq, t.last) for t in genuine_ticks}
    tail: list[Tick] = []
    for symbol, (seq, mid) in sorted(last.items()):
        tail.extend(genuine(seq + i, mid, symbol) for i in range(1, K + 1))
    for t in tail:
        pipe.feed(t)
    pipe.settle()
    for symbol, (seq, mid) in last.items():
        state = pipe.state(symbol)
        assert state is not None and (state.seq, state.last) == (seq + K, mid)
        want = genuine(seq + K, mid, symbol)
        assert (list(state.bids), list(state.asks)) == (list(want.bids), list(want.asks))


# --------------------------------------------------------------------------- real NATS


async def test_hostile_ticks_published_among_genuine_ones_never_reach_deltas_or_snapshots(
    nats_url: str,
) -> None:
    seen: list[tuple[str, SymbolState]] = []  # ("delta" | "snapshot", entry of V.AAA)
    last = 1000 + len(HOSTILE)
    done = trio.Event()

    async def watch(task_status: trio.TaskStatus[None]) -> None:
        async with nc.subscribe("xy.md.>", max_batch=1024) as sub:
            task_status.started()
            async for batch in sub:
                for m in batch:
                    if m.subject.startswith("xy.md.snapshot."):
                        kind, entries = "snapshot", Snapshot.FromString(m.data).symbols
                    else:
                        kind, entries = "delta", Delta.FromString(m.data).symbols
                    seen.extend((kind, e) for e in entries if e.symbol == "AAA")
                if any(k == "snapshot" and e.seq == last for k, e in seen):
                    done.set()

    bounds = {"max_seq_jump": JUMP, "reanchor_after": K, "max_behind_ms": 60_000}
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        await nursery.start(watch)
        agg, scope = await start_aggregator(nursery, nats_url, ingest={"bounds": bounds})
        now = wall_us()

        def real(seq: int) -> Tick:
            t = tick("V", "AAA", seq, last=10_000 + seq, mid=10_000 + seq, size=1, vol=seq,
                     trade=True, arrival_us=now)
            t.ts_arrival_us = now - 1_800_000_000  # a publisher clock 30 min off: ignored
            return t

        sent = [real(1000)]
        for i, (_, _, mutate) in enumerate(HOSTILE):
            bad = real(1001 + i)  # the next genuine tick, made hostile
            mutate(bad)
            sent += [bad, real(1001 + i)]
        for t in sent:
            await nc.publish("xy.src.tick.V.AAA", t.SerializeToString())
        with trio.fail_after(30):
            await done.wait()
        m = agg.metrics
        scope.cancel()
        nursery.cancel_scope.cancel()
    assert {k for k, _ in seen} == {"delta", "snapshot"}
    for kind, e in seen:  # every state a client could see is a genuine one, intact
        want = real(e.seq)
        assert 1000 <= e.seq <= last, (kind, e.seq)
        assert (e.last, e.vol, list(e.bids), list(e.asks)) == (
            want.last, want.vol, list(want.bids), list(want.asks)), (kind, e.seq)
        assert e.checksum == state_checksum(e)
        # Latency starts at the aggregator's own arrival stamp, not the publisher's field.
        assert abs(e.ts_arrival_us - now) < 60_000_000
    final = [e for k, e in seen if k == "snapshot" and e.seq == last][-1]
    assert final.total_trades == last - 999  # only the genuine trades were counted
    want_bad: dict[str, float] = {}
    for _, reason, _ in HOSTILE:
        want_bad[reason] = want_bad.get(reason, 0.0) + 1
    assert {r: m.sample("src_bad_total", {"reason": r}) for r in want_bad} == want_bad
    assert not m.sample("src_bad_total", {"reason": "reanchor"})
