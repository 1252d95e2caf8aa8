"""Edges: the bounded channels between neighbouring stages, with budget accounting.

An edge is a Trio memory channel whose buffer is the budget's ``max_items`` (so a full edge
blocks its producer: backpressure is the default), plus the bookkeeping the degradation
controller needs: bytes queued and the age of the oldest queued item. Like
``trio.MemoryChannelStatistics``, its state is read as a frozen record.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs
import trio

from xypipe._degrade import Pressure
from xypipe._validate import in_range

T = TypeVar("T")


@attrs.frozen
class Budget:
    """Budget of the edge that leaves a stage: queue slots, bytes and age of the oldest item.

    Each limit that is set contributes ``used / limit`` to the pipeline's pressure.
    """

    max_items: int = attrs.field(default=1024, validator=in_range(1, 1_000_000))
    max_bytes: int | None = attrs.field(default=None, validator=in_range(1, 1 << 40))
    max_age_ms: int | None = attrs.field(default=None, validator=in_range(1, 3_600_000))


def default_sizeof(item: object) -> int:
    """Bytes of an item: ``len`` of bytes-likes, ``nbytes`` if it has one, else 0.

    A list counts the sum of its elements (stages often pass batches).
    """
    if isinstance(item, bytes | bytearray | memoryview):
        return len(item)
    n = getattr(item, "nbytes", None)
    if isinstance(n, int):
        return n
    if isinstance(item, list):
        return sum(default_sizeof(x) for x in item)
    return 0


@attrs.frozen
class EdgeStatistics:
    name: str
    items: int
    max_items: int
    bytes: int
    max_bytes: int | None
    oldest_age: float
    max_age: float | None
    total_sent: int

    def pressure(self) -> Pressure:
        """Worst of the budget's ratios, with a reason naming the limit."""
        readings = [Pressure(self.items / self.max_items, f"edge {self.name} items "
                                                          f"{self.items}/{self.max_items}")]
        if self.max_bytes:
            readings.append(Pressure(self.bytes / self.max_bytes,
                                     f"edge {self.name} bytes {self.bytes}/{self.max_bytes}"))
        if self.max_age:
            readings.append(Pressure(self.oldest_age / self.max_age,
                                     f"edge {self.name} oldest item {self.oldest_age * 1000:.0f} ms"
                                     f"/{self.max_age * 1000:.0f} ms"))
        return Pressure.worst(readings)


class _Ticket:
    __slots__ = ("size", "t")

    def __init__(self, t: float, size: int) -> None:
        self.t = t
        self.size = size


class Edge(Generic[T]):
    """A budgeted edge. Use :attr:`send_channel` upstream and :attr:`receive_channel` downstream."""

    def __init__(
        self,
        name: str,
        budget: Budget,
        *,
        clock: Callable[[], float] = trio.current_time,
        sizeof: Callable[[T], int] = default_sizeof,
    ) -> None:
        self.name = name
        self.budget = budget
        self._clock = clock
        self._sizeof = sizeof
        send, recv = trio.open_memory_channel[tuple[_Ticket, T]](budget.max_items)
        self._tickets: collections.deque[_Ticket] = collections.deque()
        self._bytes = 0
        self._total = 0
        self.send_channel = EdgeSendChannel(self, send)
        self.receive_channel = EdgeReceiveChannel(self, recv)

    def _enqueue(self, item: T) -> _Ticket:
        ticket = _Ticket(self._clock(), self._sizeof(item))
        self._tickets.append(ticket)
        self._bytes += ticket.size
        return ticket

    def _forget(self, ticket: _Ticket) -> None:
        # FIFO delivery means the ticket is almost always the oldest one.
        if self._tickets and self._tickets[0] is ticket:
            self._tickets.popleft()
        else:
            self._tickets.remove(ticket)
        self._bytes -= ticket.size

    def statistics(self) -> EdgeStatistics:
        oldest = self._clock() - self._tickets[0].t if self._tickets else 0.0
        return EdgeStatistics(
            name=self.name,
            items=len(self._tickets),
            max_items=self.budget.max_items,
            bytes=self._bytes,
            max_bytes=self.budget.max_bytes,
            oldest_age=oldest,
            max_age=self.budget.max_age_ms / 1000 if self.budget.max_age_ms else None,
            total_sent=self._total,
        )


class EdgeSendChannel(trio.abc.SendChannel[T]):
    """The producer side of an edge (what a stage sees as ``ctx.outbox``)."""

    def __init__(self, edge: Edge[T], inner: trio.MemorySendChannel[tuple[_Ticket, T]]) -> None:
        self._edge = edge
        self._inner = inner

    def send_nowait(self, value: T) -> None:
        ticket = self._edge._enqueue(value)
        try:
            self._inner.send_nowait((ticket, value))
        except BaseException:
            self._edge._forget(ticket)
            raise
        self._edge._total += 1

    async def send(self, value: T) -> None:
        ticket = self._edge._enqueue(value)
        try:
            await self._inner.send((ticket, value))
        except BaseException:
            # Not delivered (cancelled or closed): it must not count as queued.
            if ticket in self._edge._tickets:
                self._edge._forget(ticket)
            raise
        self._edge._total += 1

    def clone(self) -> EdgeSendChannel[T]:
        return EdgeSendChannel(self._edge, self._inner.clone())

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


class EdgeReceiveChannel(trio.abc.ReceiveChannel[T]):
    """The consumer side of an edge (what a stage sees as ``ctx.inbox``)."""

    def __init__(self, edge: Edge[T], inner: trio.MemoryReceiveChannel[tuple[_Ticket, T]]) -> None:
        self._edge = edge
        self._inner = inner

    def receive_nowait(self) -> T:
        ticket, value = self._inner.receive_nowait()
        self._edge._forget(ticket)
        return value

    async def receive(self) -> T:
        ticket, value = await self._inner.receive()
        self._edge._forget(ticket)
        return value

    def clone(self) -> EdgeReceiveChannel[T]:
        return EdgeReceiveChannel(self._edge, self._inner.clone())

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()
