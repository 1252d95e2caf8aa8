"""JetStream on one connection: streams, publish with acks, consumers, direct gets, KV buckets.

Consumers come in two kinds here, both made by :func:`consumer_config` (the one place a consumer
configuration is built):

- **pull** (:meth:`JetStream.pull`, :class:`PullConsumer`): the caller fetches batches;
- **push** (:meth:`JetStream.create_push_consumer`, :meth:`~JetStream.consumer_state`,
  :meth:`~JetStream.delete_consumer`): the server delivers to a subject the caller subscribes
  to with :meth:`~xypipe._nats.NatsClient.subscribe` — so deliveries cross the bridge in its
  batches — and the caller names the consumer, so one whose creation was never confirmed can be
  found and deleted. :mod:`xypipe._stages._jsfeed` builds its self-healing feed on these three.

Every call is one crossing through the bridge, errors mapped like the rest
(:mod:`xypipe._nats._boundary`).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Literal

import attrs
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js import api as _js_api
from nats.js.kv import KeyValue as _AioKeyValue

from xypipe._errors import BridgeError
from xypipe._nats._boundary import check_name, check_subject, from_aio_js, from_raw
from xypipe._nats._bridge import Bridge
from xypipe._nats._kv import KeyValue
from xypipe._nats._types import ConsumerState, Deliver, Msg, StreamConfigSeen, StreamState

__all__ = ["JetStream", "PullConsumer", "PushConsumerConfig", "consumer_config"]

# JetStream API error codes told apart here.
_ERR_STREAM_NAME_IN_USE = 10058  # "stream name already in use" with another configuration
_ERR_CONSUMER_NOT_FOUND = 10014

@attrs.frozen
class PushConsumerConfig:
    """A push consumer's settings (durations in seconds; the server's own names otherwise)."""

    #: Where the server pushes deliveries (and idle heartbeats).
    deliver_subject: str
    filter_subject: str = ">"
    #: ``"all"``: acknowledging a delivery acknowledges everything before it.
    ack: Literal["none", "all"] = "all"
    #: Deliveries the server sends ahead of the last acknowledgement.
    max_ack_pending: int = 4096
    #: The server says "still here, nothing for you" this often when idle.
    idle_heartbeat_s: float = 0.5
    #: An ephemeral consumer nobody listens to is removed after this long.
    inactive_threshold_s: float = 30.0
    ack_wait_s: float = 3600.0
    max_deliver: int = 1
    #: Memory storage, one replica: cheap to re-create, which is how loss is handled.
    memory: bool = True
    replicas: int = 1


def consumer_config(
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
        # nats-py sends it in UTC, a naive time taken as UTC.
        cfg.deliver_policy = _js_api.DeliverPolicy.BY_START_TIME
        cfg.opt_start_time = deliver[1]
    else:
        raise ValueError(
            "deliver must be 'all', 'new', 'last', 'last_per_subject', ('seq', int) or "
            f"('time', datetime), got {deliver!r}"
        )
    return cfg


def _push_config(name: str, config: PushConsumerConfig,
                 deliver: Deliver) -> _js_api.ConsumerConfig:
    cfg = consumer_config(deliver, config.ack, config.filter_subject)
    cfg.name = name
    cfg.deliver_subject = config.deliver_subject
    cfg.max_ack_pending = config.max_ack_pending
    cfg.idle_heartbeat = config.idle_heartbeat_s
    cfg.inactive_threshold = config.inactive_threshold_s
    cfg.ack_wait = config.ack_wait_s
    cfg.max_deliver = config.max_deliver
    cfg.mem_storage = config.memory
    cfg.num_replicas = config.replicas
    cfg.replay_policy = _js_api.ReplayPolicy.INSTANT
    return cfg


def _check_names(stream: str, consumer: str) -> None:
    check_name("stream", stream)
    check_name("consumer", consumer)


def _consumer_state(info: _js_api.ConsumerInfo) -> ConsumerState:
    return ConsumerState(
        stream=info.stream_name,
        name=info.name,
        delivered_seq=info.delivered.stream_seq if info.delivered is not None else 0,
        num_pending=info.num_pending or 0,
    )


def _stream_state(info: _js_api.StreamInfo) -> StreamState:
    return StreamState(
        name=info.config.name or "",
        subjects=tuple(info.config.subjects or ()),
        messages=info.state.messages,
        bytes=info.state.bytes,
        first_seq=info.state.first_seq,
        last_seq=info.state.last_seq,
    )


class JetStream:
    """JetStream on a :class:`~xypipe._nats.NatsClient`. Create with ``nc.jetstream()``."""

    def __init__(self, bridge: Bridge, timeout: float, *, replicas: int = 1) -> None:
        self._c = bridge
        self._timeout = timeout
        self._ctx: JetStreamContext | None = None
        #: Copies a stream or bucket created here keeps when the call names none.
        self.replicas = replicas

    def _replicas(self, asked: int | None) -> int:
        return self.replicas if asked is None else asked

    def _js(self) -> JetStreamContext:
        # Built on the asyncio side: nats-py's context creates asyncio primitives.
        if self._ctx is None:
            self._ctx = self._c.aio.jetstream(timeout=self._timeout)
        return self._ctx

    # -- streams -----------------------------------------------------------------------------
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
        replicas: int | None = None,
    ) -> StreamState:
        """Create the stream, or update it to this configuration if it exists (``replicas``
        None: :attr:`replicas`)."""
        cfg = _js_api.StreamConfig(
            name=name,
            subjects=list(subjects),
            max_age=max_age_s,
            max_bytes=max_bytes if max_bytes is not None else -1,
            max_msgs_per_subject=max_msgs_per_subject if max_msgs_per_subject is not None else -1,
            storage=_js_api.StorageType.FILE if storage == "file" else _js_api.StorageType.MEMORY,
            allow_direct=allow_direct,
            num_replicas=self._replicas(replicas),
        )

        async def _ensure() -> StreamState:
            js = self._js()
            try:
                info = await js.add_stream(cfg)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                    raise
                info = await js.update_stream(cfg)
            return _stream_state(info)

        return await self._c.call(f"ensure stream {name!r}", _ensure)

    async def create_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age_s: float | None = None,
        max_bytes: int | None = None,
        storage: Literal["file", "memory"] = "file",
        replicas: int | None = None,
    ) -> tuple[StreamState, StreamConfigSeen | None]:
        """Create the stream if it does not exist; never change an existing one.

        Returns the stream's state and, when it already existed with another configuration,
        that configuration (``subjects``, ``max_age_s``, ``max_bytes``, ``storage``,
        ``replicas``) so the caller decides what a difference means; ``None`` when it was
        created or matches."""
        cfg = _js_api.StreamConfig(
            name=name,
            subjects=list(subjects),
            max_age=max_age_s,
            max_bytes=max_bytes if max_bytes is not None else -1,
            storage=_js_api.StorageType.FILE if storage == "file" else _js_api.StorageType.MEMORY,
            allow_direct=True,
            num_replicas=self._replicas(replicas),
        )

        async def _create() -> tuple[StreamState, StreamConfigSeen | None]:
            js = self._js()
            try:
                # Identical configuration: the server answers with the existing stream.
                return _stream_state(await js.add_stream(cfg)), None
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                    raise
            info = await js.stream_info(name)
            c = info.config
            have: StreamConfigSeen = {
                "subjects": list(c.subjects or ()),
                "max_age_s": float(c.max_age) if c.max_age else None,
                "max_bytes": c.max_bytes if c.max_bytes and c.max_bytes > 0 else None,
                "storage": "file" if c.storage == _js_api.StorageType.FILE else "memory",
                "replicas": c.num_replicas or 1,
            }
            return _stream_state(info), have

        return await self._c.call(f"create stream {name!r}", _create)

    async def update_stream_limits(
        self, name: str, *, max_age_s: float | None, max_bytes: int | None,
        replicas: int | None = None,
    ) -> StreamState:
        """Change only the retention limits (and, given, the replicas) of an existing stream
        (all else stays)."""

        async def _update() -> StreamState:
            js = self._js()
            c = (await js.stream_info(name)).config
            c.max_age = max_age_s
            c.max_bytes = max_bytes if max_bytes is not None else -1
            if replicas is not None:
                c.num_replicas = replicas
            return _stream_state(await js.update_stream(c))

        return await self._c.call(f"update limits of stream {name!r}", _update)

    async def stream_state(self, name: str) -> StreamState:
        async def _info() -> StreamState:
            return _stream_state(await self._js().stream_info(name))

        return await self._c.call(f"stream info {name!r}", _info)

    async def delete_stream(self, name: str) -> None:
        async def _delete() -> None:
            await self._js().delete_stream(name)

        await self._c.call(f"delete stream {name!r}", _delete)

    # -- publish -----------------------------------------------------------------------------
    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> int:
        """Publish and await the stream's ack; returns the stream sequence."""
        check_subject(subject)

        async def _pub() -> int:
            ack = await self._js().publish(subject, payload, headers=headers)
            return int(ack.seq)

        return await self._c.call(f"JetStream publish to {subject!r}", _pub)

    async def publish_many(
        self, messages: Iterable[tuple[str, bytes]], *, headers: dict[str, str] | None = None
    ) -> list[int]:
        """Publish all, acks pipelined (nats-py ``publish_async``), in one crossing; returns the
        stream sequences in order. Raises if any publish is not acked."""
        items = list(messages)
        for subject, _ in items:
            check_subject(subject)

        async def _pub_many() -> list[int]:
            js = self._js()
            futures = [await js.publish_async(s, p, headers=headers) for s, p in items]
            acks = await asyncio.gather(*futures)
            return [int(a.seq) for a in acks]

        return await self._c.call(f"JetStream publish of {len(items)} messages", _pub_many)

    # -- consumers ---------------------------------------------------------------------------
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
        cfg = consumer_config(deliver, ack, filter_subject)
        what = f"pull consumer on {stream!r} ({filter_subject})"

        async def _open() -> JetStreamContext.PullSubscription:
            return await self._js().pull_subscribe(
                filter_subject, durable=durable, stream=stream, config=cfg
            )

        psub = await self._c.call(what, _open)
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

            await self._c.quietly(f"close {what}", _close)

    async def create_push_consumer(
        self, stream: str, name: str, config: PushConsumerConfig, *, deliver: Deliver
    ) -> ConsumerState:
        """Create the push consumer ``name`` on ``stream``, starting at ``deliver``; its state as
        the server reports it (``delivered_seq``: where it starts, minus one)."""
        _check_names(stream, name)
        cfg = _push_config(name, config, deliver)

        async def _create() -> ConsumerState:
            return _consumer_state(await self._js().add_consumer(stream, cfg))

        return await self._c.call(
            f"create push consumer {name!r} on {stream!r} ({config.filter_subject})", _create)

    async def consumer_state(self, stream: str, name: str) -> ConsumerState | None:
        """The consumer ``name`` on ``stream``, or ``None`` if the server has no such consumer
        (a missing stream raises ``NatsNotFound``)."""
        _check_names(stream, name)

        async def _info() -> ConsumerState | None:
            try:
                info: _js_api.ConsumerInfo = await self._js().consumer_info(stream, name)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == _ERR_CONSUMER_NOT_FOUND:
                    return None
                raise
            return _consumer_state(info)

        return await self._c.call(f"info of consumer {name!r} on {stream!r}", _info)

    async def delete_consumer(self, stream: str, name: str) -> bool:
        """Delete the consumer ``name``; ``False`` if it was not there (nor its stream)."""
        _check_names(stream, name)

        async def _delete() -> bool:
            try:
                return bool(await self._js().delete_consumer(stream, name))
            except nats.js.errors.NotFoundError:
                return False

        return await self._c.call(f"delete consumer {name!r} on {stream!r}", _delete)

    # -- reads -------------------------------------------------------------------------------
    async def direct_get_last(self, stream: str, subject: str) -> Msg | None:
        """The last message stored for ``subject`` (direct get: served by any replica, no
        consumer), or ``None`` if the subject has none."""

        async def _get() -> Msg | None:
            try:
                raw = await self._js().get_last_msg(stream, subject, direct=True)
            except nats.js.errors.NotFoundError:
                return None
            return from_raw(raw)

        return await self._c.call(f"direct get of last {subject!r} in {stream!r}", _get)

    async def kv(
        self,
        bucket: str,
        *,
        create: bool = True,
        history: int = 1,
        ttl_s: float | None = None,
        storage: Literal["file", "memory"] = "file",
        marker_ttl_s: float | None = None,
        replicas: int | None = None,
    ) -> KeyValue:
        """Open a KV bucket; with ``create`` it is created (or updated) with these settings
        (``replicas`` None: :attr:`replicas`), otherwise a missing bucket raises
        ``NatsNotFound``.

        ``ttl_s`` is the bucket's age limit (a value not rewritten within it is removed);
        ``marker_ttl_s`` (nats-server 2.11+, at least 1 s) makes the server leave a tombstone
        when it removes a key by age, kept that long, so watchers see the expiry as a delete
        (``op="PURGE"``) at once instead of never."""
        copies = self._replicas(replicas)

        async def _open() -> _AioKeyValue:
            js = self._js()
            if not create:
                return await js.key_value(bucket)
            return await js.create_key_value(
                _js_api.KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    ttl=ttl_s,
                    limit_marker_ttl=marker_ttl_s,
                    storage=(
                        _js_api.StorageType.FILE
                        if storage == "file"
                        else _js_api.StorageType.MEMORY
                    ),
                    replicas=copies,
                )
            )

        handle = await self._c.call(f"open KV bucket {bucket!r}", _open)
        return KeyValue(self._c, handle, bucket)


class PullConsumer:
    def __init__(
        self,
        bridge: Bridge,
        psub: JetStreamContext.PullSubscription,
        batch: int,
        ack: Literal["none", "all"],
        what: str,
    ) -> None:
        self._c = bridge
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
            return [from_aio_js(m) for m in msgs]

        return await self._c.call(f"fetch from {self._what}", _fetch)

    async def num_pending(self) -> int:
        """Messages the consumer has yet to deliver (consumer info): read right after opening
        it, how many a complete read must return."""

        async def _info() -> int:
            return int((await self._psub.consumer_info()).num_pending or 0)

        return await self._c.call(f"info of {self._what}", _info)

    def ack(self, batch: list[Msg]) -> None:
        """Acknowledge a processed batch (``ack="all"`` consumers): one ack for its last message,
        sent with the next publish batch."""
        if self._ack != "all":
            raise BridgeError(f"{self._what}: ack() needs ack='all', this consumer has ack='none'")
        if batch:
            self._c.outbox.publish_nowait(batch[-1].reply, b"+ACK")
