"""One NATS connection's crossing point: the nats-py client on its asyncio loop, driven from Trio.

:class:`Bridge` is what every part of the package builds on (the public client, JetStream, KV):
it connects and closes the nats-py client, runs coroutines across (``call``: every nats-py
exception mapped at this door, see :mod:`xypipe._nats._boundary`), turns nats-py's connection
callbacks into :class:`~xypipe._nats._types.BridgeEvent` values and log lines, and owns the
connection's publish queue (:class:`~xypipe._nats._outbox.Outbox`) and the inboxes of its
subscriptions and watches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar, TypeVarTuple

import nats.errors
import trio
from nats.aio.client import Client as _NatsPyClient

from xypipe._bridge_portal import BridgeKind, Portal
from xypipe._errors import (
    NATS_TLS_REFUSED,
    BridgeError,
    NatsConnectionError,
    NatsRefused,
    NatsSlowConsumer,
)
from xypipe._log import get_logger
from xypipe._nats._boundary import NATS_ERRORS, map_error
from xypipe._nats._inbox import TrackedInbox
from xypipe._nats._outbox import Outbox
from xypipe._nats._refusal import (
    ErrTap,
    Refusal,
    buffered_server_error,
    server_refusal,
    tls_refusal,
)
from xypipe._nats._refusal_log import RefusalLog
from xypipe._nats._types import BridgeEvent

__all__ = ["Bridge", "ConnectOptions"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
_log = get_logger("nats")

# At most one slow-consumer log line/event per this many seconds: drops come in floods.
_SLOW_REPORT_INTERVAL_S = 1.0
# How long closing a refused first connect may take (see aio_connect).
_CLOSE_REFUSED_S = 0.5

#: Keyword arguments of nats-py's ``Client.connect`` (strings, numbers, bools, an SSL context):
#: nats-py's own signature is the schema, checked when it is called.
ConnectOptions = dict[str, object]


class _AioClient(_NatsPyClient):
    """nats-py's client, with one fix: a PONG answering a flush whose waiter was cancelled (a
    Trio cancellation crossing the bridge, or a flush timeout) is skipped instead of raising
    ``InvalidStateError`` in the read loop, which would stop it and leave the connection deaf.
    The PONG still takes its place in the queue, so later flushes keep their own."""

    async def _process_pong(self) -> None:
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0


class _Refused(NatsRefused):
    """Raised from nats-py's error callback to end a first connect the server refused (and
    turned into the :class:`NatsRefused` the caller sees once it is closed)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail, reason=refusal.reason)
        self.refusal = refusal


class Bridge:
    """A connection's asyncio side, reached from Trio. Create through ``connect``."""

    def __init__(
        self,
        portal: Portal,
        *,
        publish_queue: int,
        close_timeout: float,
        on_permission_denied: Callable[[str], None] | None = None,
        on_refusal: Callable[[Refusal], None] | None = None,
        explain_refusal: Callable[[Refusal], Refusal] | None = None,
        principal: str | None = None,
    ) -> None:
        self.portal = portal
        self.outbox = Outbox(portal, publish_queue)
        #: The server's refusals of this connection (who it signs in as: ``principal``).
        self.refusal_log = RefusalLog(principal=principal, on_refusal=on_refusal,
                                      on_permission_denied=on_permission_denied,
                                      explain=explain_refusal)
        #: The refusal that ended the first connect, if one did.
        self.connect_refusal: Refusal | None = None
        self._tap = ErrTap()
        self._servers = ""
        self._nc: _AioClient | None = None
        self.close_timeout = close_timeout
        self.slow_consumer_drops = 0
        self._slow_reported_at = -_SLOW_REPORT_INTERVAL_S * 2
        self.reconnects = 0
        self.events_dropped = 0
        self._event_sends: list[trio.MemorySendChannel[BridgeEvent]] = []
        #: Inboxes of the open subscriptions and watches (statistics; failed when the
        #: connection is lost for good).
        self.inboxes: set[TrackedInbox] = set()
        self._closed = False
        self._closing = False
        self._lost = False
        self.connect_errors: list[str] = []

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def kind(self) -> BridgeKind:
        return self.portal.kind

    async def call(self, what: str, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """Run ``fn(*args)`` on the asyncio side; nats-py errors come back as ``BridgeError``
        naming ``what``."""
        if self._closed:
            raise NatsConnectionError(f"{what}: the client is closed")
        try:
            return await self.portal.run(fn, *args)
        except NATS_ERRORS as exc:
            raise map_error(exc, what) from exc
        except asyncio.CancelledError as exc:
            # A Trio cancellation arrives as trio.Cancelled; an asyncio one means nats-py gave
            # up on the call itself (the connection is closing), which is a bridge error.
            raise NatsConnectionError(
                f"{what}: abandoned by nats-py (the connection is closing)"
            ) from exc

    async def quietly(self, what: str, fn: Callable[[*Ts], Awaitable[object]],
                      *args: *Ts) -> None:
        """Best-effort cleanup: bounded, shielded, failures logged (the connection may be gone)."""
        if self._closed:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
            try:
                await self.call(what, fn, *args)
            except BridgeError as exc:
                _log.warning(f"{what} failed", code=exc.code, error=str(exc))

    @property
    def aio(self) -> _AioClient:
        """The nats-py client (asyncio side only)."""
        assert self._nc is not None, "not connected"
        return self._nc

    def emit(self, event: BridgeEvent) -> None:
        for ch in list(self._event_sends):
            try:
                ch.send_nowait(event)
            except trio.WouldBlock:
                self.events_dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._event_sends.remove(ch)

    # -- asyncio side: connection ------------------------------------------------------------
    async def aio_connect(self, servers: list[str], options: ConnectOptions) -> None:
        portal = self.portal
        nc = _AioClient()
        self._tap.install(nc)
        self._servers = ", ".join(servers)
        reported: list[BaseException] = []  # the last error reported as a refusal

        async def on_error(exc: Exception) -> None:
            if self.connect_refusal is not None:
                return  # a refused first connect being closed: its errors say nothing new
            refusal = self._refusal_in(nc, exc)
            if self._nc is None:  # still connecting
                if refusal is not None:
                    # The server said no (or broke off TLS): the same credentials get the same
                    # answer, so the first connect ends here instead of at its deadline.
                    raise _Refused(refusal)
                self.connect_errors.append(f"{type(exc).__name__}: {exc}")  # for the message
                del self.connect_errors[:-8]
                return
            if isinstance(exc, nats.errors.SlowConsumerError):
                portal.to_trio(self._on_slow_consumer, exc.subject, exc.sid)
            elif refusal is not None:
                reported.append(exc)
                del reported[:-1]
                portal.to_trio(self.on_refusal, refusal)
            else:
                portal.to_trio(self.emit, BridgeEvent("error", f"{type(exc).__name__}: {exc}"))

        async def on_disconnected() -> None:
            if self._nc is not None:  # not a first connect given up (it raises instead)
                portal.to_trio(self._on_state, "disconnected")

        async def on_reconnected() -> None:
            portal.to_trio(self._on_state, "reconnected")

        async def on_closed() -> None:
            # A server that closes a live connection for its credentials (an expired JWT, a
            # revoked user) says why in an -ERR nats-py keeps as its last error.
            if self._nc is None:  # a first connect given up: it raises instead
                return
            last = nc.last_error
            if last is None or last in reported:
                refusal = None  # none, or the refused reconnect already reported
            else:
                refusal = server_refusal(str(last), self._tap)
            if refusal is not None and not self._closing:
                portal.to_trio(self.on_refusal, refusal)
            portal.to_trio(self._on_state, "closed")

        async def on_lame_duck() -> None:
            # The server is shutting down gracefully (lame-duck mode, or a cluster node being
            # drained): nats-py moves to another server when this one closes the connection;
            # JetStream users re-check their consumers (see _stages/_jsfeed.py).
            portal.to_trio(self._on_state, "lame_duck")

        try:
            await nc.connect(
                servers,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
                lame_duck_mode_cb=on_lame_duck,
                **options,  # type: ignore[arg-type]  # nats-py checks its own keywords
            )
        except _Refused as refused:
            refusal = self.refusal_log.explained(refused.refusal)
            self.connect_refusal = refusal
            # Bounded: after a failed TLS upgrade nats-py waits for a close of the plain socket
            # that never comes (the socket is closed; only the notice is lost).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nc.close(), _CLOSE_REFUSED_S)
            raise NatsRefused(self.refusal_log.message(refusal, self._servers),
                              reason=refusal.reason,
                              code=NATS_TLS_REFUSED if refusal.reason == "tls" else None
                              ) from None
        self._nc = nc
        self.outbox.aio_start(nc)

    async def _aio_close(self, flush_timeout: float) -> None:
        nc = self.aio
        try:
            await self.outbox.aio_drain()
            if nc.is_connected:
                await nc.flush(timeout=flush_timeout)  # type: ignore[arg-type]  # float is fine
        except NATS_ERRORS as exc:
            _log.warning(
                "unsent messages lost at close", code=NatsConnectionError.code, error=repr(exc)
            )
        finally:
            await self.outbox.aio_stop()
            await nc.close()

    # -- Trio side: connection state ---------------------------------------------------------
    def _on_state(
        self, kind: Literal["disconnected", "reconnected", "closed", "lame_duck"]
    ) -> None:
        if kind == "lame_duck":
            _log.warning("nats server entered lame-duck mode", code=NatsConnectionError.code,
                         url=self.connected_url())
        elif kind == "reconnected":
            self.reconnects += 1
            _log.info("nats reconnected", url=self.connected_url())
        elif kind == "disconnected" and not self._closing:
            _log.warning("nats disconnected", code=NatsConnectionError.code)
        elif kind == "closed" and not self._closing:
            self._lost = True
            err = NatsConnectionError("the NATS connection closed (reconnect attempts exhausted)")
            _log.error("nats connection closed", code=err.code)
            for inbox in list(self.inboxes):
                inbox.fail(err)
        self.emit(BridgeEvent(kind))

    # -- refusals ----------------------------------------------------------------------------
    def _refusal_in(self, nc: _AioClient, exc: BaseException) -> Refusal | None:
        """The server's refusal behind an error nats-py reported, if it is one (asyncio side).
        A reset or broken pipe may hide an -ERR the server sent before closing: it is looked
        for in the failed attempt's unread bytes."""
        refusal = tls_refusal(exc)
        if refusal is None and isinstance(exc, nats.errors.Error):
            refusal = server_refusal(str(exc), self._tap)
        if refusal is None and isinstance(exc, OSError | nats.errors.Error):
            pending = buffered_server_error(nc)
            if pending is not None:
                refusal = server_refusal(pending, self._tap)
        return refusal

    def on_refusal(self, refusal: Refusal) -> None:
        """Every refusal by the server (Trio side): counted, handed on and audited
        (:class:`~xypipe._nats._refusal_log.RefusalLog`), and an ``error`` event with the
        server's words. The connection stays unless the server closed it."""
        refusal = self.refusal_log.report(
            refusal, now=trio.current_time(), signed_in=self._nc is not None,
            server=self.connected_url() or self._servers)
        self.emit(BridgeEvent("error", refusal.detail))

    @property
    def permission_denied(self) -> int:
        return self.refusal_log.permission_denied

    @property
    def refusals(self) -> int:
        return self.refusal_log.total

    def _on_slow_consumer(self, subject: str | None, sid: int | None) -> None:
        self.slow_consumer_drops += 1
        now = trio.current_time()
        if now - self._slow_reported_at < _SLOW_REPORT_INTERVAL_S:
            return
        self._slow_reported_at = now
        _log.warning(
            "slow consumer: nats-py is dropping messages",
            code=NatsSlowConsumer.code,
            subject=subject,
            sid=sid,
            dropped_total=self.slow_consumer_drops,
        )
        self.emit(
            BridgeEvent(
                "slow_consumer",
                f"subject={subject} sid={sid} dropped_total={self.slow_consumer_drops}",
            )
        )

    def connected_url(self) -> str | None:
        nc = self._nc
        url = nc.connected_url if nc is not None else None
        return url.geturl() if url is not None else None

    @property
    def closed(self) -> bool:
        """Closed for good (by us, or reconnect attempts exhausted): retrying is pointless."""
        return self._closed or self._closing or self._lost

    @property
    def is_connected(self) -> bool:
        nc = self._nc
        return nc is not None and nc.is_connected and not self._closed

    def events(self, buffer: int = 64) -> trio.MemoryReceiveChannel[BridgeEvent]:
        send, recv = trio.open_memory_channel[BridgeEvent](buffer)
        if self._closed:
            send.close()
        else:
            self._event_sends.append(send)
        return recv

    # -- close -------------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closing = True
        with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
            try:
                await self.call("close", self._aio_close, self.close_timeout / 2)
            except BridgeError as exc:
                _log.warning("close failed", code=exc.code, error=str(exc))
        self._closed = True
        self.emit(BridgeEvent("closed"))
        for inbox in list(self.inboxes):
            inbox.close()
        for ch in self._event_sends:
            ch.close()
        self._event_sends.clear()
        self.outbox.close()
