"""The conflation window: fold in-order ticks into per-symbol state, emit one delta per
(group, shard) per window with the latest state of every symbol that changed (sans-I/O).

Degradation reactions live here because they change what a delta holds; what each level does
comes from one :class:`~xypipe._levels.LevelPolicy` (the gateway reads the same table):

* window factor (L1 up): the stage calls :meth:`Conflator.emit` less often (longer windows);
  nothing is lost, because each entry carries its window's high/low, trades and traded volume
  and the session's ``total_trades``/``vol``.
* trim depth (L2 up): entries on the wire keep ``trim_depth`` levels per side and say
  ``trimmed``; the full entry still feeds the snapshots, and the checksum still covers the
  full book. Every symbol that went out trimmed goes out again in full in the first window
  after the level stops trimming, whether it changed or not: a quiet symbol would otherwise
  show its trimmed book until its next tick (recovery means full books again).
* paused priorities (L3): groups of those priorities are not emitted; their changes stay
  pending and go out in the first window after the level comes down.

:func:`merge_deltas` merges consecutive deltas of one stream into one, by the same rules (the
gateway uses it for slow consumers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from xypipe._degrade import Level
from xypipe._levels import LevelPolicy
from xypipe._md.book import SymbolBook, trimmed_state
from xypipe._md.records import Batch, ContractRec, Rec, Restore, Route, TickRec
from xypipe._md.wire import field_tag, repeated_field
from xypipe.contracts import Delta, Priority, SymbolState

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

DELTA_SYMBOLS_TAG = field_tag(6)

#: One emitted symbol entry, as the snapshot stage keeps it:
#: ``(key, venue, symbol, full_state_bytes, vol, oi, last, total_trades)``.
Entry = tuple[str, str, str, bytes, int, int, int, int]


def delta_subject(prefix: str, group: str, shard: int, shards: int) -> str:
    """``{prefix}.{group}`` for a single-shard group, ``{prefix}.{group}.{shard}`` otherwise."""
    return f"{prefix}.{group}" if shards <= 1 else f"{prefix}.{group}.{shard}"


class DeltaOut:
    """One emitted delta: the wire payload plus what the snapshot and publish stages need."""

    __slots__ = (
        "entries", "epoch", "generation", "group", "level", "n_ticks", "payload", "removed",
        "seq", "shard", "shards", "subject", "t_oldest", "trace", "ts_emit_us", "watermark",
        "window_ms",
    )

    #: The ``conflate`` span of a delta that folded sampled ticks (tracing on only), else None.
    trace: SpanContext | None

    def __init__(self, route: Route, seq: int, epoch: int, payload: bytes,
                 entries: list[Entry], *, t_oldest: float, n_ticks: int, ts_emit_us: int,
                 level: Level, window_ms: int, watermark: int,
                 removed: tuple[str, ...] = ()) -> None:
        self.group = route.group
        self.shard = route.shard
        self.shards = route.shards
        self.subject = route.subject
        self.seq = seq
        self.epoch = epoch
        self.payload = payload
        self.entries = entries
        self.t_oldest = t_oldest
        self.n_ticks = n_ticks
        self.ts_emit_us = ts_emit_us
        self.level = level
        self.window_ms = window_ms
        self.watermark = watermark
        #: Keys that left this (group, shard) at this sequence (moved to another group).
        self.removed = removed
        #: The :class:`~xypipe._md.records.Restore` generation it was emitted under.
        self.generation = 0
        self.trace = None

    @property
    def nbytes(self) -> int:
        return len(self.payload)

    def __repr__(self) -> str:
        return (f"DeltaOut({self.subject} seq={self.seq} symbols={len(self.entries)} "
                f"removed={len(self.removed)})")


class Conflator:
    def __init__(
        self,
        epoch: int,
        *,
        levels: LevelPolicy | None = None,
        priorities: dict[str, int] | None = None,
        default_priority: int = Priority.PRIORITY_NORMAL,
    ) -> None:
        #: The epoch of every group :attr:`epochs` names none for (a group first seen).
        self.epoch = epoch
        #: Group -> its epoch (set by a restore, or at a group's first delta).
        self.epochs: dict[str, int] = {}
        #: The generation of the last restore (stamped on every delta).
        self.generation = 0
        #: The groups this aggregator owns (``None``: every group).
        self.owned: frozenset[str] | None = None
        #: What each degradation level changes in the deltas (trim depth, paused priorities).
        self.levels = levels or LevelPolicy()
        self.configured_priorities = dict(priorities or {})
        self.default_priority = int(default_priority)
        self.books: dict[str, SymbolBook] = {}
        self.seqs: dict[tuple[str, int], int] = {}
        self.learned_priorities: dict[str, int] = {}
        self._decimals: dict[str, int] = {}
        self._dirty: dict[Route, dict[str, SymbolBook]] = {}
        #: Route -> books whose last entry on the wire was trimmed (re-sent in full once the
        #: level stops trimming).
        self._trimmed: dict[Route, dict[str, SymbolBook]] = {}
        #: Route -> keys that left it since its last delta (sent in the next one, explicitly).
        self._removed: dict[Route, set[str]] = {}
        #: (key, from group, to group) of every move since :meth:`take_moves` (for the shell
        #: to count and log).
        self.moves: list[tuple[str, str, str]] = []
        #: Every source message up to here is reflected in what has been emitted.
        self.watermark = 0
        self._applied_watermark = 0

    # ------------------------------------------------------------------ inputs

    def restore(self, r: Restore) -> None:
        """Start from a restarted aggregator's last snapshots and delta sequences (a
        conflator that ran before is reset first: a restore is a fresh start)."""
        self.epoch = r.epoch
        self.generation = r.generation
        self.owned = r.owned
        self.epochs = dict(r.epochs)
        self.books.clear()
        self.seqs.clear()
        self._dirty.clear()
        self._trimmed.clear()
        self._removed.clear()
        self.moves.clear()
        for snap in r.snapshots:
            self.epochs.setdefault(snap.group, r.epoch_of(snap.group))
            for s in snap.symbols:
                book = SymbolBook.from_state(s)
                self.books[book.key] = book
        self.seqs.update({k: seq for k, seq in r.checkpoints.items() if r.continues(k[0])})
        self.watermark = self._applied_watermark = max(r.replay_from - 1, 0)

    def priority_of(self, group: str) -> int:
        found = self.configured_priorities.get(group)
        if found is not None:
            return found
        return self.learned_priorities.get(group, self.default_priority)

    def apply(self, batch: Batch | Sequence[Rec]) -> None:
        """Fold in a batch of in-order, routed records."""
        recs = batch.recs if isinstance(batch, Batch) else batch
        books = self.books
        dirty = self._dirty
        for rec in recs:
            if type(rec) is TickRec:
                book = books.get(rec.key)
                if book is None:
                    t = rec.tick
                    book = books[rec.key] = SymbolBook(rec.key, t.venue, t.symbol)
                    book.price_decimals = self._decimals.get(rec.key, 0)
                route = rec.route
                if book.route is not route:
                    self._move(book, route)
                if book.apply(rec):
                    d = dirty.get(route)  # type: ignore[arg-type]
                    if d is None:
                        d = dirty[route] = {}  # type: ignore[index]
                    d[rec.key] = book
            elif type(rec) is ContractRec:
                self._learn(rec)
        if isinstance(batch, Batch) and batch.watermark > self._applied_watermark:
            self._applied_watermark = batch.watermark

    def _move(self, book: SymbolBook, route: Route | None) -> None:
        """The symbol now belongs to ``route``: it leaves its old (group, shard) explicitly (a
        ``removed`` key in that stream's next delta, so every mirror and client drops it at
        once) and shows in the new one with the next delta, whether it ticked or not."""
        old = book.route
        key = book.key
        if old is not None:
            d = self._dirty.get(old)
            if d is not None:
                d.pop(key, None)
            self._removed.setdefault(old, set()).add(key)
            if old.group != (route.group if route is not None else None):
                self.moves.append((key, old.group, route.group if route is not None else ""))
        if route is not None:
            gone = self._removed.get(route)
            if gone is not None:
                gone.discard(key)  # it came back before the removal went out
            if book.src is not None and (self.owned is None or route.group in self.owned):
                # (Into a group another aggregator owns: that one shows it.)
                self._dirty.setdefault(route, {})[key] = book
        book.route = route

    def _learn(self, rec: ContractRec) -> None:
        c = rec.contract
        moved_from = rec.moved_from
        if moved_from is not None and rec.route is not None and rec.route is not moved_from:
            # The contract moved the symbol: it leaves the old group now, not at its next tick.
            book = self.books.get(rec.key)
            if book is None:
                pass  # never ticked here: no group holds it
            elif book.route is None:
                # Restored from a snapshot of ``moved_from``'s group (no route yet).
                book.route = moved_from
                self._move(book, rec.route)
            elif book.route is not rec.route:
                self._move(book, rec.route)
        if c.price_decimals:
            self._decimals[rec.key] = c.price_decimals
            book = self.books.get(rec.key)
            if book is not None:
                book.price_decimals = c.price_decimals
        if c.priority and rec.route is not None:
            group = rec.route.group
            self.learned_priorities[group] = max(
                self.learned_priorities.get(group, 0), int(c.priority)
            )

    # ------------------------------------------------------------------ output

    def pending(self) -> int:
        """Symbols changed but not yet emitted."""
        return sum(len(d) for d in self._dirty.values())

    def take_moves(self) -> list[tuple[str, str, str]]:
        out, self.moves = self.moves, []
        return out

    def emit(self, ts_emit_us: int, level: Level, window_ms: int) -> list[DeltaOut]:
        """Close the window: one delta per (group, shard) with changes (none for a quiet one),
        shaped by what ``level`` does (:class:`~xypipe._levels.Reaction`)."""
        out: list[DeltaOut] = []
        reaction = self.levels.at(level)
        trim = reaction.trim_depth
        pause = bool(reaction.paused_priorities)
        paused_left = False
        removed = self._removed
        if trim is None and self._trimmed:
            # Back to full depth: what went out trimmed goes out again, in full.
            for route, books in self._trimmed.items():
                self._dirty.setdefault(route, {}).update(
                    (k, b) for k, b in books.items() if b.route is route)
            self._trimmed.clear()
        # In the order the streams first changed (not a set's: a Route hashes by identity), so
        # the same input emits the same deltas in the same order (docs/tapes.md, determinism).
        for route in list(dict.fromkeys([*self._dirty, *removed])):
            changed = self._dirty.get(route) or {}
            gone = removed.get(route)
            if not changed and not gone:
                self._dirty.pop(route, None)
                removed.pop(route, None)
                continue
            # Removals are never paused: a symbol that moved must not linger in its old group.
            if changed and pause and reaction.pauses(self.priority_of(route.group)):
                paused_left = True
                if not gone:
                    continue
                changed = {}
            else:
                self._dirty.pop(route, None)
            removed.pop(route, None)
            out.append(self._delta(route, changed, ts_emit_us, level, window_ms, trim,
                                   tuple(sorted(gone or ()))))
        watermark = self._applied_watermark
        if paused_left:
            for changed in self._dirty.values():
                for book in changed.values():
                    if book.w_sseq and book.w_sseq - 1 < watermark:
                        watermark = book.w_sseq - 1
        if watermark > self.watermark:
            self.watermark = watermark
        for d in out:
            d.watermark = self.watermark
        return out

    def _delta(self, route: Route, changed: dict[str, SymbolBook], ts_emit_us: int,
               level: Level, window_ms: int, trim: int | None,
               removed: tuple[str, ...] = ()) -> DeltaOut:
        k = (route.group, route.shard)
        epoch = self.epochs.get(route.group)
        if epoch is None:
            epoch = self.epochs[route.group] = self.epoch  # a group first seen
        seq = self.seqs.get(k, 0) + 1
        self.seqs[k] = seq
        entries: list[Entry] = []
        wire: list[bytes] = []
        t_oldest = math.inf
        n_ticks = 0
        for book in changed.values():
            cs = book.checksum()
            data = book.state_bytes(cs)
            s = book.src
            assert s is not None  # checksummed above
            entries.append((book.key, book.venue, book.symbol, data, s.vol, s.oi, s.last,
                            book.total_trades))
            if trim is not None:
                wire.append(trimmed_state(data, trim))
                self._trimmed.setdefault(route, {})[book.key] = book
            if book.w_ticks and book.w_t_in < t_oldest:
                t_oldest = book.w_t_in
            n_ticks += book.w_ticks
            book.reset_window()
        header = Delta(group=route.group, shard=route.shard, seq=seq, epoch=epoch,
                       ts_emit_us=ts_emit_us, level=level, window_ms=window_ms,
                       removed=removed)
        payload = header.SerializeToString() + repeated_field(
            DELTA_SYMBOLS_TAG, wire if trim is not None else (e[3] for e in entries)
        )
        out = DeltaOut(route, seq, epoch, payload, entries, t_oldest=t_oldest,
                       n_ticks=n_ticks, ts_emit_us=ts_emit_us, level=level,
                       window_ms=window_ms, watermark=0, removed=removed)
        out.generation = self.generation
        return out


# --------------------------------------------------------------------------- merging


def merge_entries(older: SymbolState, newer: SymbolState) -> SymbolState:
    """One symbol's entries of two consecutive windows as one: the newer state, the union of
    the windows (high/low/trades/volume/ticks, oldest arrival). Returns a new message."""
    m = SymbolState()
    m.CopyFrom(newer)
    if older.window_trades:
        if newer.window_trades:
            m.window_high = max(older.window_high, newer.window_high)
            m.window_low = min(older.window_low, newer.window_low)
        else:
            m.window_high = older.window_high
            m.window_low = older.window_low
    m.window_trades = older.window_trades + newer.window_trades
    m.window_volume = older.window_volume + newer.window_volume
    m.window_ticks = older.window_ticks + newer.window_ticks
    if older.ts_arrival_us and (not newer.ts_arrival_us
                                or older.ts_arrival_us < newer.ts_arrival_us):
        m.ts_arrival_us = older.ts_arrival_us
    return m


def merge_deltas(deltas: Sequence[Delta]) -> Delta:
    """Merge consecutive deltas of one (group, shard) stream into one delta.

    The result is what one longer window would have produced: ``seq`` of the last,
    ``first_seq`` of the first, each symbol's newest state (its checksum stays valid: it is
    the checksum of that state) with the windows' trades, volume, high/low and ticks combined,
    so nothing a trader needs is lost; a symbol removed and not back by the last delta is in
    ``removed`` (and not in ``symbols``). Raises ``ValueError`` for an empty list, mixed streams
    or epochs, or a sequence gap (merging must never hide a gap).
    """
    if not deltas:
        raise ValueError("merge_deltas: expected at least one delta, got none")
    first, last = deltas[0], deltas[-1]
    merged: dict[tuple[str, str], SymbolState] = {}
    removed: dict[str, None] = {}
    prev: Delta | None = None
    window_ms = 0
    for d in deltas:
        if (d.group, d.shard, d.epoch) != (first.group, first.shard, first.epoch):
            raise ValueError(
                f"merge_deltas: expected deltas of one stream, got {d.group}/{d.shard} "
                f"epoch {d.epoch} after {first.group}/{first.shard} epoch {first.epoch}"
            )
        if prev is not None and (d.first_seq or d.seq) != prev.seq + 1:
            raise ValueError(
                f"merge_deltas: {d.group}/{d.shard}: expected seq {prev.seq + 1} after "
                f"{prev.seq}, got {d.first_seq or d.seq} (a gap cannot be merged)"
            )
        prev = d
        window_ms += d.window_ms
        for key in d.removed:
            # Gone since an earlier delta of the merge: its entry goes too, its removal stays.
            venue, _, symbol = key.partition(".")
            merged.pop((venue, symbol), None)
            removed[key] = None
        for s in d.symbols:
            removed.pop(f"{s.venue}.{s.symbol}", None)  # back again: kept, with this state
            k = (s.venue, s.symbol)
            old = merged.get(k)
            if old is None:
                m = SymbolState()
                m.CopyFrom(s)
                merged[k] = m
            else:
                merged[k] = merge_entries(old, s)
    out = Delta(
        group=first.group, shard=first.shard, seq=last.seq, epoch=first.epoch,
        ts_emit_us=last.ts_emit_us, level=last.level, window_ms=window_ms,
        first_seq=(first.first_seq or first.seq) if len(deltas) > 1 or first.first_seq else 0,
    )
    out.symbols.extend(merged.values())
    out.removed.extend(removed)
    return out
