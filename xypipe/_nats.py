"""NATS and JetStream for Trio code: the only door to nats-py (which is asyncio-only).

Usage::

    async with connect("nats://127.0.0.1:4222") as nc:
        nc.publish_nowait("xy.md.tick.g1", payload)
        async with nc.subscribe("xy.src.tick.>") as sub:
            async for batch in sub:           # list[Msg], never one message per crossing
                ...

Crossings between Trio and asyncio are batched in both directions (see ``docs`` "NATS bridge"):

- **Trio → asyncio** (publish): ``publish_nowait``/``publish`` append to a bounded queue; the first
  append after a drain schedules one wake-up of an asyncio pump task, which hands everything queued
  to nats-py in one go (nats-py then writes it to the socket in one write).
- **asyncio → Trio** (subscribe): the nats-py callback appends to a list and, if it is the first
  of the loop iteration, schedules one flush at the end of the iteration; the flush hands the whole
  list (split at ``max_batch``) to Trio in one call. A subscription holds at most ``max_pending``
  messages between nats-py and the Trio consumer; beyond that the nats-py callback waits, nats-py's
  own queue fills and NATS's slow-consumer rule drops messages (reported as a ``slow_consumer``
  event, logged and counted) — memory stays bounded whatever the consumer does.

Publishing while the server is away: nats-py buffers outgoing messages during a reconnect, up to
``reconnect_buffer_bytes`` (8 MiB by default); they are sent once it is back. Past that buffer the
messages are dropped by the pump and the next ``publish_nowait``/``publish``/``flush`` raises
:class:`~xypipe._errors.NatsBackpressure` saying how many were dropped. ``publish_nowait`` also
raises ``NatsBackpressure`` at once when the bridge's own queue (``publish_queue`` messages) is
full.

The ``timeout`` arguments (``flush``, ``request``, ``fetch``) are NATS protocol values — a fetch's
``expires`` and a request's reply wait are sent to or kept by nats-py — not Trio deadlines; wrap a
call in ``trio.fail_after`` to bound it from the outside as usual.

Every nats-py exception is mapped to :mod:`xypipe._errors` at this boundary; none leaks out.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import attrs
import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client as _AioClient
from nats.aio.msg import Msg as _AioMsg
from nats.js import api as _js_api

from xypipe._bridge_portal import BridgeKind, Portal, open_portal
from xypipe._errors import (
    KV_WATCH_RESTARTED,
    BridgeError,
    KvRevisionConflict,
    NatsBackpressure,
    NatsConnectionError,
    NatsJsUnavailable,
    NatsNoResponders,
    NatsNotFound,
    NatsPermissionDenied,
    NatsSlowConsumer,
    NatsTimeout,
)
from xypipe._log import get_logger
from xypipe._retry import retrying
from xypipe._trio_util import single_error_unwrapped

__all__ = [
    "BridgeEvent",
    "BridgeStatistics",
    "JetStream",
    "KeyValue",
    "KvEntry",
    "KvWatch",
    "Msg",
    "NatsClient",
    "PullConsumer",
    "StreamState",
    "Subscription",
    "connect",
]

T = TypeVar("T")
_log = get_logger("nats")

# Subjects may not be empty or contain whitespace (CR/LF would inject protocol commands).
_BAD_SUBJECT = re.compile(r"\s")
# Messages held between nats-py and a Trio consumer (the bridge's part of the buffer) ...
_DEFAULT_MAX_PENDING = 8192
# ... and in nats-py's own per-subscription queue behind it; past this NATS's slow-consumer rule
# drops messages.
_DEFAULT_CLIENT_PENDING = 65536
_CLIENT_PENDING_BYTES = 64 * 1024 * 1024
# At most one slow-consumer log line/event per this many seconds: drops come in floods.
_SLOW_REPORT_INTERVAL_S = 1.0


# ---------------------------------------------------------------------------------------------
# Values


@attrs.frozen(slots=True)
class Msg:
    """A message as Trio code sees it. ``seq``/``time`` are set for JetStream messages (stream
    sequence and stored time), ``None`` for core NATS."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    reply: str = ""
    seq: int | None = None
    time: datetime.datetime | None = None


EventKind: TypeAlias = Literal[
    "connected", "disconnected", "reconnected", "closed", "error", "slow_consumer", "lame_duck"
]


@attrs.frozen(slots=True)
class BridgeEvent:
    """A change of the connection's state, or an asynchronous error nats-py reported."""

    kind: EventKind
    detail: str = ""


@attrs.frozen(slots=True)
class BridgeStatistics:
    connected: bool
    publish_queued: int
    published: int
    publish_dropped: int
    delivered_msgs: int
    delivered_batches: int
    slow_consumer_drops: int
    reconnects: int
    events_dropped: int
    #: Publishes/subscriptions the server refused under this user's permissions.
    permission_denied: int = 0


@attrs.frozen(slots=True)
class StreamState:
    name: str
    subjects: tuple[str, ...]
    messages: int
    bytes: int
    first_seq: int
    last_seq: int


@attrs.frozen(slots=True)
class KvEntry:
    """One key's value at one revision; ``op`` is ``"PUT"``, ``"DEL"`` or ``"PURGE"``."""

    bucket: str
    key: str
    value: bytes
    revision: int
    op: str = "PUT"
    created: datetime.datetime | None = None


# ---------------------------------------------------------------------------------------------
# Error mapping: the one place nats-py exceptions are translated.


def _map_error(exc: BaseException, what: str) -> BridgeError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, nats.errors.NoRespondersError):
        return NatsNoResponders(f"{what}: no responders")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return NatsNotFound(f"{what}: no stream captures this subject")
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return NatsJsUnavailable(
            f"{what}: JetStream is not enabled or not available ({detail})"
        )
    if isinstance(exc, nats.js.errors.NotFoundError):
        return NatsNotFound(f"{what}: not found ({detail})")
    if isinstance(exc, nats.errors.SlowConsumerError):
        return NatsSlowConsumer(f"{what}: slow consumer ({detail})")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return NatsTimeout(f"{what}: timed out")
    if isinstance(exc, nats.errors.OutboundBufferLimitError):
        return NatsBackpressure(f"{what}: reconnect buffer full while the server is away")
    if isinstance(
        exc,
        nats.errors.NoServersError
        | nats.errors.ConnectionClosedError
        | nats.errors.StaleConnectionError
        | nats.errors.AuthorizationError
        | nats.errors.SecureConnFailedError
        | nats.errors.SecureConnRequiredError
        | nats.errors.SecureConnWantedError
        | OSError,
    ):
        return NatsConnectionError(f"{what}: {type(exc).__name__}: {detail}")
    return BridgeError(f"{what}: {type(exc).__name__}: {detail}")


# Exceptions that nats-py (or the transport under it) raises on purpose.
_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, TimeoutError, OSError)


def _check_subject(subject: str) -> None:
    if not subject or _BAD_SUBJECT.search(subject):
        raise BridgeError(f"invalid subject {subject!r}: must be non-empty without whitespace")


def _from_aio(m: _AioMsg) -> Msg:
    return Msg(m.subject, m.data, m.headers, m.reply)


def _from_aio_js(m: _AioMsg) -> Msg:
    md = m.metadata
    return Msg(m.subject, m.data, m.headers, m.reply, md.sequence.stream, md.timestamp)


def _from_raw(m: _js_api.RawStreamMsg) -> Msg:
    return Msg(m.subject or "", m.data or b"", m.headers, "", m.seq, m.time)


# ---------------------------------------------------------------------------------------------
# asyncio → Trio: batched, bounded delivery


class _Inbox(Generic[T]):
    """Carries items from asyncio to one Trio consumer in batches, holding at most ``limit``.

    ``_sent`` is written only by the asyncio side and ``_consumed`` only by the Trio side, so the
    in-flight count ``_sent - _consumed`` needs no lock even when the two run in different threads.
    """

    def __init__(self, portal: Portal, limit: int, max_batch: int, what: str) -> None:
        if limit < 1 or max_batch < 1:
            raise ValueError(f"limit and max_batch must be >= 1, got {limit}, {max_batch}")
        self._portal = portal
        self._limit = limit
        self._max_batch = max_batch
        self.what = what
        self._send, self._recv = trio.open_memory_channel[list[T]](limit)
        self._pending: list[T] = []
        self._scheduled = False
        self._sent = 0
        self._consumed = 0
        self._batches = 0
        self._blocked = False
        self._room: asyncio.Event | None = None
        self.failure: BridgeError | None = None

    # -- asyncio side ------------------------------------------------------------------------
    async def aio_put(self, item: T) -> None:
        self._pending.append(item)
        if not self._scheduled:
            self._scheduled = True
            self._portal.loop.call_soon(self._aio_flush)
        if self._sent + len(self._pending) - self._consumed >= self._limit:
            await self._aio_wait_room()

    async def aio_put_msg(self: _Inbox[Msg], m: _AioMsg) -> None:
        """:meth:`aio_put` for a nats-py message, used directly as the subscription callback
        (one coroutine per message instead of two: this is the hottest path in the bridge)."""
        self._pending.append(Msg(m.subject, m.data, m.headers, m.reply))
        if not self._scheduled:
            self._scheduled = True
            self._portal.loop.call_soon(self._aio_flush)
        if self._sent + len(self._pending) - self._consumed >= self._limit:
            await self._aio_wait_room()

    def _aio_flush(self) -> None:
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        mb = self._max_batch
        batches = (
            [pending]
            if len(pending) <= mb
            else [pending[i : i + mb] for i in range(0, len(pending), mb)]
        )
        self._sent += len(pending)
        self._portal.to_trio(self._deliver, batches)

    async def _aio_wait_room(self) -> None:
        if self._room is None:
            self._room = asyncio.Event()
        while self._sent + len(self._pending) - self._consumed >= self._limit:
            self._room.clear()
            self._blocked = True
            # Re-check after publishing the flag: the Trio side reads the flag after updating
            # ``_consumed``, so one of the two always sees the other's write.
            if self._sent + len(self._pending) - self._consumed < self._limit:
                break
            await self._room.wait()
        self._blocked = False

    def _aio_release(self) -> None:
        if self._room is not None:
            self._room.set()

    # -- Trio side ---------------------------------------------------------------------------
    def _deliver(self, batches: list[list[T]]) -> None:
        for batch in batches:
            try:
                self._send.send_nowait(batch)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return  # The consumer has left; late deliveries have nobody to go to.
            except trio.WouldBlock:  # pragma: no cover - prevented by the credit limit above
                raise AssertionError(f"{self.what}: inbox over its limit") from None
            self._batches += 1

    def fail(self, error: BridgeError) -> None:
        """End the consumer's iteration with ``error`` (Trio side)."""
        self.failure = error
        self._send.close()

    def close(self) -> None:
        self._send.close()

    async def receive(self) -> list[T]:
        try:
            batch = await self._recv.receive()
        except trio.EndOfChannel:
            if self.failure is not None:
                raise self.failure from None
            raise
        self._consumed += len(batch)
        if self._blocked:
            self._portal.to_aio(self._aio_release)
        return batch


class Subscription:
    """A core NATS subscription; iterate it for batches (``list[Msg]``)."""

    def __init__(self, inbox: _Inbox[Msg], subject: str, queue: str | None) -> None:
        self._inbox = inbox
        self.subject = subject
        self.queue = queue

    async def receive(self) -> list[Msg]:
        """The next batch; raises ``trio.EndOfChannel`` once unsubscribed, or the
        :class:`NatsConnectionError` that closed the connection."""
        return await self._inbox.receive()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[Msg]:
        try:
            return await self._inbox.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


# ---------------------------------------------------------------------------------------------
# The client


class NatsClient:
    """A connected client. Create it with :func:`connect`; every method is called from Trio."""

    def __init__(
        self,
        portal: Portal,
        *,
        publish_queue: int,
        close_timeout: float,
        inbox_prefix: str = "_INBOX",
        on_permission_denied: Callable[[str], None] | None = None,
    ) -> None:
        self._portal = portal
        #: Where replies to this client's requests arrive (``<prefix>.<unique>``).
        self.inbox_prefix = inbox_prefix
        self._on_denied = on_permission_denied
        self._nc: _AioClient | None = None
        self._close_timeout = close_timeout
        # Trio → asyncio publish queue; deque append/popleft are atomic, so the two sides
        # (possibly two threads) share it without a lock.
        self._out: deque[tuple[str, bytes, dict[str, str] | None]] = deque()
        self._out_max = publish_queue
        self._out_armed = False
        self._out_wake: asyncio.Event | None = None
        self._out_lock: asyncio.Lock | None = None
        self._out_task: asyncio.Task[None] | None = None
        self._room_waiters = 0
        self._room = trio.Event()
        self._max_payload = 1024 * 1024
        # Set by the asyncio pump, raised (once) by the next Trio call.
        self._pub_failure: BridgeError | None = None
        self._pub_dropped_unreported = 0
        self._published = 0
        self._pub_dropped = 0
        self._slow_consumer_drops = 0
        self._permission_denied = 0
        self._slow_reported_at = -_SLOW_REPORT_INTERVAL_S * 2
        self._reconnects = 0
        self._events_dropped = 0
        self._event_sends: list[trio.MemorySendChannel[BridgeEvent]] = []
        self._inboxes: set[_Inbox[Any]] = set()
        self._closed = False
        self._closing = False
        self._lost = False
        self._connect_errors: list[str] = []

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def bridge(self) -> BridgeKind:
        """Which Trio/asyncio bridge this client runs on."""
        return self._portal.kind

    async def _call(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._closed:
            raise NatsConnectionError(f"{what}: the client is closed")
        try:
            return await self._portal.run(fn, *args)
        except _NATS_ERRORS as exc:
            raise _map_error(exc, what) from exc
        except asyncio.CancelledError as exc:
            # A Trio cancellation arrives as trio.Cancelled; an asyncio one means nats-py gave
            # up on the call itself (the connection is closing), which is a bridge error.
            raise NatsConnectionError(
                f"{what}: abandoned by nats-py (the connection is closing)"
            ) from exc

    @property
    def _aio(self) -> _AioClient:
        assert self._nc is not None, "not connected"
        return self._nc

    def _emit(self, event: BridgeEvent) -> None:
        for ch in list(self._event_sends):
            try:
                ch.send_nowait(event)
            except trio.WouldBlock:
                self._events_dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._event_sends.remove(ch)

    # -- asyncio side: connection ------------------------------------------------------------
    async def _aio_connect(self, servers: list[str], options: dict[str, Any]) -> None:
        portal = self._portal

        async def on_error(exc: Exception) -> None:
            if self._nc is None:  # still connecting: keep the reason for the error message
                self._connect_errors.append(f"{type(exc).__name__}: {exc}")
                del self._connect_errors[:-8]
                return
            if isinstance(exc, nats.errors.SlowConsumerError):
                portal.to_trio(self._on_slow_consumer, exc.subject, exc.sid)
            elif "permissions violation" in str(exc).lower():
                portal.to_trio(self._on_permission_denied, str(exc))
            else:
                portal.to_trio(self._emit, BridgeEvent("error", f"{type(exc).__name__}: {exc}"))

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
            **options,
        )
        self._nc = nc
        self._max_payload = nc.max_payload
        self._out_wake = asyncio.Event()
        self._out_lock = asyncio.Lock()
        self._out_task = asyncio.get_running_loop().create_task(self._aio_pump_out())

    async def _aio_close(self, flush_timeout: float) -> None:
        nc = self._aio
        try:
            await self._aio_drain_out()
            if nc.is_connected:
                await nc.flush(timeout=flush_timeout)  # type: ignore[arg-type]  # float is fine
        except _NATS_ERRORS as exc:
            _log.warning(
                "unsent messages lost at close", code=NatsConnectionError.code, error=repr(exc)
            )
        finally:
            if self._out_task is not None:
                self._out_task.cancel()
                await asyncio.gather(self._out_task, return_exceptions=True)
            await nc.close()

    # -- Trio side: connection state ---------------------------------------------------------
    def _on_state(
        self, kind: Literal["disconnected", "reconnected", "closed", "lame_duck"]
    ) -> None:
        if kind == "lame_duck":
            _log.warning("nats server entered lame-duck mode", code=NatsConnectionError.code,
                         url=self._connected_url())
        elif kind == "reconnected":
            self._reconnects += 1
            _log.info("nats reconnected", url=self._connected_url())
        elif kind == "disconnected" and not self._closing:
            _log.warning("nats disconnected", code=NatsConnectionError.code)
        elif kind == "closed" and not self._closing:
            self._lost = True
            err = NatsConnectionError("the NATS connection closed (reconnect attempts exhausted)")
            _log.error("nats connection closed", code=err.code)
            for inbox in list(self._inboxes):
                inbox.fail(err)
        self._emit(BridgeEvent(kind))

    def _on_permission_denied(self, detail: str) -> None:
        # The server refuses a publish or subscribe outside this user's permissions (its
        # account ACL) without closing the connection; make every refusal visible.
        self._permission_denied += 1
        _log.warning("nats refused an operation (permissions)", code=NatsPermissionDenied.code,
                     detail=detail.strip(" '\""), denied_total=self._permission_denied)
        if self._on_denied is not None:
            self._on_denied("subscribe" if "subscription" in detail.lower() else "publish")
        self._emit(BridgeEvent("error", detail))

    def _on_slow_consumer(self, subject: str | None, sid: int | None) -> None:
        self._slow_consumer_drops += 1
        now = trio.current_time()
        if now - self._slow_reported_at < _SLOW_REPORT_INTERVAL_S:
            return
        self._slow_reported_at = now
        _log.warning(
            "slow consumer: nats-py is dropping messages",
            code=NatsSlowConsumer.code,
            subject=subject,
            sid=sid,
            dropped_total=self._slow_consumer_drops,
        )
        self._emit(
            BridgeEvent(
                "slow_consumer",
                f"subject={subject} sid={sid} dropped_total={self._slow_consumer_drops}",
            )
        )

    def _connected_url(self) -> str | None:
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
        """A receive channel of :class:`BridgeEvent` from now on; closed with the client. A
        consumer that falls ``buffer`` events behind misses events (counted in statistics)."""
        send, recv = trio.open_memory_channel[BridgeEvent](buffer)
        if self._closed:
            send.close()
        else:
            self._event_sends.append(send)
        return recv

    def statistics(self) -> BridgeStatistics:
        return BridgeStatistics(
            connected=self.is_connected,
            publish_queued=len(self._out),
            published=self._published,
            publish_dropped=self._pub_dropped,
            delivered_msgs=sum(i._consumed for i in self._inboxes),
            delivered_batches=sum(i._batches for i in self._inboxes),
            slow_consumer_drops=self._slow_consumer_drops,
            reconnects=self._reconnects,
            events_dropped=self._events_dropped,
            permission_denied=self._permission_denied,
        )

    # -- publish -----------------------------------------------------------------------------
    def _raise_pub_failure(self) -> None:
        failure = self._pub_failure
        if failure is not None:
            dropped = self._pub_dropped_unreported
            self._pub_failure = None
            self._pub_dropped_unreported = 0
            raise type(failure)(f"{failure.message} ({dropped} message(s) dropped)")

    def publish_nowait(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Queue one message for the next batch to nats-py. Raises ``NatsBackpressure`` when the
        queue holds ``publish_queue`` messages, ``BridgeError`` for a bad subject or payload."""
        if self._closed:
            raise NatsConnectionError(f"publish to {subject!r}: the client is closed")
        if self._pub_failure is not None:
            self._raise_pub_failure()
        out = self._out
        if len(out) >= self._out_max:
            raise NatsBackpressure(
                f"publish to {subject!r}: {len(out)} messages already queued (publish_queue)"
            )
        if not subject or _BAD_SUBJECT.search(subject):
            _check_subject(subject)
        if len(payload) > self._max_payload:
            raise BridgeError(
                f"publish to {subject!r}: payload of {len(payload)} B exceeds the server's "
                f"max_payload of {self._max_payload} B"
            )
        out.append((subject, payload, headers))
        if not self._out_armed:
            self._out_armed = True
            assert self._out_wake is not None
            self._portal.to_aio(self._out_wake.set)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Like :meth:`publish_nowait`, but waits for room in the queue instead of raising."""
        while len(self._out) >= self._out_max and not self._closed:
            self._room_waiters += 1
            try:
                await self._room.wait()
            finally:
                self._room_waiters -= 1
        await trio.lowlevel.checkpoint()
        self.publish_nowait(subject, payload, headers)

    def _wake_room(self) -> None:
        self._room.set()
        self._room = trio.Event()

    async def _aio_pump_out(self) -> None:
        assert self._out_wake is not None
        wake = self._out_wake
        while True:
            await wake.wait()
            wake.clear()
            await self._aio_drain_out()

    async def _aio_drain_out(self) -> None:
        assert self._out_lock is not None
        async with self._out_lock:
            # Disarm before draining: a Trio append after this point re-arms and wakes us again.
            self._out_armed = False
            out = self._out
            publish = self._aio.publish
            sent = 0
            while out:
                subject, payload, headers = out.popleft()
                try:
                    await publish(subject, payload, headers=headers)
                    sent += 1
                except _NATS_ERRORS as exc:
                    self._pub_dropped += 1
                    self._pub_dropped_unreported += 1
                    if self._pub_failure is None:
                        self._pub_failure = _map_error(exc, f"publish to {subject!r}")
                        _log.error(
                            "publish failed; dropping until the caller is told",
                            code=self._pub_failure.code,
                            subject=subject,
                            error=repr(exc),
                        )
            self._published += sent
            if self._room_waiters:
                self._portal.to_trio(self._wake_room)

    async def flush(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 (see module doc)
        """Hand everything queued to nats-py and wait until the server has seen it."""
        await self._call("flush", self._aio_flush, timeout)
        self._raise_pub_failure()

    async def _aio_flush(self, timeout: float) -> None:  # noqa: ASYNC109
        await self._aio_drain_out()
        if self._pub_failure is None:  # else the caller hears of the failure, not a timeout
            await self._aio.flush(timeout=timeout)  # type: ignore[arg-type]  # float is fine

    # -- subscribe / request -----------------------------------------------------------------
    @asynccontextmanager
    async def subscribe(
        self,
        subject: str,
        queue: str | None = None,
        max_batch: int = 256,
        *,
        max_pending: int = _DEFAULT_MAX_PENDING,
        client_pending: int = _DEFAULT_CLIENT_PENDING,
    ) -> AsyncIterator[Subscription]:
        """Subscribe for the duration of the block; the subscription yields ``list[Msg]``.

        ``max_pending`` bounds the messages between nats-py and the consumer, ``client_pending``
        those queued inside nats-py behind them; beyond both, messages are dropped as a slow
        consumer (see module doc). The server has registered the interest when the block starts.
        """
        inbox: _Inbox[Msg] = _Inbox(self._portal, max_pending, max_batch, f"subscription {subject}")
        what = f"subscribe to {subject!r}"

        async def _sub() -> Any:
            sub = await self._aio.subscribe(
                subject,
                queue=queue or "",
                cb=inbox.aio_put_msg,
                pending_msgs_limit=client_pending,
                pending_bytes_limit=_CLIENT_PENDING_BYTES,
            )
            # Make the SUB reach the server before the caller publishes anything.
            await self._aio.flush()
            return sub

        aio_sub = await self._call(what, _sub)
        self._inboxes.add(inbox)
        try:
            yield Subscription(inbox, subject, queue)
        finally:
            self._inboxes.discard(inbox)
            inbox.close()
            await self._quietly(f"unsubscribe from {subject!r}", aio_sub.unsubscribe)

    async def _quietly(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Best-effort cleanup: bounded, shielded, failures logged (the connection may be gone)."""
        if self._closed:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
            try:
                await self._call(what, fn, *args)
            except BridgeError as exc:
                _log.warning(f"{what} failed", code=exc.code, error=str(exc))

    async def request(
        self,
        subject: str,
        payload: bytes,
        timeout: float = 1.0,  # noqa: ASYNC109 (see module doc)
        headers: dict[str, str] | None = None,
    ) -> Msg:
        """Send a request and await one reply; ``NatsTimeout``/``NatsNoResponders`` otherwise."""
        _check_subject(subject)

        async def _req() -> Msg:
            return _from_aio(
                await self._aio.request(subject, payload, timeout=timeout, headers=headers)
            )

        return await self._call(f"request to {subject!r}", _req)

    async def reconnect(self) -> None:
        """Drop the connection and sign in again: credentials are read anew (a rotated
        ``.creds`` file takes effect), subscriptions are restored, publishes meanwhile are
        buffered. Returns once the reconnect is under way; a ``reconnected`` event follows."""

        async def _force() -> None:
            await self._aio.force_reconnect()

        await self._call("reconnect", _force)

    def jetstream(self, *, timeout: float = 5.0) -> JetStream:
        """The JetStream API on this connection (``timeout`` bounds each API call)."""
        return JetStream(self, timeout)

    # -- close -------------------------------------------------------------------------------
    async def _close(self) -> None:
        if self._closed:
            return
        self._closing = True
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
            try:
                await self._call("close", self._aio_close, self._close_timeout / 2)
            except BridgeError as exc:
                _log.warning("close failed", code=exc.code, error=str(exc))
        self._closed = True
        self._emit(BridgeEvent("closed"))
        for inbox in list(self._inboxes):
            inbox.close()
        for ch in self._event_sends:
            ch.close()
        self._event_sends.clear()
        self._room.set()


@asynccontextmanager
async def connect(
    servers: str | list[str],
    *,
    name: str = "xypipe",
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    creds: str | None = None,
    nkeys_seed: str | None = None,
    inbox_prefix: str = "_INBOX",
    on_permission_denied: Callable[[str], None] | None = None,
    tls: ssl.SSLContext | None = None,
    connect_timeout: float = 2.0,
    reconnect_wait: float = 0.25,
    max_reconnect_attempts: int = -1,
    reconnect_buffer_bytes: int = 8 * 1024 * 1024,
    publish_queue: int = 65536,
    close_timeout: float = 2.0,
    connect_deadline: float | None = None,
    bridge: BridgeKind = "trio-asyncio",
) -> AsyncIterator[NatsClient]:
    """Connect to NATS for the duration of the block (a Trio async context manager).

    ``servers``: one URL or a list. ``creds``: path of a ``.creds`` file (JWT + NKey seed);
    ``nkeys_seed``: path of a file holding an NKey seed (the embedded bus's role keys).
    ``inbox_prefix``: where request replies arrive (a role's own prefix on the embedded bus).
    ``on_permission_denied("publish" | "subscribe")`` is called for every operation the server
    refuses under the user's permissions (also logged ``XY-NATS-008`` and counted in
    :meth:`NatsClient.statistics`).
    ``max_reconnect_attempts=-1`` retries forever. ``bridge`` picks the Trio/asyncio bridge
    (``bench/bridge.py`` measures both; the default is the faster). Raises
    :class:`NatsConnectionError` if no server can be reached within ``connect_deadline``
    (default: ``2 * connect_timeout`` per server). nats-py itself would retry the *first* connect
    as long as ``max_reconnect_attempts`` allows, i.e. forever by default; the deadline makes a
    wrong URL fail fast while an established connection still reconnects forever.
    """
    server_list = [servers] if isinstance(servers, str) else list(servers)
    options: dict[str, Any] = {
        "name": name,
        "connect_timeout": connect_timeout,
        "reconnect_time_wait": reconnect_wait,
        "max_reconnect_attempts": max_reconnect_attempts,
        "pending_size": reconnect_buffer_bytes,
        "allow_reconnect": True,
    }
    if user is not None:
        options["user"] = user
    if password is not None:
        options["password"] = password
    if token is not None:
        options["token"] = token
    if creds is not None:
        options["user_credentials"] = creds
    if nkeys_seed is not None:
        options["nkeys_seed"] = nkeys_seed
    if inbox_prefix != "_INBOX":
        options["inbox_prefix"] = inbox_prefix
    if tls is not None:
        options["tls"] = tls
    async with open_portal(bridge) as portal:
        client = NatsClient(portal, publish_queue=publish_queue, close_timeout=close_timeout,
                            inbox_prefix=inbox_prefix, on_permission_denied=on_permission_denied)
        what = f"connect to {', '.join(server_list)}"
        deadline = (
            connect_deadline
            if connect_deadline is not None
            else 2 * connect_timeout * len(server_list)
        )
        try:
            with trio.fail_after(deadline):
                await client._call(what, client._aio_connect, server_list, options)
        except trio.TooSlowError:
            # A refusal (-ERR 'Authorization Violation') is often followed by a reset of the
            # same attempt; name every distinct recent error, not just the last, so the cause
            # an operator must fix is never hidden behind the symptom.
            seen = list(dict.fromkeys(reversed(client._connect_errors)))
            last = "; earlier: ".join(seen) if seen else "no error reported"
            raise NatsConnectionError(
                f"{what}: no server reachable within {deadline:g} s (last error: {last})"
            ) from None
        except BridgeError as exc:
            raise NatsConnectionError(str(exc)) from exc.__cause__
        client._emit(BridgeEvent("connected", client._connected_url() or ""))
        try:
            yield client
        finally:
            await client._close()


# ---------------------------------------------------------------------------------------------
# JetStream

Deliver: TypeAlias = (
    Literal["all", "new", "last", "last_per_subject"]
    | tuple[Literal["seq"], int]
    | tuple[Literal["time"], datetime.datetime]
)


def _consumer_config(
    deliver: Deliver, ack: Literal["none", "all"], filter_subject: str
) -> _js_api.ConsumerConfig:
    cfg = _js_api.ConsumerConfig(
        ack_policy=_js_api.AckPolicy.NONE if ack == "none" else _js_api.AckPolicy.ALL,
        filter_subject=filter_subject,
    )
    if deliver == "all":
        cfg.deliver_policy = _js_api.DeliverPolicy.ALL
    elif deliver == "new":
        cfg.deliver_policy = _js_api.DeliverPolicy.NEW
    elif deliver == "last":
        cfg.deliver_policy = _js_api.DeliverPolicy.LAST
    elif deliver == "last_per_subject":
        cfg.deliver_policy = _js_api.DeliverPolicy.LAST_PER_SUBJECT
    elif isinstance(deliver, tuple) and deliver[0] == "seq" and isinstance(deliver[1], int):
        cfg.deliver_policy = _js_api.DeliverPolicy.BY_START_SEQUENCE
        cfg.opt_start_seq = deliver[1]
    elif (
        isinstance(deliver, tuple)
        and deliver[0] == "time"
        and isinstance(deliver[1], datetime.datetime)
    ):
        cfg.deliver_policy = _js_api.DeliverPolicy.BY_START_TIME
        cfg.opt_start_time = deliver[1]
    else:
        raise ValueError(
            "deliver must be 'all', 'new', 'last', 'last_per_subject', ('seq', int) or "
            f"('time', datetime), got {deliver!r}"
        )
    return cfg


class JetStream:
    """JetStream on a :class:`NatsClient`. Create with ``nc.jetstream()``."""

    def __init__(self, client: NatsClient, timeout: float) -> None:
        self._c = client
        self._timeout = timeout
        self._ctx: Any = None

    def _js(self) -> Any:
        # Built on the asyncio side: nats-py's context creates asyncio primitives.
        if self._ctx is None:
            self._ctx = self._c._aio.jetstream(timeout=self._timeout)
        return self._ctx

    async def ensure_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age_s: float | None = None,
        max_bytes: int | None = None,
        max_msgs_per_subject: int | None = None,
        storage: Literal["file", "memory"] = "file",
        allow_direct: bool = True,
    ) -> StreamState:
        """Create the stream, or update it to this configuration if it exists."""
        cfg = _js_api.StreamConfig(
            name=name,
            subjects=list(subjects),
            max_age=max_age_s,
            max_bytes=max_bytes if max_bytes is not None else -1,
            max_msgs_per_subject=max_msgs_per_subject if max_msgs_per_subject is not None else -1,
            storage=_js_api.StorageType.FILE if storage == "file" else _js_api.StorageType.MEMORY,
            allow_direct=allow_direct,
        )

        async def _ensure() -> StreamState:
            js = self._js()
            try:
                info = await js.add_stream(cfg)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # "stream name already in use" with another config
                    raise
                info = await js.update_stream(cfg)
            return _stream_state(info)

        return await self._c._call(f"ensure stream {name!r}", _ensure)

    async def create_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age_s: float | None = None,
        max_bytes: int | None = None,
        storage: Literal["file", "memory"] = "file",
    ) -> tuple[StreamState, dict[str, Any] | None]:
        """Create the stream if it does not exist; never change an existing one.

        Returns the stream's state and, when it already existed with another configuration,
        that configuration (``subjects``, ``max_age_s``, ``max_bytes``, ``storage``) so the
        caller decides what a difference means; ``None`` when it was created or matches."""
        cfg = _js_api.StreamConfig(
            name=name,
            subjects=list(subjects),
            max_age=max_age_s,
            max_bytes=max_bytes if max_bytes is not None else -1,
            storage=_js_api.StorageType.FILE if storage == "file" else _js_api.StorageType.MEMORY,
            allow_direct=True,
        )

        async def _create() -> tuple[StreamState, dict[str, Any] | None]:
            js = self._js()
            try:
                # Identical configuration: the server answers with the existing stream.
                return _stream_state(await js.add_stream(cfg)), None
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # "stream name already in use" with another config
                    raise
            info = await js.stream_info(name)
            c = info.config
            have = {
                "subjects": list(c.subjects or ()),
                "max_age_s": float(c.max_age) if c.max_age else None,
                "max_bytes": c.max_bytes if c.max_bytes and c.max_bytes > 0 else None,
                "storage": "file" if c.storage == _js_api.StorageType.FILE else "memory",
            }
            return _stream_state(info), have

        return await self._c._call(f"create stream {name!r}", _create)

    async def update_stream_limits(
        self, name: str, *, max_age_s: float | None, max_bytes: int | None
    ) -> StreamState:
        """Change only the retention limits of an existing stream (all else stays)."""

        async def _update() -> StreamState:
            js = self._js()
            c = (await js.stream_info(name)).config
            c.max_age = max_age_s
            c.max_bytes = max_bytes if max_bytes is not None else -1
            return _stream_state(await js.update_stream(c))

        return await self._c._call(f"update limits of stream {name!r}", _update)

    async def stream_state(self, name: str) -> StreamState:
        async def _info() -> StreamState:
            return _stream_state(await self._js().stream_info(name))

        return await self._c._call(f"stream info {name!r}", _info)

    async def delete_stream(self, name: str) -> None:
        async def _delete() -> None:
            await self._js().delete_stream(name)

        await self._c._call(f"delete stream {name!r}", _delete)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> int:
        """Publish and await the stream's ack; returns the stream sequence."""
        _check_subject(subject)

        async def _pub() -> int:
            ack = await self._js().publish(subject, payload, headers=headers)
            return int(ack.seq)

        return await self._c._call(f"JetStream publish to {subject!r}", _pub)

    async def publish_many(
        self, messages: Iterable[tuple[str, bytes]], *, headers: dict[str, str] | None = None
    ) -> list[int]:
        """Publish all, acks pipelined (nats-py ``publish_async``), in one crossing; returns the
        stream sequences in order. Raises if any publish is not acked."""
        items = list(messages)
        for subject, _ in items:
            _check_subject(subject)

        async def _pub_many() -> list[int]:
            js = self._js()
            futures = [await js.publish_async(s, p, headers=headers) for s, p in items]
            acks = await asyncio.gather(*futures)
            return [int(a.seq) for a in acks]

        return await self._c._call(f"JetStream publish of {len(items)} messages", _pub_many)

    @asynccontextmanager
    async def pull(
        self,
        stream: str,
        filter_subject: str,
        *,
        durable: str | None = None,
        deliver: Deliver = "all",
        batch: int = 256,
        ack: Literal["none", "all"] = "none",
    ) -> AsyncIterator[PullConsumer]:
        """A pull consumer on ``stream`` for ``filter_subject``.

        ``ack="none"`` (default): the server does not track acks; a durable still resumes after
        the last message *delivered*. Right for market data, which is re-derivable and read
        latest-wins: acks would add a round trip per batch for no gain. ``ack="all"``: the
        caller calls :meth:`PullConsumer.ack` with a processed batch, which acks its last message
        (AckAll: one ack per batch, not per message) — use it where a message must never be
        skipped after a crash. An ephemeral consumer (``durable=None``) is deleted on exit.
        """
        cfg = _consumer_config(deliver, ack, filter_subject)
        what = f"pull consumer on {stream!r} ({filter_subject})"

        async def _open() -> Any:
            return await self._js().pull_subscribe(
                filter_subject, durable=durable, stream=stream, config=cfg
            )

        psub = await self._c._call(what, _open)
        consumer = PullConsumer(self._c, psub, batch, ack, what)
        try:
            yield consumer
        finally:

            async def _close() -> None:
                if durable is None:
                    try:
                        info = await psub.consumer_info()
                        await self._js().delete_consumer(stream, info.name)
                    except nats.js.errors.NotFoundError:
                        pass  # Already gone (inactivity threshold).
                await psub.unsubscribe()

            await self._c._quietly(f"close {what}", _close)

    async def direct_get_last(self, stream: str, subject: str) -> Msg | None:
        """The last message stored for ``subject`` (direct get: served by any replica, no
        consumer), or ``None`` if the subject has none."""

        async def _get() -> Msg | None:
            try:
                raw = await self._js().get_last_msg(stream, subject, direct=True)
            except nats.js.errors.NotFoundError:
                return None
            return _from_raw(raw)

        return await self._c._call(f"direct get of last {subject!r} in {stream!r}", _get)

    async def kv(
        self,
        bucket: str,
        *,
        create: bool = True,
        history: int = 1,
        ttl_s: float | None = None,
        storage: Literal["file", "memory"] = "file",
    ) -> KeyValue:
        """Open a KV bucket; with ``create`` it is created (or updated) with these settings,
        otherwise a missing bucket raises ``NatsNotFound``."""

        async def _open() -> Any:
            js = self._js()
            if not create:
                return await js.key_value(bucket)
            return await js.create_key_value(
                _js_api.KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    ttl=ttl_s,
                    storage=(
                        _js_api.StorageType.FILE
                        if storage == "file"
                        else _js_api.StorageType.MEMORY
                    ),
                )
            )

        handle = await self._c._call(f"open KV bucket {bucket!r}", _open)
        return KeyValue(self._c, handle, bucket)


def _stream_state(info: Any) -> StreamState:
    return StreamState(
        name=info.config.name,
        subjects=tuple(info.config.subjects or ()),
        messages=info.state.messages,
        bytes=info.state.bytes,
        first_seq=info.state.first_seq,
        last_seq=info.state.last_seq,
    )


class PullConsumer:
    def __init__(
        self, client: NatsClient, psub: Any, batch: int, ack: Literal["none", "all"], what: str
    ) -> None:
        self._c = client
        self._psub = psub
        self._batch = batch
        self._ack = ack
        self._what = what

    async def fetch(
        self,
        max_msgs: int | None = None,
        timeout: float = 1.0,  # noqa: ASYNC109 (the fetch's expiry, sent to the server)
    ) -> list[Msg]:
        """Up to ``max_msgs`` (default: the consumer's ``batch``) messages; waits up to
        ``timeout`` for the first one and returns ``[]`` if none arrives."""
        n = max_msgs or self._batch

        async def _fetch() -> list[Msg]:
            try:
                msgs = await self._psub.fetch(n, timeout=timeout)
            except nats.errors.TimeoutError:
                return []
            return [_from_aio_js(m) for m in msgs]

        return await self._c._call(f"fetch from {self._what}", _fetch)

    async def num_pending(self) -> int:
        """Messages the consumer has yet to deliver (consumer info): read right after opening
        it, how many a complete read must return."""

        async def _info() -> int:
            return int((await self._psub.consumer_info()).num_pending)

        return await self._c._call(f"info of {self._what}", _info)

    def ack(self, batch: list[Msg]) -> None:
        """Acknowledge a processed batch (``ack="all"`` consumers): one ack for its last message,
        sent with the next publish batch."""
        if self._ack != "all":
            raise BridgeError(f"{self._what}: ack() needs ack='all', this consumer has ack='none'")
        if batch:
            self._c.publish_nowait(batch[-1].reply, b"+ACK")


# ---------------------------------------------------------------------------------------------
# Key/value


# nats-py's own key check is ``re.match`` with ``$``, which lets a trailing newline through.
_KV_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")


def _check_key(bucket: str, key: str) -> None:
    if _KV_KEY.fullmatch(key) is None or key.startswith(".") or key.endswith("."):
        raise BridgeError(
            f"KV key {key!r} in {bucket!r}: expected letters, digits and - / _ = . "
            "(not first or last)"
        )


def _withdraw(nc: _AioClient, marker: bytes) -> int:
    """Remove the queued commands carrying ``marker`` from nats-py's outgoing buffer (the one a
    reconnect flushes); returns how many were removed. Asyncio side only."""
    pending = getattr(nc, "_pending", None)
    if not isinstance(pending, list):
        return 0
    keep = [cmd for cmd in pending if marker not in cmd]
    removed = len(pending) - len(keep)
    if removed:
        pending[:] = keep
        nc._pending_data_size = sum(len(c) for c in keep)
    return removed


class KvWatch:
    """Changes to watched keys, one :class:`KvEntry` at a time (carried across in batches)."""

    def __init__(self, inbox: _Inbox[KvEntry]) -> None:
        self._inbox = inbox
        self._buffer: deque[KvEntry] = deque()

    def __aiter__(self) -> KvWatch:
        return self

    async def __anext__(self) -> KvEntry:
        if not self._buffer:
            try:
                self._buffer.extend(await self._inbox.receive())
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
        else:
            await trio.lowlevel.checkpoint()
        return self._buffer.popleft()


class KeyValue:
    def __init__(self, client: NatsClient, kv: Any, bucket: str) -> None:
        self._c = client
        self._kv = kv
        self.bucket = bucket

    def _entry(self, e: Any) -> KvEntry:
        return KvEntry(
            bucket=self.bucket,
            key=e.key,
            value=e.value or b"",
            revision=e.revision or 0,
            op=e.operation or "PUT",
            created=e.created,
        )

    async def get(self, key: str) -> KvEntry | None:
        """The current value, or ``None`` if the key is absent or deleted."""
        _check_key(self.bucket, key)

        async def _get() -> KvEntry | None:
            try:
                return self._entry(await self._kv.get(key))
            except nats.js.errors.NotFoundError:  # includes KeyNotFound and KeyDeleted
                return None

        return await self._c._call(f"KV get {self.bucket}/{key}", _get)

    async def put(self, key: str, value: bytes) -> int:
        """Store ``value``; returns the new revision."""
        _check_key(self.bucket, key)

        async def _put() -> int:
            return int(await self._kv.put(key, value))

        return await self._c._call(f"KV put {self.bucket}/{key}", _put)

    async def update(
        self, key: str, value: bytes, *, last: int, headers: dict[str, str] | None = None
    ) -> int:
        """Store ``value`` only while the key's last revision is ``last`` (0: never written), and
        only now: returns the new revision, or raises — and a write that raised never lands later.

        * Not connected (nats-py reconnecting): refused at once, never put in nats-py's reconnect
          buffer.
        * Failed or cancelled after it was queued (timeout, disconnect, Trio cancellation): taken
          back out of nats-py's outgoing buffer if it is still there, so a reconnect cannot send
          it after the caller was told it failed.
        * Bytes already on a socket to a server that stalled cannot be recalled; if they arrive
          late, the expected revision makes the server refuse them unless the key is unchanged —
          the caller can recognise its own write by ``headers`` and revert it.

        Raises :class:`~xypipe._errors.KvRevisionConflict` when the server refuses ``last``.
        """
        _check_key(self.bucket, key)
        what = f"KV update {self.bucket}/{key} (expected revision {last})"
        marker = f"Xy-Write-Id: {uuid.uuid4().hex}"
        hdrs = {"Nats-Expected-Last-Subject-Sequence": str(last), **(headers or {}),
                "Xy-Write-Id": marker.split(": ", 1)[1]}

        async def _update() -> int:
            nc = self._c._aio
            if not nc.is_connected or nc.is_reconnecting:
                raise NatsConnectionError(
                    f"{what}: not connected to NATS; refused instead of buffered")
            try:
                ack = await self._kv._js.publish(f"{self._kv._pre}{key}", value, headers=hdrs)
            except nats.js.errors.APIError as exc:
                if exc.err_code in (10071, 10164):
                    raise KvRevisionConflict(
                        f"{what}: the key has moved on ({exc.description})") from None
                raise
            except BaseException:
                _withdraw(nc, marker.encode())
                raise
            return int(ack.seq)

        return await self._c._call(what, _update)

    async def delete(self, key: str) -> None:
        _check_key(self.bucket, key)

        async def _delete() -> None:
            await self._kv.delete(key)

        await self._c._call(f"KV delete {self.bucket}/{key}", _delete)

    async def keys(self) -> list[str]:
        async def _keys() -> list[str]:
            try:
                return list(await self._kv.keys())
            except nats.js.errors.NoKeysError:
                return []

        return await self._c._call(f"KV keys of {self.bucket}", _keys)

    @asynccontextmanager
    async def watch(
        self, keys: str = ">", *, include_history: bool = False, max_pending: int = 4096
    ) -> AsyncIterator[KvWatch]:
        """Watch ``keys`` (a subject-style pattern): first the current values, then every change
        (deletes come with ``op="DEL"``).

        The watch survives server restarts: its consumer lives on the server, so after every
        reconnect the watch is started again (retried with backoff while JetStream is away)
        and entries at or below the last revision already delivered are skipped — changes made
        while the server was away arrive once, nothing arrives twice."""
        inbox: _Inbox[KvEntry] = _Inbox(
            self._c._portal, max_pending, 256, f"KV watch {self.bucket}/{keys}"
        )
        what = f"KV watch {self.bucket}/{keys}"
        # Written and read on the asyncio side only.
        seen = [0]
        current: list[tuple[Any, asyncio.Task[None]]] = []

        async def _start() -> None:
            watcher = await self._kv.watch(keys, include_history=include_history)

            async def pump() -> None:
                async for e in watcher:
                    # None marks "initial values delivered"; older revisions were delivered
                    # before a restart of the watch.
                    if e is not None and (e.revision or 0) > seen[0]:
                        seen[0] = e.revision or 0
                        await inbox.aio_put(self._entry(e))

            current.append((watcher, asyncio.get_running_loop().create_task(pump())))

        async def _stop() -> None:
            while current:
                watcher, task = current.pop()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                try:
                    await watcher.stop()
                except _NATS_ERRORS:
                    pass  # The server that held it may be gone; its consumer with it.

        async def _restart() -> None:
            await _stop()
            await _start()

        async def follow(events: trio.MemoryReceiveChannel[BridgeEvent]) -> None:
            async for ev in events:
                if ev.kind != "reconnected":
                    continue
                await retrying(f"restart {what}", lambda: self._c._call(what, _restart),
                               log=_log, gave_up=lambda: self._c.closed)
                _log.warning("KV watch restarted after a reconnect", code=KV_WATCH_RESTARTED,
                             bucket=self.bucket, keys=keys, last_revision=seen[0])

        events = self._c.events()
        await self._c._call(what, _start)
        self._c._inboxes.add(inbox)
        try:
            with single_error_unwrapped():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(follow, events)
                    try:
                        yield KvWatch(inbox)
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            events.close()
            self._c._inboxes.discard(inbox)
            inbox.close()
            await self._c._quietly(f"stop {what}", _stop)
