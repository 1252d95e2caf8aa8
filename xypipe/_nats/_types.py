"""The values the bridge hands to Trio code: frozen records, no nats-py object among them."""

from __future__ import annotations

import datetime
from typing import Literal, TypeAlias, TypedDict

import attrs

__all__ = [
    "BridgeEvent",
    "BridgeStatistics",
    "ConsumerState",
    "Deliver",
    "EventKind",
    "KvEntry",
    "Msg",
    "StreamConfigSeen",
    "StreamState",
]


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
    #: Refusals of any kind (permissions, sign-ins, a live connection's credentials).
    refusals: int = 0


@attrs.frozen(slots=True)
class StreamState:
    name: str
    subjects: tuple[str, ...]
    messages: int
    bytes: int
    first_seq: int
    last_seq: int


class StreamConfigSeen(TypedDict):
    """The configuration an existing stream has, as ``JetStream.create_stream`` reports it when
    it differs from the one asked for."""

    subjects: list[str]
    max_age_s: float | None
    max_bytes: int | None
    storage: Literal["file", "memory"]
    replicas: int


@attrs.frozen(slots=True)
class ConsumerState:
    """A JetStream consumer as the server reports it (at creation or on a consumer info)."""

    stream: str
    name: str
    #: The last stream sequence delivered (at creation: the start sequence - 1).
    delivered_seq: int
    #: Messages of the stream the consumer has yet to deliver.
    num_pending: int


@attrs.frozen(slots=True)
class KvEntry:
    """One key's value at one revision; ``op`` is ``"PUT"``, ``"DEL"`` or ``"PURGE"``."""

    bucket: str
    key: str
    value: bytes
    revision: int
    op: str = "PUT"
    created: datetime.datetime | None = None


#: Where a consumer starts: every stored message, only new ones, the last one (of every
#: subject), a stream sequence, or a stored time (a naive time is taken as UTC).
Deliver: TypeAlias = (
    Literal["all", "new", "last", "last_per_subject"]
    | tuple[Literal["seq"], int]
    | tuple[Literal["time"], datetime.datetime]
)
