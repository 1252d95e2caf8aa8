"""JetStream key/value buckets: get, put, create, conditional update and delete, keys, watch.

A watch survives server restarts (it is started again after every reconnect, skipping revisions
already delivered); a conditional update that failed never lands later (see
:meth:`KeyValue.update`).
"""

from __future__ import annotations

import asyncio
import datetime
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats.js.errors
import trio
from nats.aio.client import Client as _AioClient
from nats.js.kv import KeyValue as _AioKeyValue

from xypipe._errors import (
    KV_WATCH_RESTARTED,
    BridgeError,
    KvKeyExists,
    KvRevisionConflict,
    NatsConnectionError,
)
from xypipe._log import get_logger
from xypipe._nats._boundary import NATS_ERRORS
from xypipe._nats._bridge import Bridge
from xypipe._nats._inbox import Inbox
from xypipe._nats._types import BridgeEvent, KvEntry
from xypipe._retry import retrying
from xypipe._trio_util import single_error_unwrapped

__all__ = ["KeyValue", "KvWatch"]

_log = get_logger("nats")


#: JetStream's "wrong last sequence" refusals (an expected revision that is not the last).
_WRONG_LAST = (10071, 10164)
_KV_OP = "KV-Operation"
#: nats-server (2.11+) marks a key removed by the bucket's age limit or a message TTL with this
#: header (a *subject delete marker*) instead of ``KV-Operation``; nats-py's ``get`` reads such
#: a marker as an empty value.
_MARKER_REASON = "Nats-Marker-Reason"


def _op_of(headers: dict[str, str] | None) -> str:
    """``PUT``, ``DEL`` or ``PURGE`` from a stored KV message's headers."""
    if not headers:
        return "PUT"
    op = headers.get(_KV_OP)
    if op in ("DEL", "PURGE"):
        return op
    reason = headers.get(_MARKER_REASON)
    if reason is not None:
        return "DEL" if reason == "Remove" else "PURGE"
    return "PUT"


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

    def __init__(self, inbox: Inbox[KvEntry]) -> None:
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
    def __init__(self, bridge: Bridge, kv: _AioKeyValue, bucket: str) -> None:
        self._c = bridge
        self._kv = kv
        self.bucket = bucket

    def _entry(self, e: _AioKeyValue.Entry) -> KvEntry:
        return KvEntry(
            bucket=self.bucket,
            key=e.key,
            value=e.value or b"",
            revision=e.revision or 0,
            op=e.operation or "PUT",
            # A watch's entries carry the stored time (a datetime, whatever nats-py's
            # annotation says); a get's carry none.
            created=e.created if isinstance(e.created, datetime.datetime) else None,
        )

    async def _last(self, key: str) -> KvEntry | None:
        """The key's last stored message, deletes and server markers included (asyncio side)."""
        try:
            msg = await self._kv._js.get_msg(self._kv._stream, subject=f"{self._kv._pre}{key}",
                                             direct=self._kv._direct)
        except nats.js.errors.NotFoundError:
            return None
        return KvEntry(bucket=self.bucket, key=key, value=msg.data or b"",
                       revision=msg.seq or 0, op=_op_of(msg.headers),
                       created=msg.time if isinstance(msg.time, datetime.datetime) else None)

    async def get(self, key: str) -> KvEntry | None:
        """The current value, or ``None`` if the key is absent, deleted or expired."""
        _check_key(self.bucket, key)

        async def _get() -> KvEntry | None:
            entry = await self._last(key)
            return entry if entry is not None and entry.op == "PUT" else None

        return await self._c.call(f"KV get {self.bucket}/{key}", _get)

    async def put(self, key: str, value: bytes) -> int:
        """Store ``value``; returns the new revision."""
        _check_key(self.bucket, key)

        async def _put() -> int:
            return int(await self._kv.put(key, value))

        return await self._c.call(f"KV put {self.bucket}/{key}", _put)

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
        return await self._c.call(what, lambda: self._write(key, value, last, headers, what))

    async def _write(self, key: str, value: bytes, last: int, headers: dict[str, str] | None,
                     what: str) -> int:
        """A conditional write (asyncio side): see :meth:`update`."""
        write_id = uuid.uuid4().hex
        hdrs = {"Nats-Expected-Last-Subject-Sequence": str(last), **(headers or {}),
                "Xy-Write-Id": write_id}
        nc = self._c.aio
        if not nc.is_connected or nc.is_reconnecting:
            raise NatsConnectionError(
                f"{what}: not connected to NATS; refused instead of buffered")
        try:
            ack = await self._kv._js.publish(f"{self._kv._pre}{key}", value, headers=hdrs)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise KvRevisionConflict(
                    f"{what}: the key has moved on ({exc.description})") from None
            raise
        except BaseException:
            _withdraw(nc, f"Xy-Write-Id: {write_id}".encode())
            raise
        return int(ack.seq)

    async def create(self, key: str, value: bytes) -> int:
        """Store ``value`` only if the key holds no value (never written, deleted, purged or
        expired); returns the new revision. Written like :meth:`update` (never lands later).

        Raises :class:`~xypipe._errors.KvKeyExists` (with the live value's revision in
        ``current``) when the key holds a value.
        """
        _check_key(self.bucket, key)
        what = f"KV create {self.bucket}/{key}"

        async def _create() -> int:
            try:
                return await self._write(key, value, 0, None, what)
            except KvRevisionConflict:
                pass
            # Something is stored under the key: a value, or a tombstone (delete, purge, the
            # server's expiry marker) whose revision a create must name.
            last = await self._last(key)
            if last is not None and last.op == "PUT":
                raise KvKeyExists(f"{what}: the key holds a value (revision {last.revision})",
                                  current=last.revision)
            try:
                return await self._write(key, value, last.revision if last else 0, None, what)
            except KvRevisionConflict as exc:
                raise KvKeyExists(f"{what}: written meanwhile by another ({exc})") from None

        return await self._c.call(what, _create)

    async def delete(self, key: str, *, last: int | None = None) -> None:
        """Delete the key (a tombstone watchers see as ``op="DEL"``); with ``last``, only while
        its last revision is ``last`` — else :class:`~xypipe._errors.KvRevisionConflict`."""
        _check_key(self.bucket, key)
        what = f"KV delete {self.bucket}/{key}" + (
            f" (expected revision {last})" if last is not None else "")

        async def _delete() -> None:
            try:
                await self._kv.delete(key, last=last)
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST:
                    raise KvRevisionConflict(
                        f"{what}: the key has moved on ({exc.description})") from None
                raise

        await self._c.call(what, _delete)

    async def keys(self) -> list[str]:
        async def _keys() -> list[str]:
            try:
                return list(await self._kv.keys())
            except nats.js.errors.NoKeysError:
                return []

        return await self._c.call(f"KV keys of {self.bucket}", _keys)

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
        inbox: Inbox[KvEntry] = Inbox(
            self._c.portal, max_pending, 256, f"KV watch {self.bucket}/{keys}"
        )
        what = f"KV watch {self.bucket}/{keys}"
        # Written and read on the asyncio side only.
        seen = [0]
        current: list[tuple[_AioKeyValue.KeyWatcher, asyncio.Task[None]]] = []

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
                    await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py's
                except NATS_ERRORS:
                    pass  # The server that held it may be gone; its consumer with it.

        async def _restart() -> None:
            await _stop()
            await _start()

        async def follow(events: trio.MemoryReceiveChannel[BridgeEvent]) -> None:
            async for ev in events:
                if ev.kind != "reconnected":
                    continue
                await retrying(f"restart {what}", lambda: self._c.call(what, _restart),
                               log=_log, gave_up=lambda: self._c.closed)
                _log.warning("KV watch restarted after a reconnect", code=KV_WATCH_RESTARTED,
                             bucket=self.bucket, keys=keys, last_revision=seen[0])

        events = self._c.events()
        await self._c.call(what, _start)
        self._c.inboxes.add(inbox)
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
            self._c.inboxes.discard(inbox)
            inbox.close()
            await self._c.quietly(f"stop {what}", _stop)
