"""What an aggregator restores, per group, from what JetStream stored and what it knows itself
(sans-I/O: ingest reads the stored snapshots and checkpoints, this decides).

* **Epochs per group** (:func:`~xypipe._md.restore_point.group_epochs`): a group continues its
  epoch and sequence when its snapshot and checkpoints agree, else it starts a new epoch
  greater than any seen for it (clients resync it by snapshot).
* **Only the owned groups** (``owned``; ``None``: every group, no ownership): other groups'
  stored state is not even passed in.
* **Groups kept** across an ownership change continue after the last sequence publish let out
  (``published``): the stored checkpoint may not have caught up with it yet. So does a group
  this process lost and got back (its lease expired while NATS was away) in the same epoch.
* **Groups taken over from an expired lease** of another member (``unproven``) start a new
  epoch: the dead owner's last deltas may have gone out while its checkpoints were not stored
  (the checkpoint stream electing a leader), and reusing their sequence numbers would make
  clients drop the new owner's deltas as repeats.
* **Groups without a stored snapshot** (new, or their owner never snapshotted them) are replayed
  from the first tick this process routed to them (``first_tick``) when that is the group's
  first in the stream: the group was kept since the last restore (restored whole when it came),
  or this process read the stream from its first message (``seen_from``); one whose first tick
  may still be on its way to shard (none routed yet) is covered by replaying from just after
  ``routed_through``. One acquired by a process that started reading later is replayed from the
  stream's first message (where its ticks begin is known to nobody here) if it was published
  (clients' books hold all of it), or if the history this process did not read is short
  (``UNSEEN_REPLAY_MAX``); a long history is not replayed for a group nobody published.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from xypipe._md.records import Restore
from xypipe._md.restore_point import GroupEpoch, Ignored, group_epochs, plan_restore
from xypipe.contracts import Delta, Snapshot

#: The most stream messages a restore replays for groups nobody published that a late-started
#: process acquired without a snapshot (a few seconds of replay): past it, such a group starts
#: from the first tick this process routed to it.
UNSEEN_REPLAY_MAX = 100_000


@attrs.frozen
class Known:
    """What the aggregator process knows itself, besides what JetStream stored."""

    #: The groups owned before this restore and still owned.
    kept: frozenset[str] = frozenset()
    #: (group, shard) -> (epoch, seq) of the last delta publish let out.
    published: Mapping[tuple[str, int], tuple[int, int]] = attrs.field(factory=dict)
    #: Group -> stream sequence of the first tick routed to it.
    first_tick: Mapping[str, int] = attrs.field(factory=dict)
    #: Every source message up to here has been routed (0: unknown).
    routed_through: int = 0
    #: Where this process started reading the stream (0: not yet): a process that started
    #: after the stream's first message knows no group's first tick for sure.
    seen_from: int = 0
    #: Groups taken over from another member whose lease expired (it died, or lost NATS):
    #: what it published last is not known to have been checkpointed, so they start a new
    #: epoch and clients resync them by snapshot.
    unproven: frozenset[str] = frozenset()


@attrs.frozen
class RestorePlan:
    #: ``None``: nothing to restore (no stored state, nothing to replay).
    restore: Restore | None
    decided: dict[str, GroupEpoch] = attrs.field(factory=dict)
    ignored: tuple[Ignored, ...] = ()


def plan_owned_restore(snapshots: Iterable[Snapshot], checkpoints: Iterable[Delta], *,
                       owned: frozenset[str] | None, known: Known, first_seq: int,
                       fresh: int) -> RestorePlan:
    """The restore of ``owned`` from their stored ``snapshots`` and delta ``checkpoints``.

    ``first_seq`` is the source stream's first sequence (0: empty), ``fresh`` the epoch a group
    starts if it cannot continue (the caller's clock). Raises nothing: every stored item is
    already decoded.
    """
    snaps = list(snapshots)
    seqs: dict[tuple[str, int], int] = {}
    epochs: dict[str, set[int]] = {}
    for d in checkpoints:
        seqs[(d.group, d.shard)] = d.seq
        epochs.setdefault(d.group, set()).add(d.epoch)
    for (group, shard), (epoch, seq) in known.published.items():
        if group not in known.kept:
            if owned is None or group not in owned or group in known.unproven:
                continue
            # Re-acquired (this process held it before, lost its lease — NATS away — and got
            # it back, nobody else in between): what it published itself counts, in the
            # stored epoch only (another epoch stored since is someone else's, newer).
            if epochs.get(group) != {epoch}:
                continue
        if seqs.get((group, shard), 0) < seq or epoch not in epochs.get(group, set()):
            # Stored or not yet, it went out: the sequence goes on after it. An epoch other
            # than the stored one's makes the group's epochs disagree (a new one).
            seqs[(group, shard)] = max(seq, seqs.get((group, shard), 0))
            epochs.setdefault(group, set()).add(epoch)
    bare = (owned or frozenset()) - {s.group for s in snaps}
    # A group acquired (not kept) by a process that started reading after the stream's first
    # message: the first tick this process routed to it need not be the group's first (the
    # ones before went by while the process was not reading, or were skipped as another's), so
    # every tick the stream holds is replayed. The first tick routed here is the group's first
    # when the group was kept (restored whole when it came), or when this process has read the
    # stream from its first message.
    whole = 0 < known.seen_from <= max(first_seq, 1)
    unknown: frozenset[str] = frozenset()
    if not whole:
        acquired = bare - known.kept
        # Published (checkpoints): clients hold state built from all of it, always replayed.
        # Never published (held a moment by a member that died or handed it on): replayed
        # when the history this process did not read is short, else from what it routed.
        unseen = (known.seen_from or first_seq) - first_seq
        unknown = acquired if unseen <= UNSEEN_REPLAY_MAX else acquired & frozenset(epochs)
    rest = bare - unknown
    since = {g: seq for g in rest if (seq := known.first_tick.get(g, 0)) and seq >= first_seq}
    origin = min(since.values(), default=0)
    if rest - known.first_tick.keys() and known.routed_through:
        # Their first ticks may be on their way to shard (sent, not routed yet): those go
        # with this restore's reset, so they are replayed.
        cover = max(known.routed_through + 1, first_seq)
        origin = min(origin, cover) if origin else cover
    if unknown and first_seq:
        origin = first_seq
    rebuilt = known.kept & since.keys()
    if not snaps:
        decided = group_epochs((), epochs, first_seq=0, fresh=fresh, rebuilt=rebuilt,
                               unproven=known.unproven)
        if not decided and not origin:
            return RestorePlan(None)
        return RestorePlan(_restore(fresh, (), seqs, origin, decided), decided)
    point = plan_restore(snaps, seqs)
    decided = group_epochs(point.snapshots, epochs, first_seq=first_seq, fresh=fresh,
                           superseded={g.group for g in point.ignored}, rebuilt=rebuilt,
                           unproven=known.unproven)
    replay_from = min(point.replay_from, origin) if origin else point.replay_from
    if first_seq > replay_from:
        replay_from = first_seq
    return RestorePlan(_restore(fresh, point.snapshots, seqs, replay_from, decided), decided,
                       point.ignored)


def _restore(fresh: int, snapshots: tuple[Snapshot, ...], seqs: dict[tuple[str, int], int],
             replay_from: int, decided: dict[str, GroupEpoch]) -> Restore:
    continued = frozenset(g for g, e in decided.items() if e.continued)
    return Restore(epoch=fresh, snapshots=snapshots, checkpoints=seqs, replay_from=replay_from,
                   continued=len(continued) == len(decided),
                   epochs={g: e.epoch for g, e in decided.items()}, continued_groups=continued)


__all__ = ["UNSEEN_REPLAY_MAX", "Known", "RestorePlan", "plan_owned_restore"]
