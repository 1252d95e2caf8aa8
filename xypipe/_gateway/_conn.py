"""One browser socket: the Trio shell around a :class:`~._wire_core.ConnectionCore`.

The core decides everything (what a message means, what to write, when to close); this shell
only moves bytes and waits. Three tasks per connection, owned by the connection's nursery:

* **reader**: socket bytes → the core (which reassembles messages and feeds the session);
* **writer**: writes what the core hands it — the tail of a frame a flush began, control
  frames, then *one* data frame holding every delta due (identical bytes for every connection
  due the same deltas) — and at L1+ waits the core's hold time before the next one so deltas
  merge. It sleeps until its connection needs it: the session has something for it, a tick's
  flush could not write its frame (the socket was full, the connection is not plain L0), a
  heartbeat, the close;
* **timer**: ticks the core at the session's deadlines (hello, heartbeat, token expiry); it
  sleeps until the next one, brought forward by the reader when what the peer sent moved it
  earlier (a hello, a refreshed token).

The common case needs none of them: after each batch of the aggregator's messages the
gateway's flush (:mod:`._flush`) writes each due connection's frame straight to its socket
(:meth:`Connection.send_now`, a plaintext socket only; TLS keeps the writer) while its writer
sleeps. A blocked write never blocks anyone else: only this connection's writer waits on its
socket, and a close the gateway begins is bounded by ``close_grace_ms`` even then.
"""

from __future__ import annotations

import os
import socket

import trio

from xypipe._errors import WS_SNDBUF_FAILED
from xypipe._gateway._hub import Outbox
from xypipe._gateway._session import CLOSE_GOING_AWAY, CLOSE_INTERNAL
from xypipe._gateway._wire_core import ConnectionCore, ConnectionPorts, Outgoing

__all__ = ["CLOSE_GOING_AWAY", "CLOSE_INTERNAL", "Connection"]

_READ = 65536


class Connection:
    def __init__(self, ports: ConnectionPorts, stream: trio.abc.Stream, conn_id: int,
                 peer: str) -> None:
        self.ports = ports
        self.stream = stream
        self.core = ConnectionCore(ports, conn_id, peer)
        self.core.on_closing = self._closing_began
        self._wake_ev = trio.Event()
        self._peer_closed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._grace_s = ports.options.close_grace_ms / 1000
        self._fd = -1
        #: The timer's sleep (the reader brings its deadline forward).
        self._timer_scope: trio.CancelScope | None = None

    @property
    def conn_id(self) -> int:
        return self.core.conn_id

    @property
    def outbox(self) -> Outbox:
        return self.core.outbox

    def wake(self) -> None:
        # Woken, the writer is no longer idle: a flush must not write past it.
        self.core.idle = False
        self._wake_ev.set()

    def send_now(self, data: bytes) -> int:
        """Write what the socket takes without waiting (it is non-blocking, as Trio keeps every
        socket); the bytes taken. ``BlockingIOError`` when it takes none, another ``OSError``
        when it broke."""
        return os.write(self._fd, data)

    # -- handshake ------------------------------------------------------------------------------

    async def handshake(self, origin: str | None) -> bool:
        """Complete the WebSocket handshake (or refuse it); True when the socket is open."""
        core = self.core
        request = None
        while request is None:
            data = await self.stream.receive_some(_READ)
            if not data:
                return False
            request = core.handshake_data(bytes(data))
        refusal = core.admit(request, origin)
        if refusal is not None:
            reply = core.reject(refusal)
            try:
                await self.stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return False
        await self.stream.send_all(core.accept())
        self._tune_socket()
        return True

    def _tune_socket(self) -> None:
        sock = getattr(self.stream, "socket", None)
        if not isinstance(sock, trio.socket.SocketType):
            return  # TLS (trio.SSLStream has no socket): every frame goes through the writer
        self._fd = sock.fileno()
        self.core.send_now = self.send_now
        size = self.ports.options.send_buffer_bytes
        if size is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError as exc:
            self.core.log.warning("could not set SO_SNDBUF", code=WS_SNDBUF_FAILED,
                                  error=str(exc))

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        self.core.start(trio.current_time())
        self.outbox.wake = self.wake
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reader)
                nursery.start_soon(self._timer)
                await self._writer()
                nursery.cancel_scope.cancel()
        finally:
            self.core.finished()

    def close(self, code: int, reason: str) -> None:
        """Close from the gateway's side (shutdown, operator)."""
        self.core.close(code, reason, trio.current_time())

    def go_away(self, frame: bytes) -> bool:
        """Tell the client to move (see :meth:`ConnectionCore.go_away`)."""
        return self.core.go_away(frame)

    def _closing_began(self) -> None:
        if self._nursery is not None:
            try:
                self._nursery.start_soon(self._close_deadline)
            except RuntimeError:
                # Closed to new arrivals: every task of the connection has ended (a shutdown
                # by cancellation reached it first); there is no close left to bound.
                pass

    async def _close_deadline(self) -> None:
        # A peer that does not read cannot take our close frame: give up after the grace.
        await trio.sleep(self._grace_s)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    # -- tasks ----------------------------------------------------------------------------------

    async def _reader(self) -> None:
        core = self.core
        reading = True
        while reading:
            try:
                data = bytes(await self.stream.receive_some(_READ))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            reading = core.receive_data(data, trio.current_time(), self.ports.wall())
            if core.peer_closed:
                self._peer_closed.set()
            scope = self._timer_scope
            if scope is not None:
                scope.deadline = min(scope.deadline, core.next_deadline())

    async def _timer(self) -> None:
        core = self.core
        while True:
            with trio.move_on_at(core.next_deadline()) as self._timer_scope:
                await trio.sleep_forever()
            core.tick(trio.current_time())

    async def _writer(self) -> None:
        core = self.core
        while True:
            if not core.due():
                core.idle = True
                with trio.move_on_at(core.heartbeat_at()):
                    await self._wake_ev.wait()
                core.idle = False
            self._wake_ev = trio.Event()
            if core.closing is not None:
                await self._finish_close()
                return
            out = core.next_write(trio.current_time(), self.ports.wall())
            if out is None:
                continue
            await self._write(out)
            hold = core.hold_s()
            if hold:
                with trio.move_on_after(hold):
                    while core.closing is None:
                        await self._wake_ev.wait()
                        if core.closing is not None or self.outbox.control:
                            break
                        self._wake_ev = trio.Event()

    async def _write(self, out: Outgoing) -> None:
        await self._send(out.data)
        if out.built is not None:
            self.core.delivered(out.built, self.ports.wall())

    async def _send(self, data: bytes) -> None:
        core = self.core
        core.sending(len(data), trio.current_time())
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            core.peer_gone("socket broke while sending")
            return
        finally:
            core.send_ended()
        core.sent(len(data), trio.current_time())

    async def _finish_close(self) -> None:
        core = self.core
        close = core.closing
        assert close is not None
        data = core.close_frames()
        if data:
            with trio.move_on_after(self._grace_s):
                await self._send(data)
        if close.code and not self._peer_closed.is_set():
            with trio.move_on_after(self._grace_s):
                await self._peer_closed.wait()
