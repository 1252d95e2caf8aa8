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

from collections.abc import Collection, Iterable, Mapping

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


@attrs.frozen
class GroupEpoch:
    """What a restore decided for one group: the epoch it goes on with and whether its delta
    sequence continues (else ``reason`` says why not)."""

    group: str
    epoch: int
    continued: bool
    reason: str = ""


def group_epochs(snapshots: Iterable[Snapshot],
                 checkpoint_epochs: Mapping[str, Collection[int]], *,
                 first_seq: int, fresh: int,
                 superseded: Collection[str] = (),
                 rebuilt: Collection[str] = (),
                 unproven: Collection[str] = ()) -> dict[str, GroupEpoch]:
    """Per group: continue its epoch, or start a new one.

    A group continues when its stored snapshot and every one of its delta checkpoints name the
    same epoch and the source stream still holds what its replay needs (``first_seq``, the
    stream's first sequence, is at most the snapshot's ``source_stream_seq + 1``; a
    ``superseded`` group replays nothing). Otherwise it gets a new epoch, greater than any seen
    for it and at least ``fresh``: clients resync it by snapshot. A group with checkpoints and
    no snapshot is in the answer too (a new epoch) unless it is ``rebuilt``: its whole state
    is replayed from where it began (a group this process built since its start and kept),
    so one epoch among its checkpoints continues. A group with neither is not in the answer
    (it gets the restore's fresh epoch when first seen). An ``unproven`` group gets a new epoch
    whatever it has stored: its stored checkpoint need not be the last sequence published.
    """
    snaps = {s.group: s for s in snapshots}
    out: dict[str, GroupEpoch] = {}
    for group in sorted(snaps.keys() | checkpoint_epochs.keys()):
        snap = snaps.get(group)
        seen = set(checkpoint_epochs.get(group, ()))
        if snap is not None:
            seen.add(snap.epoch)
        reason = ""
        if group in unproven and (snap is not None or seen):
            reason = ("taken over from an owner whose lease expired: its last checkpoints may "
                      "not have been stored")
        elif snap is None and group in rebuilt:
            if len(seen) == 1:
                out[group] = GroupEpoch(group, next(iter(seen)), True)
                continue
            reason = f"epochs disagree (checkpoints {sorted(seen)})"
        elif snap is None:
            reason = "delta checkpoints but no snapshot"
        elif set(checkpoint_epochs.get(group, ())) != {snap.epoch}:
            reason = (f"epochs disagree (snapshot {snap.epoch}, checkpoints "
                      f"{sorted(checkpoint_epochs.get(group, ()))})")
        elif (first_seq and group not in superseded
              and snap.source_stream_seq + 1 < first_seq):
            reason = (f"source stream starts at {first_seq}, replay needs "
                      f"{snap.source_stream_seq + 1}")
        if reason or snap is None:
            out[group] = GroupEpoch(group, max(fresh, max(seen, default=0) + 1), False, reason)
        else:
            out[group] = GroupEpoch(group, snap.epoch, True)
    return out


__all__ = ["GroupEpoch", "Ignored", "RestorePoint", "group_epochs", "plan_restore"]
