"""Subscription bookkeeping: who is subscribed to what, and where each subscription stands.

A connection's data-plane side is an :class:`Outbox`; per group it holds a :class:`GroupSub`
whose state says whether the group flows (``LIVE``, with a cursor per shard: the next sequence
it must be sent), waits for a snapshot the history can bridge (``SYNC``) or is held back
(``PAUSED``: L3, an operator flag). :class:`Subscriptions` moves them between those states —
subscribe, resume, resync, pause — and collects the groups whose waiting subscribers need a
fresher snapshot than the cache holds. Sans-I/O: it wakes a connection by calling its
``Outbox.wake``; the hub's frame builder (:mod:`xypipe._gateway._frames`) reads the cursors.

**Ticks.** While the shell feeds one batch of the aggregator's messages (between
:meth:`Subscriptions.begin_tick` and :meth:`Subscriptions.end_tick`), what the batch makes due
wakes nobody: the connections are collected, once each, and the shell's flush
(:mod:`xypipe._gateway._flush`) writes their frames after the batch. Outside a tick (a stored
snapshot fetched, a subscription) a connection is woken as before.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable

import attrs

from xypipe._degrade import Level
from xypipe._gateway._streams import HubStats, SnapRec, StreamBook
from xypipe._md.seqrules import ResumeOutcome, judge_resume
from xypipe.contracts import ResumePoint


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
    #: Shard -> the next sequence to send. Replaced, never changed in place: connections at the
    #: same cursors share one dict (the frame builder's positions, :mod:`._frames`).
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
    wake: Callable[[], None] | None = None
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


class Subscriptions:
    """Every connection's group subscriptions and the snapshots they wait for."""

    def __init__(self, book: StreamBook, stats: HubStats, *,
                 snapshot_request_interval: float = 0.25) -> None:
        self.book = book
        self.stats = stats
        self.subscribers: dict[str, set[Outbox]] = {}
        #: Groups with a subscriber waiting for a snapshot the cache cannot give (none yet,
        #: or one the history cannot bridge after a gap or a restart): the shell asks the
        #: aggregator for a fresh one at most every ``snapshot_request_interval`` per group,
        #: rather than leaving the subscriber to wait for the next scheduled round (2-5 s).
        self.snapshot_request_interval = snapshot_request_interval
        self._snap_wanted: set[str] = set()
        self._snap_asked: dict[str, float] = {}
        #: The connections the current tick made due (None: not in a tick, wake at once).
        self._tick: set[Outbox] | None = None

    def begin_tick(self) -> None:
        """A batch of the aggregator's messages begins: collect what it makes due."""
        self._tick = set()

    def end_tick(self) -> set[Outbox]:
        """The batch ended: the connections it made due, each once (nobody was woken)."""
        due, self._tick = self._tick, None
        return due if due is not None else set()

    def _due(self, obs: set[Outbox]) -> None:
        if self._tick is not None:
            self._tick |= obs
        else:
            for ob in obs:
                ob.notify()

    def notify(self, group: str) -> set[Outbox]:
        """Every subscriber of ``group`` has something due (woken, or collected in a tick);
        returns them."""
        subs = self.subscribers.get(group, set())
        self._due(subs)
        return subs

    def snapshot_arrived(self, group: str) -> set[Outbox]:
        """A new snapshot of ``group`` is cached: wake (and return) its subscribers waiting
        for one. Whoever still cannot use it says so again when its frame is built."""
        self._snap_wanted.discard(group)
        waiting = {ob for ob in self.subscribers.get(group, set())
                   if ob.subs[group].state == SubState.SYNC}
        self._due(waiting)
        return waiting

    def subscribe(self, ob: Outbox, group: str, shards: frozenset[int]) -> GroupSub:
        """Subscribe (or re-subscribe) ``ob`` to ``group``: it gets a snapshot, then deltas."""
        sub = GroupSub(group, shards)
        ob.subs[group] = sub
        self.subscribers.setdefault(group, set()).add(ob)
        if group not in self.book.snapshots:
            self.want_snapshot(group)
        ob.notify()
        return sub

    def resume(self, ob: Outbox, group: str, points: Iterable[ResumePoint]) -> ResumeOutcome:
        """Continue ``group`` after the client's points if the history bridges every one of
        them (``BRIDGED``); otherwise the group resyncs from a snapshot and the outcome says
        why (:func:`~xypipe._md.seqrules.judge_resume`): a point ahead of the stream, in
        another epoch, older than the history, for an unknown shard..."""
        pts = {p.shard: p for p in points}
        outcome = self._judge_resume(group, pts)
        sub = self.subscribe(ob, group, frozenset())
        self.stats.resumes[outcome.value] = self.stats.resumes.get(outcome.value, 0) + 1
        if outcome == ResumeOutcome.BRIDGED:
            sub.state, sub.epoch = SubState.LIVE, next(iter(pts.values())).epoch
            sub.cursors = {shard: p.seq + 1 for shard, p in pts.items()}
        return outcome

    def _judge_resume(self, group: str, pts: dict[int, ResumePoint]) -> ResumeOutcome:
        streams = [h for h in self.book.group_streams.get(group, []) if h.epoch is not None]
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
        self.to_sync(sub, keep_min_version=False, reason="request")
        ob.notify()
        return True

    def set_paused(self, ob: Outbox, groups: frozenset[str]) -> None:
        for name, sub in ob.subs.items():
            if name in groups and sub.state != SubState.PAUSED:
                sub.state = SubState.PAUSED
                sub.cursors = {}
            elif name not in groups and sub.state == SubState.PAUSED:
                self.to_sync(sub, keep_min_version=False, reason="pause")
        ob.notify()

    def drop(self, ob: Outbox) -> None:
        for group in list(ob.subs):
            self.unsubscribe(ob, group)
        ob.wake = None

    def to_sync(self, sub: GroupSub, *, keep_min_version: bool, reason: str) -> None:
        """Send ``sub`` back to a snapshot; ``reason`` is counted (``resync_reasons``)."""
        if sub.state != SubState.SYNC:  # a paused group resumes from a snapshot too
            sub.resyncs += 1
            self.stats.resyncs += 1
            self.stats.resync_reasons[reason] = self.stats.resync_reasons.get(reason, 0) + 1
        sub.state = SubState.SYNC
        sub.cursors = {}
        if not keep_min_version:
            sub.skip_up_to(None)
        snap = self.book.snapshots.get(sub.group)
        if snap is None or not sub.can_use(snap):
            self.want_snapshot(sub.group)

    def want_snapshot(self, group: str) -> None:
        self._snap_wanted.add(group)

    def take_snapshot_requests(self, now: float) -> list[str]:
        """Groups whose waiting subscribers need a fresher snapshot than the cache holds: the
        shell asks the aggregator for one (its answer is published to every gateway). Only
        groups the aggregator is known to publish (a stream or a snapshot was seen); asked
        again every ``snapshot_request_interval`` until a snapshot arrives."""
        out = []
        book = self.book
        for group in list(self._snap_wanted):
            if group not in self.subscribers:
                self._snap_wanted.discard(group)
                continue
            if group not in book.group_streams and group not in book.snapshots:
                continue
            asked = self._snap_asked.get(group)
            if asked is None or now - asked >= self.snapshot_request_interval:
                self._snap_asked[group] = now
                out.append(group)
        return out
