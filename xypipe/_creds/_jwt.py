"""NATS JWTs (operator, account, user claims, version 2) and the ``.creds`` file carrying one.

A NATS JWT is ``base64url(header).base64url(claims).base64url(signature)`` without padding; the
header is ``{"typ": "JWT", "alg": "ed25519-nkey"}`` and the signature is the issuer's NKey
(Ed25519) signature of the first two parts. The claims name their issuer (``iss``) and subject
(``sub``) by public NKey, and carry a ``nats`` object whose ``type`` is ``operator``, ``account``
or ``user``. ``jti`` is the SHA-512/256 of the claims with an empty ``jti`` (as nats-io/jwt
does: a unique id; the server does not recompute it). Who may issue what:

- an operator JWT is self-signed (``iss == sub``, an ``O…`` key);
- an account JWT is signed by the operator (or one of its signing keys);
- a user JWT is signed by its account or one of the account's signing keys, then
  ``nats.issuer_account`` names the account.

Why our own encoder: PyPI's ``nats-jwt`` (0.2.x) calls itself untested and in development and
pins ``pytz<2025``; these ~150 lines are checked against a real nats-server in operator mode by
``tests/creds/``. Times come from the caller (``now``), never from a clock here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Literal, TypeAlias

import attrs

from xypipe._creds._keys import KeyKind, NKey, kind_of, verify
from xypipe._errors import CredsError, JwtError

__all__ = [
    "Claims",
    "Kind",
    "decode",
    "encode",
    "format_creds",
    "parse_creds",
]

Kind: TypeAlias = Literal["operator", "account", "user"]
#: A JSON object as it leaves ``json.loads``.
JsonObject: TypeAlias = dict[str, object]

ALGORITHM = "ed25519-nkey"
_HEADER = {"typ": "JWT", "alg": ALGORITHM}
#: Which kinds of key may sign which kind of JWT.
_ISSUERS: dict[Kind, KeyKind] = {
    "operator": KeyKind.OPERATOR,
    "account": KeyKind.OPERATOR,
    "user": KeyKind.ACCOUNT,
}
_SUBJECTS: dict[Kind, KeyKind] = {
    "operator": KeyKind.OPERATOR,
    "account": KeyKind.ACCOUNT,
    "user": KeyKind.USER,
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _json(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@attrs.frozen
class Claims:
    """The verified claims of a NATS JWT."""

    kind: Kind
    subject: str
    issuer: str
    name: str
    issued_at: int
    expires_at: int | None
    #: The type-specific ``nats`` object (permissions, limits, signing keys, revocations…).
    nats: JsonObject
    jti: str

    @property
    def issuer_account(self) -> str | None:
        """For a user signed by an account signing key: the account it belongs to."""
        value = self.nats.get("issuer_account")
        return value if isinstance(value, str) else None

    def to_json(self) -> JsonObject:
        doc: JsonObject = {"jti": self.jti, "iat": self.issued_at, "iss": self.issuer,
                           "name": self.name, "sub": self.subject}
        if self.expires_at is not None:
            doc["exp"] = self.expires_at
        doc["nats"] = self.nats
        return doc


def encode(kind: Kind, *, subject: str, name: str, signer: NKey, now: float,
           nats: Mapping[str, object], expires_at: float | None = None,
           issuer_account: str | None = None) -> str:
    """A JWT of ``kind`` about ``subject`` (a public NKey), signed by ``signer``.

    ``issuer_account``: for a user signed by an account *signing* key, the account's key.
    """
    if kind_of(subject) is not _SUBJECTS[kind]:
        raise JwtError(f"{kind} JWT: the subject must be a {_SUBJECTS[kind].name.lower()} "
                       f"key, got {subject[:1]}… ({kind_of(subject).name.lower()})")
    if signer.kind is not _ISSUERS[kind]:
        raise JwtError(f"{kind} JWT: must be signed by a {_ISSUERS[kind].name.lower()} key, "
                       f"got a {signer.kind.name.lower()} key")
    body: JsonObject = {"jti": "", "iat": int(now), "iss": signer.public, "name": name,
                        "sub": subject}
    if expires_at is not None:
        body["exp"] = int(expires_at)
    extra: JsonObject = {"issuer_account": issuer_account} if issuer_account else {}
    body["nats"] = {**nats, **extra, "type": kind, "version": 2}
    digest = hashlib.new("sha512_256", _json(body)).digest()
    body["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signing_input = f"{_b64(_json(_HEADER))}.{_b64(_json(body))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def _int(doc: JsonObject, key: str, *, what: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise JwtError(f"{what}: claim {key!r} must be an integer (unix seconds), got {value!r}")
    return value


def decode(token: str, *, kind: Kind | None = None) -> Claims:
    """The claims of ``token`` once its signature verifies against its issuer.

    ``kind``: the kind expected (an account JWT where a user JWT is given is an error). Raises
    :class:`JwtError` saying what is wrong. Validity in time is not judged here (see
    :attr:`Claims.expires_at`): ``show`` prints expired JWTs too.
    """
    what = "NATS JWT"
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError(f"{what}: expected three dot-separated base64url parts, got {len(parts)}")
    try:
        header = json.loads(_unb64(parts[0]))
        body = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (binascii.Error, ValueError) as exc:
        raise JwtError(f"{what}: not base64url-encoded JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("alg") not in (ALGORITHM, "ed25519"):
        raise JwtError(f"{what}: expected header alg {ALGORITHM!r}, got {header!r}")
    if not isinstance(body, dict):
        raise JwtError(f"{what}: the claims are not a JSON object")
    nats = body.get("nats")
    if not isinstance(nats, dict) or nats.get("type") not in _ISSUERS:
        raise JwtError(f"{what}: expected a 'nats' object with type operator, account or "
                       f"user, got {nats!r}")
    found: Kind = nats["type"]
    what = f"{found} JWT"
    if kind is not None and found != kind:
        raise JwtError(f"{what}: expected a {kind} JWT")
    issuer, subject = body.get("iss"), body.get("sub")
    if not isinstance(issuer, str) or not isinstance(subject, str):
        raise JwtError(f"{what}: 'iss' and 'sub' must be public NKeys")
    try:
        if kind_of(issuer) is not _ISSUERS[found]:
            raise JwtError(f"{what}: issued by a {kind_of(issuer).name.lower()} key; expected "
                           f"a {_ISSUERS[found].name.lower()} key")
        verified = verify(issuer, f"{parts[0]}.{parts[1]}".encode(), signature)
    except JwtError:
        raise
    except CredsError as exc:
        raise JwtError(f"{what}: issuer: {exc}") from None
    if not verified:
        raise JwtError(f"{what}: the signature does not verify against its issuer {issuer}")
    issued = _int(body, "iat", what=what)
    return Claims(kind=found, subject=subject, issuer=issuer, name=str(body.get("name", "")),
                  issued_at=issued or 0, expires_at=_int(body, "exp", what=what), nats=nats,
                  jti=str(body.get("jti", "")))


# -- the .creds file: a user JWT and its seed, in nsc's layout (nats-py reads it) ------------
_CREDS = """-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""
_BLOCK = re.compile(r"-{3,}BEGIN ([A-Z ]+)-{3,}\r?\n\s*(\S+)\s*\r?\n-{3,}END \1-{3,}")


def format_creds(jwt: str, seed: bytes) -> bytes:
    """The ``.creds`` text for a user JWT and the user's seed."""
    return _CREDS.format(jwt=jwt, seed=seed.decode()).encode()


def parse_creds(text: str) -> tuple[str, bytes | None]:
    """``(jwt, seed)`` of a ``.creds`` file (or of a bare JWT: seed None)."""
    blocks = {m.group(1): m.group(2) for m in _BLOCK.finditer(text)}
    if not blocks:
        bare = text.strip()
        if bare.count(".") == 2 and " " not in bare:
            return bare, None
        raise CredsError("expected a .creds file (a 'BEGIN NATS USER JWT' block) or a JWT")
    jwt = next((v for k, v in blocks.items() if k.endswith("JWT")), None)
    seed = next((v for k, v in blocks.items() if k.endswith("SEED")), None)
    if jwt is None:
        raise CredsError("a .creds file without a 'BEGIN NATS USER JWT' block")
    return jwt, seed.encode() if seed is not None else None
