"""The sequence rules every consumer of deltas applies: is this delta believable?

One definition for the gateway's hub, the Python client (:mod:`xypipe._md.client`) and the
browser worker (``ui-static/xy-core.js``, ``judgeDelta``); both languages are tested against the
same scenario vectors (``proto/scenarios/sequence.json``). See ``docs/protocol.md``, "Sequence
rules".

A stream ``(group, shard)`` has a baseline ``(epoch, last)``: the last sequence its consumer
holds. A delta ``(epoch, first_seq..seq)`` (``first_seq`` 0 means ``seq``) is judged:

=================  =========================================================  ==============
verdict            when                                                        believed?
=================  =========================================================  ==============
``APPLY``          no baseline yet, or same epoch and ``first = last + 1``     yes
``DUPLICATE``      same epoch, ``seq <= last``                                 dropped
``GAP``            same epoch, ``last + 1 < first <= last + 1 + max_gap``,     yes, resync
                   or an overlap (``first <= last < seq``)
``FAR_FUTURE``     same epoch, ``first > last + 1 + max_gap``                  no: rejected
``STALE_EPOCH``    ``epoch < baseline epoch``                                  no: rejected
``FUTURE_EPOCH``   ``epoch > baseline epoch`` (no snapshot of it yet)          no: held
=================  =========================================================  ==============

Epochs are the aggregator's start time in microseconds, so a newer incarnation has a larger
epoch. A rejected or held delta never becomes the baseline: the consumer re-anchors from a
snapshot (or, in the gateway, the aggregator's stored checkpoint), never from it.

Before any of that, the **fence** (:class:`Fences`): a delta or snapshot whose ``fence`` is
below the highest seen for its group comes from an aggregator that has since lost the group's
lease to another (``STALE_FENCE``: dropped, counted); fence 0 (no lease) is always admitted.
"""

from __future__ import annotations

import enum

#: The largest jump a delta may make past its stream's baseline and still be believed as a gap
#: (deltas lost in transit). 256 deltas are ~8 s of one stream at 30 deltas/s; a consumer that
#: lost more re-anchors from JetStream's own record (snapshot, checkpoint) instead.
DEFAULT_MAX_GAP = 256


#: The verdict on a delta or snapshot of an owner already replaced (see :class:`Fences`).
STALE_FENCE = "stale_fence"


class Fences:
    """Per group, the highest fence seen: the lease revision of the aggregator that owned the
    group when it published (docs/architecture.md, "Aggregators that split the groups").
    Fences only grow, so a message with a lower one is from a replaced owner — late in flight,
    or a zombie that has not noticed it lost its lease yet."""

    def __init__(self) -> None:
        self.highest: dict[str, int] = {}

    def admit(self, group: str, fence: int) -> bool:
        """False when ``fence`` is below the group's highest (0: unfenced, always True)."""
        if fence == 0:
            return True
        top = self.highest.get(group, 0)
        if fence < top:
            return False
        self.highest[group] = fence
        return True


class Verdict(enum.Enum):
    APPLY = "apply"
    DUPLICATE = "duplicate"
    GAP = "gap"
    FAR_FUTURE = "far_future"
    STALE_EPOCH = "stale_epoch"
    FUTURE_EPOCH = "future_epoch"

    @property
    def rejected(self) -> bool:
        """Never believed: counted by reason, the baseline stays where it was."""
        return self in (Verdict.FAR_FUTURE, Verdict.STALE_EPOCH, Verdict.FUTURE_EPOCH)


def judge(baseline: tuple[int, int] | None, epoch: int, first_seq: int, seq: int,
          max_gap: int = DEFAULT_MAX_GAP) -> Verdict:
    """Judge a delta ``(epoch, first_seq..seq)`` against the stream's ``(epoch, last)``."""
    if baseline is None:
        return Verdict.APPLY
    base_epoch, last = baseline
    if epoch < base_epoch:
        return Verdict.STALE_EPOCH
    if epoch > base_epoch:
        return Verdict.FUTURE_EPOCH
    first = first_seq or seq
    if seq <= last:
        return Verdict.DUPLICATE
    if first == last + 1:
        return Verdict.APPLY
    if first > last + 1 + max_gap:
        return Verdict.FAR_FUTURE
    return Verdict.GAP


class ResumeOutcome(enum.Enum):
    """What the gateway does with a client's resume point for one group."""

    BRIDGED = "bridged"  # the history holds everything after the points: replay it
    NO_HISTORY = "no_history"  # the gateway holds no delta of the group (e.g. it restarted)
    MIXED_EPOCHS = "mixed_epochs"  # the points disagree on the epoch
    OTHER_EPOCH = "other_epoch"  # a point is in another epoch than the stream
    AHEAD = "ahead"  # a point claims a sequence the stream has not reached
    TOO_OLD = "too_old"  # the history no longer reaches back to a point
    UNKNOWN_SHARD = "unknown_shard"  # a point names a shard the gateway has not seen
    MISSING_SHARD = "missing_shard"  # a stream of the group has no point


def judge_resume(stream: tuple[int, int, int] | None, point: tuple[int, int] | None
                 ) -> ResumeOutcome:
    """One stream's ``(epoch, first_held, last)`` against the client's ``(epoch, seq)``."""
    if stream is None:
        return ResumeOutcome.UNKNOWN_SHARD
    if point is None:
        return ResumeOutcome.MISSING_SHARD
    epoch, first_held, last = stream
    p_epoch, p_seq = point
    if p_epoch != epoch:
        return ResumeOutcome.OTHER_EPOCH
    if p_seq > last:
        return ResumeOutcome.AHEAD
    if p_seq + 1 < first_held:
        return ResumeOutcome.TOO_OLD
    return ResumeOutcome.BRIDGED
