"""NKey pairs of the trust chain, typed: operator, account and user keys (Ed25519).

The ``nkeys`` library encodes seeds and signs; it ships no type information and cannot verify
with a public key alone, so this module wraps the few calls the chain needs and verifies
signatures with PyNaCl (the Ed25519 under ``nkeys``) after checking the public key's prefix
and checksum the way ``nkeys`` encodes them.
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets

import attrs
import nacl.exceptions
import nacl.signing
import nkeys

from xypipe._errors import CredsError

__all__ = ["KeyKind", "NKey", "kind_of", "verify"]


class KeyKind(enum.Enum):
    """What a key stands for; the value is its NKey prefix byte (the first letter)."""

    OPERATOR = nkeys.PREFIX_BYTE_OPERATOR
    ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
    USER = nkeys.PREFIX_BYTE_USER

    @property
    def letter(self) -> str:
        return self.name[0]


@attrs.frozen(repr=False)
class NKey:
    """A key pair: ``seed`` (secret, ``S<letter>…``) and ``public`` (``<letter>…``)."""

    kind: KeyKind
    seed: bytes
    public: str

    def __repr__(self) -> str:  # never the seed, even in a traceback
        return f"NKey({self.kind.name}, {self.public})"

    @classmethod
    def generate(cls, kind: KeyKind) -> NKey:
        return cls.from_seed(nkeys.encode_seed(secrets.token_bytes(32), kind.value), kind)

    @classmethod
    def from_seed(cls, seed: bytes, kind: KeyKind | None = None) -> NKey:
        """The key pair of ``seed``; ``kind`` (when given) must match. Raises
        :class:`CredsError` naming what was expected."""
        seed = seed.strip()
        want = f"an NKey seed of {kind.name.lower()} kind (S{kind.letter}…)" if kind else \
            "an NKey seed"
        try:
            prefix, _ = nkeys.decode_seed(bytearray(seed))
            found = KeyKind(prefix)
            pair = nkeys.from_seed(bytearray(seed))
            public = bytes(pair.public_key).decode()
        except (nkeys.NkeysError, ValueError, binascii.Error):
            raise CredsError(f"expected {want}, got something else") from None
        if kind is not None and found is not kind:
            raise CredsError(f"expected {want}, got a {found.name.lower()} seed")
        return cls(found, bytes(seed), public)

    def sign(self, data: bytes) -> bytes:
        pair = nkeys.from_seed(bytearray(self.seed))
        try:
            return bytes(pair.sign(data))
        finally:
            pair.wipe()


def _raw_public(public: str) -> tuple[KeyKind, bytes]:
    try:
        raw = base64.b32decode(public.encode() + b"=" * (-len(public) % 8))
    except (binascii.Error, ValueError):
        raise CredsError(f"{public[:12]!r}…: not an NKey public key (base32)") from None
    if len(raw) != 35 or nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        raise CredsError(f"{public[:12]!r}…: not an NKey public key (length or checksum)")
    try:
        kind = KeyKind(raw[0])
    except ValueError:
        raise CredsError(f"{public[:12]!r}…: not an operator, account or user key") from None
    return kind, raw[1:-2]


def kind_of(public: str) -> KeyKind:
    """What ``public`` is the key of; raises :class:`CredsError` if it is no NKey."""
    return _raw_public(public)[0]


def verify(public: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``data`` was made with the seed of ``public``."""
    _, raw = _raw_public(public)
    try:
        nacl.signing.VerifyKey(raw).verify(data, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True
