"""The aggregator's hot path builds the same bytes and checksums as the plain definitions:
levels read once (``flat_levels``), the checksum formatted in one go (``flat_checksum``), the
emitted entry parsed from the tick's own bytes (``SymbolBook.state_bytes``)."""

from __future__ import annotations

import random

import pytest
from _agg_helpers import tick
from google.protobuf.unknown_fields import UnknownFieldSet

from xypipe._md.book import (
    SymbolBook,
    checksum,
    flat_checksum,
    flat_levels,
    state_checksum,
    trimmed_state,
)
from xypipe._md.records import TickRec
from xypipe._md.validate import TickBounds, TickValidator
from xypipe._publisher import MarketSim, stamp_arrival
from xypipe.contracts import PriceLevel, SymbolState, Tick


def _ticks(n: int = 400) -> list[Tick]:
    sim = MarketSim(50, seed=5)
    out = [sim.next_tick(1_000_000) for _ in range(n)]
    rng = random.Random(3)
    for t in out[::7]:  # uneven sides, one empty side, no levels at all
        del t.asks[rng.randrange(0, len(t.asks) + 1):]
    for t in out[::11]:
        del t.bids[:]
    for t in out[::13]:
        t.source = "feed-A"  # a Tick field SymbolState does not have (13: price_decimals)
        t.price_decimals = 4  # a Tick field at another number (14: window_high)
    return out


def test_flat_levels_checksum_matches_the_canonical_checksum() -> None:
    for t in _ticks():
        flat = flat_levels(t.bids, t.asks)
        assert len(flat) == 2 * (len(t.bids) + len(t.asks))
        args = (t.venue, t.symbol, t.seq, t.last, t.last_size, t.vol, t.oi, t.flags, 7)
        assert flat_checksum(*args, flat) == checksum(*args, t.bids, t.asks)


@pytest.mark.parametrize("stamped", [False, True])
def test_state_bytes_are_the_bytes_to_state_serialises(stamped: bool) -> None:
    books: dict[str, SymbolBook] = {}
    for i, t in enumerate(_ticks()):
        key = f"{t.venue}.{t.symbol}"
        book = books.get(key) or books.setdefault(key, SymbolBook(key, t.venue, t.symbol))
        raw = t.SerializeToString()
        if stamped:  # a publisher's own arrival stamp appended (xypipe publish does)
            raw = stamp_arrival(raw, 123_456)
        book.apply(TickRec(key, t, i + 1, float(i), 5_000 + i, raw))
        cs = book.checksum()
        assert cs == state_checksum(book.to_state(cs))
        fast = book.state_bytes(cs)
        assert fast == book.to_state(cs).SerializeToString()
        for depth in (1, 3):
            assert trimmed_state(fast, depth) == book.to_state(cs, depth).SerializeToString()
        state = SymbolState.FromString(fast)
        assert state.ts_arrival_us == book.w_arrival_us and state.checksum == cs
        if i % 3 == 0:
            book.reset_window()


def test_state_bytes_drop_a_newer_producers_fields() -> None:
    t = tick(seq=3, last=100)
    # Field 40 (unknown to both messages) and field 21 (SymbolState.trimmed) set by a producer.
    raw = t.SerializeToString() + bytes([0xC0, 0x02, 0x01]) + bytes([0xA8, 0x01, 0x01])
    book = SymbolBook("V.AAA", "V", "AAA")
    book.apply(TickRec("V.AAA", Tick.FromString(raw), 1, 0.0, 9, raw))
    state = SymbolState.FromString(book.state_bytes(book.checksum()))
    assert not state.trimmed and len(UnknownFieldSet(state)) == 0
    assert book.state_bytes(book.checksum()) == book.to_state(book.checksum()).SerializeToString()


def test_the_door_judges_the_same_with_levels_read_by_the_caller() -> None:
    rng = random.Random(11)
    a, b = TickValidator(TickBounds()), TickValidator(TickBounds())
    for t in _ticks(600):
        if rng.random() < 0.1 and t.bids:
            t.bids[rng.randrange(len(t.bids))].price *= 3  # out of the band
        if rng.random() < 0.05 and t.asks:
            t.asks[0].size = -1  # out of range
        key = f"{t.venue}.{t.symbol}"
        assert a.check(key, t, 1_000_000) == b.check(key, t, 1_000_000,
                                                      flat_levels(t.bids, t.asks))
        assert a.detail == b.detail
        assert a.anchor_of(key) == b.anchor_of(key)


def test_reference_price_is_the_best_ask_without_bids() -> None:
    v = TickValidator(TickBounds())
    t = Tick(venue="V", symbol="X", seq=1, asks=[PriceLevel(price=250, size=1)])
    assert v.check("V.X", t, 0, flat_levels(t.bids, t.asks)) is None
    assert v.anchor_of("V.X") == (1, 0, 250)
