"""Snapshots: a mirror of each group built from the deltas themselves, serialised on demand.

The builder is a client of the delta stream: it applies every emitted delta (full entries,
never the trimmed wire form) and remembers, per shard, the last sequence applied. A snapshot is
therefore consistent with its ``shard_seq`` by construction: applying the deltas after those
sequences to it yields the live state. Entry bytes are reused as they are (a snapshot is a
header plus the concatenated entries), so a 5,000-symbol snapshot costs a sort and a join.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from xypipe._md.conflation import DeltaOut, Entry
from xypipe._md.records import Restore
from xypipe._md.wire import field_tag, repeated_field
from xypipe.contracts import Snapshot, SymbolState, TopEntry

SNAPSHOT_SYMBOLS_TAG = field_tag(7)

#: Top-K projections: name -> (value of an entry given the previous snapshot's last, rank key).
TOP_BY = ("vol", "oi", "trades", "last", "change")


class SnapshotOut:
    """One serialised snapshot, ready to publish on ``subject``."""

    __slots__ = ("epoch", "generation", "group", "payload", "shard_seq", "subject", "symbols",
                 "version")

    def __init__(self, group: str, subject: str, payload: bytes, version: int, epoch: int,
                 shard_seq: dict[int, int], symbols: int) -> None:
        self.group = group
        self.subject = subject
        self.payload = payload
        self.version = version
        self.epoch = epoch
        self.shard_seq = shard_seq
        self.symbols = symbols
        #: The :class:`~xypipe._md.records.Restore` generation it was built under.
        self.generation = 0

    @property
    def nbytes(self) -> int:
        return len(self.payload)

    def __repr__(self) -> str:
        return f"SnapshotOut({self.subject} v{self.version} {self.shard_seq})"


class GroupMirror:
    __slots__ = ("entries", "epoch", "hold_until", "prev_last", "restored", "shard_seq",
                 "shards", "version")

    def __init__(self, epoch: int = 0) -> None:
        #: The group's epoch (per group: groups continue or restart their sequences apart).
        self.epoch = epoch
        self.entries: dict[str, Entry] = {}
        #: Entries restored from a stored snapshot and not serialised yet (their bytes are
        #: ``b""`` in ``entries`` until the next build): most are replaced by the replay's
        #: deltas before then, and a restart's rebuild does not wait for the rest.
        self.restored: dict[str, SymbolState] = {}
        self.shard_seq: dict[int, int] = {}
        self.shards = 1
        self.version = 0
        self.prev_last: dict[str, int] = {}
        #: After a restart: shard -> the last sequence emitted before it. Until the mirror has
        #: applied a delta at or past it, it lacks what those deltas carried and must not be
        #: published as consistent with them.
        self.hold_until: dict[int, int] = {}

    def ready(self) -> bool:
        return all(self.shard_seq.get(s, 0) >= seq for s, seq in self.hold_until.items())


class SnapshotBuilder:
    def __init__(self, epoch: int, *, subject_prefix: str = "xy.md.snapshot",
                 top_by: str = "vol", top_k: int = 20) -> None:
        if top_by not in TOP_BY:
            raise ValueError(f"top_by: expected one of {TOP_BY}, got {top_by!r}")
        self.epoch = epoch
        self.subject_prefix = subject_prefix
        self.top_by = top_by
        self.top_k = top_k
        self.groups: dict[str, GroupMirror] = {}
        self._group_of: dict[str, str] = {}
        self.watermark = 0
        self.generation = 0

    def restore(self, r: Restore) -> None:
        """Start over from ``r`` (a builder that ran before forgets every mirror)."""
        self.epoch = r.epoch
        self.generation = r.generation
        self.groups.clear()
        self._group_of.clear()
        for snap in r.snapshots:
            g = self.groups.setdefault(snap.group, GroupMirror(r.epoch_of(snap.group)))
            g.shards = snap.shards or 1
            entries, restored, prev_last = g.entries, g.restored, g.prev_last
            group_of, group = self._group_of, snap.group
            for s in snap.symbols:
                venue, symbol, last = s.venue, s.symbol, s.last
                key = f"{venue}.{symbol}"
                entries[key] = (key, venue, symbol, b"", s.vol, s.oi, last, s.total_trades)
                restored[key] = s
                group_of[key] = group
                prev_last[key] = last
            if r.continues(snap.group):
                g.version = snap.version
                g.shard_seq = dict(snap.shard_seq)
                g.hold_until = {shard: seq for (grp, shard), seq in r.checkpoints.items()
                                if grp == snap.group and seq > g.shard_seq.get(shard, 0)}
        self.watermark = max(r.replay_from - 1, 0)

    def apply(self, d: DeltaOut) -> None:
        g = self.groups.get(d.group)
        if g is None:
            g = self.groups[d.group] = GroupMirror(d.epoch)
        g.epoch = d.epoch
        g.shards = d.shards
        g.shard_seq[d.shard] = d.seq
        entries = g.entries
        group_of = self._group_of
        group = d.group
        for key in d.removed:
            # Moved to another group: gone from this group's next snapshot and Top-K.
            entries.pop(key, None)
            g.prev_last.pop(key, None)
            if group_of.get(key) == group:
                del group_of[key]
        for e in d.entries:
            key = e[0]
            entries[key] = e
            was = group_of.get(key)
            if was != group:
                # The symbol moved (its contract named another group). Its old group's delta
                # says so explicitly (``removed``); this also covers a removal not seen yet.
                if was is not None and was in self.groups:
                    self.groups[was].entries.pop(key, None)
                group_of[key] = group
        if d.watermark > self.watermark:
            self.watermark = d.watermark

    def _value(self) -> Callable[[Entry, dict[str, int]], int]:
        by = self.top_by
        if by == "vol":
            return lambda e, _p: e[4]
        if by == "oi":
            return lambda e, _p: e[5]
        if by == "trades":
            return lambda e, _p: e[7]
        if by == "last":
            return lambda e, _p: e[6]
        return lambda e, prev: e[6] - prev.get(e[0], e[6])

    def advance(self, watermark: int) -> None:
        """Every source message up to ``watermark`` is reflected in the deltas applied (a quiet
        window emits none, yet the restore point must move on)."""
        if watermark > self.watermark:
            self.watermark = watermark

    def build(self, group: str, ts_emit_us: int, window_ms: int) -> SnapshotOut | None:
        """The group's snapshot now, or ``None`` if it has nothing consistent to show yet.

        A group whose symbols all moved to other groups (at every cold start symbols sit in the
        default group until their contracts arrive) still gets its snapshot, empty: clients
        learn the symbols left, and its stored snapshot keeps up with the watermark instead of
        dragging the restore point back to when it last held something.
        """
        g = self.groups.get(group)
        if g is None or not g.ready():
            return None
        g.version += 1
        value = self._value()
        prev = g.prev_last
        entries = g.entries
        rank = (lambda e: abs(value(e, prev))) if self.top_by == "change" else (
            lambda e: value(e, prev))
        top = heapq.nlargest(self.top_k, entries.values(), key=rank) if self.top_k else []
        header = Snapshot(
            group=group, version=g.version, epoch=g.epoch, shard_seq=g.shard_seq,
            shards=g.shards, ts_emit_us=ts_emit_us, top_by=self.top_by,
            top=[TopEntry(venue=e[1], symbol=e[2], value=value(e, prev)) for e in top],
            source_stream_seq=self.watermark, window_ms=window_ms,
        )
        if g.restored:
            self._serialise_restored(g)
        keys = sorted(entries)
        payload = header.SerializeToString() + repeated_field(
            SNAPSHOT_SYMBOLS_TAG, (entries[k][3] for k in keys)
        )
        g.prev_last = {k: e[6] for k, e in entries.items()}
        out = SnapshotOut(group, f"{self.subject_prefix}.{group}", payload, g.version,
                          g.epoch, dict(g.shard_seq), len(keys))
        out.generation = self.generation
        return out

    def serialised_entries(self, group: str) -> list[Entry]:
        """The group's entries now, every one serialised (for a projection's restart)."""
        g = self.groups.get(group)
        if g is None:
            return []
        if g.restored:
            self._serialise_restored(g)
        return list(g.entries.values())

    @staticmethod
    def _serialise_restored(g: GroupMirror) -> None:
        entries = g.entries
        for key, s in g.restored.items():
            e = entries.get(key)
            if e is not None and not e[3]:  # still the restored one (not replaced, not gone)
                entries[key] = (key, e[1], e[2], s.SerializeToString(), e[4], e[5], e[6], e[7])
        g.restored.clear()

    def build_all(self, ts_emit_us: int, window_ms: int) -> list[SnapshotOut]:
        out = []
        for group in sorted(self.groups):
            snap = self.build(group, ts_emit_us, window_ms)
            if snap is not None:
                out.append(snap)
        return out
