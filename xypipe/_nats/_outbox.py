"""Trio → asyncio: the bounded publish queue and the asyncio pump that empties it in batches.

``publish_nowait``/``publish`` append to a bounded queue; the first append after a drain
schedules one wake-up of an asyncio pump task, which hands everything queued to nats-py in one
go (nats-py then writes it to the socket in one write).

Publishing while the server is away: nats-py buffers outgoing messages during a reconnect, up to
its reconnect buffer; past that the pump drops them and the next ``publish_nowait``/``publish``/
``flush`` raises :class:`~xypipe._errors.NatsBackpressure` saying how many were dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque

import trio
from nats.aio.client import Client as _AioClient

from xypipe._bridge_portal import Portal
from xypipe._errors import BridgeError, NatsBackpressure, NatsConnectionError
from xypipe._log import get_logger
from xypipe._nats._boundary import BAD_SUBJECT, NATS_ERRORS, check_subject, map_error

__all__ = ["Outbox"]

_log = get_logger("nats")


class Outbox:
    """One connection's publish queue: Trio appends, an asyncio task hands batches to nats-py."""

    def __init__(self, portal: Portal, limit: int) -> None:
        self._portal = portal
        # deque append/popleft are atomic, so the two sides (possibly two threads) share it
        # without a lock.
        self._out: deque[tuple[str, bytes, dict[str, str] | None]] = deque()
        self._out_max = limit
        self._out_armed = False
        self._nc: _AioClient | None = None
        self._out_wake: asyncio.Event | None = None
        self._out_lock: asyncio.Lock | None = None
        self._out_task: asyncio.Task[None] | None = None
        self._room_waiters = 0
        self._room = trio.Event()
        self._max_payload = 1024 * 1024
        self._closed = False
        # Set by the asyncio pump, raised (once) by the next Trio call.
        self._pub_failure: BridgeError | None = None
        self._pub_dropped_unreported = 0
        #: Messages handed to nats-py, and dropped by the pump (statistics).
        self.published = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        return len(self._out)

    # -- Trio side ---------------------------------------------------------------------------
    def raise_failure(self) -> None:
        """Raise (once) the failure the pump met since the last call, if any."""
        failure = self._pub_failure
        if failure is not None:
            dropped = self._pub_dropped_unreported
            self._pub_failure = None
            self._pub_dropped_unreported = 0
            raise type(failure)(f"{failure.message} ({dropped} message(s) dropped)")

    def publish_nowait(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        if self._closed:
            raise NatsConnectionError(f"publish to {subject!r}: the client is closed")
        if self._pub_failure is not None:
            self.raise_failure()
        out = self._out
        if len(out) >= self._out_max:
            raise NatsBackpressure(
                f"publish to {subject!r}: {len(out)} messages already queued (publish_queue)"
            )
        if not subject or BAD_SUBJECT.search(subject):
            check_subject(subject)
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

    def close(self) -> None:
        """No more publishes; waiters for room wake up (and are refused)."""
        self._closed = True
        self._room.set()

    # -- asyncio side ------------------------------------------------------------------------
    def aio_start(self, nc: _AioClient) -> None:
        """Start the pump on the connected nats-py client (the asyncio primitives are made
        here, on the asyncio side)."""
        self._nc = nc
        self._max_payload = nc.max_payload
        self._out_wake = asyncio.Event()
        self._out_lock = asyncio.Lock()
        self._out_task = asyncio.get_running_loop().create_task(self._aio_pump_out())

    async def aio_stop(self) -> None:
        if self._out_task is not None:
            self._out_task.cancel()
            await asyncio.gather(self._out_task, return_exceptions=True)

    async def _aio_pump_out(self) -> None:
        assert self._out_wake is not None
        wake = self._out_wake
        while True:
            await wake.wait()
            wake.clear()
            await self.aio_drain()

    async def aio_drain(self) -> None:
        """Hand everything queued to nats-py now."""
        assert self._out_lock is not None and self._nc is not None
        async with self._out_lock:
            # Disarm before draining: a Trio append after this point re-arms and wakes us again.
            self._out_armed = False
            out = self._out
            publish = self._nc.publish
            sent = 0
            while out:
                subject, payload, headers = out.popleft()
                try:
                    await publish(subject, payload, headers=headers)
                    sent += 1
                except NATS_ERRORS as exc:
                    self.dropped += 1
                    self._pub_dropped_unreported += 1
                    if self._pub_failure is None:
                        self._pub_failure = map_error(exc, f"publish to {subject!r}")
                        _log.error(
                            "publish failed; dropping until the caller is told",
                            code=self._pub_failure.code,
                            subject=subject,
                            error=repr(exc),
                        )
            self.published += sent
            if self._room_waiters:
                self._portal.to_trio(self._wake_room)

    async def aio_flush(self, timeout: float) -> None:  # noqa: ASYNC109 (a NATS protocol value)
        """Drain, then wait until the server has seen everything (a PING/PONG)."""
        await self.aio_drain()
        if self._pub_failure is None:  # else the caller hears of the failure, not a timeout
            assert self._nc is not None
            await self._nc.flush(timeout=timeout)  # type: ignore[arg-type]  # float is fine
