"""The client's protocol core: what the browser worker does, without a socket or a clock.

Fed what the socket gives (``receive(data, now, wall_us)``), what the program asks
(``subscribe``, ``unsubscribe``, ``request_snapshot``) and the time (``tick(now, wall_us)``);
it returns :mod:`updates <xypipe._client._updates>` and queues the frames to send
(``take_outgoing``). The trio-websocket shell (``_shell.py``) moves bytes and sleeps; every
rule lives here, tested by feeding frames:

- **hello → Welcome**: the hello carries the token (and the previous ``session_id`` after a
  reconnect); on ``Welcome`` the wanted groups are resumed from the client's last points
  (:meth:`SeqTracker.reconnect_plan <xypipe._md.client.SeqTracker.reconnect_plan>`) or
  subscribed afresh. A ``Welcome`` on an open session acknowledges a token refresh.
- **Snapshot, then deltas**: a frame's snapshots before its deltas; every snapshot restarts its
  group, every delta is judged by the sequence rules and every applied entry's checksum is
  verified (``docs/protocol.md``); a gap, a new epoch, a far-future jump or a mismatch asks for
  a snapshot (again when overdue) and holds the deltas until it comes.
- **Heartbeats**: a ping every half ``heartbeat_ms``; nothing received for
  ``dead_after_beats`` heartbeats means the connection is dead (the shell drops it).
- **Close codes**: :func:`close_error` maps a close to the error the client raises, and says
  whether a reconnect may help.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable

import attrs

from xypipe._contracts import UNKNOWN_FIELDS_METRIC, ContractDecoder
from xypipe._degrade import Level
from xypipe._errors import ContractError, GatewayAuthError, GatewayClosed
from xypipe._md.client import HELD, SeqTracker
from xypipe._md.projection import is_projection
from xypipe._md.seqrules import DEFAULT_MAX_GAP, STALE_FENCE, Verdict
from xypipe.contracts import (
    ClientFrame,
    ClientMetrics,
    Delta,
    Error,
    ErrorCode,
    GoAway,
    GroupRef,
    Hello,
    Ping,
    RefreshToken,
    Resume,
    ServerFrame,
    Snapshot,
    SnapshotRequest,
    Subscribe,
    Unsubscribe,
    Welcome,
)

from ._book import GroupBook
from ._updates import (
    BadFrame,
    ClientStatistics,
    Connected,
    Degraded,
    DeltaApplied,
    DeltaSkipped,
    ErrorReceived,
    FrameReceived,
    MoveRequested,
    SnapshotApplied,
    SnapshotRequested,
    Subscribed,
    TokenRefreshed,
    Update,
)

PROTOCOL_VERSION = 1
#: The close a draining gateway sends a client that has not moved after its GoAway (and
#: that an older client, which ignores the GoAway, gets): reconnect at once and resume.
DRAINING_CLOSE = 4100

#: Close codes after which reconnecting cannot help (the same token, the same client would be
#: refused again): the client raises instead. Others (1001 going away, 1006 lost, 1011,
#: 4010 slow consumer, 4014 heartbeat timeout) are reconnected.
AUTH_CLOSES = frozenset({4001, 4002, 4003})
FATAL_CLOSES = AUTH_CLOSES | {4005, 4007, 4013}


def close_error(code: int | None, reason: str, fatal_error: Error | None,
                url: str) -> tuple[GatewayClosed, bool]:
    """The error a close means, and whether it is final (no reconnect)."""
    name = ""
    if code is not None and 4000 < code < 4100:
        try:
            name = f" ({ErrorCode.Name(code - 4000).removeprefix('ERROR_CODE_')})"
        except ValueError:
            name = ""
    said = f": {fatal_error.message}" if fatal_error is not None and fatal_error.message else (
        f": {reason}" if reason else "")
    if code is None or code == 1006:  # 1006: no close frame, the TCP connection just ended
        what = "was lost" if code is None else "was lost (1006: no close frame)"
    else:
        what = f"was closed by the gateway with {code}{name}"
    message = f"{url}: the connection {what}{said}"
    error_text = fatal_error.message if fatal_error is not None else ""
    if code in AUTH_CLOSES:
        return GatewayAuthError(message, close_code=code, reason=reason, error=error_text), True
    return (GatewayClosed(message, close_code=code, reason=reason, error=error_text),
            code in FATAL_CLOSES)


class Phase(enum.Enum):
    CLOSED = "closed"  # no socket
    HELLO = "hello"  # hello sent, waiting for the Welcome
    OPEN = "open"


@attrs.frozen
class CoreOptions:
    """The client's protocol settings (see :func:`xypipe.client.connect`)."""

    client: str = "xypipe.client/0.1"
    #: Verify the canonical checksum of every applied entry.
    verify: bool = True
    #: Hand data frames over undecoded (:class:`FrameReceived`): no books, no checks, no resume.
    lean: bool = False
    max_gap: int = DEFAULT_MAX_GAP
    #: Ask again for a snapshot not received within this (the worker's ``snapshotTimeoutMs``).
    snapshot_timeout_s: float = 2.0
    #: Nothing received for this many heartbeats: the connection is dead.
    dead_after_beats: int = 3
    #: How often checksum mismatches and reconnects are reported (``ClientMetrics``; 0: never).
    metrics_interval_s: float = 2.0
    #: Until the Welcome says otherwise.
    heartbeat_ms: int = 5000


@attrs.frozen
class Due:
    """What :meth:`ClientCore.tick` found due beyond the frames it queued."""

    #: Time to fetch a fresh token and hand it to :meth:`ClientCore.refresh`.
    refresh: bool = False
    updates: tuple[Update, ...] = ()


@attrs.define
class _Counters:
    connects: int = 0
    frames: int = 0
    bytes: int = 0
    snapshots: int = 0
    deltas: int = 0
    applied: int = 0
    skipped: dict[str, int] = attrs.field(factory=dict)
    verified: int = 0
    mismatches: int = 0
    trimmed: int = 0
    snapshot_requests: int = 0
    resumed_groups: int = 0
    errors: int = 0
    bad_frames: int = 0
    best_rtt_us: int | None = None
    moves: int = 0


class ClientCore:
    """One client's protocol state across its connections (books survive a reconnect)."""

    def __init__(self, options: CoreOptions = CoreOptions(), *, where: str = "gateway",
                 decoder: ContractDecoder | None = None) -> None:
        self.options = options
        self.where = where
        self._decoder = decoder if decoder is not None else ContractDecoder()
        self.phase = Phase.CLOSED
        #: group -> shards (empty: every shard), in the order they were asked for.
        self.wanted: dict[str, frozenset[int]] = {}
        self.books: dict[str, GroupBook] = {}
        self.tracker = SeqTracker(max_gap=options.max_gap)
        self.session_id = ""
        self.principal = ""
        self.heartbeat_ms = options.heartbeat_ms
        self.token_expires_us = 0
        #: The fatal Error frame that came before the close, if any.
        self.fatal_error: Error | None = None
        #: The GoAway of this connection's gateway (it is draining): the shell moves.
        self.go_away: GoAway | None = None
        self._c = _Counters()
        self._out: list[bytes] = []
        self._ids = 0
        self._nonce = 0
        self._asked: dict[str, float] = {}
        self._next_ping = float("inf")
        self._next_metrics = float("inf")
        self._refresh_at = float("inf")
        self._reported = (0, 0)  # connects, mismatches already reported

    # -- the connection --------------------------------------------------------------------

    def open(self, token: str) -> bytes:
        """A socket is open: the hello frame to send first."""
        self.phase = Phase.HELLO
        self.fatal_error = None
        self.go_away = None
        self._out.clear()
        return self._frame(ClientFrame(hello=Hello(
            token=token, protocol_version=PROTOCOL_VERSION, client=self.options.client,
            session_id=self.session_id)))

    def closed(self) -> None:
        """The socket is gone (the books stay: the next connection resumes them)."""
        self.phase = Phase.CLOSED
        self._out.clear()
        self._asked.clear()
        self._next_ping = self._next_metrics = self._refresh_at = float("inf")

    @property
    def is_open(self) -> bool:
        return self.phase is Phase.OPEN

    # -- what the program asks -------------------------------------------------------------

    def subscribe(self, groups: Iterable[str], shards: Iterable[int] = ()) -> None:
        """Subscribe to groups or projections (``group/projection``: one stream, no shards)."""
        wanted = frozenset(shards)
        new = []
        groups = list(groups)
        if wanted and any(is_projection(g) for g in groups):
            raise ValueError(f"subscribe({groups!r}, shards={sorted(wanted)}): a projection "
                             "(group/projection) is one stream without shards")
        for g in groups:
            if self.wanted.get(g) != wanted or g not in self.wanted:
                self.wanted[g] = wanted
                new.append(g)
        if new and self.is_open:
            self._queue(ClientFrame(subscribe=Subscribe(groups=[
                GroupRef(group=g, shards=sorted(wanted)) for g in new])))

    def unsubscribe(self, groups: Iterable[str]) -> None:
        gone = [g for g in groups if self.wanted.pop(g, None) is not None]
        for g in gone:
            self.tracker.forget_group(g)
            self.books.pop(g, None)
            self._asked.pop(g, None)
        if gone and self.is_open:
            self._queue(ClientFrame(unsubscribe=Unsubscribe(
                groups=[GroupRef(group=g) for g in gone])))

    def request_snapshot(self, group: str, now: float, reason: str) -> SnapshotRequested | None:
        """Resend ``group`` from a snapshot. At most one request per group per
        ``snapshot_timeout_s``, whatever arrives meanwhile: a group whose snapshot brings the
        same bad entry back is asked again when overdue, not in a loop with the gateway."""
        if group not in self.wanted:
            return None
        asked = self._asked.get(group)
        if asked is not None and now - asked < self.options.snapshot_timeout_s:
            return None
        if not self.tracker.is_resyncing(group):
            self.tracker.begin_resync(group, now)
        book = self.books.get(group)
        if book is not None:
            book.synced = False
        if not self.is_open:
            return None  # the next Welcome subscribes it afresh
        self._queue(ClientFrame(snapshot_request=SnapshotRequest(group=group)))
        self._asked[group] = now
        self._c.snapshot_requests += 1
        return SnapshotRequested(group, reason)

    def refresh(self, token: str) -> None:
        """A fresh token for the same principal (sent if the session is open)."""
        self._refresh_at = float("inf")
        if self.is_open:
            self._queue(ClientFrame(refresh=RefreshToken(token=token)))

    def refresh_failed(self, now: float, retry_in_s: float = 5.0) -> None:
        self._refresh_at = now + retry_in_s

    def take_outgoing(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def book(self, group: str) -> GroupBook | None:
        return self.books.get(group)

    def statistics(self) -> ClientStatistics:
        c = self._c
        return ClientStatistics(
            connects=c.connects, frames=c.frames, bytes=c.bytes, snapshots=c.snapshots,
            deltas=c.deltas, applied=c.applied, skipped=dict(c.skipped),
            checksums_verified=c.verified, checksum_mismatches=c.mismatches,
            trimmed=c.trimmed, snapshot_requests=c.snapshot_requests,
            resumed_groups=c.resumed_groups, errors=c.errors, bad_frames=c.bad_frames,
            best_rtt_ms=None if c.best_rtt_us is None else c.best_rtt_us / 1000,
            unknown_fields=self._unknown_fields(), moves=c.moves)

    def _unknown_fields(self) -> int:
        registry = self._decoder.registry
        return int(sum(s.value for m in registry.collect() if m.name == UNKNOWN_FIELDS_METRIC
                       for s in m.samples if s.name.endswith("_total")))

    # -- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`tick` next has something to do (the shell sleeps until then)."""
        if not self.is_open:
            return float("inf")
        overdue = min((p.since for p in self.tracker.resyncing.values()), default=float("inf"))
        return min(self._next_ping, self._next_metrics, self._refresh_at,
                   overdue + self.options.snapshot_timeout_s)

    def read_timeout(self) -> float:
        """Seconds of silence after which an open connection is dead: the gateway sends a
        frame at least every heartbeat, so ``dead_after_beats`` missed ones mean a dead peer
        (measured by the shell while it waits for the socket, never while the program holds
        it up)."""
        return self.heartbeat_ms * self.options.dead_after_beats / 1000

    def tick(self, now: float, wall_us: int) -> Due:
        if not self.is_open:
            return Due()
        if now >= self._next_ping:
            self._nonce += 1
            self._queue(ClientFrame(ping=Ping(ts_us=wall_us, nonce=self._nonce)))
            self._next_ping = now + max(0.25, self.heartbeat_ms / 2000)
        if now >= self._next_metrics:
            self._report_metrics()
            self._next_metrics = now + self.options.metrics_interval_s
        updates: list[Update] = []
        for group in self.tracker.overdue(now, self.options.snapshot_timeout_s):
            self._asked.pop(group, None)
            asked = self.request_snapshot(group, now, "overdue")
            if asked is not None:
                updates.append(asked)
        return Due(refresh=now >= self._refresh_at, updates=tuple(updates))

    def _report_metrics(self) -> None:
        # Increments since the last report, as the browser sends them (the gateway adds them
        # up; a reconnecting client never counts twice).
        connects, mismatches = self._reported
        reconnects = max(0, self._c.connects - 1) - max(0, connects - 1)
        new_mismatches = self._c.mismatches - mismatches
        if reconnects or new_mismatches:
            self._queue(ClientFrame(metrics=ClientMetrics(
                reconnects=reconnects, checksum_mismatches=new_mismatches)))
            self._reported = (self._c.connects, self._c.mismatches)

    # -- frames in -------------------------------------------------------------------------

    def text_frame(self, text: str) -> list[Update]:
        """The gateway sent a text frame (the protocol is binary only)."""
        self._c.frames += 1
        return [self._bad(f"a text frame of {len(text)} characters; expected a binary "
                          "protobuf ServerFrame")]

    def receive(self, data: bytes, now: float, wall_us: int) -> list[Update]:
        """One binary message from the gateway."""
        self._c.frames += 1
        self._c.bytes += len(data)
        if self.options.lean and self.is_open:
            return [FrameReceived(data)]
        try:
            frame = self._decoder.decode(ServerFrame, data, where=self.where)
        except ContractError as exc:
            return [self._bad(str(exc))]
        out: list[Update] = []
        if frame.HasField("welcome"):
            out.append(self._on_welcome(frame.welcome, now, wall_us))
        if frame.HasField("pong"):
            rtt = wall_us - frame.pong.ts_us
            if frame.pong.ts_us and rtt >= 0 and (self._c.best_rtt_us is None
                                                  or rtt < self._c.best_rtt_us):
                self._c.best_rtt_us = rtt
        if frame.HasField("subscribed"):
            out.append(Subscribed(tuple(g.group for g in frame.subscribed.groups)))
        if frame.HasField("degrade"):
            d = frame.degrade
            # A level beyond the known ones is reported as the highest (a newer gateway).
            out.append(Degraded(Level(min(d.level, max(Level))), d.reason, d.recovery,
                                tuple(d.paused_groups)))
        if frame.HasField("error"):
            out.append(self._on_error(frame.error))
        if self.options.lean:
            return out
        for snap in frame.snapshots:
            out.extend(self._on_snapshot(snap, now))
        for delta in frame.deltas:
            out.extend(self._on_delta(delta, now))
        if frame.HasField("go_away") and self.go_away is None:
            # After the frame's data: the point to resume from includes it. The frame names no
            # place to go: the shell reconnects to its own URL.
            self.go_away = frame.go_away
            self._c.moves += 1
            out.append(MoveRequested(frame.go_away.reason, frame.go_away.retry_ms))
        return out

    def _bad(self, reason: str) -> BadFrame:
        self._c.bad_frames += 1
        return BadFrame(reason)

    def _on_welcome(self, w: Welcome, now: float, wall_us: int) -> Update:
        if w.token_expires_us:
            left_s = (w.token_expires_us - wall_us) / 1e6
            # Refresh at 80 % of what is left (the worker's rule), never in a busy loop.
            self._refresh_at = now + max(1.0, left_s * 0.8) if left_s > 0 else float("inf")
        self.token_expires_us = w.token_expires_us
        if self.is_open:
            return TokenRefreshed(w.token_expires_us)
        self.phase = Phase.OPEN
        self._c.connects += 1
        self.session_id = w.session_id
        self.principal = w.principal
        if w.heartbeat_ms:
            self.heartbeat_ms = w.heartbeat_ms
        self._next_ping = now + max(0.25, self.heartbeat_ms / 2000)
        if self.options.metrics_interval_s > 0:
            self._next_metrics = now + self.options.metrics_interval_s
        if self.options.lean:
            resumed: list[str] = []
            fresh = list(self.wanted)
        else:
            resumable = [g for g, shards in self.wanted.items() if not shards]
            points, _ = self.tracker.reconnect_plan(resumable)
            resumed = sorted({p.group for p in points})
            fresh = [g for g in self.wanted if g not in resumed]
            if points:
                self._queue(ClientFrame(resume=Resume(points=points)))
                self._c.resumed_groups += len(resumed)
        if fresh:
            self._queue(ClientFrame(subscribe=Subscribe(groups=[
                GroupRef(group=g, shards=sorted(self.wanted[g])) for g in fresh])))
        return Connected(w.session_id, w.principal, self.heartbeat_ms, w.token_expires_us,
                         self._c.connects - 1, tuple(resumed), tuple(fresh))

    def _on_error(self, e: Error) -> ErrorReceived:
        self._c.errors += 1
        if e.fatal:
            self.fatal_error = e
        if e.code == ErrorCode.ERROR_CODE_SNAPSHOT_UNAVAILABLE and e.group:
            # Nothing to resynchronise from yet (the worker's rule): the next data of the
            # group is its baseline.
            self.tracker.forget_group(e.group)
            self._asked.pop(e.group, None)
        try:
            name = ErrorCode.Name(e.code)
        except ValueError:
            name = f"ERROR_CODE_{e.code}"
        return ErrorReceived(e.code, name, e.message, e.group, e.fatal, e.ref_id)

    def _on_snapshot(self, snap: Snapshot, now: float) -> list[Update]:
        group = snap.group
        if group not in self.wanted:
            return []
        self._c.snapshots += 1
        if not self.tracker.admit_snapshot(snap):
            # From an owner already replaced (its fence is below the group's): dropped.
            self._c.skipped[STALE_FENCE] = self._c.skipped.get(STALE_FENCE, 0) + 1
            return []
        book = self.books.get(group)
        if book is None:
            book = self.books[group] = GroupBook(group)
        was_live = book.snapshots > 0
        follow = self.tracker.apply_snapshot(snap)
        verified, mismatches = book.apply_snapshot(snap, verify=self.options.verify)
        book.synced = True
        self._c.mismatches += mismatches
        self._c.verified += verified
        out: list[Update] = [SnapshotApplied(
            group, snap.epoch, snap.version, tuple(sorted(snap.shard_seq.items())),
            len(snap.symbols), was_live, mismatches, len(follow))]
        for d in follow:
            out.extend(self._apply(d, now, replayed=True))
        if self.tracker.is_resyncing(group):
            book.synced = False
            asked = self.request_snapshot(group, now, "gap after snapshot")
            if asked is not None:
                out.append(asked)
        return out

    def _on_delta(self, d: Delta, now: float) -> list[Update]:
        group = d.group
        if group not in self.wanted:
            return []
        self._c.deltas += 1
        verdict = self.tracker.check(d)
        if verdict == Verdict.APPLY.value:
            if group not in self.books:
                # A stream's first data without a snapshot (after SNAPSHOT_UNAVAILABLE).
                self.books[group] = GroupBook(group)
            return self._apply(d, now, replayed=False)
        self._c.skipped[verdict] = self._c.skipped.get(verdict, 0) + 1
        out: list[Update] = [DeltaSkipped(group, d.shard, d.epoch, d.first_seq, d.seq,
                                          verdict)]
        if verdict in (Verdict.GAP.value, Verdict.FUTURE_EPOCH.value):
            self.tracker.begin_resync(group, now, d)
        elif verdict == Verdict.FAR_FUTURE.value:
            # Never the baseline: re-anchored from a fresh snapshot, not held.
            self.tracker.begin_resync(group, now)
        if verdict not in (Verdict.DUPLICATE.value, Verdict.STALE_EPOCH.value, HELD,
                           STALE_FENCE):
            asked = self.request_snapshot(group, now, verdict)
            if asked is not None:
                out.append(asked)
        return out

    def _apply(self, d: Delta, now: float, *, replayed: bool) -> list[Update]:
        book = self.books[d.group]
        applied = book.apply_delta(d, verify=self.options.verify)
        self._c.applied += 1
        self._c.verified += applied.verified
        self._c.trimmed += applied.trimmed
        mismatches = len(applied.mismatched)
        out: list[Update] = [DeltaApplied(
            d.group, d.shard, d.epoch, d.first_seq, d.seq, applied.states, applied.removed,
            d.level, d.ts_emit_us, mismatches, replayed)]
        if mismatches:
            self._c.mismatches += mismatches
            self.tracker.begin_resync(d.group, now)
            asked = self.request_snapshot(d.group, now, "checksum")
            if asked is not None:
                out.append(asked)
        return out

    # -- frames out ------------------------------------------------------------------------

    def _frame(self, frame: ClientFrame) -> bytes:
        self._ids += 1
        frame.id = self._ids  # echoed in an Error's ref_id
        return frame.SerializeToString()

    def _queue(self, frame: ClientFrame) -> None:
        self._out.append(self._frame(frame))


class Backoff:
    """Equal-jitter exponential backoff (``Backoff`` in ``ui-static/xy-core.js``): retry ``n``
    waits between half and all of ``min(cap, base * factor ** n)``; the first retry after a
    connection that was up is immediate. Failures count from the last connection that stayed up
    ``stable_s``."""

    def __init__(self, *, base_s: float = 0.1, cap_s: float = 2.0, factor: float = 2.0,
                 stable_s: float = 5.0, random_: Callable[[], float] = random.random) -> None:
        if not (0 < base_s <= cap_s) or factor < 1:
            raise ValueError(f"Backoff: expected 0 < base_s <= cap_s and factor >= 1, got "
                             f"base_s={base_s} cap_s={cap_s} factor={factor}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.factor = factor
        self.stable_s = stable_s
        self.random = random_
        #: Consecutive failed attempts since the last stable connection.
        self.failures = 0
        self._opened_at: float | None = None
        self._hint: float | None = None

    def opened(self, now: float) -> None:
        self._opened_at = now

    def moved(self, retry_s: float) -> None:
        """The connection ended by a planned move (GoAway): not a failure. Should the move's
        first attempt fail, the next one waits ``retry_s`` (the gateway's hint)."""
        self.failures = 0
        self._opened_at = None
        self._hint = retry_s

    def failed(self, now: float) -> float:
        """An attempt failed or the open connection ended: the delay before the next one."""
        if self._opened_at is not None and now - self._opened_at >= self.stable_s:
            self.failures = 0
        self._opened_at = None
        attempt = self.failures
        self.failures += 1
        hint, self._hint = self._hint, None
        if attempt == 0:
            # A dropped socket usually reconnects at once; a failed move waits the hint.
            return hint if hint is not None else 0.0
        ceiling = min(self.cap_s, self.base_s * self.factor ** min(attempt - 1, 64))
        return ceiling / 2 + self.random() * ceiling / 2

