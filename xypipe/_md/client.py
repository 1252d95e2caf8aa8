"""What a subscriber does with the aggregator's output: rebuild each group from its snapshot and
the deltas after it, proving continuity (epoch, per-shard sequence) and every checksum.

Two consumers, one set of rules (``docs/protocol.md``, "Sequence rules" and "Canonical
checksum"; scenario vectors in ``proto/scenarios/``):

- :class:`MarketView` follows the aggregator's subjects on NATS (``xypipe tail --verify``, the
  aggregator tests, ``bench/rebuild.py``): snapshots arrive every few seconds while a group is
  live, so one only restarts a group that is behind it.
- :class:`SeqTracker` is what a WebSocket client of the gateway applies (the browser worker's
  ``SeqTracker`` in ``ui-static/xy-core.js``, and :mod:`xypipe.client`): every snapshot the
  gateway sends is a restart point, and deltas that cannot be applied yet are held until the
  snapshot that follows them arrives.

Both apply a delta's entries with :func:`apply_entries` and judge checksums with
:func:`verify_checksum`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, MutableMapping

import attrs

from xypipe._md.book import state_checksum
from xypipe._md.seqrules import DEFAULT_MAX_GAP, STALE_FENCE, Fences, Verdict, judge
from xypipe.contracts import Delta, ResumePoint, Snapshot, SymbolState

#: What a consumer holds of a group's symbols: ``(venue, symbol) -> state``.
Symbols = MutableMapping[tuple[str, str], SymbolState]

#: The verdict of a delta that waits for its group's snapshot (not a :class:`Verdict`: it is
#: the consumer's state, not the delta, that decides it).
HELD = "held"


class Check(enum.Enum):
    """What the canonical checksum says about one symbol state."""

    OK = "ok"
    MISMATCH = "mismatch"
    #: A trimmed entry (degradation level 2): its checksum covers the full book, which the
    #: entry does not carry, so it is not verified.
    SKIPPED = "skipped"


def verify_checksum(s: SymbolState) -> Check:
    """``s.trimmed or crc32(canonical(s)) == s.checksum`` (docs/protocol.md)."""
    if s.trimmed:
        return Check.SKIPPED
    return Check.OK if state_checksum(s) == s.checksum else Check.MISMATCH


def keep_depth(held: SymbolState | None, entry: SymbolState) -> SymbolState:
    """The state a consumer keeps for ``entry``: itself, or for a trimmed entry (best level
    only) the entry with the deeper levels of the state held before it."""
    if not entry.trimmed or held is None:
        return entry
    merged = SymbolState()
    merged.CopyFrom(entry)
    merged.bids.extend(held.bids[len(entry.bids):])
    merged.asks.extend(held.asks[len(entry.asks):])
    return merged


@attrs.frozen
class Applied:
    """What applying one delta's entries did."""

    #: The states now held for the delta's symbols, in the delta's order.
    states: tuple[SymbolState, ...]
    #: Symbols dropped because the delta says they left the group (``venue.symbol``).
    removed: tuple[str, ...]
    verified: int
    trimmed: int
    #: The entries whose checksum did not match (their state is applied all the same: the
    #: consumer resynchronises the group from a snapshot).
    mismatched: tuple[SymbolState, ...]


def apply_entries(symbols: Symbols, d: Delta, *, verify: bool = True) -> Applied:
    """Apply ``d``'s entries to ``symbols``: ``removed`` first (a symbol in both came back),
    then each entry replaces its symbol's state (trimmed ones keep the deeper levels)."""
    removed = []
    for gone in d.removed:
        venue, _, symbol = gone.partition(".")
        if symbols.pop((venue, symbol), None) is not None:
            removed.append(gone)
    states = []
    mismatched = []
    verified = trimmed = 0
    for s in d.symbols:
        key = (s.venue, s.symbol)
        if s.trimmed:
            trimmed += 1
            s = keep_depth(symbols.get(key), s)
        elif verify:
            if verify_checksum(s) is Check.OK:
                verified += 1
            else:
                mismatched.append(s)
        symbols[key] = s
        states.append(s)
    return Applied(tuple(states), tuple(removed), verified, trimmed, tuple(mismatched))


# --------------------------------------------------------------------------- WebSocket clients


@attrs.define
class _Pending:
    """A group waiting for its snapshot: since when, and the deltas held meanwhile."""

    since: float
    held: deque[Delta]


class SeqTracker:
    """Per-(group, shard) epoch and sequence of a WebSocket client: the browser's rule
    (``SeqTracker`` in ``ui-static/xy-core.js``), one implementation per language, both run
    against ``proto/scenarios/``.

    :meth:`check` judges a delta (:func:`~xypipe._md.seqrules.judge`) and moves the stream's
    baseline when it applies; while its group waits for a snapshot, a delta is ``HELD``
    (except duplicates and stale epochs, which are dropped, and far-future ones, which are
    never kept). What the caller does with the other verdicts (the worker's ``_onDelta``):

    - ``gap``, ``future_epoch``: ask for a snapshot; :meth:`begin_resync` holding the delta;
    - ``far_future``: ask for a snapshot; :meth:`begin_resync` without the delta;
    - ``stale_epoch``, ``duplicate``, ``stale_fence``: drop it, nothing else.

    A snapshot goes through :meth:`admit_snapshot` first (its fence); :meth:`apply_snapshot`
    makes it the group's baseline and returns the held deltas that follow it, already checked
    (apply them in order).
    """

    def __init__(self, *, max_gap: int = DEFAULT_MAX_GAP, max_held: int = 256) -> None:
        self.max_gap = max_gap
        self.max_held = max_held
        #: group -> shard -> (epoch, last sequence applied)
        self.streams: dict[str, dict[int, tuple[int, int]]] = {}
        self.resyncing: dict[str, _Pending] = {}
        #: Highest fence per group (kept when a group is forgotten: fences only grow).
        self.fences = Fences()

    def admit_snapshot(self, snap: Snapshot) -> bool:
        """False for a snapshot from an owner already replaced (its fence is below the
        group's highest): drop it."""
        return self.fences.admit(snap.group, snap.fence)

    def baseline(self, group: str, shard: int) -> tuple[int, int] | None:
        return self.streams.get(group, {}).get(shard)

    def check(self, d: Delta) -> str:
        """A :class:`~xypipe._md.seqrules.Verdict` value, :data:`HELD`, or
        :data:`~xypipe._md.seqrules.STALE_FENCE`."""
        if not self.fences.admit(d.group, d.fence):
            return STALE_FENCE
        known = self.baseline(d.group, d.shard)
        verdict = judge(known, d.epoch, d.first_seq, d.seq, self.max_gap)
        pending = self.resyncing.get(d.group)
        if pending is not None:
            if verdict in (Verdict.DUPLICATE, Verdict.STALE_EPOCH, Verdict.FAR_FUTURE):
                return str(verdict.value)
            self._hold(pending, d)
            return HELD
        if verdict is Verdict.APPLY:
            self.streams.setdefault(d.group, {})[d.shard] = (d.epoch, d.seq)
        return verdict.value

    def begin_resync(self, group: str, now: float, delta: Delta | None = None) -> bool:
        """Hold the group's deltas until its snapshot arrives; False if it already waited."""
        pending = self.resyncing.get(group)
        fresh = pending is None
        if pending is None:
            pending = self.resyncing[group] = _Pending(now, deque(maxlen=self.max_held))
        if delta is not None:
            self._hold(pending, delta)
        return fresh

    def _hold(self, pending: _Pending, d: Delta) -> None:
        pending.held.append(d)  # the oldest goes when full (maxlen)

    def is_resyncing(self, group: str) -> bool:
        return group in self.resyncing

    def overdue(self, now: float, timeout: float) -> list[str]:
        """Groups whose snapshot has not arrived within ``timeout`` (ask again)."""
        out = []
        for group, p in self.resyncing.items():
            if now - p.since >= timeout:
                p.since = now
                out.append(group)
        return out

    def apply_snapshot(self, snap: Snapshot) -> list[Delta]:
        """``snap`` becomes the group's baseline; the held deltas that follow it, in order."""
        group = snap.group
        self.streams[group] = {shard: (snap.epoch, seq) for shard, seq in snap.shard_seq.items()}
        pending = self.resyncing.pop(group, None)
        follow: list[Delta] = []
        if pending is None:
            return follow
        for d in sorted(pending.held, key=lambda d: (d.shard, d.seq)):
            if d.epoch != snap.epoch:
                continue
            verdict = self.check(d)
            if verdict == Verdict.APPLY.value:
                follow.append(d)
            elif verdict in (Verdict.GAP.value, Verdict.FAR_FUTURE.value):
                # Still missing deltas between the snapshot and what was held: drop the rest
                # and ask again (the caller sees the group resyncing).
                self.begin_resync(group, pending.since)
                return follow
        return follow

    def forget_group(self, group: str) -> None:
        self.streams.pop(group, None)
        self.resyncing.pop(group, None)

    def reconnect_plan(self, groups: Iterable[str]) -> tuple[list[ResumePoint], list[str]]:
        """What to ask for after a reconnect: the points to resume ``groups`` from, and the
        groups to subscribe afresh (no point held, or waiting for a snapshot)."""
        wanted = list(groups)
        points = self.resume_points(wanted)
        resumed = {p.group for p in points}
        return points, [g for g in wanted if g not in resumed]

    def resume_points(self, groups: Iterable[str]) -> list[ResumePoint]:
        """Where the client stands in every stream of ``groups`` it is not resyncing: what a
        ``Resume`` frame after a reconnect carries (a resyncing group subscribes afresh)."""
        out = []
        for group in groups:
            if group in self.resyncing:
                continue
            for shard, (epoch, seq) in sorted(self.streams.get(group, {}).items()):
                out.append(ResumePoint(group=group, shard=shard, epoch=epoch, seq=seq))
        return out


# --------------------------------------------------------------------------- NATS subscribers


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
        self.fences = Fences()

    def _fenced(self, kind: str, group: str, fence: int) -> bool:
        """Count and note a message from a replaced owner (its fence below the group's)."""
        if self.fences.admit(group, fence):
            return False
        self.stats.rejected[STALE_FENCE] = self.stats.rejected.get(STALE_FENCE, 0) + 1
        self._problem(f"{group}: {kind} of fence {fence} dropped (the group's owner since has "
                      f"fence {self.fences.highest[group]})")
        return True

    def _problem(self, text: str) -> None:
        if len(self.stats.problems) < 50:
            self.stats.problems.append(text)

    def apply_snapshot(self, snap: Snapshot) -> None:
        if self._fenced("snapshot", snap.group, snap.fence):
            return
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
            return HELD
        verdict = judge((g.epoch, g.seqs.get(d.shard, 0)), d.epoch, d.first_seq, d.seq,
                        self.max_gap)
        if not g.synced and verdict not in (Verdict.DUPLICATE, Verdict.STALE_EPOCH):
            return HELD
        return verdict.value

    def apply_delta(self, d: Delta) -> bool:
        """Apply if it continues the group; returns False when it was not applied. A rejected
        delta (far future, stale or future epoch) never becomes the group's baseline; one from a
        replaced owner (a fence below the group's) is dropped first."""
        if self._fenced("delta", d.group, d.fence):
            return False
        g = self.groups.setdefault(d.group, GroupView(d.group))
        verdict = self.judge_delta(d)
        if verdict != Verdict.APPLY.value:
            self._not_applied(g, d, verdict)
            return False
        g.seqs[d.shard] = d.seq
        g.delta_seqs[d.shard] = d.seq
        self.stats.deltas += 1
        applied = apply_entries(g.symbols, d)
        self.stats.removed += len(applied.removed)
        self.stats.trimmed += applied.trimmed
        self.stats.verified += applied.verified
        for s in applied.mismatched:
            self._mismatch(s)
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
        check = verify_checksum(s)
        if check is Check.SKIPPED:
            self.stats.trimmed += 1
        elif check is Check.OK:
            self.stats.verified += 1
        else:
            self._mismatch(s)

    def _mismatch(self, s: SymbolState) -> None:
        self.stats.checksum_mismatches += 1
        self._problem(f"{s.venue}.{s.symbol} seq {s.seq}: checksum mismatch")

    def state(self) -> dict[tuple[str, str], SymbolState]:
        """Every symbol of every synced group."""
        out: dict[tuple[str, str], SymbolState] = {}
        for g in self.groups.values():
            out.update(g.symbols)
        return out
