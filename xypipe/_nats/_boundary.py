"""Where nats-py's exceptions and messages become ours: the one translation table.

Every nats-py exception is mapped to :mod:`xypipe._errors` here; none leaks out of the package.
"""

from __future__ import annotations

import asyncio
import re

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg as _AioMsg
from nats.js import api as _js_api

from xypipe._errors import (
    BridgeError,
    NatsBackpressure,
    NatsConnectionError,
    NatsJsUnavailable,
    NatsNoResponders,
    NatsNotFound,
    NatsSlowConsumer,
    NatsTimeout,
)
from xypipe._nats._types import Msg

__all__ = [
    "NATS_ERRORS",
    "check_name",
    "check_subject",
    "from_aio",
    "from_aio_js",
    "from_raw",
    "map_error",
]

# Subjects may not be empty or contain whitespace (CR/LF would inject protocol commands).
BAD_SUBJECT = re.compile(r"\s")

# What JetStream forbids in a stream or consumer name (nats-py would raise a bare ValueError).
_BAD_NAME = re.compile(r"[>*. /\\\s]")

# Exceptions that nats-py (or the transport under it) raises on purpose.
NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError, TimeoutError, OSError)


# JetStream API error: fewer JetStream servers are up than the replicas asked for (a cluster
# node down, or a cluster still forming) — transient, like JetStream being unavailable.
_ERR_NO_PLACEMENT = 10005


def map_error(exc: BaseException, what: str) -> BridgeError:
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == _ERR_NO_PLACEMENT:
        return NatsJsUnavailable(
            f"{what}: not enough JetStream servers up for the replicas asked for ({detail}); "
            "a cluster node is down or the cluster is still forming (else lower [nats] "
            "replicas)")
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


def check_subject(subject: str) -> None:
    if not subject or BAD_SUBJECT.search(subject):
        raise BridgeError(f"invalid subject {subject!r}: must be non-empty without whitespace")


def check_name(kind: str, name: str) -> None:
    """``kind`` is ``"stream"`` or ``"consumer"``."""
    if not name or _BAD_NAME.search(name):
        raise BridgeError(
            f"invalid {kind} name {name!r}: expected a non-empty name without '.', '*', '>', "
            "'/', '\\' or whitespace"
        )


def from_aio(m: _AioMsg) -> Msg:
    return Msg(m.subject, m.data, m.headers, m.reply)


def from_aio_js(m: _AioMsg) -> Msg:
    md = m.metadata
    return Msg(m.subject, m.data, m.headers, m.reply, md.sequence.stream, md.timestamp)


def from_raw(m: _js_api.RawStreamMsg) -> Msg:
    return Msg(m.subject or "", m.data or b"", m.headers, "", m.seq, m.time)
