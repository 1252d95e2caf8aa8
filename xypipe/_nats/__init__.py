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

The package, one job per module (dependencies point down the list):

- ``_client``: :class:`NatsClient` and :func:`connect` — publish, subscribe, request, events,
  statistics;
- ``_jetstream``: :class:`JetStream` — streams, publish with acks, pull and push consumers,
  direct gets; ``_kv``: :class:`KeyValue` — get, put, conditional update, watch;
- ``_bridge``: one connection's asyncio side (connect, close, calls across, connection events);
  ``_outbox``: Trio → asyncio publish batches; ``_inbox``: asyncio → Trio delivery batches;
- ``_boundary``: nats-py's exceptions and messages translated; ``_refusal``: the server's
  refusals read from its words (and recovered where nats-py hides them); ``_refusal_log``: a
  connection's refusals counted and audited; ``_types``: the frozen values.
"""

from xypipe._nats._client import NatsClient, connect
from xypipe._nats._inbox import Subscription
from xypipe._nats._jetstream import JetStream, PullConsumer, PushConsumerConfig
from xypipe._nats._kv import KeyValue, KvWatch
from xypipe._nats._refusal import Refusal
from xypipe._nats._types import (
    BridgeEvent,
    BridgeStatistics,
    ConsumerState,
    Deliver,
    KvEntry,
    Msg,
    StreamConfigSeen,
    StreamState,
)

__all__ = [
    "BridgeEvent",
    "BridgeStatistics",
    "ConsumerState",
    "Deliver",
    "JetStream",
    "KeyValue",
    "KvEntry",
    "KvWatch",
    "Msg",
    "NatsClient",
    "PullConsumer",
    "PushConsumerConfig",
    "Refusal",
    "StreamConfigSeen",
    "StreamState",
    "Subscription",
    "connect",
]
