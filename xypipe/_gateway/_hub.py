"""The fan-out core: delta history per stream, snapshot cache, and one frame per connection.

Sans-I/O: fed the aggregator's messages (raw bytes) and ``now``; asked for the next frame of a
connection. No sockets, no tasks, no clock.

**Frame each delta once.** A ``ServerFrame``'s ``repeated Delta deltas = 2`` is, on the wire, just
``tag 0x12, varint length, delta bytes`` per element, so each delta is prefixed once when it
arrives and a connection's frame is the concatenation of the prefixed deltas it is due (plus a
snapshot, ``tag 0x1a``, and ``ts_send_us``). Connections due the same ranges share the same
WebSocket frame bytes (server frames are unmasked), built once per ingest generation.

**The per-connection send queue is a set of cursors.** Every stream (group, shard) keeps a short
history of its deltas; a connection holds, per stream, the next sequence it must be sent. What a
connection has not been sent yet (its queue) is the history after its cursors, so queuing a delta
for a thousand connections costs nothing, and the queue's bytes and age are read off the history.
A connection whose cursor falls off the history (or that meets a gap or a new epoch) resyncs from a
snapshot: it waits for a snapshot whose ``shard_seq`` the history can bridge, then gets that
snapshot followed by exactly the deltas after it — no gap, no duplicate.

**No sequence is believed before it is checked** (:mod:`xypipe._md.seqrules`, the rule the
clients apply too): a delta continues its stream, is a duplicate, or opens a gap of at most
``max_gap``; anything else (a far-future jump, an older epoch, a newer epoch without its
snapshot) is held back and counted, and the stream is re-anchored from JetStream's record — the
group's stored snapshot, the aggregator's checkpoint — which the shell fetches when the hub asks
(:meth:`Hub.take_anchor_requests`) and feeds back (:meth:`Hub.on_snapshot`,
:meth:`Hub.on_checkpoint`). What the checks did comes back as :class:`SeqEvent` values for the
shell to log (:meth:`Hub.take_events`).

**Per-connection degradation** (the level comes from :class:`~xypipe._gateway._session.Session`,
what it does from the gateway's :class:`~xypipe._levels.LevelPolicy`, the table the aggregator
reads too): L1 merges each stream's due deltas into one (``merge_deltas``, the aggregator's own
rule, so checksums and trades stay valid) and the connection is flushed less often; L2 also
trims depth beyond ``trim_depth`` levels a side (``trimmed`` set); L3 pauses the connection's
low-priority groups (they resync from a snapshot when the level comes down).
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
from google.protobuf.internal import encoder, wire_format
from google.protobuf.message import DecodeError
from wsproto.frame_protocol import FrameProtocol

from xypipe._degrade import Level, Pressure
from xypipe._levels import LevelPolicy
from xypipe._md.conflation import merge_deltas
from xypipe._md.seqrules import DEFAULT_MAX_GAP, ResumeOutcome, Verdict, judge, judge_resume
from xypipe._md.wire import field_tag
from xypipe.contracts import Delta, ResumePoint, Snapshot, SymbolState

_APPLY, _GAP, _DUPLICATE, _FUTURE_EPOCH = (Verdict.APPLY, Verdict.GAP, Verdict.DUPLICATE,
                                            Verdict.FUTURE_EPOCH)

DELTAS_TAG = field_tag(2)  # ServerFrame.deltas
SNAPSHOTS_TAG = field_tag(3)  # ServerFrame.snapshots
TS_SEND_TAG = bytes(encoder.TagBytes(8, wire_format.WIRETYPE_VARINT))  # ServerFrame.ts_send_us
# protobuf's own varint writer (private name, public behaviour since protobuf 3).
_varint = encoder._VarintBytes  # type: ignore[attr-defined]

# wsproto serialises the frames (no extension is ever negotiated, so a frame is the same bytes
# for every connection); one instance serves all, as only complete messages go through it.
_FRAMER = FrameProtocol(client=False, extensions=[])


def ws_binary(payload: bytes) -> bytes:
    """One complete binary WebSocket message, server to client (unmasked)."""
    return bytes(_FRAMER.send_data(payload, fin=True))


def framed(tag: bytes, payload: bytes) -> bytes:
    return tag + bytes(_varint(len(payload))) + payload


class BadMessage(ValueError):
    """An aggregator message the gateway cannot use (counted and logged by the stage)."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"{subject}: {reason}")
        self.subject = subject
        self.reason = reason


# --------------------------------------------------------------------------- history


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


# --------------------------------------------------------------------------- subscriptions


class SubState(enum.Enum):
    LIVE = "live"
    SYNC = "sync"  # waiting for a snapshot the history can bridge
    PAUSED = "paused"


@attrs.define(eq=False)
class GroupSub:
    group: str
    shards: frozenset[int]  # empty = every shard
    state: SubState = SubState.SYNC
    epoch: int = 0
    cursors: dict[int, int] = attrs.field(factory=dict)
    #: Snapshot versions not newer than this cannot be used (they were not bridgeable);
    #: versions count within an epoch, so this holds only for snapshots of ``min_epoch``.
    min_version: int = -1
    min_epoch: int = -1
    resyncs: int = 0

    def can_use(self, snap: SnapRec) -> bool:
        return snap.epoch != self.min_epoch or snap.version > self.min_version

    def skip_up_to(self, snap: SnapRec | None) -> None:
        if snap is None:
            self.min_version = self.min_epoch = -1
        else:
            self.min_version, self.min_epoch = snap.version, snap.epoch

    def wants(self, shard: int) -> bool:
        return not self.shards or shard in self.shards


@attrs.define(eq=False)
class Outbox:
    """The data-plane side of one connection: what it is subscribed to and what it is due."""

    conn_id: int
    subs: dict[str, GroupSub] = attrs.field(factory=dict)
    control: deque[bytes] = attrs.field(factory=deque)  # ws frames, sent first
    control_bytes: int = 0
    level: Level = Level.L0
    #: Bytes handed to the socket and not yet accepted by it, and since when.
    inflight_bytes: int = 0
    inflight_since: float | None = None
    #: Called when there is something new for this connection (the shell wakes its writer).
    wake: Any = None
    frames: int = 0
    deltas: int = 0
    bytes_out: int = 0

    def push_control(self, ws_frame: bytes) -> None:
        self.control.append(ws_frame)
        self.control_bytes += len(ws_frame)
        self.notify()

    def notify(self) -> None:
        if self.wake is not None:
            self.wake()


@attrs.frozen
class Built:
    """One data frame for one connection."""

    data: bytes  # the complete WebSocket frame
    deltas: int
    snapshots: int
    oldest_arrival_us: int  # 0 when unknown


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
    #: ``far_future``/``stale_epoch``/``future_epoch``, kind ``snapshot`` with ``stale_epoch``.
    rejected: dict[tuple[str, str], int] = attrs.field(factory=dict)
    #: Streams restarted from JetStream's record, by reason (see :class:`SeqEvent`).
    reanchors: dict[str, int] = attrs.field(factory=dict)
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


class Hub:
    """Delta history, snapshot cache, subscriptions and frame building for one gateway."""

    def __init__(self, *, history: int = 256, tick_prefix: str = "xy.md.tick",
                 snapshot_prefix: str = "xy.md.snapshot", max_gap: int = DEFAULT_MAX_GAP,
                 anchor_interval: float = 1.0, snapshot_request_interval: float = 0.25,
                 levels: LevelPolicy | None = None) -> None:
        self.history_capacity = history
        #: What each degradation level does to a connection's frames.
        self.levels = levels or LevelPolicy()
        self.max_gap = max_gap
        #: At most one JetStream look-up, and one log line per reason, per stream this often.
        self.anchor_interval = anchor_interval
        self._anchor_asked: dict[tuple[str, int], float] = {}
        self._anchor_due: dict[tuple[str, int], None] = {}
        #: Groups with a subscriber waiting for a snapshot the cache cannot give (none yet,
        #: or one the history cannot bridge after a gap or a restart): the shell asks the
        #: aggregator for a fresh one at most every ``snapshot_request_interval`` per group,
        #: rather than leaving the subscriber to wait for the next scheduled round (2-5 s).
        self.snapshot_request_interval = snapshot_request_interval
        self._snap_wanted: set[str] = set()
        self._snap_asked: dict[str, float] = {}
        self._pending: dict[tuple[str, int, str], tuple[int, SeqEvent]] = {}
        self._logged: dict[tuple[str, int, str], float] = {}
        self._events: list[SeqEvent] = []
        self.tick_prefix = tick_prefix + "."
        self.snapshot_prefix = snapshot_prefix + "."
        self.streams: dict[tuple[str, int], StreamHistory] = {}
        self.group_streams: dict[str, list[StreamHistory]] = {}
        self.snapshots: dict[str, SnapRec] = {}
        self.subscribers: dict[str, set[Outbox]] = {}
        self.stats = HubStats()
        self._generation = 0
        self._cache: dict[tuple[Any, ...], Built] = {}
        self._cache_gen = -1

    # -- ingest -------------------------------------------------------------------------------

    def classify(self, subject: str) -> str:
        if subject.startswith(self.tick_prefix):
            return "delta"
        if subject.startswith(self.snapshot_prefix):
            return "snapshot"
        return "other"

    def on_delta(self, subject: str, raw: bytes, now: float) -> set[Outbox]:
        """A delta from the aggregator; returns the connections that now have something due."""
        d = Delta()
        try:
            d.ParseFromString(raw)
        except DecodeError as exc:
            raise BadMessage(subject, f"not a Delta ({exc})") from None
        if not d.group or d.seq <= 0:
            raise BadMessage(subject, f"delta without group or seq (group={d.group!r}, "
                                      f"seq={d.seq})")
        if d.first_seq and d.first_seq != d.seq:
            raise BadMessage(subject, "merged delta (first_seq set): the gateway expects the "
                                      "aggregator's own, one-window deltas")
        where = subject[len(self.tick_prefix):]
        if where != d.group and where != f"{d.group}.{d.shard}":
            # Permissions are per subject: a delta may only speak for the stream it is on.
            raise BadMessage(subject, f"delta of group {d.group!r} shard {d.shard} on another "
                                      f"stream's subject (expected {self.tick_prefix}{d.group} "
                                      f"or {self.tick_prefix}{d.group}.{d.shard})")
        self.stats.deltas_in += 1
        key = (d.group, d.shard)
        hist = self.streams.get(key)
        if hist is None:
            hist = self._new_stream(d.group, d.shard, now)
        arrival = min((s.ts_arrival_us for s in d.symbols if s.ts_arrival_us), default=0)
        entry = Entry(d.seq, framed(DELTAS_TAG, raw), d, now, arrival, 0)
        head_epoch, head_seq = hist.epoch, hist.last_seq
        verdict = hist.append(entry, d.epoch, self.max_gap)
        if verdict is _APPLY:
            self.stats.applied += 1
        else:
            self.stats.verdicts[verdict.value] = self.stats.verdicts.get(verdict.value, 0) + 1
            if verdict is _DUPLICATE:
                self.stats.duplicates += 1
                return set()
            if verdict is not _GAP:
                self._reject(d.group, d.shard, "delta", verdict.value, d.epoch, d.seq,
                             (head_epoch, head_seq))
                # A far-future delta may mean this gateway lost more than the bound (the
                # checkpoint says so); a future epoch needs its snapshot.
                self._ask_anchor(key, now)
                return set()
            self.stats.gaps += 1
            self._ask_anchor(key, now)  # believed, but checked against the checkpoint
        self._generation += 1
        subs = self.subscribers.get(d.group, set())
        for ob in subs:
            ob.notify()
        return subs

    def _new_stream(self, group: str, shard: int, now: float) -> StreamHistory:
        hist = self.streams[(group, shard)] = StreamHistory(group, shard,
                                                            self.history_capacity)
        self.group_streams.setdefault(group, []).append(hist)
        snap = self.snapshots.get(group)
        if snap is not None:
            # The group's snapshot is the baseline of a stream first seen after it.
            hist.epoch, hist.last_seq = snap.epoch, snap.shard_seq.get(shard, 0)
            hist.anchored = True
        else:
            self._ask_anchor((group, shard), now)
        return hist

    # -- re-anchoring from JetStream ------------------------------------------------------------

    def _ask_anchor(self, key: tuple[str, int], now: float) -> None:
        self._anchor_due.setdefault(key, None)

    def take_anchor_requests(self, now: float) -> list[tuple[str, int]]:
        """Streams whose JetStream record (the group's last snapshot, the stream's last
        checkpoint) the shell should fetch and feed back (:meth:`on_snapshot`,
        :meth:`on_checkpoint`); at most one per stream per ``anchor_interval`` (a request
        made sooner waits for its turn, it is not dropped)."""
        out = []
        for key in list(self._anchor_due):
            asked = self._anchor_asked.get(key)
            if asked is None or now - asked >= self.anchor_interval:
                self._anchor_asked[key] = now
                del self._anchor_due[key]
                out.append(key)
        return out

    def _want_snapshot(self, group: str) -> None:
        self._snap_wanted.add(group)

    def take_snapshot_requests(self, now: float) -> list[str]:
        """Groups whose waiting subscribers need a fresher snapshot than the cache holds: the
        shell asks the aggregator for one (its answer is published to every gateway). Only
        groups the aggregator is known to publish (a stream or a snapshot was seen); asked
        again every ``snapshot_request_interval`` until a snapshot arrives."""
        out = []
        for group in list(self._snap_wanted):
            if group not in self.subscribers:
                self._snap_wanted.discard(group)
                continue
            if group not in self.group_streams and group not in self.snapshots:
                continue
            asked = self._snap_asked.get(group)
            if asked is None or now - asked >= self.snapshot_request_interval:
                self._snap_asked[group] = now
                out.append(group)
        return out

    def on_checkpoint(self, group: str, shard: int, epoch: int, seq: int, now: float) -> None:
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
        self._generation += 1
        for ob in self.subscribers.get(hist.group, ()):
            ob.notify()

    def _reject(self, group: str, shard: int, kind: str, reason: str, epoch: int, seq: int,
                head: tuple[int | None, int]) -> None:
        self.stats.rejected[(kind, reason)] = self.stats.rejected.get((kind, reason), 0) + 1
        key = (group, shard, f"{kind}:{reason}")
        count = self._pending[key][0] + 1 if key in self._pending else 1
        self._pending[key] = (count, SeqEvent("rejected", group, shard, f"{kind}:{reason}",
                                              epoch, seq, *head))

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

    def on_snapshot(self, subject: str, raw: bytes, now: float) -> set[Outbox]:
        s = Snapshot()
        try:
            s.ParseFromString(raw)
        except DecodeError as exc:
            raise BadMessage(subject, f"not a Snapshot ({exc})") from None
        if not s.group:
            raise BadMessage(subject, "snapshot without group")
        if subject != self.snapshot_prefix + s.group:
            raise BadMessage(subject, f"snapshot of group {s.group!r} on another group's subject "
                                      f"(expected {self.snapshot_prefix}{s.group})")
        self.stats.snapshots_in += 1
        old = self.snapshots.get(s.group)
        streams = self.group_streams.get(s.group, [])
        newest = max([h.epoch for h in streams if h.anchored and h.epoch is not None]
                     + ([old.epoch] if old is not None else []), default=None)
        if newest is not None and s.epoch < newest:
            # From an aggregator incarnation already replaced (a stale stored copy, a replay).
            head = (streams[0].epoch, streams[0].last_seq) if streams else (newest, 0)
            shard = streams[0].shard if streams else 0
            self._reject(s.group, shard, "snapshot", "stale_epoch", s.epoch, s.version, head)
            return set()
        self._anchor_streams(s, streams)
        if old is not None and old.epoch == s.epoch and old.version >= s.version:
            return set()  # the same or an older one (e.g. a direct get racing the live feed)
        self._generation += 1
        self.snapshots[s.group] = SnapRec(
            s.group, s.version, s.epoch, dict(s.shard_seq), s.shards,
            framed(SNAPSHOTS_TAG, raw), now,
        )
        # Whoever still cannot use this one says so again when its frame is built.
        self._snap_wanted.discard(s.group)
        waiting = {ob for ob in self.subscribers.get(s.group, set())
                   if ob.subs[s.group].state == SubState.SYNC}
        for ob in waiting:
            ob.notify()
        return waiting

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

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, ob: Outbox, group: str, shards: frozenset[int]) -> GroupSub:
        """Subscribe (or re-subscribe) ``ob`` to ``group``: it gets a snapshot, then deltas."""
        sub = GroupSub(group, shards)
        ob.subs[group] = sub
        self.subscribers.setdefault(group, set()).add(ob)
        if group not in self.snapshots:
            self._want_snapshot(group)
        ob.notify()
        return sub

    def resume(self, ob: Outbox, group: str, points: Iterable[ResumePoint]) -> ResumeOutcome:
        """Continue ``group`` after the client's points if the history bridges every one of
        them (``BRIDGED``); otherwise the group resyncs from a snapshot and the outcome says
        why (:func:`~xypipe._md.seqrules.judge_resume`): a point ahead of the stream, in
        another epoch, older than the history, for an unknown shard..."""
        outcome = self._judge_resume(group, {p.shard: p for p in points})
        sub = self.subscribe(ob, group, frozenset())
        self.stats.resumes[outcome.value] = self.stats.resumes.get(outcome.value, 0) + 1
        if outcome == ResumeOutcome.BRIDGED:
            pts = {p.shard: p for p in points}
            sub.state, sub.epoch = SubState.LIVE, next(iter(pts.values())).epoch
            sub.cursors = {shard: p.seq + 1 for shard, p in pts.items()}
        return outcome

    def _judge_resume(self, group: str, pts: dict[int, ResumePoint]) -> ResumeOutcome:
        streams = [h for h in self.group_streams.get(group, []) if h.epoch is not None]
        if not streams or not pts:
            return ResumeOutcome.NO_HISTORY
        if len({p.epoch for p in pts.values()}) != 1:
            return ResumeOutcome.MIXED_EPOCHS
        by_shard = {h.shard: h for h in streams}
        for shard in sorted(set(by_shard) | set(pts)):
            h = by_shard.get(shard)
            p = pts.get(shard)
            outcome = judge_resume(
                None if h is None else (h.epoch or 0, h.first_seq, h.last_seq),
                None if p is None else (p.epoch, p.seq),
            )
            if outcome != ResumeOutcome.BRIDGED:
                return outcome
        return ResumeOutcome.BRIDGED

    def unsubscribe(self, ob: Outbox, group: str) -> None:
        ob.subs.pop(group, None)
        subs = self.subscribers.get(group)
        if subs is not None:
            subs.discard(ob)
            if not subs:
                del self.subscribers[group]

    def resync(self, ob: Outbox, group: str) -> bool:
        """Send ``group`` again from a snapshot (client asked, or after a pause)."""
        sub = ob.subs.get(group)
        if sub is None:
            return False
        self._to_sync(sub, keep_min_version=False, reason="request")
        ob.notify()
        return True

    def set_paused(self, ob: Outbox, groups: frozenset[str]) -> None:
        for name, sub in ob.subs.items():
            if name in groups and sub.state != SubState.PAUSED:
                sub.state = SubState.PAUSED
                sub.cursors = {}
            elif name not in groups and sub.state == SubState.PAUSED:
                self._to_sync(sub, keep_min_version=False, reason="pause")
        ob.notify()

    def drop(self, ob: Outbox) -> None:
        for group in list(ob.subs):
            self.unsubscribe(ob, group)
        ob.wake = None

    def needs_snapshot(self, group: str) -> bool:
        return group not in self.snapshots

    def _to_sync(self, sub: GroupSub, *, keep_min_version: bool, reason: str) -> None:
        if sub.state != SubState.SYNC:  # a paused group resumes from a snapshot too
            sub.resyncs += 1
            self.stats.resyncs += 1
            self.stats.resync_reasons[reason] = self.stats.resync_reasons.get(reason, 0) + 1
        sub.state = SubState.SYNC
        sub.cursors = {}
        if not keep_min_version:
            sub.skip_up_to(None)
        snap = self.snapshots.get(sub.group)
        if snap is None or not sub.can_use(snap):
            self._want_snapshot(sub.group)

    # -- the send queue -------------------------------------------------------------------------

    def pressure(self, ob: Outbox, now: float, max_bytes: int, max_age: float) -> Pressure:
        """How full this connection's queue is (1.0 = its byte or age budget reached)."""
        total = ob.control_bytes + ob.inflight_bytes
        oldest: float | None = ob.inflight_since
        for sub in ob.subs.values():
            if sub.state != SubState.LIVE:
                continue
            for shard, cursor in sub.cursors.items():
                hist = self.streams.get((sub.group, shard))
                if hist is None:
                    continue
                nbytes, recv = hist.backlog(cursor)
                total += nbytes
                if recv is not None and (oldest is None or recv < oldest):
                    oldest = recv
        age = 0.0 if oldest is None else max(0.0, now - oldest)
        pb, pa = total / max_bytes, age / max_age
        if pb >= pa:
            return Pressure(pb, f"send queue {total} of {max_bytes} bytes")
        return Pressure(pa, f"send queue oldest {age * 1000:.0f} of {max_age * 1000:.0f} ms")

    def has_due(self, ob: Outbox) -> bool:
        if ob.control:
            return True
        for sub in ob.subs.values():
            if sub.state == SubState.SYNC:
                snap = self.snapshots.get(sub.group)
                if snap is not None and sub.can_use(snap):
                    return True
            elif sub.state == SubState.LIVE:
                for shard, cursor in sub.cursors.items():
                    hist = self.streams.get((sub.group, shard))
                    if hist is not None and (cursor != hist.last_seq + 1
                                             or hist.epoch != sub.epoch):
                        return True
                if not sub.shards:
                    for hist in self.group_streams.get(sub.group, ()):
                        if hist.shard not in sub.cursors:
                            return True
        return False

    def take_control(self, ob: Outbox) -> list[bytes]:
        out = list(ob.control)
        ob.control.clear()
        ob.control_bytes = 0
        return out

    def build(self, ob: Outbox, wall_us: int) -> Built | None:
        """The next data frame for ``ob`` (advancing its cursors), or None if nothing is due."""
        parts: list[tuple[Any, ...]] = []  # cache key parts
        chunks: list[tuple[str, Any]] = []
        level = ob.level
        for sub in ob.subs.values():
            # Twice at most: a live subscription that has to resync (a new epoch, a
            # re-anchored stream) takes the snapshot that is already here in the same frame.
            for _ in range(2):
                if sub.state == SubState.PAUSED:
                    break
                if sub.state == SubState.SYNC:
                    snap = self.snapshots.get(sub.group)
                    if snap is None or not sub.can_use(snap):
                        self._want_snapshot(sub.group)
                        break
                    if not self._start_from(sub, snap):
                        sub.skip_up_to(snap)
                        self._want_snapshot(sub.group)
                        break
                    parts.append(("S", snap.group, snap.epoch, snap.version))
                    chunks.append(("S", snap))
                if self._collect(sub, level, parts, chunks):
                    break
        if not chunks:
            return None
        if self._cache_gen != self._generation:
            self._cache.clear()
            self._cache_gen = self._generation
        key = (level, *parts)
        built = self._cache.get(key)
        if built is not None:
            self.stats.cache_hits += 1
            return built
        self.stats.cache_misses += 1
        built = self._assemble(chunks, level, wall_us)
        self._cache[key] = built
        return built

    def _start_from(self, sub: GroupSub, snap: SnapRec) -> bool:
        """Point ``sub``'s cursors just after ``snap`` if the history bridges it."""
        shards = set(sub.shards) if sub.shards else (
            set(snap.shard_seq) | set(range(snap.shards))
            | {h.shard for h in self.group_streams.get(sub.group, ()) if h.epoch == snap.epoch}
        )
        cursors: dict[int, int] = {}
        for shard in shards:
            nxt = snap.shard_seq.get(shard, 0) + 1
            hist = self.streams.get((sub.group, shard))
            if hist is not None and hist.epoch is not None and (
                    hist.epoch != snap.epoch or not hist.covers(nxt)):
                return False
            cursors[shard] = nxt
        sub.state, sub.epoch, sub.cursors = SubState.LIVE, snap.epoch, cursors
        return True

    def _collect(self, sub: GroupSub, level: Level, parts: list[tuple[Any, ...]],
                 chunks: list[tuple[str, Any]]) -> bool:
        """Add the deltas ``sub`` is due; False when it had to go back to a snapshot."""
        if not sub.shards:
            for known in self.group_streams.get(sub.group, ()):
                if known.shard not in sub.cursors and known.epoch == sub.epoch:
                    # A shard that appeared after the snapshot: it must start at 1.
                    sub.cursors[known.shard] = 1
        for shard, cursor in sub.cursors.items():
            hist = self.streams.get((sub.group, shard))
            if hist is None or (cursor == hist.last_seq + 1 and hist.epoch == sub.epoch):
                continue
            if hist.epoch != sub.epoch or not hist.covers(cursor):
                # A gap, a new epoch, a re-anchored stream or a cursor that fell off the
                # history: resync, from the cached snapshot if the history bridges it (a new
                # epoch's or a re-anchoring one), else from the next.
                self._to_sync(sub, keep_min_version=False,
                              reason="epoch" if hist.epoch != sub.epoch else "gap")
                # Drop what this frame already holds for the group.
                keep = [i for i, c in enumerate(chunks) if not _chunk_group_is(c, sub.group)]
                chunks[:] = [chunks[i] for i in keep]
                parts[:] = [parts[i] for i in keep]
                return False
            sub.cursors[shard] = hist.last_seq + 1
            parts.append(("D", sub.group, shard, cursor, hist.last_seq))
            chunks.append(("D", (hist, cursor)))
        return True

    def _assemble(self, chunks: list[tuple[str, Any]], level: Level, wall_us: int) -> Built:
        reaction = self.levels.at(level)
        out: list[bytes] = []
        ndeltas = nsnaps = 0
        oldest = 0
        for kind, item in chunks:
            if kind == "S":
                out.append(item.data)
                nsnaps += 1
                continue
            hist, cursor = item
            entries = hist.since(cursor)
            for e in entries:
                if e.arrival_us and (not oldest or e.arrival_us < oldest):
                    oldest = e.arrival_us
            if not reaction.merge:
                out.extend(e.data for e in entries)
                ndeltas += len(entries)
                continue
            merged = merge_deltas([e.delta for e in entries]) if len(entries) > 1 else None
            if merged is None and reaction.trim_depth is None:
                out.append(entries[0].data)
            else:
                d = merged if merged is not None else _copy(entries[0].delta)
                if reaction.trim_depth is not None:
                    _trim(d.symbols, reaction.trim_depth)
                out.append(framed(DELTAS_TAG, d.SerializeToString()))
            ndeltas += 1
        out.append(TS_SEND_TAG + _varint(wall_us))
        return Built(ws_binary(b"".join(out)), ndeltas, nsnaps, oldest)


def _chunk_group_is(chunk: tuple[str, Any], group: str) -> bool:
    kind, item = chunk
    if kind == "S":
        return bool(item.group == group)
    return bool(item[0].group == group)


def _copy(d: Delta) -> Delta:
    out = Delta()
    out.CopyFrom(d)
    return out


def _trim(symbols: Iterable[SymbolState], depth: int) -> None:
    """Keep ``depth`` levels a side; an entry that lost a level says so (its checksum still
    covers the full book, so a client must not verify it)."""
    for s in symbols:
        if len(s.bids) > depth or len(s.asks) > depth:
            del s.bids[depth:]
            del s.asks[depth:]
            s.trimmed = True


def iter_frame_deltas(frame_bytes: bytes) -> Iterator[Delta]:
    """Decode helper for tests and tools."""
    from xypipe.contracts import ServerFrame

    f = ServerFrame()
    f.ParseFromString(frame_bytes)
    yield from f.deltas
