"""What a subscriber does with the aggregator's output: rebuild each group from its snapshot and
the deltas after it, proving continuity (epoch, per-shard sequence) and every checksum.

Used by the tests, the benchmarks and ``xypipe tail --verify``; the browser worker implements
the same rules in JavaScript (``docs/protocol.md``).
"""

from __future__ import annotations

import attrs

from xypipe._md.book import state_checksum
from xypipe.contracts import Delta, Snapshot, SymbolState


@attrs.define
class GroupView:
    group: str
    epoch: int = 0
    #: shard -> last delta sequence applied
    seqs: dict[int, int] = attrs.field(factory=dict)
    #: shard -> last sequence applied from a delta (a repeat is a delta at or below it)
    delta_seqs: dict[int, int] = attrs.field(factory=dict)
    symbols: dict[tuple[str, str], SymbolState] = attrs.field(factory=dict)
    synced: bool = False


@attrs.define
class ViewStats:
    snapshots: int = 0
    deltas: int = 0
    skipped: int = 0
    gaps: int = 0
    repeats: int = 0
    epoch_changes: int = 0
    verified: int = 0
    trimmed: int = 0
    checksum_mismatches: int = 0
    problems: list[str] = attrs.field(factory=list)


class MarketView:
    """Groups rebuilt from snapshots + deltas. A gap or an epoch change marks the group out of
    sync until the next snapshot (what a real client would request)."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupView] = {}
        self.stats = ViewStats()

    def _problem(self, text: str) -> None:
        if len(self.stats.problems) < 50:
            self.stats.problems.append(text)

    def apply_snapshot(self, snap: Snapshot) -> None:
        g = self.groups.setdefault(snap.group, GroupView(snap.group))
        self.stats.snapshots += 1
        if g.synced and snap.epoch == g.epoch:
            # Already live: a snapshot only has to agree with what we hold at its sequences.
            behind = any(g.seqs.get(s, 0) < seq for s, seq in snap.shard_seq.items())
            if not behind:
                return
        g.epoch = snap.epoch
        g.seqs = dict(snap.shard_seq)
        g.symbols = {(s.venue, s.symbol): s for s in snap.symbols}
        for s in snap.symbols:
            self._verify(s)
        g.synced = True

    def apply_delta(self, d: Delta) -> bool:
        """Apply if it continues the group; returns False when it was skipped."""
        g = self.groups.setdefault(d.group, GroupView(d.group))
        if not g.synced:
            self.stats.skipped += 1
            return False
        if d.epoch != g.epoch:
            self.stats.epoch_changes += 1
            self._problem(f"{d.group}/{d.shard}: epoch {d.epoch} after {g.epoch}")
            g.synced = False
            return False
        last = g.seqs.get(d.shard, 0)
        first = d.first_seq or d.seq
        if d.seq <= last:
            if d.seq <= g.delta_seqs.get(d.shard, 0):
                self.stats.repeats += 1
                self._problem(f"{d.group}/{d.shard}: seq {d.seq} repeated (last {last})")
            else:
                self.stats.skipped += 1  # already in the snapshot
            return False
        if first != last + 1:
            self.stats.gaps += 1
            self._problem(f"{d.group}/{d.shard}: gap {last} -> {first}")
            g.synced = False
            return False
        g.seqs[d.shard] = d.seq
        g.delta_seqs[d.shard] = d.seq
        self.stats.deltas += 1
        for s in d.symbols:
            key = (s.venue, s.symbol)
            if s.trimmed:
                self.stats.trimmed += 1
                held = g.symbols.get(key)
                merged = SymbolState()
                merged.CopyFrom(s)
                if held is not None:
                    # Depth beyond the trimmed levels is the last full depth we saw.
                    n = len(s.bids)
                    merged.bids.extend(held.bids[n:])
                    merged.asks.extend(held.asks[len(s.asks):])
                g.symbols[key] = merged
            else:
                self._verify(s)
                g.symbols[key] = s
        return True

    def _verify(self, s: SymbolState) -> None:
        if s.trimmed:
            self.stats.trimmed += 1
            return
        if state_checksum(s) == s.checksum:
            self.stats.verified += 1
        else:
            self.stats.checksum_mismatches += 1
            self._problem(f"{s.venue}.{s.symbol} seq {s.seq}: checksum mismatch")

    def state(self) -> dict[tuple[str, str], SymbolState]:
        """Every symbol of every synced group."""
        out: dict[tuple[str, str], SymbolState] = {}
        for g in self.groups.values():
            out.update(g.symbols)
        return out
