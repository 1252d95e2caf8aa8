"""Every stream's believed head and recent deltas, the snapshot cache, and re-anchoring (sans-I/O).

A stream is one ``(group, shard)`` of the aggregator's deltas. **No sequence is believed before
it is checked** (:mod:`xypipe._md.seqrules`, the rule the clients apply too): a delta continues
its stream, is a duplicate, or opens a gap of at most ``max_gap``; anything else (a far-future
jump, an older epoch, a newer epoch without its snapshot) is held back and counted, and the
stream is re-anchored from JetStream's record — the group's stored snapshot, the aggregator's
checkpoint — which the shell fetches when asked (:meth:`StreamBook.take_anchor_requests`) and
feeds back. What the checks did comes back as :class:`SeqEvent` values for the shell to log
(:meth:`StreamBook.take_events`).

:class:`StreamBook` knows nothing of connections: the hub (:mod:`xypipe._gateway._hub`) asks it
what changed and wakes the subscribers.
"""

from __future__ import annotations

import itertools
from collections import deque

import attrs

from xypipe._md.seqrules import DEFAULT_MAX_GAP, STALE_FENCE, Fences, Verdict, judge
from xypipe.contracts import Delta, Snapshot

_APPLY, _GAP, _DUPLICATE, _FUTURE_EPOCH = (Verdict.APPLY, Verdict.GAP, Verdict.DUPLICATE,
                                            Verdict.FUTURE_EPOCH)


@attrs.define(slots=True)
class Entry:
    seq: int
    data: bytes  # framed: tag 0x12, length, delta bytes
    delta: Delta
    recv: float
    arrival_us: int
    cum: int  # framed bytes of the stream's history up to and including this entry


class StreamHistory:
    """The last ``capacity`` deltas of one (group, shard) stream, contiguous in one epoch.

    Its head (``epoch``, ``last_seq``) only moves by the sequence rules
    (:func:`xypipe._md.seqrules.judge`): a delta that continues it, or opens a gap of at most
    ``max_gap``; or by re-anchoring from JetStream's own record (a snapshot, the aggregator's
    checkpoint). A rejected delta never becomes the head.
    """

    def __init__(self, group: str, shard: int, capacity: int) -> None:
        self.group = group
        self.shard = shard
        self.capacity = capacity
        self.epoch: int | None = None
        self.entries: deque[Entry] = deque()
        self.last_seq = 0
        self.cum = 0
        self.resets = 0
        #: The head was confirmed by a snapshot or checkpoint (not just by the first delta seen).
        self.anchored = False
        #: Sequence of the delta that started the current run unconfirmed (a gap, or the first
        #: delta seen): a checkpoint below it proves that run was never emitted.
        self.unconfirmed_from: int | None = None
        #: The head before that run (None for a run that started the stream).
        self.confirmed_seq: int | None = None
        #: Deltas of a newer epoch, held until a snapshot of that epoch arrives.
        self.held: deque[tuple[int, Entry]] = deque(maxlen=capacity)

    @property
    def first_seq(self) -> int:
        return self.entries[0].seq if self.entries else self.last_seq + 1

    def append(self, entry: Entry, epoch: int, max_gap: int = DEFAULT_MAX_GAP) -> Verdict:
        """Judge the next delta and keep it if it is believed (``APPLY`` or ``GAP``; a gap
        restarts the history and its subscribers resync). A ``FUTURE_EPOCH`` delta is held
        for :meth:`reanchor`; other rejected and duplicate deltas are dropped."""
        if epoch == self.epoch and entry.seq == self.last_seq + 1 and (
                not entry.delta.first_seq or entry.delta.first_seq == entry.seq):
            verdict = _APPLY  # the common case, without the general rule's cost
            base: tuple[int, int] | None = (epoch, self.last_seq)
        else:
            base = None if self.epoch is None else (self.epoch, self.last_seq)
            verdict = judge(base, epoch, entry.delta.first_seq, entry.seq, max_gap)
            if verdict is _FUTURE_EPOCH:
                self.held.append((epoch, entry))
            if verdict is not _APPLY and verdict is not _GAP:
                return verdict
        if base is None:
            self.unconfirmed_from, self.confirmed_seq = entry.seq, None
        elif verdict is _GAP:
            if self.unconfirmed_from is None:
                self.confirmed_seq = self.last_seq
            self.entries.clear()
            self.resets += 1
            self.unconfirmed_from = entry.seq
        self.epoch = epoch
        self.cum += len(entry.data)
        entry.cum = self.cum
        self.entries.append(entry)
        self.last_seq = entry.seq
        while len(self.entries) > self.capacity:
            self.entries.popleft()
        return verdict

    def reanchor(self, epoch: int, seq: int, max_gap: int = DEFAULT_MAX_GAP) -> None:
        """Restart the stream at ``(epoch, seq)``, a point JetStream vouches for; held deltas
        of that epoch after it are replayed by the usual rules."""
        self.entries.clear()
        self.resets += 1
        self.epoch, self.last_seq = epoch, seq
        self.anchored = True
        self.unconfirmed_from = self.confirmed_seq = None
        held = sorted((e for ep, e in self.held if ep == epoch), key=lambda e: e.seq)
        self.held.clear()
        for e in held:
            if e.seq > self.last_seq:
                self.append(e, epoch, max_gap)

    def confirm(self, seq: int) -> None:
        """JetStream holds this stream up to ``seq`` (same epoch)."""
        self.anchored = True
        if self.unconfirmed_from is not None and seq >= self.unconfirmed_from:
            self.unconfirmed_from = self.confirmed_seq = None

    def covers(self, next_seq: int) -> bool:
        """Can everything from ``next_seq`` on be sent from here? (A cursor beyond the head is
        not covered: it would wait, silent, for a sequence the stream has not reached.)"""
        return self.first_seq <= next_seq <= self.last_seq + 1

    def since(self, next_seq: int) -> list[Entry]:
        if next_seq > self.last_seq:
            return []
        start = max(0, next_seq - self.first_seq)
        return list(itertools.islice(self.entries, start, None))

    def backlog(self, next_seq: int) -> tuple[int, float | None]:
        """Bytes due from ``next_seq`` on and the receive time of the oldest of them."""
        if next_seq > self.last_seq or not self.entries:
            return 0, None
        idx = max(0, next_seq - self.first_seq)
        e = self.entries[idx]
        return self.cum - e.cum + len(e.data), e.recv


@attrs.frozen
class SnapRec:
    group: str
    version: int
    epoch: int
    shard_seq: dict[int, int]
    shards: int
    data: bytes  # framed: tag 0x1a, length, snapshot bytes
    recv: float


@attrs.define
class HubStats:
    deltas_in: int = 0
    snapshots_in: int = 0
    duplicates: int = 0
    gaps: int = 0
    epochs: int = 0
    resyncs: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    #: Messages never believed, by ``(kind, reason)``: kind ``delta`` with reason
    #: ``far_future``/``stale_epoch``/``future_epoch``, kind ``snapshot`` with ``stale_epoch``;
    #: both kinds with ``stale_fence``.
    rejected: dict[tuple[str, str], int] = attrs.field(factory=dict)
    #: Streams restarted from JetStream's record, by reason (see :class:`SeqEvent`).
    reanchors: dict[str, int] = attrs.field(factory=dict)
    #: Deltas and snapshots dropped for a fence below their group's highest, by group.
    fenced: dict[str, int] = attrs.field(factory=dict)
    #: Resume requests by outcome (:class:`~xypipe._md.seqrules.ResumeOutcome` values).
    resumes: dict[str, int] = attrs.field(factory=dict)
    #: Deltas judged ``apply``, and the others by :class:`~xypipe._md.seqrules.Verdict`
    #: value (:meth:`verdict_counts` has both).
    applied: int = 0
    verdicts: dict[str, int] = attrs.field(factory=dict)
    #: Subscriptions sent back to a snapshot, by reason: ``gap`` (the cursor is no longer in
    #: the history: a gap, a re-anchor, a connection that fell behind), ``epoch``, ``pause``
    #: (a paused group resumes), ``request`` (the client asked).
    resync_reasons: dict[str, int] = attrs.field(factory=dict)


    def verdict_counts(self) -> dict[str, int]:
        out = dict(self.verdicts)
        if self.applied:
            out[Verdict.APPLY.value] = self.applied
        return out


@attrs.frozen
class SeqEvent:
    """What the sequence checks did, for the shell to log (with a code) and count: the hub has
    no logger. ``kind`` is ``rejected`` (``count`` messages of one stream for one reason since
    the last event, the last of them described) or ``reanchored``."""

    kind: str
    group: str
    shard: int
    reason: str
    epoch: int  # the message's (rejected) or the new head's (reanchored)
    seq: int
    head_epoch: int | None  # the head before
    head_seq: int
    count: int = 1


#: Why a stream was re-anchored (``SeqEvent.reason`` for ``reanchored``).
REANCHOR_EPOCH = "epoch"  # a snapshot of a newer epoch (the aggregator restarted)
REANCHOR_SNAPSHOT_AHEAD = "snapshot_ahead"  # a snapshot beyond the head: deltas were lost
REANCHOR_SNAPSHOT = "snapshot"  # an unconfirmed head the first snapshot does not bridge
REANCHOR_CHECKPOINT_AHEAD = "checkpoint_ahead"  # the aggregator is beyond the gap bound
REANCHOR_CHECKPOINT_BEHIND = "checkpoint_behind"  # the head was never emitted (forged gap)


class StreamBook:
    """The streams' heads and histories and the group snapshots, as far as they are believed."""

    def __init__(self, stats: HubStats, *, history: int = 256, max_gap: int = DEFAULT_MAX_GAP,
                 anchor_interval: float = 1.0) -> None:
        self.stats = stats
        self.history_capacity = history
        self.max_gap = max_gap
        #: At most one JetStream look-up, and one log line per reason, per stream this often.
        self.anchor_interval = anchor_interval
        self._anchor_asked: dict[tuple[str, int], float] = {}
        self._anchor_due: dict[tuple[str, int], None] = {}
        self._pending: dict[tuple[str, int, str], tuple[int, SeqEvent]] = {}
        self._logged: dict[tuple[str, int, str], float] = {}
        self._events: list[SeqEvent] = []
        self.streams: dict[tuple[str, int], StreamHistory] = {}
        self.group_streams: dict[str, list[StreamHistory]] = {}
        self.snapshots: dict[str, SnapRec] = {}
        #: The highest fence per group: messages of a replaced owner are dropped first.
        self.fences = Fences()
        #: Moves whenever what a frame may hold changes (a delta kept, a snapshot cached, a
        #: stream re-anchored): frames built at another generation are stale.
        self.generation = 0
        self._reanchored: set[str] = set()

    def add_delta(self, d: Delta, data: bytes, now: float) -> bool:
        """Judge a delta (already checked against its subject); ``data`` is it framed for a
        ``ServerFrame``. True when it was kept: the group's subscribers have something due."""
        self.stats.deltas_in += 1
        if self._fenced(d.group, d.shard, "delta", d.fence, d.epoch, d.seq):
            return False
        key = (d.group, d.shard)
        hist = self.streams.get(key)
        if hist is None:
            hist = self._new_stream(d.group, d.shard, now)
        arrival = min((s.ts_arrival_us for s in d.symbols if s.ts_arrival_us), default=0)
        entry = Entry(d.seq, data, d, now, arrival, 0)
        head_epoch, head_seq = hist.epoch, hist.last_seq
        verdict = hist.append(entry, d.epoch, self.max_gap)
        if verdict is _APPLY:
            self.stats.applied += 1
        else:
            self.stats.verdicts[verdict.value] = self.stats.verdicts.get(verdict.value, 0) + 1
            if verdict is _DUPLICATE:
                self.stats.duplicates += 1
                return False
            if verdict is not _GAP:
                self._reject(d.group, d.shard, "delta", verdict.value, d.epoch, d.seq,
                             (head_epoch, head_seq))
                # A far-future delta may mean this gateway lost more than the bound (the
                # checkpoint says so); a future epoch needs its snapshot.
                self._ask_anchor(key)
                return False
            self.stats.gaps += 1
            self._ask_anchor(key)  # believed, but checked against the checkpoint
        self.generation += 1
        return True

    def _new_stream(self, group: str, shard: int, now: float) -> StreamHistory:
        hist = self.streams[(group, shard)] = StreamHistory(group, shard,
                                                            self.history_capacity)
        self.generation += 1  # a stream the group's frames did not know of
        self.group_streams.setdefault(group, []).append(hist)
        snap = self.snapshots.get(group)
        if snap is not None:
            # The group's snapshot is the baseline of a stream first seen after it.
            hist.epoch, hist.last_seq = snap.epoch, snap.shard_seq.get(shard, 0)
            hist.anchored = True
        else:
            self._ask_anchor((group, shard))
        return hist

    # -- re-anchoring from JetStream ------------------------------------------------------------

    def _ask_anchor(self, key: tuple[str, int]) -> None:
        self._anchor_due.setdefault(key, None)

    def take_anchor_requests(self, now: float) -> list[tuple[str, int]]:
        """Streams whose JetStream record (the group's last snapshot, the stream's last
        checkpoint) the shell should fetch and feed back; at most one per stream per
        ``anchor_interval`` (a request made sooner waits for its turn, it is not dropped)."""
        out = []
        for key in list(self._anchor_due):
            asked = self._anchor_asked.get(key)
            if asked is None or now - asked >= self.anchor_interval:
                self._anchor_asked[key] = now
                del self._anchor_due[key]
                out.append(key)
        return out

    def on_checkpoint(self, group: str, shard: int, epoch: int, seq: int) -> None:
        """The aggregator's stored checkpoint of ``(group, shard)``: the last sequence it
        emitted (``xy.agg.seq.{group}.{shard}``, stored before the delta is published)."""
        hist = self.streams.get((group, shard))
        if hist is None or hist.epoch is None:
            return
        if epoch != hist.epoch:
            if (epoch < hist.epoch and hist.unconfirmed_from is not None
                    and hist.confirmed_seq is not None):
                # The aggregator has emitted nothing in this epoch beyond the point a
                # snapshot vouched for: the unconfirmed run was never emitted.
                self._reanchor(hist, hist.epoch, hist.confirmed_seq, REANCHOR_CHECKPOINT_BEHIND)
            return  # a newer epoch is re-anchored by its snapshot
        if seq > hist.last_seq + self.max_gap:
            self._reanchor(hist, epoch, seq, REANCHOR_CHECKPOINT_AHEAD)
        elif hist.unconfirmed_from is not None and seq < hist.unconfirmed_from:
            self._reanchor(hist, epoch, max(seq, hist.confirmed_seq or 0),
                           REANCHOR_CHECKPOINT_BEHIND)
        else:
            hist.confirm(seq)

    def _reanchor(self, hist: StreamHistory, epoch: int, seq: int, reason: str) -> None:
        self._events.append(SeqEvent("reanchored", hist.group, hist.shard, reason, epoch, seq,
                                     hist.epoch, hist.last_seq))
        self.stats.reanchors[reason] = self.stats.reanchors.get(reason, 0) + 1
        if reason == REANCHOR_EPOCH:
            self.stats.epochs += 1
        hist.reanchor(epoch, seq, self.max_gap)
        self.generation += 1
        self._reanchored.add(hist.group)

    def take_reanchored(self) -> set[str]:
        """Groups with a stream re-anchored since the last call (their subscribers resync)."""
        out, self._reanchored = self._reanchored, set()
        return out

    def _reject(self, group: str, shard: int, kind: str, reason: str, epoch: int, seq: int,
                head: tuple[int | None, int]) -> None:
        self.stats.rejected[(kind, reason)] = self.stats.rejected.get((kind, reason), 0) + 1
        key = (group, shard, f"{kind}:{reason}")
        count = self._pending[key][0] + 1 if key in self._pending else 1
        self._pending[key] = (count, SeqEvent("rejected", group, shard, f"{kind}:{reason}",
                                              epoch, seq, *head))

    def _fenced(self, group: str, shard: int, kind: str, fence: int, epoch: int, seq: int
                ) -> bool:
        """Drop (count, note for the log) a message whose fence is below its group's highest:
        its aggregator has lost the group's lease to another since."""
        if self.fences.admit(group, fence):
            return False
        self.stats.fenced[group] = self.stats.fenced.get(group, 0) + 1
        # The head of the event is the fence it lost to (epoch: the highest fence, seq: its own).
        self._reject(group, shard, kind, STALE_FENCE, epoch, seq,
                     (self.fences.highest[group], fence))
        return True

    def take_events(self, now: float) -> list[SeqEvent]:
        """What happened since the last call: every re-anchor, and per stream and reason the
        rejections (one event with their count, at most once per ``anchor_interval``)."""
        out, self._events = self._events, []
        for key, (count, ev) in list(self._pending.items()):
            last = self._logged.get(key)
            if last is None or now - last >= self.anchor_interval:
                self._logged[key] = now
                del self._pending[key]
                out.append(attrs.evolve(ev, count=count))
        return out

    # -- snapshots ------------------------------------------------------------------------------

    def add_snapshot(self, s: Snapshot, data: bytes, now: float) -> bool:
        """A group snapshot (already checked against its subject), ``data`` framed for a
        ``ServerFrame``; it anchors the group's streams. True when it is the group's newest:
        cached for the subscribers waiting for one."""
        self.stats.snapshots_in += 1
        if self._fenced(s.group, 0, "snapshot", s.fence, s.epoch, s.version):
            return False
        old = self.snapshots.get(s.group)
        streams = self.group_streams.get(s.group, [])
        newest = max([h.epoch for h in streams if h.anchored and h.epoch is not None]
                     + ([old.epoch] if old is not None else []), default=None)
        if newest is not None and s.epoch < newest:
            # From an aggregator incarnation already replaced (a stale stored copy, a replay).
            head = (streams[0].epoch, streams[0].last_seq) if streams else (newest, 0)
            shard = streams[0].shard if streams else 0
            self._reject(s.group, shard, "snapshot", "stale_epoch", s.epoch, s.version, head)
            return False
        self._anchor_streams(s, streams)
        if old is not None and old.epoch == s.epoch and old.version >= s.version:
            return False  # the same or an older one (e.g. a direct get racing the live feed)
        self.generation += 1
        self.snapshots[s.group] = SnapRec(
            s.group, s.version, s.epoch, dict(s.shard_seq), s.shards, data, now,
        )
        return True

    def _anchor_streams(self, s: Snapshot, streams: list[StreamHistory]) -> None:
        """A snapshot is JetStream's record of the group: streams behind it, in an older
        epoch, or started unconfirmed where it cannot bridge, restart at its sequences."""
        for hist in streams:
            if hist.epoch is None:
                continue
            seq = s.shard_seq.get(hist.shard, 0)
            if s.epoch != hist.epoch:
                self._reanchor(hist, s.epoch, seq, REANCHOR_EPOCH)
            elif seq > hist.last_seq:
                self._reanchor(hist, s.epoch, seq, REANCHOR_SNAPSHOT_AHEAD)
            elif (not hist.anchored and hist.unconfirmed_from is not None
                  and hist.unconfirmed_from > seq + 1 + self.max_gap):
                # The first delta seen is too far beyond the group's record to be believed
                # (a stored snapshot a little behind it is normal: the checkpoint settles it).
                self._reanchor(hist, s.epoch, seq, REANCHOR_SNAPSHOT)
            else:
                hist.confirm(seq)
