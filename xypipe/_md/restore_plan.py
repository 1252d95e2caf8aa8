"""What an aggregator restores, per group, from what JetStream stored and what it knows itself
(sans-I/O: ingest reads the stored snapshots and checkpoints, this decides).

* **Epochs per group** (:func:`~xypipe._md.restore_point.group_epochs`): a group continues its
  epoch and sequence when its snapshot and checkpoints agree, else it starts a new epoch
  greater than any seen for it (clients resync it by snapshot).
* **Only the owned groups** (``owned``; ``None``: every group, no ownership): other groups'
  stored state is not even passed in.
* **Groups kept** across an ownership change continue after the last sequence publish let out
  (``published``): the stored checkpoint may not have caught up with it yet.
* **Groups without a stored snapshot** (new, or their owner never snapshotted them) are replayed
  from the first tick this process routed to them (``first_tick``): one kept since then gets its
  whole state back that way, so its sequence goes on; one just acquired gets every tick of it the
  stream still holds. A group whose first tick may still be on its way to shard (none routed
  yet) is covered by replaying from just after ``routed_through``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from xypipe._md.records import Restore
from xypipe._md.restore_point import GroupEpoch, Ignored, group_epochs, plan_restore
from xypipe.contracts import Delta, Snapshot


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
            continue
        if seqs.get((group, shard), 0) < seq or epoch not in epochs.get(group, set()):
            # Stored or not yet, it went out: the sequence goes on after it. An epoch other
            # than the stored one's makes the group's epochs disagree (a new one).
            seqs[(group, shard)] = max(seq, seqs.get((group, shard), 0))
            epochs.setdefault(group, set()).add(epoch)
    bare = (owned or frozenset()) - {s.group for s in snaps}
    since = {g: seq for g in bare if (seq := known.first_tick.get(g, 0)) and seq >= first_seq}
    origin = min(since.values(), default=0)
    if bare - known.first_tick.keys() and known.routed_through:
        # Their first ticks may be on their way to shard (sent, not routed yet): those go
        # with this restore's reset, so they are replayed.
        cover = max(known.routed_through + 1, first_seq)
        origin = min(origin, cover) if origin else cover
    rebuilt = known.kept & since.keys()
    if not snaps:
        decided = group_epochs((), epochs, first_seq=0, fresh=fresh, rebuilt=rebuilt)
        if not decided and not origin:
            return RestorePlan(None)
        return RestorePlan(_restore(fresh, (), seqs, origin, decided), decided)
    point = plan_restore(snaps, seqs)
    decided = group_epochs(point.snapshots, epochs, first_seq=first_seq, fresh=fresh,
                           superseded={g.group for g in point.ignored}, rebuilt=rebuilt)
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


__all__ = ["Known", "RestorePlan", "plan_owned_restore"]
