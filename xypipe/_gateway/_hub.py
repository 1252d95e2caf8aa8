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

**Per-connection degradation** (the level comes from :class:`~xypipe._gateway._session.Session`):
L1 merges each stream's due deltas into one (``merge_deltas``, the aggregator's own rule, so
checksums and trades stay valid) and the connection is flushed less often; L2 also trims depth
beyond the first level (``trimmed`` set); L3 pauses the connection's low-priority groups (they
resync from a snapshot when the level comes down).
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
from xypipe._md.conflation import merge_deltas
from xypipe._md.wire import field_tag
from xypipe.contracts import Delta, ResumePoint, Snapshot, SymbolState

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
    """The last ``capacity`` deltas of one (group, shard) stream, contiguous in one epoch."""

    def __init__(self, group: str, shard: int, capacity: int) -> None:
        self.group = group
        self.shard = shard
        self.capacity = capacity
        self.epoch: int | None = None
        self.entries: deque[Entry] = deque()
        self.last_seq = 0
        self.cum = 0
        self.resets = 0

    @property
    def first_seq(self) -> int:
        return self.entries[0].seq if self.entries else self.last_seq + 1

    def append(self, entry: Entry, epoch: int) -> str:
        """Add the next delta. Returns ``"ok"``, ``"duplicate"`` (dropped), ``"gap"`` or
        ``"epoch"`` (the history restarts at this delta; its subscribers must resync)."""
        outcome = "ok"
        if self.epoch is None:
            outcome = "start"
        elif epoch != self.epoch:
            outcome = "epoch"
        elif entry.seq <= self.last_seq:
            return "duplicate"
        elif entry.seq != self.last_seq + 1:
            outcome = "gap"
        if outcome in ("epoch", "gap"):
            self.entries.clear()
            self.resets += 1
        self.epoch = epoch
        self.cum += len(entry.data)
        entry.cum = self.cum
        self.entries.append(entry)
        self.last_seq = entry.seq
        while len(self.entries) > self.capacity:
            self.entries.popleft()
        return "ok" if outcome == "start" else outcome

    def covers(self, next_seq: int) -> bool:
        """Can everything from ``next_seq`` on be sent from here?"""
        return next_seq > self.last_seq or next_seq >= self.first_seq

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
    #: Snapshot versions not newer than this cannot be used (they were not bridgeable).
    min_version: int = -1
    resyncs: int = 0

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


class Hub:
    """Delta history, snapshot cache, subscriptions and frame building for one gateway."""

    def __init__(self, *, history: int = 256, tick_prefix: str = "xy.md.tick",
                 snapshot_prefix: str = "xy.md.snapshot") -> None:
        self.history_capacity = history
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
        self.stats.deltas_in += 1
        self._generation += 1
        key = (d.group, d.shard)
        hist = self.streams.get(key)
        if hist is None:
            hist = self.streams[key] = StreamHistory(d.group, d.shard, self.history_capacity)
            self.group_streams.setdefault(d.group, []).append(hist)
        arrival = min((s.ts_arrival_us for s in d.symbols if s.ts_arrival_us), default=0)
        entry = Entry(d.seq, framed(DELTAS_TAG, raw), d, now, arrival, 0)
        outcome = hist.append(entry, d.epoch)
        if outcome == "duplicate":
            self.stats.duplicates += 1
            return set()
        if outcome == "gap":
            self.stats.gaps += 1
        elif outcome == "epoch":
            self.stats.epochs += 1
        subs = self.subscribers.get(d.group, set())
        for ob in subs:
            ob.notify()
        return subs

    def on_snapshot(self, subject: str, raw: bytes, now: float) -> set[Outbox]:
        s = Snapshot()
        try:
            s.ParseFromString(raw)
        except DecodeError as exc:
            raise BadMessage(subject, f"not a Snapshot ({exc})") from None
        if not s.group:
            raise BadMessage(subject, "snapshot without group")
        self.stats.snapshots_in += 1
        old = self.snapshots.get(s.group)
        if old is not None and old.epoch == s.epoch and old.version >= s.version:
            return set()  # the same or an older one (e.g. a direct get racing the live feed)
        self._generation += 1
        self.snapshots[s.group] = SnapRec(
            s.group, s.version, s.epoch, dict(s.shard_seq), s.shards,
            framed(SNAPSHOTS_TAG, raw), now,
        )
        waiting = {ob for ob in self.subscribers.get(s.group, set())
                   if ob.subs[s.group].state == SubState.SYNC}
        for ob in waiting:
            ob.notify()
        return waiting

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, ob: Outbox, group: str, shards: frozenset[int]) -> GroupSub:
        """Subscribe (or re-subscribe) ``ob`` to ``group``: it gets a snapshot, then deltas."""
        sub = GroupSub(group, shards)
        ob.subs[group] = sub
        self.subscribers.setdefault(group, set()).add(ob)
        ob.notify()
        return sub

    def resume(self, ob: Outbox, group: str, points: Iterable[ResumePoint]) -> bool:
        """Continue ``group`` after the client's points if the history bridges them (True);
        otherwise the group resyncs from a snapshot (False)."""
        sub = self.subscribe(ob, group, frozenset())
        pts = {p.shard: p for p in points}
        streams = self.group_streams.get(group, [])
        if not streams or not pts:
            return False
        epochs = {p.epoch for p in pts.values()}
        if len(epochs) != 1:
            return False
        epoch = epochs.pop()
        cursors: dict[int, int] = {}
        for hist in streams:
            p = pts.get(hist.shard)
            if p is None or hist.epoch != epoch or not hist.covers(p.seq + 1):
                return False
            cursors[hist.shard] = p.seq + 1
        for shard, p in pts.items():
            cursors.setdefault(shard, p.seq + 1)
        sub.state, sub.epoch, sub.cursors = SubState.LIVE, epoch, cursors
        return True

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
        self._to_sync(sub, keep_min_version=False)
        ob.notify()
        return True

    def set_paused(self, ob: Outbox, groups: frozenset[str]) -> None:
        for name, sub in ob.subs.items():
            if name in groups and sub.state != SubState.PAUSED:
                sub.state = SubState.PAUSED
                sub.cursors = {}
            elif name not in groups and sub.state == SubState.PAUSED:
                self._to_sync(sub, keep_min_version=False)
        ob.notify()

    def drop(self, ob: Outbox) -> None:
        for group in list(ob.subs):
            self.unsubscribe(ob, group)
        ob.wake = None

    def needs_snapshot(self, group: str) -> bool:
        return group not in self.snapshots

    def _to_sync(self, sub: GroupSub, *, keep_min_version: bool) -> None:
        if sub.state == SubState.LIVE:
            sub.resyncs += 1
            self.stats.resyncs += 1
        sub.state = SubState.SYNC
        sub.cursors = {}
        if not keep_min_version:
            sub.min_version = -1

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
                if snap is not None and snap.version > sub.min_version:
                    return True
            elif sub.state == SubState.LIVE:
                for shard, cursor in sub.cursors.items():
                    hist = self.streams.get((sub.group, shard))
                    if hist is not None and (hist.last_seq >= cursor or hist.epoch != sub.epoch):
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
            if sub.state == SubState.PAUSED:
                continue
            if sub.state == SubState.SYNC:
                snap = self.snapshots.get(sub.group)
                if snap is None or snap.version <= sub.min_version:
                    continue
                if not self._start_from(sub, snap):
                    sub.min_version = snap.version
                    continue
                parts.append(("S", snap.group, snap.epoch, snap.version))
                chunks.append(("S", snap))
            self._collect(sub, level, parts, chunks)
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
            if hist is not None and hist.epoch == snap.epoch and not hist.covers(nxt):
                return False
            cursors[shard] = nxt
        sub.state, sub.epoch, sub.cursors = SubState.LIVE, snap.epoch, cursors
        return True

    def _collect(self, sub: GroupSub, level: Level, parts: list[tuple[Any, ...]],
                 chunks: list[tuple[str, Any]]) -> None:
        if not sub.shards:
            for known in self.group_streams.get(sub.group, ()):
                if known.shard not in sub.cursors and known.epoch == sub.epoch:
                    # A shard that appeared after the snapshot: it must start at 1.
                    sub.cursors[known.shard] = 1
        for shard, cursor in sub.cursors.items():
            hist = self.streams.get((sub.group, shard))
            if hist is None or (hist.last_seq < cursor and hist.epoch == sub.epoch):
                continue
            if hist.epoch != sub.epoch or not hist.covers(cursor):
                # A gap, a new epoch or a cursor that fell off the history: resync.
                self._to_sync(sub, keep_min_version=True)
                snap = self.snapshots.get(sub.group)
                sub.min_version = snap.version if snap is not None else -1
                # Drop what this frame already holds for the group.
                keep = [i for i, c in enumerate(chunks) if not _chunk_group_is(c, sub.group)]
                chunks[:] = [chunks[i] for i in keep]
                parts[:] = [parts[i] for i in keep]
                return
            sub.cursors[shard] = hist.last_seq + 1
            parts.append(("D", sub.group, shard, cursor, hist.last_seq))
            chunks.append(("D", (hist, cursor)))

    def _assemble(self, chunks: list[tuple[str, Any]], level: Level, wall_us: int) -> Built:
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
            if level == Level.L0:
                out.extend(e.data for e in entries)
                ndeltas += len(entries)
                continue
            merged = merge_deltas([e.delta for e in entries]) if len(entries) > 1 else None
            if merged is None and level < Level.L2:
                out.append(entries[0].data)
            else:
                d = merged if merged is not None else _copy(entries[0].delta)
                if level >= Level.L2:
                    _trim(d.symbols)
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


def _trim(symbols: Iterable[SymbolState]) -> None:
    for s in symbols:
        if len(s.bids) > 1 or len(s.asks) > 1:
            del s.bids[1:]
            del s.asks[1:]
            s.trimmed = True


def iter_frame_deltas(frame_bytes: bytes) -> Iterator[Delta]:
    """Decode helper for tests and tools."""
    from xypipe.contracts import ServerFrame

    f = ServerFrame()
    f.ParseFromString(frame_bytes)
    yield from f.deltas
