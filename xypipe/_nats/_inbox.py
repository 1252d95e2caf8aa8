"""asyncio → Trio: messages carried to one Trio consumer in batches, bounded.

The nats-py callback appends to a list and, if it is the first of the loop iteration, schedules
one flush at the end of the iteration; the flush hands the whole list (split at ``max_batch``) to
Trio in one call. An inbox holds at most ``limit`` items between nats-py and the Trio consumer;
beyond that the nats-py callback waits, nats-py's own queue fills and NATS's slow-consumer rule
drops messages — memory stays bounded whatever the consumer does.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

import trio
from nats.aio.msg import Msg as _AioMsg

from xypipe._bridge_portal import Portal
from xypipe._errors import BridgeError
from xypipe._nats._types import Msg

__all__ = ["Inbox", "Subscription", "TrackedInbox"]

T = TypeVar("T")


class TrackedInbox(Protocol):
    """What the connection needs of any inbox, whatever it carries."""

    @property
    def consumed(self) -> int: ...

    @property
    def batches(self) -> int: ...

    def fail(self, error: BridgeError) -> None: ...

    def close(self) -> None: ...


class Inbox(Generic[T]):
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

    @property
    def consumed(self) -> int:
        """Items the Trio consumer has received (for statistics)."""
        return self._consumed

    @property
    def batches(self) -> int:
        """Batches handed to the Trio side (for statistics)."""
        return self._batches

    # -- asyncio side ------------------------------------------------------------------------
    async def aio_put(self, item: T) -> None:
        self._pending.append(item)
        if not self._scheduled:
            self._scheduled = True
            self._portal.loop.call_soon(self._aio_flush)
        if self._sent + len(self._pending) - self._consumed >= self._limit:
            await self._aio_wait_room()

    async def aio_put_msg(self: Inbox[Msg], m: _AioMsg) -> None:
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

    def __init__(self, inbox: Inbox[Msg], subject: str, queue: str | None) -> None:
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
