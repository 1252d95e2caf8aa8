"""Protobuf framing helpers: repeated message fields appended as bytes, length-delimited streams.

A protobuf message may carry its fields in any order and a repeated message field is just
"tag, length, bytes" per element, so ``header.SerializeToString() + repeated_field(n, items)``
is the same message as one built with every element copied in. The aggregator serialises each
symbol entry once and reuses the bytes in the delta and in the snapshots.

The gateway builds its frames the same way (a delta's bytes prefixed once, then concatenated),
and the publisher appends a field to a serialised tick; all of them frame through this module.

Varints come from protobuf's own encoder/decoder (private names, public behaviour since
protobuf 3), bound here and nowhere else; nothing here parses by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from google.protobuf.internal import decoder, encoder, wire_format
from google.protobuf.message import DecodeError

from xypipe._errors import ContractError

_varint: Callable[[int], bytes] = encoder._VarintBytes  # type: ignore[attr-defined]
_decode_varint: Callable[[memoryview, int], tuple[int, int]] = (
    decoder._DecodeVarint  # type: ignore[attr-defined]
)


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint."""
    return _varint(value)


def field_tag(number: int) -> bytes:
    """Tag bytes of a length-delimited field."""
    return bytes(encoder.TagBytes(number, wire_format.WIRETYPE_LENGTH_DELIMITED))


def varint_tag(number: int) -> bytes:
    """Tag bytes of a varint field."""
    return bytes(encoder.TagBytes(number, wire_format.WIRETYPE_VARINT))


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """One element of the length-delimited field ``tag``: tag, varint length, ``payload``."""
    return tag + _varint(len(payload)) + payload


def varint_field(tag: bytes, value: int) -> bytes:
    """The varint field ``tag`` (from :func:`varint_tag`) holding ``value``."""
    return tag + _varint(value)



def repeated_field(tag: bytes, items: Iterable[bytes]) -> bytes:
    """``items`` (serialised messages) encoded as the repeated field whose tag is ``tag``."""
    parts: list[bytes] = []
    append = parts.append
    for item in items:
        append(tag)
        append(_varint(len(item)))
        append(item)
    return b"".join(parts)


def delimited(payload: bytes) -> bytes:
    """One record of a length-delimited stream: varint length, then the bytes."""
    return _varint(len(payload)) + payload


def write_delimited(f: BinaryIO, payloads: Iterable[bytes]) -> int:
    """Append records to ``f``; returns how many were written."""
    n = 0
    for p in payloads:
        f.write(_varint(len(p)))
        f.write(p)
        n += 1
    return n


class TruncatedStream(ContractError, ValueError):
    """A length-delimited stream ends inside a record (a ``ValueError`` too, for callers that
    caught that before it joined the :class:`~xypipe._errors.XyError` tree)."""


def iter_delimited(data: bytes) -> Iterator[bytes]:
    """The records of a length-delimited stream held in memory."""
    for _start, payload in iter_delimited_at(data):
        yield payload


def iter_delimited_at(data: bytes, pos: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(byte offset of its length prefix, payload)`` of every record of a length-delimited
    stream held in memory, from byte ``pos`` on (a reader that names where a record is)."""
    end = len(data)
    view = memoryview(data)
    while pos < end:
        start = pos
        try:
            size, pos = _decode_varint(view, pos)
        except (IndexError, DecodeError):
            raise TruncatedStream(f"stream ends inside a length prefix at byte {pos}") from None
        if pos + size > end:
            raise TruncatedStream(
                f"record at byte {pos} needs {size} bytes, only {end - pos} left"
            )
        yield start, bytes(view[pos : pos + size])
        pos += size
