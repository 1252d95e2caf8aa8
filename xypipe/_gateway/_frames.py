"""One frame per connection: what it is due, built once and shared (sans-I/O).

**Frame each delta once.** A ``ServerFrame``'s ``repeated Delta deltas = 2`` is, on the wire, just
``tag 0x12, varint length, delta bytes`` per element, so each delta is prefixed once when it
arrives (:mod:`xypipe._gateway._streams` keeps it so) and a connection's frame is the
concatenation of the prefixed deltas it is due (plus a snapshot, ``tag 0x1a``, and
``ts_send_us``). Connections due the same ranges at the same level share the same WebSocket
frame bytes (server frames are unmasked), built once per stream-book generation.

**Each position is worked out once.** After a tick most connections stand at the same cursors
as many others: a connection's *position* is its level and, per group, the identity of its
cursors dict — interned by content, shared by every connection at those cursors and never
changed in place. The first connection at a position collects its chunks the long way; the
others at that position get the same frame and the same next cursors from a dictionary look-up
(per generation, like the bytes). A subscription waiting for a snapshot, or one that resyncs,
always takes the long way.

**The per-connection send queue is a set of cursors.** What a connection has not been sent yet is
the history after its cursors, so queuing a delta for a thousand connections costs nothing, and
the queue's bytes and age are read off the history (:meth:`FrameBuilder.pressure`). A
subscription whose cursor falls off the history (or that meets a gap or a new epoch) resyncs
from a snapshot: it waits for one whose ``shard_seq`` the history can bridge, then gets that
snapshot followed by exactly the deltas after it — no gap, no duplicate.

**What a level does to a frame** comes from the gateway's :class:`~xypipe._levels.LevelPolicy`
(the table the aggregator reads too): each stream's due deltas merged into one (``merge_deltas``,
the aggregator's own rule, so checksums and trades stay valid), entries trimmed to
``trim_depth`` levels a side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs
from wsproto.frame_protocol import FrameProtocol

from xypipe._degrade import Level, Pressure
from xypipe._gateway._streams import HubStats, SnapRec, StreamBook, StreamHistory
from xypipe._gateway._subs import GroupSub, Outbox, Subscriptions, SubState
from xypipe._levels import LevelPolicy
from xypipe._md.conflation import merge_deltas
from xypipe._md.wire import field_tag, length_delimited, varint_field, varint_tag
from xypipe.contracts import Delta, ServerFrame, SymbolState

DELTAS_TAG = field_tag(2)  # ServerFrame.deltas
SNAPSHOTS_TAG = field_tag(3)  # ServerFrame.snapshots
TS_SEND_TAG = varint_tag(8)  # ServerFrame.ts_send_us

# wsproto serialises the frames (no extension is ever negotiated, so a frame is the same bytes
# for every connection); one instance serves all, as only complete messages go through it.
_FRAMER = FrameProtocol(client=False, extensions=[])


def ws_binary(payload: bytes) -> bytes:
    """One complete binary WebSocket message, server to client (unmasked)."""
    return bytes(_FRAMER.send_data(payload, fin=True))


def framed(tag: bytes, payload: bytes) -> bytes:
    """``payload`` as one element of the ``ServerFrame`` field ``tag``."""
    return length_delimited(tag, payload)


@attrs.frozen
class Built:
    """One data frame for one connection."""

    data: bytes  # the complete WebSocket frame
    deltas: int
    snapshots: int
    oldest_arrival_us: int  # 0 when unknown


#: What a frame holds, in order: a cached snapshot, or a stream's deltas from a cursor on.
Chunk = SnapRec | tuple[StreamHistory, int]
#: Identifies one chunk's content: ``("S", group, epoch, version)`` or
#: ``("D", group, shard, from_seq, to_seq)``; with the level, they key the shared-bytes cache.
Part = tuple[str | int, ...]
#: Where a connection whose every group is live or paused stands: its level, then per group
#: (in order) the identity of its cursors (interned: connections at the same cursors share one
#: dict, never changed in place) or, when paused, the group's name.
Position = tuple[object, ...]


@attrs.frozen
class _Step:
    """What building from a :data:`Position` gave: the frame, and each group's cursors after it
    (None: paused). ``before`` holds the cursors the position names, so their identities stay
    theirs while the step is remembered."""

    built: Built | None
    cursors: tuple[dict[int, int] | None, ...]
    before: tuple[object, ...]


def _position(ob: Outbox) -> Position | None:
    pos: list[object] = [ob.level]
    for sub in ob.subs.values():
        state = sub.state
        if state is SubState.LIVE:
            pos.append(id(sub.cursors))
        elif state is SubState.PAUSED:
            pos.append(sub.group)
        else:
            return None  # waiting for a snapshot: built the long way
    return tuple(pos)


class FrameBuilder:
    """Builds each connection's next frame from the stream book and its subscriptions."""

    def __init__(self, book: StreamBook, subs: Subscriptions, stats: HubStats,
                 levels: LevelPolicy) -> None:
        self.book = book
        self.subs = subs
        self.stats = stats
        self.levels = levels
        self._cache: dict[tuple[Level | Part, ...], Built] = {}
        #: Connections at the same position get the same frame and move to the same cursors:
        #: after a tick most of them stand where the others do, so each position is worked
        #: out once per generation (like the frame bytes).
        self._steps: dict[Position, _Step] = {}
        self._interned: dict[tuple[object, ...], dict[int, int]] = {}
        self._cache_gen = -1

    # -- the send queue -------------------------------------------------------------------------

    def pressure(self, ob: Outbox, now: float, max_bytes: int, max_age: float) -> Pressure:
        """How full this connection's queue is (1.0 = its byte or age budget reached)."""
        total = ob.control_bytes + ob.inflight_bytes
        oldest: float | None = ob.inflight_since
        streams = self.book.streams
        for sub in ob.subs.values():
            if sub.state != SubState.LIVE:
                continue
            for shard, cursor in sub.cursors.items():
                hist = streams.get((sub.group, shard))
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
        book = self.book
        for sub in ob.subs.values():
            if sub.state == SubState.SYNC:
                snap = book.snapshots.get(sub.group)
                if snap is not None and sub.can_use(snap):
                    return True
            elif sub.state == SubState.LIVE:
                for shard, cursor in sub.cursors.items():
                    hist = book.streams.get((sub.group, shard))
                    if hist is not None and (cursor != hist.last_seq + 1
                                             or hist.epoch != sub.epoch):
                        return True
                if not sub.shards:
                    for hist in book.group_streams.get(sub.group, ()):
                        if hist.shard not in sub.cursors:
                            return True
        return False

    def take_control(self, ob: Outbox) -> list[bytes]:
        out = list(ob.control)
        ob.control.clear()
        ob.control_bytes = 0
        return out

    # -- frames ---------------------------------------------------------------------------------

    def build(self, ob: Outbox, wall_us: int) -> Built | None:
        """The next data frame for ``ob`` (advancing its cursors), or None if nothing is due."""
        if self._cache_gen != self.book.generation:
            self._cache.clear()
            self._steps.clear()
            self._interned.clear()
            self._cache_gen = self.book.generation
        pos = _position(ob)
        if pos is None:
            built = self._build(ob, wall_us)
            self._intern(ob)
            return built
        step = self._steps.get(pos)
        if step is not None:
            for sub, cursors in zip(ob.subs.values(), step.cursors, strict=True):
                if cursors is not None:
                    sub.cursors = cursors
            if step.built is not None:
                self.stats.cache_hits += 1
            return step.built
        before = tuple(sub.cursors for sub in ob.subs.values())
        resyncs = self.stats.resyncs
        built = self._build(ob, wall_us)
        self._intern(ob)
        if self.stats.resyncs == resyncs:  # a resync is the connection's own business
            self._steps[pos] = _Step(built, tuple(
                sub.cursors if sub.state is SubState.LIVE else None
                for sub in ob.subs.values()), before)
        return built

    def _intern(self, ob: Outbox) -> None:
        """Connections at the same cursors share one dict (so the next build finds their
        position by identity)."""
        interned = self._interned
        for sub in ob.subs.values():
            if sub.state is SubState.LIVE:
                key = (sub.group, sub.epoch, sub.shards, *sub.cursors.items())
                sub.cursors = interned.setdefault(key, sub.cursors)

    def _build(self, ob: Outbox, wall_us: int) -> Built | None:
        parts: list[Part] = []
        chunks: list[Chunk] = []
        level = ob.level
        for sub in ob.subs.values():
            # Twice at most: a live subscription that has to resync (a new epoch, a
            # re-anchored stream) takes the snapshot that is already here in the same frame.
            for _ in range(2):
                if sub.state == SubState.PAUSED:
                    break
                if sub.state == SubState.SYNC:
                    snap = self.book.snapshots.get(sub.group)
                    if snap is None or not sub.can_use(snap):
                        self.subs.want_snapshot(sub.group)
                        break
                    if not self._start_from(sub, snap):
                        sub.skip_up_to(snap)
                        self.subs.want_snapshot(sub.group)
                        break
                    parts.append(("S", snap.group, snap.epoch, snap.version))
                    chunks.append(snap)
                if self._collect(sub, parts, chunks):
                    break
        if not chunks:
            return None
        key: tuple[Level | Part, ...] = (level, *parts)
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
        book = self.book
        shards = set(sub.shards) if sub.shards else (
            set(snap.shard_seq) | set(range(snap.shards))
            | {h.shard for h in book.group_streams.get(sub.group, ()) if h.epoch == snap.epoch}
        )
        cursors: dict[int, int] = {}
        for shard in shards:
            nxt = snap.shard_seq.get(shard, 0) + 1
            hist = book.streams.get((sub.group, shard))
            if hist is not None and hist.epoch is not None and (
                    hist.epoch != snap.epoch or not hist.covers(nxt)):
                return False
            cursors[shard] = nxt
        sub.state, sub.epoch, sub.cursors = SubState.LIVE, snap.epoch, cursors
        return True

    def _collect(self, sub: GroupSub, parts: list[Part], chunks: list[Chunk]) -> bool:
        """Add the deltas ``sub`` is due; False when it had to go back to a snapshot."""
        book = self.book
        # A copy: cursors are shared between connections at the same position.
        cursors = dict(sub.cursors)
        if not sub.shards:
            for known in book.group_streams.get(sub.group, ()):
                if known.shard not in cursors and known.epoch == sub.epoch:
                    # A shard that appeared after the snapshot: it must start at 1.
                    cursors[known.shard] = 1
        for shard, cursor in cursors.items():
            hist = book.streams.get((sub.group, shard))
            if hist is None or (cursor == hist.last_seq + 1 and hist.epoch == sub.epoch):
                continue
            if hist.epoch != sub.epoch or not hist.covers(cursor):
                # A gap, a new epoch, a re-anchored stream or a cursor that fell off the
                # history: resync, from the cached snapshot if the history bridges it (a new
                # epoch's or a re-anchoring one), else from the next.
                self.subs.to_sync(sub, keep_min_version=False,
                                  reason="epoch" if hist.epoch != sub.epoch else "gap")
                # Drop what this frame already holds for the group.
                keep = [i for i, c in enumerate(chunks) if _chunk_group(c) != sub.group]
                chunks[:] = [chunks[i] for i in keep]
                parts[:] = [parts[i] for i in keep]
                return False
            cursors[shard] = hist.last_seq + 1
            parts.append(("D", sub.group, shard, cursor, hist.last_seq))
            chunks.append((hist, cursor))
        sub.cursors = cursors
        return True

    def _assemble(self, chunks: list[Chunk], level: Level, wall_us: int) -> Built:
        reaction = self.levels.at(level)
        out: list[bytes] = []
        ndeltas = nsnaps = 0
        oldest = 0
        for item in chunks:
            if isinstance(item, SnapRec):
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
        out.append(varint_field(TS_SEND_TAG, wall_us))
        return Built(ws_binary(b"".join(out)), ndeltas, nsnaps, oldest)


def _chunk_group(chunk: Chunk) -> str:
    return chunk.group if isinstance(chunk, SnapRec) else chunk[0].group


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
    f = ServerFrame()
    f.ParseFromString(frame_bytes)
    yield from f.deltas
