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
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar, TypeVarTuple

import nats.errors
import trio
from nats.aio.client import Client as _AioClient

from xypipe._bridge_portal import BridgeKind, Portal
from xypipe._errors import (
    BridgeError,
    NatsConnectionError,
    NatsPermissionDenied,
    NatsSlowConsumer,
)
from xypipe._log import get_logger
from xypipe._nats._boundary import NATS_ERRORS, map_error
from xypipe._nats._inbox import TrackedInbox
from xypipe._nats._outbox import Outbox
from xypipe._nats._types import BridgeEvent

__all__ = ["Bridge", "ConnectOptions"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
_log = get_logger("nats")

# At most one slow-consumer log line/event per this many seconds: drops come in floods.
_SLOW_REPORT_INTERVAL_S = 1.0

#: Keyword arguments of nats-py's ``Client.connect`` (strings, numbers, bools, an SSL context):
#: nats-py's own signature is the schema, checked when it is called.
ConnectOptions = dict[str, object]


class Bridge:
    """A connection's asyncio side, reached from Trio. Create through ``connect``."""

    def __init__(
        self,
        portal: Portal,
        *,
        publish_queue: int,
        close_timeout: float,
        on_permission_denied: Callable[[str], None] | None = None,
    ) -> None:
        self.portal = portal
        self.outbox = Outbox(portal, publish_queue)
        self._on_denied = on_permission_denied
        self._nc: _AioClient | None = None
        self.close_timeout = close_timeout
        self.slow_consumer_drops = 0
        self.permission_denied = 0
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

        async def on_error(exc: Exception) -> None:
            if self._nc is None:  # still connecting: keep the reason for the error message
                self.connect_errors.append(f"{type(exc).__name__}: {exc}")
                del self.connect_errors[:-8]
                return
            if isinstance(exc, nats.errors.SlowConsumerError):
                portal.to_trio(self._on_slow_consumer, exc.subject, exc.sid)
            elif "permissions violation" in str(exc).lower():
                portal.to_trio(self._on_permission_denied, str(exc))
            else:
                portal.to_trio(self.emit, BridgeEvent("error", f"{type(exc).__name__}: {exc}"))

        async def on_disconnected() -> None:
            portal.to_trio(self._on_state, "disconnected")

        async def on_reconnected() -> None:
            portal.to_trio(self._on_state, "reconnected")

        async def on_closed() -> None:
            portal.to_trio(self._on_state, "closed")

        async def on_lame_duck() -> None:
            # The server is shutting down gracefully (lame-duck mode, or a cluster node being
            # drained): nats-py moves to another server when this one closes the connection;
            # JetStream users re-check their consumers (see _stages/_jsfeed.py).
            portal.to_trio(self._on_state, "lame_duck")

        nc = _AioClient()
        await nc.connect(
            servers,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            closed_cb=on_closed,
            lame_duck_mode_cb=on_lame_duck,
            **options,  # type: ignore[arg-type]  # nats-py checks its own keywords
        )
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

    def _on_permission_denied(self, detail: str) -> None:
        # The server refuses a publish or subscribe outside this user's permissions (its
        # account ACL) without closing the connection; make every refusal visible.
        self.permission_denied += 1
        _log.warning("nats refused an operation (permissions)", code=NatsPermissionDenied.code,
                     detail=detail.strip(" '\""), denied_total=self.permission_denied)
        if self._on_denied is not None:
            self._on_denied("subscribe" if "subscription" in detail.lower() else "publish")
        self.emit(BridgeEvent("error", detail))

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
