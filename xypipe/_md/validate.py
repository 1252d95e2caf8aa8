"""Input validation at the door: the bounds a source tick must respect before it may touch any
state (sans-I/O). The table of bounds is in ``docs/protocol.md``, "Source tick bounds".

:class:`TickValidator` is fed decoded ticks with the server's own arrival time and answers
``None`` (accept) or the :class:`Reason` it rejects them for (``detail`` then says which field,
what was expected and what came). It keeps, per ``venue.symbol``, an **anchor**: the sequence,
exchange timestamp and price of the highest-sequence tick it accepted. Only an accepted tick
moves the anchor, so a hostile tick changes nothing — the next genuine tick is judged against
the same anchor as if the hostile one had never come.

Absolute bounds (need no history): ``seq`` 1..2^53-1, every size-like field 0..2^53-1, every
price 1..2^53-1 (fixed-point integers, so "finite" means JavaScript-exact), the exchange
timestamp within a skew window of the arrival time (0 = not provided, not checked). The tick's
own ``ts_arrival_us`` (the publisher's clock) is not judged: it never leaves ingest — the
aggregator stamps its own arrival time.

Relative bounds (against the anchor): the sequence moves at most ``max_seq_jump`` either way
(a sequence that starts over at 1 with a newer exchange timestamp is a source restart — the
same rule as :mod:`xypipe._md.reorder` — and passes), and every price stays within
``price_band_pct`` of the anchor's reference price.

A source that genuinely leaves the bounds (a venue renumbering far ahead, a price that really
moved by more than the band) would be frozen out for ever by relative bounds alone. So ticks
rejected by a relative bound are tracked as a **candidate run**: when ``reanchor_after``
consecutive such ticks are mutually consistent (each sequence 1..max_seq_jump above the
previous one, each reference price within the band of the previous one), the last of them
re-anchors the symbol — it is accepted with :attr:`Reason.REANCHOR`, which the caller counts,
logs and passes downstream marked so the reorder window follows it. Every tick accepted within the
bounds ends a candidate run; a tick rejected by an absolute bound neither extends nor ends it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import attrs

from xypipe._md.book import PriceLike, flat_levels
from xypipe._validate import Invalid, in_range
from xypipe.contracts import SymbolState, Tick

#: Every 64-bit value on the wire stays below 2^53 (JavaScript reads it exactly).
MAX_SAFE = (1 << 53) - 1


class Reason(enum.StrEnum):
    """Why a tick was rejected: the ``reason`` label of ``src_bad_total``."""

    SEQ_RANGE = "seq_range"
    SEQ_JUMP = "seq_jump"
    SIZE_RANGE = "size_range"
    PRICE_RANGE = "price_range"
    PRICE_BAND = "price_band"
    TS_SKEW = "ts_skew"
    #: Not a rejection: the tick re-anchored its symbol after a consistent run out of bounds.
    REANCHOR = "reanchor"


def _venue_jumps(_inst: object, _attr: object, value: dict[str, int]) -> None:
    for venue, jump in value.items():
        if not isinstance(jump, int) or isinstance(jump, bool) or not 1 <= jump <= MAX_SAFE:
            raise Invalid(f"seq_jump_by_venue.{venue}", f"expected an integer 1..{MAX_SAFE}",
                          jump)


@attrs.frozen
class TickBounds:
    """The bounds a source tick must respect (the ``bounds`` table of the ``ingest`` stage)."""

    #: Validate at all (off: only malformed payloads are refused).
    enabled: bool = True
    #: Most a symbol's sequence may move from its last accepted one, either way.
    max_seq_jump: int = attrs.field(default=1_000, validator=in_range(1, MAX_SAFE))
    #: Per-venue overrides of ``max_seq_jump`` (venue -> limit).
    seq_jump_by_venue: dict[str, int] = attrs.field(factory=dict, validator=_venue_jumps)
    #: Every price within this many percent of the symbol's last accepted price; 0 = no band.
    price_band_pct: float = attrs.field(default=50.0, validator=in_range(0.0, 100_000.0))
    #: Accept prices <= 0 (spreads, some futures); they must still be > -2^53.
    allow_nonpositive_prices: bool = False
    #: Timestamps may be at most this far after / before the server's arrival time.
    max_ahead_ms: int = attrs.field(default=2_000, validator=in_range(0, 86_400_000))
    max_behind_ms: int = attrs.field(default=3_600_000, validator=in_range(0, 31_536_000_000))
    #: Consecutive mutually consistent out-of-bounds ticks that re-anchor a symbol.
    reanchor_after: int = attrs.field(default=5, validator=in_range(2, 10_000))


class _Anchor:
    __slots__ = ("cand_n", "cand_ref", "cand_seq", "jump", "ref", "seq", "ts")

    def __init__(self, seq: int, ts: int, ref: int, jump: int) -> None:
        self.seq = seq
        self.ts = ts
        self.ref = ref
        self.jump = jump
        self.cand_seq = 0
        self.cand_ref = 0
        self.cand_n = 0


def reference_price(last: int, bids: Sequence[PriceLike], asks: Sequence[PriceLike]) -> int:
    """The price a band is drawn around: the last trade, else the best bid, else the best ask
    (0: the tick carries no price)."""
    if last:
        return last
    if bids:
        return bids[0].price
    if asks:
        return asks[0].price
    return 0


class TickValidator:
    """Per-symbol bounds checks; see the module docstring. No clock: the caller passes the
    server's arrival time of each tick (microseconds since the epoch)."""

    def __init__(self, bounds: TickBounds) -> None:
        self.bounds = bounds
        self.enabled = bounds.enabled
        self.detail = ""
        self._anchors: dict[str, _Anchor] = {}
        self._jump = bounds.max_seq_jump
        self._jumps = dict(bounds.seq_jump_by_venue)
        self._band = bounds.price_band_pct / 100.0
        self._pmin = -MAX_SAFE if bounds.allow_nonpositive_prices else 1
        self._ahead = bounds.max_ahead_ms * 1000
        self._behind = bounds.max_behind_ms * 1000
        self._k = bounds.reanchor_after

    def restore(self, states: Iterable[SymbolState]) -> None:
        """Anchor symbols at a restored state (a snapshot's entries)."""
        for s in states:
            key = f"{s.venue}.{s.symbol}"
            self._anchors[key] = _Anchor(s.seq, s.ts_exchange_us,
                                         reference_price(s.last, s.bids, s.asks),
                                         self._jumps.get(s.venue, self._jump))

    def anchor_of(self, key: str) -> tuple[int, int, int] | None:
        """``(seq, ts_exchange_us, reference price)`` of the symbol's anchor."""
        a = self._anchors.get(key)
        return None if a is None else (a.seq, a.ts, a.ref)

    def check(self, key: str, t: Tick, arrival_us: int,
              levels: list[int] | None = None) -> Reason | None:
        """``None`` to accept ``t``; otherwise the reason (``REANCHOR``: accepted, re-anchored).
        ``levels``: ``t``'s levels as :func:`~xypipe._md.book.flat_levels` read them (read here
        when not given)."""
        seq = t.seq
        if not 1 <= seq <= MAX_SAFE:
            return self._reject(Reason.SEQ_RANGE, f"seq: expected 1..{MAX_SAFE}, got {seq}")
        ts = t.ts_exchange_us
        if ts and not arrival_us - self._behind <= ts <= arrival_us + self._ahead:
            b = self.bounds
            return self._reject(
                Reason.TS_SKEW,
                f"ts_exchange_us: expected within -{b.max_behind_ms}/+{b.max_ahead_ms} ms of "
                f"the server's arrival time {arrival_us}, got {ts} "
                f"({(ts - arrival_us) / 1000:+.0f} ms)")
        if not (0 <= t.last_size <= MAX_SAFE and 0 <= t.vol <= MAX_SAFE
                and 0 <= t.oi <= MAX_SAFE):
            return self._sizes(t)
        a = self._anchors.get(key)
        last = t.last
        if a is not None and a.ref and self._band:
            ref = a.ref
            d = abs(ref) * self._band
            plo, phi = max(ref - d, self._pmin), min(ref + d, MAX_SAFE)
        else:
            plo, phi = self._pmin, MAX_SAFE
        # The costly part is reading the levels (a protobuf wrapper per level): once per tick,
        # shared with the checksum; the bounds are then C-level min/max over plain ints.
        if levels is None:
            levels = flat_levels(t.bids, t.asks)
        ok = not last or plo <= last <= phi
        if ok and levels:
            prices = levels[0::2]
            sizes = levels[1::2]
            ok = (plo <= min(prices) and max(prices) <= phi
                  and 0 <= min(sizes) and max(sizes) <= MAX_SAFE)
        band_failed = False
        if not ok:
            absolute = self._levels(t)
            if absolute is not None:
                return absolute
            band_failed = True  # in range, but out of the band
        # The reference price: the last trade, else the best bid, else the best ask — the
        # first level in canonical order.
        mark = last or (levels[0] if levels else 0)
        if a is None:
            self._anchors[key] = _Anchor(seq, ts, mark, self._jumps.get(t.venue, self._jump))
            return None
        step = seq - a.seq
        jump = a.jump
        # Sequence 1 with a newer exchange time: the source restarted (dedupe's rule too).
        restart = seq == 1 and ts > a.ts
        if -jump <= step <= jump or restart:
            if not band_failed:
                if step > 0 or restart:
                    a.seq = seq
                    a.ts = ts
                    if mark:
                        a.ref = mark
                a.cand_n = 0
                return None
            reason = Reason.PRICE_BAND
            self.detail = (f"prices: expected within {self.bounds.price_band_pct:g} % of "
                           f"{a.ref} (last accepted), got {self._prices(t)}")
        else:
            reason = Reason.SEQ_JUMP
            self.detail = (f"seq: expected within {jump} of {a.seq} (last accepted), got {seq}")
        # Out of the relative bounds: does it continue a consistent run?
        if (a.cand_n and 0 < seq - a.cand_seq <= jump
                and (not self._band or not a.cand_ref or not mark
                     or abs(mark - a.cand_ref) <= abs(a.cand_ref) * self._band)):
            a.cand_n += 1
        else:
            a.cand_n = 1
        a.cand_seq, a.cand_ref = seq, mark
        if a.cand_n >= self._k:
            self.detail = (f"re-anchored after {a.cand_n} consistent ticks out of bounds: "
                           f"seq {a.seq} -> {seq}, price {a.ref} -> {mark or a.ref}")
            a.seq, a.ts = seq, ts
            if mark:
                a.ref = mark
            a.cand_n = 0
            return Reason.REANCHOR
        return reason

    # ------------------------------------------------------------------ details (slow path)

    def _reject(self, reason: Reason, detail: str) -> Reason:
        self.detail = detail
        return reason

    def _sizes(self, t: Tick) -> Reason:
        for name in ("last_size", "vol", "oi"):
            v = getattr(t, name)
            if not 0 <= v <= MAX_SAFE:
                self.detail = f"{name}: expected 0..{MAX_SAFE}, got {v}"
                break
        return Reason.SIZE_RANGE

    def _levels(self, t: Tick) -> Reason | None:
        """The absolute violation among the prices and level sizes, if any."""
        pmin = self._pmin
        if t.last and not pmin <= t.last <= MAX_SAFE:
            return self._reject(Reason.PRICE_RANGE,
                                f"last: expected {pmin}..{MAX_SAFE}, got {t.last}")
        for side in ("bids", "asks"):
            for i, lv in enumerate(getattr(t, side)):
                if not pmin <= lv.price <= MAX_SAFE:
                    return self._reject(Reason.PRICE_RANGE, f"{side}[{i}].price: expected "
                                        f"{pmin}..{MAX_SAFE}, got {lv.price}")
                if not 0 <= lv.size <= MAX_SAFE:
                    return self._reject(Reason.SIZE_RANGE, f"{side}[{i}].size: expected "
                                        f"0..{MAX_SAFE}, got {lv.size}")
        return None

    @staticmethod
    def _prices(t: Tick) -> str:
        prices = [lv.price for lv in t.bids] + [lv.price for lv in t.asks]
        if t.last:
            prices.append(t.last)
        return f"last={t.last}, prices {min(prices)}..{max(prices)}"


__all__ = ["MAX_SAFE", "Reason", "TickBounds", "TickValidator", "reference_price"]
