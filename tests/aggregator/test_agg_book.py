"""Symbol state, the canonical checksum and merging deltas."""

from __future__ import annotations

import zlib

import pytest
from _agg_helpers import Routed, tick

from xypipe._md.book import canonical_string, state_checksum
from xypipe._md.conflation import Conflator, merge_deltas
from xypipe.contracts import Delta, PriceLevel, SymbolState


def test_canonical_string_interleaves_levels_and_skips_missing_ones() -> None:
    bids = [PriceLevel(price=99, size=5), PriceLevel(price=98, size=7)]
    asks = [PriceLevel(price=101, size=3)]
    text = canonical_string("XNAS", "ABC", 12, 100, 4, 1000, -3, 1, 9, bids, asks)
    assert text == "XNAS:ABC:12:100:4:1000:-3:1:9:99:5:101:3:98:7"


def test_checksum_is_crc32_of_the_canonical_form() -> None:
    s = SymbolState(venue="XNAS", symbol="ABC", seq=12, last=100, last_size=4, vol=1000,
                    oi=-3, flags=1, total_trades=9,
                    bids=[PriceLevel(price=99, size=5)], asks=[PriceLevel(price=101, size=3)])
    assert state_checksum(s) == zlib.crc32(b"XNAS:ABC:12:100:4:1000:-3:1:9:99:5:101:3")


def test_checksum_vector_matches_the_documented_example() -> None:
    # The same example is in docs/protocol.md for implementers in other languages.
    s = SymbolState(venue="XNAS", symbol="S00001", seq=42, last=1234567, last_size=300,
                    vol=987654, oi=5000, flags=1, total_trades=17,
                    bids=[PriceLevel(price=1234500, size=10), PriceLevel(price=1234400, size=20)],
                    asks=[PriceLevel(price=1234600, size=15)])
    assert canonical_string(s.venue, s.symbol, s.seq, s.last, s.last_size, s.vol, s.oi,
                            s.flags, s.total_trades, s.bids, s.asks) == (
        "XNAS:S00001:42:1234567:300:987654:5000:1:17:1234500:10:1234600:15:1234400:20")
    assert state_checksum(s) == 0x95827DF6


def _deltas(ticks_per_window: list[list]) -> list[Delta]:
    core = Conflator(epoch=7)
    feed = Routed()
    out = []
    for window in ticks_per_window:
        core.apply(feed.batch(window))
        out.extend(Delta.FromString(d.payload) for d in core.emit(1, 0, 33))
    return out


def test_merge_deltas_keeps_newest_state_and_sums_the_windows() -> None:
    deltas = _deltas([
        [tick(seq=1, last=100, size=5, vol=5, trade=True),
         tick(seq=2, last=104, size=1, vol=6, trade=True)],
        [tick(symbol="BBB", seq=1, last=50)],
        [tick(seq=3, last=98, size=2, vol=8, trade=True), tick(seq=4, last=98, vol=8)],
    ])
    assert [d.seq for d in deltas] == [1, 2, 3]
    merged = merge_deltas(deltas)
    assert (merged.seq, merged.first_seq, merged.epoch, merged.window_ms) == (3, 1, 7, 99)
    by = {s.symbol: s for s in merged.symbols}
    a = by["AAA"]
    assert (a.seq, a.last, a.vol, a.total_trades) == (4, 98, 8, 3)
    assert (a.window_trades, a.window_volume, a.window_ticks) == (3, 8, 4)
    assert (a.window_high, a.window_low) == (104, 98)
    assert a.checksum == state_checksum(a)
    assert by["BBB"].checksum == state_checksum(by["BBB"])


def test_merging_an_already_merged_delta_continues_its_range() -> None:
    deltas = _deltas([[tick(seq=1)], [tick(seq=2)], [tick(seq=3)]])
    once = merge_deltas(deltas[:2])
    twice = merge_deltas([once, deltas[2]])
    assert (twice.first_seq, twice.seq) == (1, 3)
    assert merge_deltas([deltas[0]]).first_seq == 0


def test_merge_deltas_refuses_a_gap() -> None:
    deltas = _deltas([[tick(seq=1)], [tick(seq=2)], [tick(seq=3)]])
    with pytest.raises(ValueError, match="expected seq 2 after 1, got 3"):
        merge_deltas([deltas[0], deltas[2]])


def test_merge_deltas_refuses_mixed_epochs_and_empty_input() -> None:
    a, b = _deltas([[tick(seq=1)], [tick(seq=2)]])
    b.epoch = 8
    with pytest.raises(ValueError, match="one stream"):
        merge_deltas([a, b])
    with pytest.raises(ValueError, match="at least one"):
        merge_deltas([])
