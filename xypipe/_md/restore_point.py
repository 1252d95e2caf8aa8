"""Where a restarted aggregator replays from: the restore point, computed from the stored
snapshots without letting a gone group drag it back.

Replay starts after the *oldest* stored group snapshot (``min(source_stream_seq) + 1``), since
every group must get back what happened after its own snapshot. A group whose stored snapshot
is old because the group is gone — it is empty, or every symbol it holds is held by a fresher
snapshot of another group (symbols move when their contract names another group) — has nothing
to get back, *provided* it emitted no delta after its snapshot (no checkpoint beyond its
``shard_seq``: then its state at the crash was its snapshot minus what moved away). Such a
snapshot is *superseded*: it is left out of the minimum and handed on emptied (its stale copies
of moved symbols must not overwrite the fresh ones), so the group carries on as an empty group
and its next snapshot is current.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from xypipe.contracts import Snapshot


@attrs.frozen
class Ignored:
    """A stored snapshot left out of the restore point, and why."""

    group: str
    source_stream_seq: int
    reason: str


@attrs.frozen
class RestorePoint:
    #: The snapshots to restore from (superseded ones emptied).
    snapshots: tuple[Snapshot, ...]
    #: First source stream sequence to replay.
    replay_from: int
    #: Superseded snapshots older than the restore point (each would have dragged it back).
    ignored: tuple[Ignored, ...] = ()


def _key(venue: str, symbol: str) -> str:
    return f"{venue}.{symbol}"


def plan_restore(snapshots: Iterable[Snapshot],
                 checkpoints: Mapping[tuple[str, int], int]) -> RestorePoint:
    """The restore point of a non-empty set of stored group snapshots."""
    snaps = list(snapshots)
    if not snaps:
        raise ValueError("plan_restore: expected at least one stored snapshot")
    # Per symbol: the freshest snapshot holding it (source seq, group).
    freshest: dict[str, tuple[int, str]] = {}
    for s in snaps:
        for x in s.symbols:
            k = _key(x.venue, x.symbol)
            found = freshest.get(k)
            if found is None or s.source_stream_seq > found[0]:
                freshest[k] = (s.source_stream_seq, s.group)

    def superseded(s: Snapshot) -> str | None:
        for (group, shard), seq in checkpoints.items():
            if group == s.group and seq > s.shard_seq.get(shard, 0):
                return None  # it emitted deltas after this snapshot: it has things to get back
        if not s.symbols:
            return "empty"
        for x in s.symbols:
            seq, group = freshest[_key(x.venue, x.symbol)]
            if group == s.group or seq <= s.source_stream_seq:
                return None
        return f"all {len(s.symbols)} of its symbols are held by fresher snapshots of other groups"

    why_of = [superseded(s) for s in snaps]
    kept = [s for s, why in zip(snaps, why_of, strict=True) if why is None]
    if kept:
        replay_from = min(s.source_stream_seq for s in kept) + 1
    else:
        replay_from = max(s.source_stream_seq for s in snaps) + 1
    out: list[Snapshot] = []
    ignored: list[Ignored] = []
    for s, why in zip(snaps, why_of, strict=True):
        if why is None:
            out.append(s)
            continue
        if s.symbols:
            emptied = Snapshot()
            emptied.CopyFrom(s)
            del emptied.symbols[:]
            del emptied.top[:]
            s = emptied
        out.append(s)
        if s.source_stream_seq + 1 < replay_from:
            ignored.append(Ignored(s.group, s.source_stream_seq, why))
    return RestorePoint(tuple(out), replay_from, tuple(ignored))


__all__ = ["Ignored", "RestorePoint", "plan_restore"]
