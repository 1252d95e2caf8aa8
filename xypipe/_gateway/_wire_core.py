"""The sans-I/O core of one browser connection, between its socket and its :class:`Session`.

:class:`ConnectionCore` is fed what the socket shell (:mod:`._conn`) reads and the clock it
reads — bytes, ``now``, ``wall`` — and answers with bytes to write and decisions (keep reading?
closing?). It owns the WebSocket state machine (wsproto, itself sans-I/O), reassembles client
messages within ``max_frame_bytes`` (:class:`MessageAssembler`), feeds the session, and carries
out the session's effects: hub subscriptions, snapshot look-ups, metrics, audit lines, level
changes, control frames and the close. It has no socket, no task and no clock, so every rule is
unit-tested by feeding it bytes (tests/gateway/test_wire_core.py).

What it needs from the gateway is :class:`ConnectionPorts` — exactly that, passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.events import Request as WsRequest
from wsproto.utilities import LocalProtocolError as WsLocalError
from wsproto.utilities import RemoteProtocolError as WsRemoteError

from xypipe._degrade import Level, Pressure, Transition
from xypipe._errors import GW_SNAPSHOT_LOOKUPS_LIMITED, WS_BAD_FRAMING, WS_LEVEL_RAISED
from xypipe._gateway._access import AccessRecorder
from xypipe._gateway._gmetrics import GatewayMetrics, LevelGauges
from xypipe._gateway._hub import Built, Hub, Outbox, ws_binary
from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._session import (
    Audit,
    AuthLockedOut,
    AuthThrottled,
    ClientReport,
    Close,
    LevelChanged,
    LookupLimited,
    PauseGroups,
    ProtocolViolation,
    RequestSnapshot,
    ResumeGroup,
    Send,
    Session,
    State,
    SubscribeGroup,
    UnsubscribeGroup,
)
from xypipe._log import Logger
from xypipe._md.seqrules import ResumeOutcome
from xypipe.contracts import ClientMetrics, ErrorCode, ServerFrame

__all__ = [
    "ConnectionCore",
    "ConnectionPorts",
    "FlagView",
    "MessageAssembler",
    "Outgoing",
    "Refusal",
    "SnapshotNeeds",
    "TextIn",
    "TooLarge",
    "Whole",
    "origin_allowed",
]

#: The pressure of a connection whose writer is idle with nothing queued.
_IDLE = Pressure(0.0, "send queue empty")
#: Browser render latencies beyond an hour are reports of a broken clock, not latencies.
_RENDER_MAX_MS = 3_600_000
_RENDER_MAX_SAMPLES = 1000


# --------------------------------------------------------------------------- the ports


class FlagView(Protocol):
    """The operator flags a connection applies; ``version`` moves with every change."""

    @property
    def version(self) -> int: ...

    def forced_level(self) -> Level | None: ...

    def disabled_groups(self) -> frozenset[str]: ...


class SnapshotNeeds(Protocol):
    def ensure_snapshot(self, group: str) -> None:
        """Fetch ``group``'s stored snapshot if the hub has none (a subscriber waits)."""


@attrs.frozen
class ConnectionPorts:
    """Exactly what a connection needs from its gateway, shared by every connection."""

    options: GatewayOptions
    #: The fan-out core: subscriptions, the send queue, frames.
    hub: Hub
    metrics: GatewayMetrics
    #: Audit lines and counts of access decisions (hellos, ACL, Origins, lockouts).
    access: AccessRecorder
    levels: LevelGauges
    snapshots: SnapshotNeeds
    flags: FlagView
    #: A new session for a peer at ``now`` (auth, ACL and throttle checks live in it).
    open_session: Callable[[str, float], Session]
    #: Whether the gateway has no room for another connection.
    at_capacity: Callable[[], bool]
    #: Seconds since the epoch (frames carry it; tokens are checked against it).
    wall: Callable[[], float]
    #: The ``scope`` label of this gateway's ``backpressure_events``.
    scope: str
    log: Logger


def origin_allowed(allowed: list[str], origin: str | None) -> bool:
    if "*" in allowed:
        return True
    return origin is not None and origin in allowed


# --------------------------------------------------------------------------- reassembly


@attrs.frozen
class Whole:
    """A complete binary message within the limit."""

    data: bytes


@attrs.frozen
class TooLarge:
    """A message over the limit; its bytes were discarded as they streamed in."""

    size: int


@attrs.frozen
class TextIn:
    """A text message (the protocol is binary only)."""


Message = Whole | TooLarge | TextIn


class MessageAssembler:
    """wsproto's message fragments → whole client messages, holding at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._size = 0
        self._text = False

    def feed(self, event: BytesMessage | TextMessage) -> Message | None:
        """One fragment; the message once its last fragment arrived, else None."""
        payload = event.data
        chunk = payload.encode() if isinstance(payload, str) else bytes(payload)
        self._size += len(chunk)
        self._text = self._text or isinstance(event, TextMessage)
        if self._size <= self.limit:
            self._buf += chunk
        if not event.message_finished:
            return None
        msg: Message
        if self._text:
            msg = TextIn()
        elif self._size > self.limit:
            msg = TooLarge(self._size)
        else:
            msg = Whole(bytes(self._buf))
        self._buf.clear()
        self._size = 0
        self._text = False
        return msg


# --------------------------------------------------------------------------- the core


@attrs.frozen
class Refusal:
    """A WebSocket upgrade answered with an HTTP error; ``outcome`` labels the count."""

    status: int
    why: str
    outcome: str


@attrs.frozen
class Outgoing:
    """The next write: control frames, then at most one data frame (``built``)."""

    data: bytes
    built: Built | None


class ConnectionCore:
    """One connection's protocol work, no I/O. See the module docstring."""

    def __init__(self, ports: ConnectionPorts, conn_id: int, peer: str) -> None:
        self.ports = ports
        self.conn_id = conn_id
        self.peer = peer
        self.ws = WSConnection(ConnectionType.SERVER)
        self.outbox = Outbox(conn_id)
        self.log = ports.log.bind(conn=conn_id, peer=peer)
        self.session: Session | None = None
        #: Why the connection is ending (set once; the shell's writer finishes the close).
        self.closing: Close | None = None
        #: The peer's close frame arrived.
        self.peer_closed = False
        #: The shell's writer is parked with nothing due and not woken since: the pressure
        #: sampler skips it; only then may a tick's flush write to the socket itself.
        self.idle = False
        #: The socket's non-blocking send (bytes taken; ``BlockingIOError``: none; another
        #: ``OSError``: broken), set by the shell for a plaintext socket (None: TLS).
        self.send_now: Callable[[bytes], int] | None = None
        #: The unsent tail of a frame a flush began, and the frame: the writer sends it first.
        self.pending = b""
        self.pending_built: Built | None = None
        #: When the last write completed (monotonic): heartbeats are due from it.
        self.last_send = 0.0
        #: Called once when the gateway begins a close (the shell bounds it in time).
        self.on_closing: Callable[[], None] = _nothing
        self._flags_seen = -1
        self._messages = MessageAssembler(ports.options.max_frame_bytes)
        opts = ports.options
        self._heartbeat_s = opts.heartbeat_ms / 1000
        self._hub = ports.hub

    # -- handshake ------------------------------------------------------------------------------

    def handshake_data(self, data: bytes) -> WsRequest | None:
        """Bytes of the upgrade request; the request once it is complete."""
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, WsRequest):
                return event
        return None

    def admit(self, request: WsRequest, origin: str | None) -> Refusal | None:
        """Whether this upgrade may become a connection (None) or how it is refused."""
        opts = self.ports.options
        if request.target.split("?", 1)[0] != opts.path:
            return Refusal(404, f"no WebSocket endpoint at {request.target}; use {opts.path}",
                           "path")
        if not origin_allowed(opts.allowed_origins, origin):
            self.ports.access.origin_denied(origin, self.peer)
            return Refusal(403, f"origin {origin!r} is not allowed", "origin_denied")
        if self.ports.at_capacity():
            return Refusal(503, "gateway at its connection limit; retry with backoff",
                           "capacity")
        return None

    def accept(self) -> bytes:
        # No extension is accepted (permessage-deflate would make every connection's frame
        # bytes different); see docs/protocol.md.
        return self.ws.send(AcceptConnection())

    def reject(self, refusal: Refusal) -> bytes:
        self.ports.metrics.connections.labels(refusal.outcome).inc()
        body = refusal.why.encode()
        try:
            return self.ws.send(RejectConnection(
                status_code=refusal.status,
                headers=[(b"content-type", b"text/plain; charset=utf-8"),
                         (b"content-length", str(len(body)).encode())],
                has_body=True,
            )) + self.ws.send(RejectData(data=body))
        except WsLocalError:
            return b""

    # -- the session ----------------------------------------------------------------------------

    def start(self, now: float) -> Session:
        """Open the session (the upgrade was accepted and written)."""
        self.ports.metrics.connections.labels("accepted").inc()
        self.session = self.ports.open_session(self.peer, now)
        self.last_send = now
        return self.session

    def finished(self) -> None:
        """The socket is gone: the session ends and nothing wakes or writes to this connection
        again (its descriptor may be reused once closed)."""
        if self.session is not None:
            self.session.closed()
        self.outbox.wake = None
        self.send_now = None
        self.idle = False

    def receive_data(self, data: bytes, now: float, wall: float) -> bool:
        """Bytes from the socket (``b""``: it ended); whether to keep reading."""
        session = self._session()
        if not data:
            self.peer_gone("peer closed the socket")
            return False
        try:
            self.ws.receive_data(data)
            events = list(self.ws.events())
        except WsRemoteError as exc:
            self.log.warning("bad WebSocket framing", code=WS_BAD_FRAMING, error=str(exc))
            self.peer_gone(f"bad WebSocket framing: {exc}")
            return False
        for event in events:
            if isinstance(event, BytesMessage | TextMessage):
                msg = self._messages.feed(event)
                if isinstance(msg, TextIn):
                    session.text_frame(now)
                elif isinstance(msg, TooLarge):
                    session.frame_too_large(now, msg.size)
                elif isinstance(msg, Whole):
                    session.receive(now, wall, msg.data)
            elif isinstance(event, Ping):
                self.outbox.push_control(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.closing is None and self.ws.state is ConnectionState.REMOTE_CLOSING:
                    try:
                        self.outbox.push_control(self.ws.send(event.response()))
                    except WsLocalError:
                        pass
                self.peer_closed = True
                self.peer_gone(f"peer sent close {event.code}")
                self.outbox.notify()
                return False
            self.apply(now)
        return True

    def tick(self, now: float) -> None:
        """The session's deadline (hello, heartbeat, token expiry) may have passed."""
        self._session().tick(now)
        self.apply(now)

    def next_deadline(self) -> float:
        return self._session().next_deadline()

    def sample(self, now: float) -> None:
        """Feed the session its send queue's pressure (the gateway's sampler, every period)."""
        s = self.session
        if s is None or not s.is_open:
            return
        if self.idle and not self.outbox.control:
            if s.level == Level.L0:
                return
            p = _IDLE
        else:
            opts = self.ports.options
            p = self.ports.hub.pressure(self.outbox, now, opts.queue_max_bytes,
                                        opts.queue_max_age_ms / 1000)
        s.pressure(now, p)
        self.apply(now)

    def close(self, code: int, reason: str, now: float) -> None:
        """Close from the gateway's side (shutdown, operator)."""
        s = self.session
        if s is not None and s.state not in (State.CLOSING, State.CLOSED):
            s.close(code, reason)
            self.apply(now)

    def go_away(self, frame: bytes) -> bool:
        """Queue a GoAway (a framed ServerFrame, ahead of market data: the client keeps its
        last point and resumes elsewhere); False when the session is not open (the caller
        closes it instead)."""
        s = self.session
        if self.closing is not None or s is None or not s.is_open:
            return False
        self.outbox.push_control(frame)
        return True

    def refresh_flags(self, now: float) -> None:
        """Apply the current operator flags (forced level, disabled groups) to the session."""
        s = self.session
        if s is None or not s.is_open:
            return
        flags = self.ports.flags
        self._flags_seen = flags.version
        s.force_level(now, flags.forced_level())
        s.set_disabled_groups(flags.disabled_groups())
        self.apply(now)

    def peer_gone(self, why: str) -> None:
        if self.closing is None:
            self.log.info("connection ended by peer", reason=why, principal=self.principal())
            self.closing = Close(0, why)
            self.outbox.notify()

    def principal(self) -> str:
        s = self.session
        return s.principal.subject if s is not None and s.principal is not None else ""

    def _session(self) -> Session:
        if self.session is None:
            raise RuntimeError(f"connection {self.conn_id}: used before start()")
        return self.session

    # -- effects --------------------------------------------------------------------------------

    def apply(self, now: float) -> None:
        """Carry out everything the session asked for since the last call."""
        session = self._session()
        p = self.ports
        hub, ob = p.hub, self.outbox
        for eff in session.take_effects():
            if isinstance(eff, Send):
                ob.push_control(ws_binary(eff.frame.SerializeToString()))
            elif isinstance(eff, SubscribeGroup):
                hub.subscribe(ob, eff.group, eff.shards)
                p.snapshots.ensure_snapshot(eff.group)
            elif isinstance(eff, UnsubscribeGroup):
                hub.unsubscribe(ob, eff.group)
            elif isinstance(eff, ResumeGroup):
                outcome = hub.resume(ob, eff.group, eff.points)
                bridged = outcome is ResumeOutcome.BRIDGED
                p.metrics.resumes.labels("bridged" if bridged else "snapshot",
                                         outcome.value).inc()
                if not bridged:
                    p.snapshots.ensure_snapshot(eff.group)
            elif isinstance(eff, RequestSnapshot):
                hub.resync(ob, eff.group)
                p.snapshots.ensure_snapshot(eff.group)
            elif isinstance(eff, PauseGroups):
                hub.set_paused(ob, eff.groups)
                for g in ob.subs:
                    if g not in eff.groups:
                        p.snapshots.ensure_snapshot(g)
            elif isinstance(eff, LevelChanged):
                self._level_changed(eff.transition)
                ob.level = eff.transition.new
            elif isinstance(eff, ClientReport):
                _count_report(p.metrics, eff.metrics)
            elif isinstance(eff, Audit):
                p.access.session_audit(session.session_id, eff)
            elif isinstance(eff, AuthThrottled):
                p.access.throttled("ws", eff.address)
            elif isinstance(eff, AuthLockedOut):
                p.access.locked_out("ws", eff.lockout)
            elif isinstance(eff, ProtocolViolation):
                err = eff.error
                name = ErrorCode.Name(err.error_code)
                p.metrics.protocol_errors.labels(name).inc()
                self.log.warning("client broke the protocol", code=err.code, error_code=name,
                                 detail=err.message, fatal=err.fatal, ref_id=err.ref_id,
                                 group=err.group, principal=self.principal())
            elif isinstance(eff, LookupLimited):
                p.metrics.lookups_limited.labels(eff.action).inc()
                if eff.first:  # once per run of refusals, not per refused request
                    self.log.warning("snapshot look-ups over the connection's rate limit",
                                     code=GW_SNAPSHOT_LOOKUPS_LIMITED, action=eff.action,
                                     group=eff.group, principal=self.principal())
            elif isinstance(eff, Close):
                self._begin_close(eff)
        if session.is_open and self._flags_seen != p.flags.version:
            self.refresh_flags(now)

    def _level_changed(self, t: Transition) -> None:
        p = self.ports
        p.levels.move(t.old, t.new)
        p.metrics.backpressure.labels(f"{p.scope}:connection", t.direction,
                                      f"L{int(t.new)}").inc()
        fields = {"old_level": int(t.old), "new_level": int(t.new), "reason": t.reason,
                  "recovery": t.recovery, "principal": self.principal()}
        if t.direction == "up":
            self.log.warning("slow consumer: connection level raised", code=WS_LEVEL_RAISED,
                             **fields)
        else:
            self.log.info("connection level lowered", **fields)

    def _begin_close(self, eff: Close) -> None:
        if self.closing is not None:
            return
        self.closing = eff
        self.ports.metrics.closes.labels(str(eff.code)).inc()
        self.log.info("closing connection", close_code=eff.code, reason=eff.reason,
                      principal=self.principal())
        self.outbox.notify()
        self.on_closing()

    # -- what to write --------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether the writer has something to do now (a frame's tail, a frame, the close)."""
        return (self.closing is not None or bool(self.pending)
                or self.ports.hub.has_due(self.outbox))

    # -- the tick's direct writes ---------------------------------------------------------------

    def can_write_now(self) -> bool:
        """Whether a tick's flush may write the next data frame itself: plaintext socket, writer
        idle with nothing of its own, session open, plain L0 (L1+ holds frames to merge)."""
        s, ob = self.session, self.outbox
        return (self.idle and self.send_now is not None and self.closing is None
                and not self.pending and not ob.control and ob.level is Level.L0
                and s is not None and s.is_open)

    def write_now(self, built: Built, now: float) -> int:
        """Write a frame a flush built to the socket; the bytes it took. Fewer than all: the rest
        is the pending tail (in the send queue) and the writer is woken to finish it."""
        assert self.send_now is not None
        data = built.data
        try:
            n = self.send_now(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.peer_gone(f"socket broke while sending: {exc}")
            return 0
        ob = self.outbox
        ob.bytes_out += n
        if n == len(data):
            self.last_send = now
            ob.frames += 1
            return n
        self.pending, self.pending_built = data[n:], built
        ob.inflight_bytes = len(data) - n
        ob.inflight_since = now
        ob.notify()
        return n

    def heartbeat_at(self) -> float:
        """When an idle connection is due a server heartbeat."""
        return self.last_send + self._heartbeat_s

    def next_write(self, now: float, wall: float) -> Outgoing | None:
        """The tail of a frame a flush began, alone; else control frames first, then one data
        frame with every delta due; a heartbeat when the connection has been quiet for
        ``heartbeat_ms``; None when nothing is due."""
        if self.pending:
            tail, built = self.pending, self.pending_built
            self.pending, self.pending_built = b"", None
            return Outgoing(tail, built)
        hub, ob = self.ports.hub, self.outbox
        frames = hub.take_control(ob)
        built = None
        if self.session is not None and self.session.is_open:
            built = hub.build(ob, int(wall * 1e6))
        if built is not None:
            frames.append(built.data)
        elif not frames and now - self.last_send >= self._heartbeat_s:
            # Server heartbeat: an empty frame (just ts_send_us) so the client can tell a
            # quiet market from a dead gateway.
            frames.append(ws_binary(ServerFrame(ts_send_us=int(wall * 1e6)).SerializeToString()))
        if not frames:
            return None
        return Outgoing(b"".join(frames) if len(frames) > 1 else frames[0], built)

    def hold_s(self) -> float:
        """How long to let deltas accumulate after a write (L1+: fewer, fuller frames)."""
        return self._hub.levels.at(self.outbox.level).frame_interval_s

    def sending(self, nbytes: int, now: float) -> None:
        """A write of ``nbytes`` is handed to the socket (the send queue counts it; a frame's
        tail keeps the age of its frame)."""
        self.outbox.inflight_bytes = nbytes
        if self.outbox.inflight_since is None:
            self.outbox.inflight_since = now

    def send_ended(self) -> None:
        """The write ended, taken by the socket or not (the socket broke, or it was cancelled)."""
        self.outbox.inflight_bytes = 0
        self.outbox.inflight_since = None

    def sent(self, nbytes: int, now: float) -> None:
        """The socket took the whole write."""
        ob = self.outbox
        self.last_send = now
        ob.frames += 1
        ob.bytes_out += nbytes
        self.ports.metrics.frames.inc()
        self.ports.metrics.bytes_out.inc(nbytes)

    def delivered(self, built: Built, wall: float) -> None:
        """A data frame was written: forwarded messages and end-to-end latency."""
        metrics = self.ports.metrics
        n = built.deltas + built.snapshots
        if n:
            metrics.ws_msgs.add(n)
        if built.oldest_arrival_us:
            lat = wall - built.oldest_arrival_us / 1e6
            if lat >= 0:
                metrics.e2e.labels("gateway_send").observe(lat)

    def close_frames(self) -> bytes:
        """What is left to write when closing: control frames, and our close frame unless the
        peer ended first."""
        closing = self.closing
        # A frame's tail first: the socket holds its head.
        frames = [self.pending] if self.pending else []
        self.pending, self.pending_built = b"", None
        frames += self.ports.hub.take_control(self.outbox)
        if closing is not None and closing.code and not self.peer_closed:
            try:
                frames.append(self.ws.send(CloseConnection(code=closing.code,
                                                           reason=closing.reason)))
            except WsLocalError:
                pass
        return b"".join(frames)


def _count_report(metrics: GatewayMetrics, m: ClientMetrics) -> None:
    """A browser's ClientMetrics: render latencies and checksum mismatches."""
    hist = metrics.e2e.labels("client_render")
    for ms in m.render_latency_ms[:_RENDER_MAX_SAMPLES]:
        if 0 <= ms < _RENDER_MAX_MS:
            hist.observe(ms / 1000)
    if m.checksum_mismatches:
        metrics.client_mismatch.inc(m.checksum_mismatches)


def _nothing() -> None:
    pass
