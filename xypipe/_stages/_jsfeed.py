"""A JetStream feed paced by acknowledgements, delivered in the bridge's batches.

The bridge's pull ``fetch`` hands messages over one asyncio wake-up per message (nats-py reads
a fetch reply message by message), which caps a replay near 8k msgs/s. This feed is a push
consumer instead, with ``ack_policy = all`` and ``max_ack_pending``: the server delivers to our
inbox (which the bridge batches like any subscription) and stops once ``max_pending`` messages
are unacknowledged. The caller acknowledges a batch after handing it downstream, so the pace is
still set by the downstream budget — backpressure reaches the server.

Consumers are created and deleted through the JetStream JSON API (``$JS.API.CONSUMER.*``)
with the bridge's ``request``; no nats-py object crosses into this module.
"""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from xypipe._errors import BridgeError
from xypipe._log import get_logger

_log = get_logger("jsfeed")


def stream_seq_of(reply: str) -> int:
    """The stream sequence in a JetStream delivery's reply subject (``$JS.ACK...``, v1 with 9
    tokens or v2 with 12)."""
    tokens = reply.split(".")
    n = len(tokens)
    if n == 9:
        return int(tokens[5])
    if n >= 11:
        return int(tokens[7])
    raise BridgeError(f"not a JetStream delivery reply subject: {reply!r}")


def pending_of(reply: str) -> int:
    """Messages still waiting in the stream for this consumer after this one (the last token
    of the reply subject before v2's random token): the consumer's lag, for free."""
    tokens = reply.split(".")
    n = len(tokens)
    if n == 9:
        return int(tokens[8])
    if n >= 11:
        return int(tokens[10])
    raise BridgeError(f"not a JetStream delivery reply subject: {reply!r}")


def delivery_of(reply: str) -> tuple[int, int]:
    """``(stream sequence, stored time in microseconds since the epoch)`` of a JetStream
    delivery, from its reply subject: the time is the server's own stamp of when the message
    entered the stream, the same on every replay."""
    tokens = reply.split(".")
    n = len(tokens)
    if n == 9:
        return int(tokens[5]), int(tokens[7]) // 1000
    if n >= 11:
        return int(tokens[7]), int(tokens[9]) // 1000
    raise BridgeError(f"not a JetStream delivery reply subject: {reply!r}")


def _deliver_config(deliver: Any) -> dict[str, Any]:
    if deliver in ("all", "new", "last_per_subject"):
        return {"deliver_policy": deliver}
    if isinstance(deliver, tuple) and deliver[0] == "seq":
        return {"deliver_policy": "by_start_sequence", "opt_start_seq": int(deliver[1])}
    if isinstance(deliver, tuple) and deliver[0] == "time":
        when = deliver[1]
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return {"deliver_policy": "by_start_time",
                "opt_start_time": when.astimezone(datetime.UTC).isoformat().replace("+00:00",
                                                                                    "Z")}
    raise ValueError(f"deliver: expected 'all', 'new', 'last_per_subject', ('seq', n) or "
                     f"('time', datetime), got {deliver!r}")


async def _api(nc: Any, subject: str, body: dict[str, Any] | None, what: str) -> dict[str, Any]:
    msg = await nc.request(subject, json.dumps(body).encode() if body is not None else b"",
                           timeout=5.0)
    try:
        doc: dict[str, Any] = json.loads(msg.data)
    except ValueError:
        raise BridgeError(f"{what}: the server's answer is not JSON: {msg.data[:200]!r}") from None
    err = doc.get("error")
    if err:
        raise BridgeError(f"{what}: {err.get('description', err)} (code {err.get('code')}, "
                          f"err_code {err.get('err_code')})")
    return doc


class JsFeed:
    def __init__(self, sub: Any, nc: Any) -> None:
        self._sub = sub
        self._nc = nc

    def __aiter__(self) -> JsFeed:
        return self

    async def __anext__(self) -> list[Any]:
        try:
            return list(await self._sub.receive())
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def ack(self, batch: list[Any]) -> None:
        """Acknowledge everything up to the batch's last message (ack-all)."""
        if batch and batch[-1].reply:
            self._nc.publish_nowait(batch[-1].reply, b"+ACK")


@asynccontextmanager
async def js_feed(nc: Any, stream: str, *, deliver: Any, filter_subject: str = ">",
                  max_pending: int = 4096, max_batch: int = 1024) -> AsyncIterator[JsFeed]:
    """Deliveries of ``stream`` from ``deliver`` on, at most ``max_pending`` unacknowledged."""
    inbox = f"_INBOX.xyfeed.{secrets.token_hex(8)}"
    config = {
        **_deliver_config(deliver),
        "ack_policy": "all",
        "max_ack_pending": max_pending,
        "deliver_subject": inbox,
        "filter_subject": filter_subject,
        "replay_policy": "instant",
        "inactive_threshold": 30_000_000_000,
        "mem_storage": True,
        "num_replicas": 1,
        # The deliveries sit in the bridge's bounded inbox until acked; no redelivery races.
        "ack_wait": 3_600_000_000_000,
        "max_deliver": 1,
    }
    what = f"push consumer on {stream!r} ({filter_subject})"
    async with nc.subscribe(inbox, max_batch=max_batch, max_pending=max_pending * 2) as sub:
        doc = await _api(nc, f"$JS.API.CONSUMER.CREATE.{stream}",
                         {"stream_name": stream, "config": config}, f"create {what}")
        name = doc["name"]
        try:
            yield JsFeed(sub, nc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                try:
                    await _api(nc, f"$JS.API.CONSUMER.DELETE.{stream}.{name}", None,
                               f"delete {what}")
                except BridgeError as exc:
                    # Gone already, or the connection is closing: the server removes it after
                    # inactive_threshold anyway.
                    _log.info("consumer not deleted", consumer=name, reason=str(exc))
