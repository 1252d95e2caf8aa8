"""What a subscriber does with the aggregator's output: rebuild each group from its snapshot and
the deltas after it, proving continuity (epoch, per-shard sequence) and every checksum.

Used by the tests, the benchmarks and ``xypipe tail --verify``; the browser worker implements
the same rules in JavaScript (``docs/protocol.md``).
"""

from __future__ import annotations

import attrs

from xypipe._md.book import state_checksum
from xypipe._md.seqrules import DEFAULT_MAX_GAP, Verdict, judge
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
    #: Symbols dropped because a delta said they left their group.
    removed: int = 0
    #: Deltas never believed, by verdict (``far_future``, ``stale_epoch``, ``future_epoch``).
    rejected: dict[str, int] = attrs.field(factory=dict)
    verified: int = 0
    trimmed: int = 0
    checksum_mismatches: int = 0
    problems: list[str] = attrs.field(factory=list)


class MarketView:
    """Groups rebuilt from snapshots + deltas. A gap or an epoch change marks the group out of
    sync until the next snapshot (what a real client would request)."""

    def __init__(self, *, max_gap: int = DEFAULT_MAX_GAP) -> None:
        self.groups: dict[str, GroupView] = {}
        self.stats = ViewStats()
        self.max_gap = max_gap

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

    def judge_delta(self, d: Delta) -> str:
        """The sequence rule's verdict for ``d`` (:func:`xypipe._md.seqrules.judge`, shared
        with the browser), or ``"held"`` while the group waits for a snapshot. Pure."""
        g = self.groups.get(d.group)
        if g is None or (not g.synced and not g.seqs):
            return "held"
        verdict = judge((g.epoch, g.seqs.get(d.shard, 0)), d.epoch, d.first_seq, d.seq,
                        self.max_gap)
        if not g.synced and verdict not in (Verdict.DUPLICATE, Verdict.STALE_EPOCH):
            return "held"
        return verdict.value

    def apply_delta(self, d: Delta) -> bool:
        """Apply if it continues the group; returns False when it was not applied. A rejected
        delta (far future, stale or future epoch) never becomes the group's baseline."""
        g = self.groups.setdefault(d.group, GroupView(d.group))
        verdict = self.judge_delta(d)
        if verdict != Verdict.APPLY.value:
            self._not_applied(g, d, verdict)
            return False
        g.seqs[d.shard] = d.seq
        g.delta_seqs[d.shard] = d.seq
        self.stats.deltas += 1
        for gone in d.removed:
            # The symbol moved to another group: it leaves this one now (before ``symbols``,
            # which may bring it back).
            venue, _, symbol = gone.partition(".")
            if g.symbols.pop((venue, symbol), None) is not None:
                self.stats.removed += 1
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

    def _not_applied(self, g: GroupView, d: Delta, verdict: str) -> None:
        where = f"{d.group}/{d.shard}"
        last = g.seqs.get(d.shard, 0)
        if verdict == "held" or (not g.synced and verdict == Verdict.DUPLICATE.value):
            self.stats.skipped += 1
        elif verdict == Verdict.DUPLICATE.value:
            if d.seq <= g.delta_seqs.get(d.shard, 0):
                self.stats.repeats += 1
                self._problem(f"{where}: seq {d.seq} repeated (last {last})")
            else:
                self.stats.skipped += 1  # already in the snapshot
        elif verdict == Verdict.GAP.value:
            self.stats.gaps += 1
            self._problem(f"{where}: gap {last} -> {d.first_seq or d.seq}")
            g.synced = False
        else:
            self.stats.rejected[verdict] = self.stats.rejected.get(verdict, 0) + 1
            if verdict == Verdict.FUTURE_EPOCH.value:
                self.stats.epoch_changes += 1
            self._problem(f"{where}: {verdict} delta #{d.seq} of epoch {d.epoch} "
                          f"(held: #{last} of epoch {g.epoch})")
            # A stale epoch changes nothing; a far-future delta or a new epoch is re-anchored
            # from the next snapshot, never from the delta itself.
            if verdict != Verdict.STALE_EPOCH.value:
                g.synced = False

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
