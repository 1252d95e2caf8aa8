"""What a stage may use from its process, as Protocols: the NATS client, HTTP routes, the clock.

A stage reaches these through its :class:`~xypipe.StageContext`: ``ctx.nats`` and ``ctx.http``
are ``None`` in a process without them, so a stage that cannot work without one declares it::

    class Mirror(xypipe.Stage[Never, list[Msg], MirrorConfig]):
        requires = frozenset({"nats"})

        async def run(self) -> None:
            nc = self.ctx.require_nats()      # a NatsClient, never None
            async with nc.subscribe("xy.md.>") as sub:
                async for batch in sub:
                    await self.outbox.send(batch)

and ``xypipe check`` refuses a config that runs it without a ``[nats]`` section. ``ctx.clock``
is always there.

These are structural types: xypipe's own bridge (and anything a test hands a stage) satisfies
them by having the methods, not by inheriting from them. The value types they return (``Msg``,
``KvEntry``, ``StreamState``, ``Request``, ``Response``...) are the bridge's own frozen records,
re-exported here so a plugin never imports a ``_``-module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

import trio

from xypipe._http import Handler, Request, Response, UpgradeHandler
from xypipe._nats import (
    BridgeEvent,
    ConsumerState,
    Deliver,
    KvEntry,
    Msg,
    PushConsumerConfig,
    StreamState,
)

__all__ = [
    "BridgeEvent",
    "Clock",
    "ConsumerState",
    "Deliver",
    "Handler",
    "HttpRoutes",
    "JetStream",
    "KeyValue",
    "KvEntry",
    "KvWatch",
    "Msg",
    "NatsClient",
    "PullConsumer",
    "PushConsumerConfig",
    "Request",
    "Response",
    "StreamState",
    "Subscription",
    "UpgradeHandler",
]

Storage = Literal["file", "memory"]


class Subscription(Protocol):
    """A core NATS subscription: iterate it for batches of messages."""

    def __aiter__(self) -> AsyncIterator[list[Msg]]: ...

    async def __anext__(self) -> list[Msg]: ...

    async def receive(self) -> list[Msg]: ...


class KvWatch(Protocol):
    """Changes to watched keys, one entry at a time (current values first)."""

    def __aiter__(self) -> AsyncIterator[KvEntry]: ...

    async def __anext__(self) -> KvEntry: ...


class KeyValue(Protocol):
    """A JetStream key/value bucket."""

    bucket: str

    async def get(self, key: str) -> KvEntry | None: ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def update(
        self, key: str, value: bytes, *, last: int, headers: dict[str, str] | None = None
    ) -> int: ...

    async def create(self, key: str, value: bytes) -> int: ...

    async def delete(self, key: str, *, last: int | None = None) -> None: ...

    async def keys(self) -> list[str]: ...

    def watch(
        self, keys: str = ">", *, include_history: bool = False, max_pending: int = 4096
    ) -> AbstractAsyncContextManager[KvWatch]: ...


class PullConsumer(Protocol):
    """A JetStream pull consumer (see :meth:`JetStream.pull`)."""

    async def fetch(
        self,
        max_msgs: int | None = None,
        timeout: float = 1.0,  # noqa: ASYNC109 (the fetch's expiry, sent to the server)
    ) -> list[Msg]: ...

    async def num_pending(self) -> int: ...

    def ack(self, batch: list[Msg]) -> None: ...


class JetStream(Protocol):
    """JetStream on a :class:`NatsClient` (``nc.jetstream()``). Streams and buckets it
    creates keep :attr:`replicas` copies (``[nats] replicas``) unless a call names its own."""

    #: Copies a created stream or bucket keeps by default (3 on a 3-node cluster, else 1).
    replicas: int

    async def ensure_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age_s: float | None = None,
        max_bytes: int | None = None,
        max_msgs_per_subject: int | None = None,
        storage: Storage = "file",
        allow_direct: bool = True,
        replicas: int | None = None,
    ) -> StreamState: ...

    async def create_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age_s: float | None = None,
        max_bytes: int | None = None,
        storage: Storage = "file",
        replicas: int | None = None,
    ) -> tuple[StreamState, Mapping[str, object] | None]: ...

    async def update_stream_limits(
        self, name: str, *, max_age_s: float | None, max_bytes: int | None,
        replicas: int | None = None,
    ) -> StreamState: ...

    async def stream_state(self, name: str) -> StreamState: ...

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> int: ...

    async def publish_many(
        self, messages: Iterable[tuple[str, bytes]], *, headers: dict[str, str] | None = None
    ) -> list[int]: ...

    def pull(
        self,
        stream: str,
        filter_subject: str,
        *,
        durable: str | None = None,
        deliver: Deliver = "all",
        batch: int = 256,
        ack: Literal["none", "all"] = "none",
    ) -> AbstractAsyncContextManager[PullConsumer]: ...

    async def create_push_consumer(
        self, stream: str, name: str, config: PushConsumerConfig, *, deliver: Deliver
    ) -> ConsumerState: ...

    async def consumer_state(self, stream: str, name: str) -> ConsumerState | None: ...

    async def delete_consumer(self, stream: str, name: str) -> bool: ...

    async def direct_get_last(self, stream: str, subject: str) -> Msg | None: ...

    async def kv(
        self,
        bucket: str,
        *,
        create: bool = True,
        history: int = 1,
        ttl_s: float | None = None,
        storage: Storage = "file",
        marker_ttl_s: float | None = None,
        replicas: int | None = None,
    ) -> KeyValue: ...


class NatsClient(Protocol):
    """The process's NATS connection, as stages use it (``ctx.nats`` / ``ctx.require_nats()``).

    Publishing is batched into the bridge; ``publish_nowait`` raises ``NatsBackpressure`` when
    its queue is full, ``publish`` waits for room. Errors are :class:`xypipe.BridgeError`\\ s.
    """

    #: Where this connection's request replies arrive (a role's own prefix on a closed bus).
    inbox_prefix: str
    #: Copies every stream and KV bucket created on this connection keeps (``[nats]
    #: replicas``; :meth:`jetstream` passes it on).
    replicas: int

    @property
    def closed(self) -> bool: ...

    @property
    def is_connected(self) -> bool: ...

    def publish_nowait(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None: ...

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None: ...

    async def flush(self, timeout: float = 2.0) -> None: ...  # noqa: ASYNC109

    def subscribe(
        self,
        subject: str,
        queue: str | None = None,
        max_batch: int = 256,
        *,
        max_pending: int = ...,
        client_pending: int = ...,
    ) -> AbstractAsyncContextManager[Subscription]: ...

    async def request(
        self,
        subject: str,
        payload: bytes,
        timeout: float = 1.0,  # noqa: ASYNC109 (the request's own deadline)
        headers: dict[str, str] | None = None,
    ) -> Msg: ...

    def jetstream(self, *, timeout: float = 5.0) -> JetStream: ...

    def events(self, buffer: int = 64) -> trio.MemoryReceiveChannel[BridgeEvent]: ...


class HttpRoutes(Protocol):
    """The process's HTTP server, as stages use it (``ctx.http`` / ``ctx.require_http()``):
    exact-path routes beside ``/healthz`` and ``/metrics``, and the WebSocket upgrade."""

    def route(
        self, path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)
    ) -> None: ...

    def set_upgrade_handler(self, handler: UpgradeHandler) -> None: ...


class Clock(Protocol):
    """Time as a stage should read it (``ctx.clock``).

    ``now()`` is the run's monotonic clock in seconds — Trio's, so the mock clock drives it in
    tests; measure intervals and deadlines with it. ``wall_us()`` is wall-clock microseconds
    since the Unix epoch, for timestamps other machines compare (``ts_*_us`` fields).
    """

    def now(self) -> float: ...

    def wall_us(self) -> int: ...
