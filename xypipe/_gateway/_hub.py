"""The fan-out core: one object the gateway shell feeds and asks, three socket-free parts behind.

Sans-I/O: fed the aggregator's messages (raw bytes) and ``now``; asked for the next frame of a
connection. No sockets, no tasks, no clock. The work is split by concern:

* :mod:`xypipe._gateway._streams` — every stream's believed head and recent deltas, the snapshot
  cache, the sequence checks and re-anchoring from JetStream's record (:class:`StreamBook`);
* :mod:`xypipe._gateway._subs` — who is subscribed to what and where each subscription stands
  (:class:`Subscriptions`, :class:`Outbox`);
* :mod:`xypipe._gateway._frames` — each connection's next frame, built once and shared, shaped
  by the gateway's per-level policy (:class:`FrameBuilder`).

:class:`Hub` decodes what arrives (through the one contract decoder, which counts a newer
aggregator's unknown fields), refuses what cannot be used (:class:`BadMessage`) and says which
connections have something due (collected per batch between :meth:`Hub.begin_tick` and
:meth:`Hub.end_tick`, for the shell's flush; woken at once outside a batch). The shell
fetches JetStream records when the hub asks (:meth:`Hub.take_anchor_requests`,
:meth:`Hub.take_snapshot_requests`) and feeds them back (:meth:`Hub.on_snapshot`,
:meth:`Hub.on_checkpoint`); what the sequence checks did comes back as :class:`SeqEvent` values
to log (:meth:`Hub.take_events`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from xypipe._contracts import ContractDecoder, M
from xypipe._contracts import decode as contract_decode
from xypipe._degrade import Pressure
from xypipe._errors import GW_BAD_MESSAGE, ContractError
from xypipe._gateway._frames import (
    DELTAS_TAG,
    SNAPSHOTS_TAG,
    TS_SEND_TAG,
    Built,
    FrameBuilder,
    framed,
    iter_frame_deltas,
    ws_binary,
)
from xypipe._gateway._streams import (
    REANCHOR_CHECKPOINT_AHEAD,
    REANCHOR_CHECKPOINT_BEHIND,
    REANCHOR_EPOCH,
    REANCHOR_SNAPSHOT,
    REANCHOR_SNAPSHOT_AHEAD,
    Entry,
    HubStats,
    SeqEvent,
    SnapRec,
    StreamBook,
    StreamHistory,
)
from xypipe._gateway._subs import GroupSub, Outbox, Subscriptions, SubState
from xypipe._levels import LevelPolicy
from xypipe._md.projection import is_projection, stream_subject
from xypipe._md.seqrules import DEFAULT_MAX_GAP, ResumeOutcome
from xypipe.contracts import Delta, ResumePoint, Snapshot


class BadMessage(ContractError, ValueError):
    """An aggregator message the gateway cannot use (counted and logged by the shell). A
    ``ValueError`` too, for callers that caught that before it joined the error tree."""

    code: ClassVar[str] = GW_BAD_MESSAGE

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"{subject}: {reason}")
        self.subject = subject
        self.reason = reason


class Hub:
    """Delta history, snapshot cache, subscriptions and frame building for one gateway."""

    def __init__(self, *, history: int = 256, tick_prefix: str = "xy.md.tick",
                 snapshot_prefix: str = "xy.md.snapshot", max_gap: int = DEFAULT_MAX_GAP,
                 anchor_interval: float = 1.0, snapshot_request_interval: float = 0.25,
                 levels: LevelPolicy | None = None,
                 decoder: ContractDecoder | None = None) -> None:
        self.stats = HubStats()
        self.book = StreamBook(self.stats, history=history, max_gap=max_gap,
                               anchor_interval=anchor_interval)
        self.subs = Subscriptions(self.book, self.stats,
                                  snapshot_request_interval=snapshot_request_interval)
        #: What each degradation level does to a connection's frames.
        self.levels = levels or LevelPolicy()
        self.frames = FrameBuilder(self.book, self.subs, self.stats, self.levels)
        #: None: the process's default decoder (counting into its registry).
        self.decoder = decoder
        self.tick_prefix = tick_prefix + "."
        self.snapshot_prefix = snapshot_prefix + "."
        # The parts' state, under the names the shell and the tests read.
        self.streams = self.book.streams
        self.group_streams = self.book.group_streams
        self.snapshots = self.book.snapshots
        self.subscribers = self.subs.subscribers

    @property
    def history_capacity(self) -> int:
        return self.book.history_capacity

    @property
    def max_gap(self) -> int:
        return self.book.max_gap

    # -- ingest -------------------------------------------------------------------------------

    def classify(self, subject: str) -> str:
        if subject.startswith(self.tick_prefix):
            return "delta"
        if subject.startswith(self.snapshot_prefix):
            return "snapshot"
        return "other"

    def _decode(self, message_type: type[M], subject: str, raw: bytes) -> M:
        where = f"subject {subject}"
        try:
            if self.decoder is not None:
                return self.decoder.decode(message_type, raw, where=where)
            return contract_decode(message_type, raw, where=where)
        except ContractError as exc:
            name = message_type.DESCRIPTOR.name
            raise BadMessage(subject, f"not a {name} ({exc.__cause__})") from None

    def on_delta(self, subject: str, raw: bytes, now: float) -> set[Outbox]:
        """A delta from the aggregator; returns the connections that now have something due."""
        d = self._decode(Delta, subject, raw)
        if not d.group or d.seq <= 0:
            raise BadMessage(subject, f"delta without group or seq (group={d.group!r}, "
                                      f"seq={d.seq})")
        if d.first_seq and d.first_seq != d.seq:
            raise BadMessage(subject, "merged delta (first_seq set): the gateway expects the "
                                      "aggregator's own, one-window deltas")
        where = subject[len(self.tick_prefix):]
        if is_projection(d.group):
            if subject != stream_subject(self.tick_prefix[:-1], d.group) or d.shard:
                raise BadMessage(subject, f"delta of projection {d.group!r} shard {d.shard} on "
                                          "another stream's subject (expected "
                                          f"{stream_subject(self.tick_prefix[:-1], d.group)}, "
                                          "shard 0)")
        elif where != d.group and where != f"{d.group}.{d.shard}":
            # Permissions are per subject: a delta may only speak for the stream it is on.
            raise BadMessage(subject, f"delta of group {d.group!r} shard {d.shard} on another "
                                      f"stream's subject (expected {self.tick_prefix}{d.group} "
                                      f"or {self.tick_prefix}{d.group}.{d.shard})")
        if not self.book.add_delta(d, framed(DELTAS_TAG, raw), now):
            return set()
        return self.subs.notify(d.group)

    def on_snapshot(self, subject: str, raw: bytes, now: float) -> set[Outbox]:
        """A group snapshot (live, or a stored one the shell fetched); returns the
        connections waiting for it."""
        s = self._decode(Snapshot, subject, raw)
        if not s.group:
            raise BadMessage(subject, "snapshot without group")
        expected = stream_subject(self.snapshot_prefix[:-1], s.group)
        if subject != expected:
            raise BadMessage(subject, f"snapshot of group {s.group!r} on another group's subject "
                                      f"(expected {expected})")
        cached = self.book.add_snapshot(s, framed(SNAPSHOTS_TAG, raw), now)
        self._wake_reanchored()
        return self.subs.snapshot_arrived(s.group) if cached else set()

    def on_checkpoint(self, group: str, shard: int, epoch: int, seq: int, now: float) -> None:
        """The aggregator's stored checkpoint of ``(group, shard)``: the last sequence it
        emitted (``xy.agg.seq.{group}.{shard}``, stored before the delta is published)."""
        self.book.on_checkpoint(group, shard, epoch, seq)
        self._wake_reanchored()

    def _wake_reanchored(self) -> None:
        for group in self.book.take_reanchored():
            self.subs.notify(group)

    def take_anchor_requests(self, now: float) -> list[tuple[str, int]]:
        """Streams whose JetStream record the shell should fetch and feed back
        (:meth:`StreamBook.take_anchor_requests`)."""
        return self.book.take_anchor_requests(now)

    def take_snapshot_requests(self, now: float) -> list[str]:
        """Groups to ask the aggregator a fresh snapshot of
        (:meth:`Subscriptions.take_snapshot_requests`)."""
        return self.subs.take_snapshot_requests(now)

    def take_events(self, now: float) -> list[SeqEvent]:
        """What the sequence checks did since the last call (:meth:`StreamBook.take_events`)."""
        return self.book.take_events(now)

    def needs_snapshot(self, group: str) -> bool:
        return group not in self.book.snapshots

    def begin_tick(self) -> None:
        """A batch of messages begins: what it makes due is collected, nobody is woken
        (:meth:`Subscriptions.begin_tick`)."""
        self.subs.begin_tick()

    def end_tick(self) -> set[Outbox]:
        """The batch ended: the connections it made due, for the shell's flush."""
        return self.subs.end_tick()

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, ob: Outbox, group: str, shards: frozenset[int]) -> GroupSub:
        """Subscribe (or re-subscribe) ``ob`` to ``group``: it gets a snapshot, then deltas."""
        return self.subs.subscribe(ob, group, shards)

    def resume(self, ob: Outbox, group: str, points: Iterable[ResumePoint]) -> ResumeOutcome:
        """Continue ``group`` after the client's points, or resync it from a snapshot
        (:meth:`Subscriptions.resume`)."""
        return self.subs.resume(ob, group, points)

    def unsubscribe(self, ob: Outbox, group: str) -> None:
        self.subs.unsubscribe(ob, group)

    def resync(self, ob: Outbox, group: str) -> bool:
        """Send ``group`` again from a snapshot (client asked, or after a pause)."""
        return self.subs.resync(ob, group)

    def set_paused(self, ob: Outbox, groups: frozenset[str]) -> None:
        self.subs.set_paused(ob, groups)

    def drop(self, ob: Outbox) -> None:
        self.subs.drop(ob)

    # -- the send queue -------------------------------------------------------------------------

    def pressure(self, ob: Outbox, now: float, max_bytes: int, max_age: float) -> Pressure:
        """How full this connection's queue is (1.0 = its byte or age budget reached)."""
        return self.frames.pressure(ob, now, max_bytes, max_age)

    def has_due(self, ob: Outbox) -> bool:
        return self.frames.has_due(ob)

    def take_control(self, ob: Outbox) -> list[bytes]:
        return self.frames.take_control(ob)

    def build(self, ob: Outbox, wall_us: int) -> Built | None:
        """The next data frame for ``ob`` (advancing its cursors), or None if nothing is due."""
        return self.frames.build(ob, wall_us)


__all__ = [
    "DELTAS_TAG", "REANCHOR_CHECKPOINT_AHEAD", "REANCHOR_CHECKPOINT_BEHIND", "REANCHOR_EPOCH",
    "REANCHOR_SNAPSHOT", "REANCHOR_SNAPSHOT_AHEAD", "SNAPSHOTS_TAG", "TS_SEND_TAG", "BadMessage",
    "Built", "Entry", "GroupSub", "Hub", "HubStats", "Outbox", "SeqEvent", "SnapRec",
    "StreamHistory", "SubState", "framed", "iter_frame_deltas", "ws_binary",
]
