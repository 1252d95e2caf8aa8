"""Per-symbol state, the window it accumulates between two deltas, and its canonical checksum.

A :class:`SymbolBook` keeps a reference to the latest message that carried the symbol's full
state (the last ``Tick``, or the ``SymbolState`` it was restored from) instead of copying its
fields: applying a tick is a handful of integer updates, and the ``SymbolState`` protobuf is
built only when a delta is emitted.

Checksum (see ``docs/protocol.md``, "Canonical checksum"): CRC-32 (IEEE, as ``zlib.crc32``) of
the UTF-8 bytes of::

    venue:symbol:seq:last:last_size:vol:oi:flags:total_trades[:bid_px:bid_sz][:ask_px:ask_sz]...

where the bracketed pairs interleave the book level by level (best first), a missing level on
one side being skipped. Every number is an integer in base 10 (prices are fixed-point), so a
browser computes the same string with plain JavaScript numbers.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Protocol

from xypipe._md.records import Route, TickRec
from xypipe.contracts import PriceLevel, SymbolState, Tick, TickFlag

TRADE = int(TickFlag.TICK_FLAG_TRADE)


class PriceLike(Protocol):
    """A book level as the checksum reads it (``PriceLevel``, or a test's own object)."""

    @property
    def price(self) -> int: ...
    @property
    def size(self) -> int: ...


def canonical_string(
    venue: str, symbol: str, seq: int, last: int, last_size: int, vol: int, oi: int,
    flags: int, total_trades: int, bids: Sequence[PriceLike], asks: Sequence[PriceLike],
) -> str:
    """The canonical form the checksum is computed over (levels: objects with price/size)."""
    head = f"{venue}:{symbol}:{seq}:{last}:{last_size}:{vol}:{oi}:{flags}:{total_trades}"
    nb, na = len(bids), len(asks)
    if nb == na:
        if not nb:
            return head
        levels = ":".join([f"{b.price}:{b.size}:{a.price}:{a.size}"
                           for b, a in zip(bids, asks, strict=True)])
    else:
        parts = []
        for i in range(nb if nb > na else na):
            if i < nb:
                parts.append(f"{bids[i].price}:{bids[i].size}")
            if i < na:
                parts.append(f"{asks[i].price}:{asks[i].size}")
        levels = ":".join(parts)
    return f"{head}:{levels}"


def flat_levels(bids: Sequence[PriceLike], asks: Sequence[PriceLike]) -> list[int]:
    """Every level's price and size in canonical order (bid, ask, bid, ask ... level by level, a
    missing level on one side skipped): ``[price, size, price, size, ...]``.

    Read once per tick and shared by the door (:mod:`xypipe._md.validate`) and the checksum:
    each protobuf level read builds a wrapper object, which costs more than the parse."""
    out: list[int] = []
    ext = out.extend
    for b, a in zip(bids, asks, strict=False):
        ext((b.price, b.size, a.price, a.size))
    nb, na = len(bids), len(asks)
    if nb != na:
        for lv in (bids[na:] if nb > na else asks[nb:]):
            ext((lv.price, lv.size))
    return out


def flat_checksum(venue: str, symbol: str, seq: int, last: int, last_size: int, vol: int,
                  oi: int, flags: int, total_trades: int, flat: Sequence[int]) -> int:
    """:func:`checksum` over levels already read by :func:`flat_levels` (the same string, made
    by one ``%`` formatting per entry: a third cheaper than joining converted numbers)."""
    n = len(flat)
    fmt = _FORMATS.get(n)
    if fmt is None:
        fmt = _FORMATS[n] = _HEAD_FORMAT + ":%d" * n
    return zlib.crc32((fmt % (venue, symbol, seq, last, last_size, vol, oi, flags, total_trades,
                              *flat)).encode())


_HEAD_FORMAT = "%s:%s:%d:%d:%d:%d:%d:%d:%d"
#: Format of the canonical string per number of level values (a handful of depths in practice).
_FORMATS: dict[int, str] = {}


def checksum(
    venue: str, symbol: str, seq: int, last: int, last_size: int, vol: int, oi: int,
    flags: int, total_trades: int, bids: Sequence[PriceLike], asks: Sequence[PriceLike],
) -> int:
    """CRC-32 of :func:`canonical_string`, as an unsigned 32-bit integer."""
    return zlib.crc32(
        canonical_string(venue, symbol, seq, last, last_size, vol, oi, flags, total_trades,
                         bids, asks).encode()
    )


def state_checksum(s: SymbolState) -> int:
    """The checksum a client computes over a ``SymbolState`` it holds."""
    return checksum(s.venue, s.symbol, s.seq, s.last, s.last_size, s.vol, s.oi, s.flags,
                    s.total_trades, s.bids, s.asks)


class SymbolBook:
    """The live state of one symbol plus what the current window has seen.

    ``src`` is the message holding the full state (last, levels, vol, oi, flags, timestamps);
    ``seq``/``total_trades``/``price_decimals`` are kept here because a restored state and a
    tick disagree on where they live.
    """

    __slots__ = (
        "key", "price_decimals", "route", "seq", "src", "src_levels", "src_raw", "symbol",
        "total_trades", "venue", "w_arrival_us", "w_high", "w_low", "w_sseq", "w_t_in",
        "w_ticks", "w_trades", "w_volume",
    )

    def __init__(self, key: str, venue: str, symbol: str) -> None:
        self.key = key
        self.venue = venue
        self.symbol = symbol
        self.route: Route | None = None
        #: The message holding the full state (None only before the first tick is applied).
        self.src: Tick | SymbolState | None = None
        #: ``src``'s levels as :func:`flat_levels` reads them (``None``: not read yet) and the
        #: bytes it was decoded from when it is a source tick (b"": none at hand).
        self.src_levels: list[int] | None = None
        self.src_raw = b""
        self.seq = 0
        self.total_trades = 0
        self.price_decimals = 0
        self.reset_window()

    def reset_window(self) -> None:
        self.w_ticks = 0
        self.w_trades = 0
        self.w_volume = 0
        self.w_high = 0
        self.w_low = 0
        self.w_arrival_us = 0
        self.w_t_in = 0.0
        self.w_sseq = 0

    @classmethod
    def from_state(cls, s: SymbolState) -> SymbolBook:
        """A book restored from a snapshot entry (its window fields are not carried over)."""
        book = cls(f"{s.venue}.{s.symbol}", s.venue, s.symbol)
        book.src = s
        book.seq = s.seq
        book.total_trades = s.total_trades
        book.price_decimals = s.price_decimals
        return book

    def apply(self, rec: TickRec) -> bool:
        """Fold one in-order tick in; returns True if the window was empty before (the book
        just became dirty)."""
        t = rec.tick
        first = self.w_ticks == 0
        if first:
            self.w_arrival_us = rec.arrival_us
            self.w_t_in = rec.t_in
            self.w_sseq = rec.sseq
        self.w_ticks += 1
        self.src = t
        self.src_levels = rec.levels
        self.src_raw = rec.raw
        self.seq = rec.seq
        if t.price_decimals:
            self.price_decimals = t.price_decimals
        if t.flags & TRADE:
            px = t.last
            self.w_trades += 1
            self.w_volume += t.last_size
            self.total_trades += 1
            if self.w_trades == 1:
                self.w_high = self.w_low = px
            elif px > self.w_high:
                self.w_high = px
            elif px < self.w_low:
                self.w_low = px
        return first

    def checksum(self) -> int:
        s = self.src
        assert s is not None, "a book is checksummed only once it holds a state"
        flat = self.src_levels
        if flat is None:
            flat = self.src_levels = flat_levels(s.bids, s.asks)
        return flat_checksum(self.venue, self.symbol, self.seq, s.last, s.last_size, s.vol,
                             s.oi, s.flags, self.total_trades, flat)

    def state_bytes(self, cs: int) -> bytes:
        """``to_state(cs).SerializeToString()``, the same bytes, built the cheap way when the
        state is a source tick's: fields 1-12 of ``Tick`` and ``SymbolState`` are the same
        fields (``docs/protocol.md``), so the tick's own bytes parse as the state in C, levels
        included, and only the fields that differ are set. What a tick has beyond them
        (``source``, ``price_decimals`` at other numbers, a newer producer's fields) is either
        overwritten below or unknown to ``SymbolState`` and discarded."""
        raw = self.src_raw
        if not raw:
            return self.to_state(cs).SerializeToString()
        m = _STATE_FROM(raw)
        m.seq = self.seq
        m.ts_arrival_us = self.w_arrival_us  # a tick's: the window's first arrival (or 0)
        m.price_decimals = self.price_decimals
        m.window_high = self.w_high
        m.window_low = self.w_low
        m.window_trades = self.w_trades
        m.window_volume = self.w_volume
        m.window_ticks = self.w_ticks
        m.total_trades = self.total_trades
        m.checksum = cs
        m.trimmed = False
        m.DiscardUnknownFields()
        return m.SerializeToString()

    def to_state(self, cs: int, depth: int | None = None) -> SymbolState:
        """The ``SymbolState`` of this book and its window; ``depth`` keeps only that many
        levels per side and marks the entry trimmed (the checksum still covers the full book)."""
        s = self.src
        assert s is not None, "a book is emitted only once it holds a state"
        bids: Sequence[PriceLevel] = s.bids
        asks: Sequence[PriceLevel] = s.asks
        if depth is not None:
            bids, asks = bids[:depth], asks[:depth]
        return SymbolState(
            venue=self.venue, symbol=self.symbol, seq=self.seq,
            ts_exchange_us=s.ts_exchange_us,
            # The server's own arrival stamp; a tick's publisher-set ts_arrival_us never leaves.
            ts_arrival_us=self.w_arrival_us if self.w_ticks or type(s) is not SymbolState
            else s.ts_arrival_us,
            last=s.last, last_size=s.last_size, bids=bids, asks=asks, vol=s.vol, oi=s.oi,
            flags=s.flags, price_decimals=self.price_decimals,
            window_high=self.w_high, window_low=self.w_low, window_trades=self.w_trades,
            window_volume=self.w_volume, window_ticks=self.w_ticks,
            total_trades=self.total_trades, checksum=cs, trimmed=depth is not None,
        )


_STATE_FROM = SymbolState.FromString


def trimmed_state(state: bytes, depth: int) -> bytes:
    """``state`` (a serialised entry) keeping ``depth`` levels per side and marked trimmed: the
    bytes ``to_state(cs, depth)`` serialises, from the full entry's bytes (parsed in C) instead
    of a second state built field by field (L2 emits both forms of every entry)."""
    m = _STATE_FROM(state)
    del m.bids[depth:]
    del m.asks[depth:]
    m.trimmed = True
    return m.SerializeToString()


def levels(pairs: Sequence[tuple[int, int]]) -> list[PriceLevel]:
    """Levels from ``(price, size)`` pairs (tests and the publisher)."""
    return [PriceLevel(price=p, size=s) for p, s in pairs]
