"""A synthetic but realistic market: instruments, random-walk ticks, faults, tapes, ground truth.

Sans-I/O: :class:`MarketSim` makes ticks, :class:`FaultInjector` mangles a message stream the
way real feeds do, :class:`GroundTruth` remembers what was really sent, :class:`Pacer` says how
many ticks are due at a given time. The ``publisher`` stage and ``xypipe publish`` wire them to
NATS; the tests and benchmarks use them to know the right answer.

Everything random comes from one ``random.Random(seed)``: the same seed gives the same ticks.

Two file layouts live here. :func:`market_tape` / :func:`write_market_tape` make a real tape
(:mod:`xypipe._tape`, docs/tapes.md: a header, then every message with its subject and time) from
a seed, exactly what the ``publisher`` stage would send. The older headerless stream
(:func:`write_tape`, :func:`read_tape`, ``xypipe publish --record/--replay``) is length-delimited
``Tick`` records (varint length, then the message), written before faults and without the arrival
time; a replay stamps ``ts_arrival_us`` when it sends (a scalar field appended to a message
overrides the earlier value, so stamping is an append, not a re-encode).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import attrs

from xypipe._contracts import decode
from xypipe._md.wire import iter_delimited, varint_field, varint_tag, write_delimited
from xypipe._tape import TapeHeader, TapeRecord
from xypipe._tape import write_tape as write_tape_file
from xypipe.contracts import Contract, PriceLevel, Priority, Tick, TickFlag

TRADE = int(TickFlag.TICK_FLAG_TRADE)
_ARRIVAL_TAG = varint_tag(Tick.DESCRIPTOR.fields_by_name["ts_arrival_us"].number)

#: Demo groups and how much each matters under load (L3 pauses the low ones).
DEFAULT_GROUPS: tuple[tuple[str, Priority], ...] = (
    ("equities", Priority.PRIORITY_HIGH),
    ("futures", Priority.PRIORITY_HIGH),
    ("fx", Priority.PRIORITY_NORMAL),
    ("crypto", Priority.PRIORITY_NORMAL),
    ("rates", Priority.PRIORITY_LOW),
)
DEFAULT_VENUES = ("XNAS", "XNYS", "BATS")


def tick_subject(venue: str, symbol: str) -> str:
    return f"xy.src.tick.{venue}.{symbol}"


def contract_subject(venue: str, symbol: str) -> str:
    return f"xy.ref.contract.{venue}.{symbol}"


def stamp_arrival(payload: bytes, ts_arrival_us: int) -> bytes:
    """``payload`` (a serialised Tick) with ``ts_arrival_us`` set, by appending the field."""
    return payload + varint_field(_ARRIVAL_TAG, ts_arrival_us)


def contract_for(venue: str, symbol: str,
                 groups: tuple[tuple[str, Priority], ...] = DEFAULT_GROUPS,
                 price_decimals: int = 2) -> Contract:
    """The reference contract of an instrument; the group is a stable hash of the symbol, so a
    tape replay re-derives the same contracts without storing them."""
    name, prio = groups[zlib.crc32(symbol.encode()) % len(groups)]
    return Contract(venue=venue, symbol=symbol, group=name, name=f"{symbol} on {venue}",
                    currency="USD", price_decimals=price_decimals, tick_size=1, lot_size=1,
                    priority=prio, version=1)


class _Inst:
    __slots__ = ("last", "last_size", "mid", "oi", "seq", "spread", "symbol", "venue", "vol")

    def __init__(self, venue: str, symbol: str, mid: int, oi: int) -> None:
        self.venue = venue
        self.symbol = symbol
        self.mid = mid
        self.spread = 2
        self.last = mid
        self.last_size = 0
        self.vol = 0
        self.oi = oi
        self.seq = 0


class MarketSim:
    """``symbols`` instruments spread over ``venues``; :meth:`next_tick` moves one of them.

    Activity is skewed (a few symbols trade much more than the rest, as on real markets).
    Prices are fixed-point integers with ``price_decimals`` decimals; volume and open interest
    only grow.
    """

    def __init__(self, symbols: int = 500, *, venues: Iterable[str] = DEFAULT_VENUES,
                 seed: int = 0, depth: int = 5, trade_prob: float = 0.35,
                 price_decimals: int = 2, source: str = "xy-sim",
                 groups: tuple[tuple[str, Priority], ...] = DEFAULT_GROUPS) -> None:
        self.rng = random.Random(seed)
        self.venues = tuple(venues)
        self.depth = depth
        self.trade_prob = trade_prob
        self.price_decimals = price_decimals
        self.source = source
        self.groups = groups
        rng = self.rng
        self.instruments = [
            _Inst(self.venues[i % len(self.venues)], f"S{i:05d}",
                  mid=rng.randrange(1_000, 50_000) * 10, oi=rng.randrange(1_000, 100_000))
            for i in range(symbols)
        ]

    def contracts(self) -> list[Contract]:
        return [contract_for(i.venue, i.symbol, self.groups, self.price_decimals)
                for i in self.instruments]

    def next_tick(self, ts_exchange_us: int = 0) -> Tick:
        rng = self.rng
        r = rng.random
        inst = self.instruments[int(len(self.instruments) * r() * r())]
        step = r()
        if step < 0.3:
            inst.mid -= 1
        elif step > 0.7:
            inst.mid += 1
        if inst.mid < 10:
            inst.mid = 10
        flags = 0
        if r() < self.trade_prob:
            flags = TRADE
            inst.last = inst.mid + (1 if r() < 0.5 else -1)
            inst.last_size = 1 + int(r() * 500)
            inst.vol += inst.last_size
            if r() < 0.2:
                inst.oi += 1 + int(r() * 10)
        inst.seq += 1
        mid, half = inst.mid, inst.spread // 2 or 1
        bids = [PriceLevel(price=mid - half - i, size=1 + int(r() * 1000), orders=1 + i)
                for i in range(self.depth)]
        asks = [PriceLevel(price=mid + half + i, size=1 + int(r() * 1000), orders=1 + i)
                for i in range(self.depth)]
        return Tick(venue=inst.venue, symbol=inst.symbol, seq=inst.seq,
                    ts_exchange_us=ts_exchange_us, last=inst.last, last_size=inst.last_size,
                    bids=bids, asks=asks, vol=inst.vol, oi=inst.oi, flags=flags,
                    source=self.source, price_decimals=self.price_decimals)


# --------------------------------------------------------------------------- faults


@attrs.frozen
class FaultRates:
    """Probabilities per tick of each fault (0..1)."""

    duplicate: float = 0.0
    reorder: float = 0.0
    gap: float = 0.0
    malformed: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.duplicate or self.reorder or self.gap or self.malformed)


@attrs.define
class FaultCounts:
    duplicates: int = 0
    reordered: int = 0
    gaps: int = 0
    malformed: int = 0


class FaultInjector:
    """Turns a clean stream of ``(key, subject, payload)`` into what a bad feed sends:

    * duplicate: the message is sent twice in a row;
    * reorder: the message is held back and sent right after the next message of the same
      key (a guaranteed inversion);
    * gap: the message is never sent (its sequence is lost);
    * malformed: an extra message of garbage bytes is sent on the same subject.
    """

    def __init__(self, rates: FaultRates, rng: random.Random) -> None:
        self.rates = rates
        self.rng = rng
        self.counts = FaultCounts()
        self._held: dict[str, tuple[str, bytes]] = {}

    def feed(self, key: str, subject: str, payload: bytes,
             out: list[tuple[str, bytes]]) -> bool:
        """Append what goes on the wire to ``out``; returns False if the message was lost
        (a gap), so ground truth must not count it."""
        rates, r = self.rates, self.rng.random
        if rates.gap and r() < rates.gap:
            self.counts.gaps += 1
            return False
        if rates.malformed and r() < rates.malformed:
            self.counts.malformed += 1
            out.append((subject, b"\xff\xff\xff" + self.rng.randbytes(5)))
        held = self._held.pop(key, None)
        if held is None and rates.reorder and r() < rates.reorder:
            self._held[key] = (subject, payload)
            return True
        out.append((subject, payload))
        if rates.duplicate and r() < rates.duplicate:
            self.counts.duplicates += 1
            out.append((subject, payload))
        if held is not None:
            self.counts.reordered += 1  # counted once the inversion really happened
            out.append(held)
        return True

    def flush(self, out: list[tuple[str, bytes]]) -> None:
        """Send what is still held back (in order: nothing came after it)."""
        out.extend(self._held.values())
        self._held.clear()


# --------------------------------------------------------------------------- truth


class GroundTruth:
    """What was really sent, per ``venue.symbol``: the newest tick, trade count, volume."""

    def __init__(self) -> None:
        self._last: dict[str, Tick | bytes] = {}
        self._seq: dict[str, int] = {}
        self.trades: dict[str, int] = {}
        self.traded_volume: dict[str, int] = {}
        self.ticks = 0

    def record(self, key: str, tick: Tick) -> None:
        self.record_raw(key, tick.seq, tick, bool(tick.flags & TRADE), tick.last_size)

    def record_raw(self, key: str, seq: int, tick: Tick | bytes, trade: bool,
                   size: int) -> None:
        """Record a tick given its fields and the message or its bytes (decoded on demand)."""
        self.ticks += 1
        if seq > self._seq.get(key, 0):
            self._seq[key] = seq
            self._last[key] = tick
        if trade:
            self.trades[key] = self.trades.get(key, 0) + 1
            self.traded_volume[key] = self.traded_volume.get(key, 0) + size

    @property
    def last(self) -> dict[str, Tick]:
        """The newest tick sent per key."""
        last = self._last
        for key, value in last.items():
            if isinstance(value, bytes):
                last[key] = decode(Tick, value, where=f"the last tick sent for {key}")
        # Every value is a Tick now.
        return cast(dict[str, Tick], last)


# --------------------------------------------------------------------------- pacing


@attrs.define
class Pacer:
    """How many ticks are due by ``now`` at ``rate`` per second, with periodic bursts of
    ``burst_factor`` x rate lasting ``burst_s`` every ``burst_every_s`` (0 = no bursts)."""

    rate: float
    burst_factor: float = 1.0
    burst_every_s: float = 0.0
    burst_s: float = 1.0
    _start: float | None = None
    _last: float = 0.0
    _carry: float = 0.0

    def rate_at(self, t: float) -> float:
        if self.burst_every_s and self.burst_factor > 1:
            phase = t % self.burst_every_s
            if phase >= self.burst_every_s - self.burst_s:
                return self.rate * self.burst_factor
        return self.rate

    def due(self, now: float) -> int:
        if self._start is None:
            self._start = self._last = now
            return 0
        elapsed = now - self._last
        self._last = now
        self._carry += elapsed * self.rate_at(now - self._start)
        n = int(self._carry)
        self._carry -= n
        return n


# --------------------------------------------------------------------------- tapes


def write_tape(path: str | Path, ticks: Iterable[Tick]) -> int:
    """Write ticks (as sent before faults) to a tape; returns how many."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("wb") as f:
        return write_delimited(f, (t.SerializeToString() for t in ticks))


class TapeWriter:
    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.count = 0

    def write(self, payload: bytes) -> None:
        self.count += write_delimited(self._f, (payload,))


class TapeTick:
    """One tick of a loaded tape: decoded once at load, so a replay only sends bytes."""

    __slots__ = ("key", "payload", "seq", "size", "subject", "trade")

    def __init__(self, payload: bytes, where: str = "tape record") -> None:
        t = decode(Tick, payload, where=where)
        self.key = f"{t.venue}.{t.symbol}"
        self.subject = tick_subject(t.venue, t.symbol)
        self.payload = payload
        self.seq = t.seq
        self.trade = bool(t.flags & TRADE)
        self.size = t.last_size


def load_tape(path: str | Path) -> list[TapeTick]:
    """The ticks of a tape; a record that is not a Tick raises ``ContractError`` naming it."""
    return [TapeTick(p, f"{path} record {i}") for i, p in enumerate(read_tape(path))]


def read_tape(path: str | Path) -> Iterator[bytes]:
    """The serialised ticks of a tape, in order (raises ``TruncatedStream`` if cut short)."""
    return iter_delimited(Path(path).read_bytes())


# --------------------------------------------------------------------------- seeded tapes

#: Where a tape made from a seed starts by default (2026-01-01T00:00:00Z): a fixed start keeps
#: the file a pure function of its options (a replay re-times ticks to its own clock).
DEFAULT_TAPE_START_US = 1_767_225_600_000_000


@attrs.frozen
class MarketTapeSpec:
    """A synthetic market as a tape: what ``xypipe tape make`` is given. The same spec gives the
    same bytes."""

    seed: int = 0
    rate: float = 4000.0
    duration_s: float = 3.0
    symbols: int = 500
    venues: tuple[str, ...] = DEFAULT_VENUES
    depth: int = 5
    faults: FaultRates = FaultRates()
    burst_factor: float = 10.0
    burst_every_s: float = 0.0
    burst_s: float = 1.0
    #: The pacing step (the publisher stage's ``interval_ms``): ticks due go out together.
    interval_ms: int = 10
    #: Contracts again every this many seconds (0: only at the start).
    contracts_every_s: float = 30.0
    start_us: int = DEFAULT_TAPE_START_US


def market_tape(spec: MarketTapeSpec, truth: GroundTruth | None = None,
                ) -> Iterator[tuple[int, str, bytes]]:
    """``(t_us, subject, payload)`` of what the ``publisher`` stage would put on the wire for
    ``spec``, on the tape's own clock: the contracts at t = 0 (and every ``contracts_every_s``),
    then every ``interval_ms`` the ticks the pacer says are due, faults included, each stamped
    ``ts_exchange_us`` = tape time - 50 us and ``ts_arrival_us`` = tape time. ``truth`` (if
    given) records what was really sent, as the stage's ``truth`` does."""
    sim = MarketSim(spec.symbols, venues=spec.venues, seed=spec.seed, depth=spec.depth)
    faults = FaultInjector(spec.faults, sim.rng)
    pacer = Pacer(spec.rate, spec.burst_factor, spec.burst_every_s, spec.burst_s)
    contracts = [(contract_subject(c.venue, c.symbol), c.SerializeToString())
                 for c in sim.contracts()]
    step_us = spec.interval_ms * 1000
    end_us = round(spec.duration_s * 1e6)
    every_us = round(spec.contracts_every_s * 1e6)
    for subject, payload in contracts:
        yield 0, subject, payload
    next_contracts = every_us or None
    pacer.due(0.0)
    t_us = 0
    while t_us + step_us <= end_us:
        t_us += step_us
        if next_contracts is not None and t_us >= next_contracts:
            next_contracts = t_us + every_us
            for subject, payload in contracts:
                yield t_us, subject, payload
        ts = spec.start_us + t_us
        out: list[tuple[str, bytes]] = []
        for _ in range(pacer.due(t_us / 1e6)):
            tick = sim.next_tick(ts - 50)
            key = f"{tick.venue}.{tick.symbol}"
            if faults.feed(key, tick_subject(tick.venue, tick.symbol),
                           stamp_arrival(tick.SerializeToString(), ts), out) and truth is not None:
                truth.record(key, tick)
        if t_us + step_us > end_us:
            faults.flush(out)
        for subject, payload in out:
            yield t_us, subject, payload


def write_market_tape(path: str | Path, spec: MarketTapeSpec,
                      truth: GroundTruth | None = None) -> TapeHeader:
    """Write :func:`market_tape` of ``spec`` to a tape file; returns its header."""
    f = spec.faults
    source = (f"xypipe tape make --seed {spec.seed} --rate {spec.rate:g} "
              f"--duration {spec.duration_s:g} --symbols {spec.symbols} "
              f"--venues {','.join(spec.venues)} --duplicate {f.duplicate:g} "
              f"--reorder {f.reorder:g} --gap {f.gap:g} --malformed {f.malformed:g}")
    header = TapeHeader(created_us=spec.start_us, source=source, seed=spec.seed,
                        subjects=("xy.src.tick.>", "xy.ref.contract.>"))
    return write_tape_file(path, header, (TapeRecord(t, subject, data)
                                          for t, subject, data in market_tape(spec, truth)))
