"""Decoding wire contracts at a trust boundary: clear errors, tolerated and counted unknown fields.

Every consumer of bytes from NATS or a WebSocket decodes through :func:`decode` (or a
:class:`ContractDecoder` bound to its process registry)::

    tick = decode(Tick, msg.data, where=f"subject {msg.subject}")

- Malformed bytes raise :class:`~xypipe._errors.ContractError` naming the message type, where the
  bytes came from, their size and first bytes, and what protobuf said. The caller counts and
  logs it (``contract_decode_errors_total`` is incremented here) and keeps running.
- Fields a newer producer added are kept (re-encoding writes them back unchanged) and counted in
  ``contract_unknown_fields_total{message="xy.md.v1.Tick"}`` — one per unknown tag, nested
  messages included — so operators see a newer schema in the fleet before relying on it.
  Looking for them costs ~2 µs a message (more than the parse), so a hot path may pass
  ``check_every=N``: the first message of each type and every N-th after it are checked (ingest
  checks one source tick in :data:`HOT_PATH_CHECK_EVERY`; a newer producer still shows within
  milliseconds, and the counter then counts the unknown fields of the checked messages).

Metrics go to the registry given to :class:`ContractDecoder`; the module-level :func:`decode`
uses the registry set with :func:`use_registry` (a private one until then, so library use and
unit tests never touch a global registry).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from prometheus_client import CollectorRegistry, Counter

from xypipe._errors import ContractError

M = TypeVar("M", bound=Message)

UNKNOWN_FIELDS_METRIC = "contract_unknown_fields"
DECODE_ERRORS_METRIC = "contract_decode_errors"
#: One message in this many is checked for unknown fields on a hot path (see module docs).
HOT_PATH_CHECK_EVERY = 16


def count_unknown_fields(msg: Message) -> int:
    """Unknown field entries (one per tag on the wire) in ``msg`` and all its nested messages."""
    total = len(UnknownFieldSet(msg))
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                total += sum(count_unknown_fields(v) for v in value.values())
        elif field.is_repeated:
            total += sum(count_unknown_fields(v) for v in value)
        else:
            total += count_unknown_fields(value)
    return total


def _drop_unknown_fields(msg: Message, size: int) -> bool:
    """Discard ``msg``'s unknown fields; whether it had any (``size``: its encoded length).

    Walking every nested message in Python costs ~60x a parse; discarding and re-measuring is C
    all the way. A smaller re-encoding means something was unknown (or the producer's encoding
    was not canonical, which the exact count then reports as 0). When nothing was dropped the
    message is intact, so the common case parses once."""
    msg.DiscardUnknownFields()
    return bool(msg.ByteSize() != size)


def _preview(data: bytes) -> str:
    head = bytes(data[:16]).hex(" ")
    return head + (" …" if len(data) > 16 else "")


class ContractDecoder:
    """Decodes contract messages and counts what it sees in one Prometheus registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.unknown_fields = Counter(
            UNKNOWN_FIELDS_METRIC,
            "Unknown fields (a newer producer's additions) seen while decoding, per message type",
            ["message"], registry=self.registry)
        self.decode_errors = Counter(
            DECODE_ERRORS_METRIC, "Payloads that did not decode as their contract, per type",
            ["message"], registry=self.registry)
        #: Messages decoded per type, for ``check_every``.
        self._decoded: dict[type[Message], int] = {}

    def decode(self, message_type: type[M], data: bytes | bytearray | memoryview, *,
               where: str, check_every: int = 1) -> M:
        """Parse ``data`` as ``message_type``; ``where`` names the source (subject, peer, file).

        Unknown fields are looked for in every message, or with ``check_every=N`` in the first
        of its type and every N-th after it (see the module docs)."""
        raw = data if type(data) is bytes else bytes(data)
        try:
            msg: M = message_type.FromString(raw)
        except DecodeError as exc:
            name = message_type.DESCRIPTOR.full_name
            self.decode_errors.labels(message=name).inc()
            raise ContractError(
                f"{where}: {len(raw)} bytes do not decode as {name} "
                f"(first bytes: {_preview(raw) or 'none'}): protobuf: {exc}") from exc
        if check_every > 1:
            decoded = self._decoded
            seen = decoded.get(message_type, 0)
            decoded[message_type] = seen + 1
            if seen % check_every:
                return msg
        if raw and _drop_unknown_fields(msg, len(raw)):
            # Parsed again: a newer producer's fields are kept, not dropped.
            msg = message_type.FromString(raw)
            n = count_unknown_fields(msg)
            if n:
                self.unknown_fields.labels(message=message_type.DESCRIPTOR.full_name).inc(n)
        return msg


    def hot(self, message_type: type[M],
            check_every: int = HOT_PATH_CHECK_EVERY) -> Callable[[bytes, str], M]:
        """``decode(data, where)`` for one type on a hot path: :meth:`decode` with
        ``check_every``, minus its per-call plumbing for the messages that skip the check (a
        plain parse; a payload that does not parse goes through :meth:`decode`, which counts it
        and raises the :class:`~xypipe._errors.ContractError`)."""
        parse = message_type.FromString
        decoded = self._decoded
        full = self.decode

        def decode(data: bytes, where: str) -> M:
            seen = decoded.get(message_type, 0)
            if seen % check_every == 0 or type(data) is not bytes:
                return full(message_type, data, where=where, check_every=check_every)
            decoded[message_type] = seen + 1
            try:
                msg: M = parse(data)
            except DecodeError:
                return full(message_type, data, where=where)
            return msg

        return decode


_decoders: weakref.WeakKeyDictionary[CollectorRegistry, ContractDecoder] = (
    weakref.WeakKeyDictionary())
_default: ContractDecoder | None = None


def decoder_for(registry: CollectorRegistry) -> ContractDecoder:
    """The one decoder (and so the one pair of counters) of ``registry``."""
    found = _decoders.get(registry)
    if found is None:
        found = _decoders[registry] = ContractDecoder(registry)
    return found


def use_registry(registry: CollectorRegistry) -> ContractDecoder:
    """Make module-level :func:`decode` count into ``registry`` (call once at process start)."""
    global _default
    _default = decoder_for(registry)
    return _default


def default_decoder() -> ContractDecoder:
    """The process default decoder (see :func:`use_registry`)."""
    global _default
    if _default is None:
        _default = ContractDecoder()
    return _default


def decode(message_type: type[M], data: bytes | bytearray | memoryview, *, where: str,
           registry: CollectorRegistry | None = None) -> M:
    """Decode with the decoder of ``registry``, or the process default (see module docs)."""
    if registry is not None:
        return decoder_for(registry).decode(message_type, data, where=where)
    return default_decoder().decode(message_type, data, where=where)
