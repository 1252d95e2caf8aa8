"""One browser socket: the Trio shell around a :class:`Session` and the hub's :class:`Outbox`.

Three tasks per connection, owned by the connection's nursery:

* **reader**: bytes → wsproto events → whole messages (bounded by ``max_frame_bytes``; a larger
  message is discarded as it streams in) → ``Session.receive``;
* **writer**: the only task that writes to the socket. It wakes when the hub or the session has
  something for this connection, writes the control frames, then *one* data frame holding every
  delta due (identical bytes for every connection due the same deltas), and at L1+ waits
  ``level_interval_ms`` before the next one so deltas accumulate and merge;
* **timer**: calls ``Session.tick`` at its deadlines (hello, heartbeat, token expiry).

A blocked write never blocks anyone else: only this connection's writer waits on its socket.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError as WsLocalError
from wsproto.utilities import RemoteProtocolError as WsRemoteError

from xypipe._degrade import Level
from xypipe._errors import GW_SNAPSHOT_LOOKUPS_LIMITED
from xypipe._gateway._hub import Outbox, ws_binary
from xypipe._gateway._session import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
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
from xypipe._md.seqrules import ResumeOutcome
from xypipe.contracts import ErrorCode, ServerFrame

if TYPE_CHECKING:
    from xypipe._gateway._server import GatewayServer

_READ = 65536


class Connection:
    def __init__(self, server: GatewayServer, stream: trio.abc.Stream, conn_id: int,
                 peer: str) -> None:
        self.server = server
        self.stream = stream
        self.conn_id = conn_id
        self.peer = peer
        self.ws = WSConnection(ConnectionType.SERVER)
        self.session: Session | None = None
        self.outbox = Outbox(conn_id)
        self.idle = True
        self._wake_ev = trio.Event()
        self._closing: Close | None = None
        self._close_sent = False
        self._peer_closed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._last_send = 0.0
        self.log = server.log.bind(conn=conn_id, peer=peer)

    # -- wake-up ----------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake_ev.set()

    # -- handshake ----------------------------------------------------------------------------

    async def handshake(self, origin: str | None) -> bool:
        """Complete the WebSocket handshake (or refuse it); True when the socket is open."""
        request: Request | None = None
        while request is None:
            data = await self.stream.receive_some(_READ)
            if not data:
                return False
            self.ws.receive_data(bytes(data))
            for event in self.ws.events():
                if isinstance(event, Request):
                    request = event
                    break
        srv = self.server
        if request.target.split("?", 1)[0] != srv.options.path:
            await self._reject(404, f"no WebSocket endpoint at {request.target}; use "
                                    f"{srv.options.path}", "path")
            return False
        if not srv.origin_allowed(origin):
            srv.audit.record("websocket origin denied", code="XY-WS-002", action="connect",
                             outcome="denied", sub=None, origin=origin, peer=self.peer)
            await self._reject(403, f"origin {origin!r} is not allowed", "origin_denied")
            return False
        if srv.at_capacity():
            await self._reject(503, "gateway at its connection limit; retry with backoff",
                               "capacity")
            return False
        # No extension is accepted (permessage-deflate would make every connection's frame
        # bytes different); see docs/protocol.md.
        await self.stream.send_all(self.ws.send(AcceptConnection()))
        self._tune_socket()
        srv.metrics.connections.labels("accepted").inc()
        return True

    async def _reject(self, status: int, why: str, outcome: str) -> None:
        self.server.metrics.connections.labels(outcome).inc()
        body = why.encode()
        try:
            await self.stream.send_all(self.ws.send(RejectConnection(
                status_code=status,
                headers=[(b"content-type", b"text/plain; charset=utf-8"),
                         (b"content-length", str(len(body)).encode())],
                has_body=True,
            )))
            from wsproto.events import RejectData

            await self.stream.send_all(self.ws.send(RejectData(data=body)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, WsLocalError):
            pass

    def _tune_socket(self) -> None:
        size = self.server.options.send_buffer_bytes
        sock: Any = getattr(self.stream, "socket", None)
        if size is None or sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError as exc:
            self.log.warning("could not set SO_SNDBUF", code="XY-WS-003", error=str(exc))

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        srv = self.server
        self.session = srv.new_session(self.peer)
        self.outbox.wake = self.wake
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reader)
                nursery.start_soon(self._timer)
                await self._writer()
                nursery.cancel_scope.cancel()
        finally:
            self.session.closed()
            self.outbox.wake = None

    def close(self, code: int, reason: str) -> None:
        """Close from the gateway's side (shutdown, operator)."""
        if self.session is not None and self.session.state not in (State.CLOSING, State.CLOSED):
            self.session.close(code, reason)
            self.apply(self.session)

    # -- effects --------------------------------------------------------------------------------

    def apply(self, session: Session) -> None:
        srv = self.server
        for eff in session.take_effects():
            if isinstance(eff, Send):
                self.outbox.push_control(ws_binary(eff.frame.SerializeToString()))
            elif isinstance(eff, SubscribeGroup):
                srv.hub.subscribe(self.outbox, eff.group, eff.shards)
                srv.ensure_snapshot(eff.group)
            elif isinstance(eff, UnsubscribeGroup):
                srv.hub.unsubscribe(self.outbox, eff.group)
            elif isinstance(eff, ResumeGroup):
                outcome = srv.hub.resume(self.outbox, eff.group, eff.points)
                bridged = outcome is ResumeOutcome.BRIDGED
                srv.metrics.resumes.labels("bridged" if bridged else "snapshot",
                                           outcome.value).inc()
                if not bridged:
                    srv.ensure_snapshot(eff.group)
            elif isinstance(eff, RequestSnapshot):
                srv.hub.resync(self.outbox, eff.group)
                srv.ensure_snapshot(eff.group)
            elif isinstance(eff, PauseGroups):
                srv.hub.set_paused(self.outbox, eff.groups)
                for g in self.outbox.subs:
                    if g not in eff.groups:
                        srv.ensure_snapshot(g)
            elif isinstance(eff, LevelChanged):
                srv.level_changed(self, eff.transition)
                self.outbox.level = eff.transition.new
            elif isinstance(eff, ClientReport):
                srv.client_report(eff.metrics)
            elif isinstance(eff, Audit):
                srv.audit_line(self, eff)
            elif isinstance(eff, AuthThrottled):
                srv.auth_throttled("ws", eff.address)
            elif isinstance(eff, AuthLockedOut):
                srv.auth_locked_out("ws", eff.lockout)
            elif isinstance(eff, ProtocolViolation):
                err = eff.error
                name = ErrorCode.Name(err.error_code)
                srv.metrics.protocol_errors.labels(name).inc()
                self.log.warning("client broke the protocol", code=err.code, error_code=name,
                                 detail=err.message, fatal=err.fatal, ref_id=err.ref_id,
                                 group=err.group, principal=self._principal())
            elif isinstance(eff, LookupLimited):
                srv.metrics.lookups_limited.labels(eff.action).inc()
                if eff.first:  # once per run of refusals, not per refused request
                    self.log.warning("snapshot look-ups over the connection's rate limit",
                                     code=GW_SNAPSHOT_LOOKUPS_LIMITED, action=eff.action,
                                     group=eff.group, principal=self._principal())
            elif isinstance(eff, Close):
                self._begin_close(eff)
        if session.is_open and srv.flags_pending(self):
            srv.apply_flags_to(self)

    def _principal(self) -> str:
        s = self.session
        return s.principal.subject if s is not None and s.principal is not None else ""

    def _begin_close(self, eff: Close) -> None:
        if self._closing is not None:
            return
        self._closing = eff
        self.server.metrics.closes.labels(str(eff.code)).inc()
        self.log.info("closing connection", close_code=eff.code, reason=eff.reason,
                      principal=self._principal())
        self.wake()
        if self._nursery is not None:
            self._nursery.start_soon(self._close_deadline)

    async def _close_deadline(self) -> None:
        # A peer that does not read cannot take our close frame: give up after the grace.
        await trio.sleep(self.server.options.close_grace_ms / 1000)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    # -- tasks ----------------------------------------------------------------------------------

    async def _reader(self) -> None:
        assert self.session is not None
        srv = self.server
        limit = srv.options.max_frame_bytes
        buf = bytearray()
        size = 0
        text = False
        while True:
            try:
                data = await self.stream.receive_some(_READ)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._peer_gone("peer closed the socket")
                return
            try:
                self.ws.receive_data(bytes(data))
                events = list(self.ws.events())
            except WsRemoteError as exc:
                self.log.warning("bad WebSocket framing", code="XY-WS-004", error=str(exc))
                self._peer_gone(f"bad WebSocket framing: {exc}")
                return
            for event in events:
                now = trio.current_time()
                if isinstance(event, BytesMessage | TextMessage):
                    payload = event.data
                    chunk = payload.encode() if isinstance(payload, str) else bytes(payload)
                    size += len(chunk)
                    text = text or isinstance(event, TextMessage)
                    if size <= limit:
                        buf += chunk
                    if event.message_finished:
                        if text:
                            self.session.text_frame(now)
                        elif size > limit:
                            self.session.frame_too_large(now, size)
                        else:
                            self.session.receive(now, srv.wall(), bytes(buf))
                        buf.clear()
                        size = 0
                        text = False
                elif isinstance(event, Ping):
                    self.outbox.push_control(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self._closing is None and self.ws.state.name == "REMOTE_CLOSING":
                        try:
                            self.outbox.push_control(self.ws.send(event.response()))
                        except WsLocalError:
                            pass
                    self._peer_closed.set()
                    self._peer_gone(f"peer sent close {event.code}")
                    self.wake()
                    return
                self.apply(self.session)

    def _peer_gone(self, why: str) -> None:
        assert self.session is not None
        if self._closing is None:
            self.log.info("connection ended by peer", reason=why, principal=self._principal())
            self._closing = Close(0, why)
            self.wake()

    async def _timer(self) -> None:
        assert self.session is not None
        s = self.session
        while True:
            deadline = min(s.next_deadline(), trio.current_time() + 1.0)
            await trio.sleep_until(deadline)
            s.tick(trio.current_time())
            self.apply(s)

    async def _writer(self) -> None:
        srv = self.server
        hub = srv.hub
        ob = self.outbox
        hb = srv.options.heartbeat_ms / 1000
        intervals = [r.frame_interval_s for r in hub.levels.table()]
        self._last_send = trio.current_time()
        while True:
            if self._closing is None and not hub.has_due(ob):
                self.idle = True
                with trio.move_on_at(self._last_send + hb):
                    await self._wake_ev.wait()
                self.idle = False
            self._wake_ev = trio.Event()
            if self._closing is not None:
                await self._finish_close()
                return
            frames = hub.take_control(ob)
            built = None
            if self.session is not None and self.session.is_open:
                built = hub.build(ob, int(srv.wall() * 1e6))
            if built is not None:
                frames.append(built.data)
            elif not frames and trio.current_time() - self._last_send >= hb:
                # Server heartbeat: an empty frame (just ts_send_us) so the client can tell a
                # quiet market from a dead gateway.
                frames.append(ws_binary(ServerFrame(
                    ts_send_us=int(srv.wall() * 1e6)).SerializeToString()))
            if not frames:
                continue
            await self._send(b"".join(frames) if len(frames) > 1 else frames[0])
            if built is not None:
                srv.sent(built)
            if ob.level > Level.L0 and intervals[ob.level]:
                with trio.move_on_after(intervals[ob.level]):
                    while self._closing is None:
                        await self._wake_ev.wait()
                        if self._closing is not None or ob.control:
                            break
                        self._wake_ev = trio.Event()

    async def _send(self, data: bytes) -> None:
        ob = self.outbox
        ob.inflight_bytes = len(data)
        ob.inflight_since = trio.current_time()
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._peer_gone("socket broke while sending")
            return
        finally:
            ob.inflight_bytes = 0
            ob.inflight_since = None
        self._last_send = trio.current_time()
        ob.frames += 1
        ob.bytes_out += len(data)
        self.server.metrics.frames.inc()
        self.server.metrics.bytes_out.inc(len(data))

    async def _finish_close(self) -> None:
        close = self._closing
        assert close is not None
        ob = self.outbox
        frames = self.server.hub.take_control(ob)
        if close.code and not self._peer_closed.is_set():
            try:
                frames.append(self.ws.send(CloseConnection(code=close.code, reason=close.reason)))
            except WsLocalError:
                pass
        if frames:
            with trio.move_on_after(self.server.options.close_grace_ms / 1000):
                await self._send(b"".join(frames))
        if close.code and not self._peer_closed.is_set():
            with trio.move_on_after(self.server.options.close_grace_ms / 1000):
                await self._peer_closed.wait()


__all__ = ["CLOSE_GOING_AWAY", "CLOSE_INTERNAL", "Connection"]
