"""Redaction of secrets in log fields, by what a value *is*, never by what its field is called.

A field called ``token_subject`` or ``principal`` holds an identity, which is exactly what an
audit line must show; a JWT is a secret wherever it appears, even inside an error message. So:

* **values that look like a secret** are replaced wherever they occur, in any field and in
  the message itself: a JWT (``eyJ…`` with three dot-separated base64url parts), a PEM private
  key block, a NATS NKey seed (``SU…``, ``SA…``, ``SO…``: 58 base32 characters), the credentials
  after ``Bearer``/``Basic`` in an ``Authorization`` header;
* **fields that are secret by their name alone** — the value has no recognisable shape, like a
  password — are masked whole: an exact name from :data:`SECRET_FIELDS`, or one ending in
  ``_password``, ``_secret`` or ``_seed``;
* **identity fields** (:data:`IDENTITY_FIELDS`: ``sub``, ``principal``, ``subject``, ``user``,
  …) are never masked by name.

A redacted high-entropy value keeps a short fingerprint (the first 8 hex digits of its SHA-256)
so log lines about the same token can be correlated; a password keeps none (a fingerprint of a
weak password could be confirmed by guessing).
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["IDENTITY_FIELDS", "SECRET_FIELDS", "is_secret_field", "redact", "redact_text"]

#: Fields masked whole whatever their value looks like.
SECRET_FIELDS = frozenset({
    "password", "passwd", "secret", "client_secret", "token", "access_token", "refresh_token",
    "id_token", "bearer", "authorization", "api_key", "apikey", "private_key", "seed",
    "nkey_seed", "creds", "credentials", "cookie", "set_cookie",
})
_SECRET_SUFFIXES = ("_password", "_secret", "_seed")

#: Fields that name who did something: never masked by name (a value shaped like a secret in
#: them is still redacted, since no principal looks like a JWT).
IDENTITY_FIELDS = frozenset({
    "sub", "principal", "subject", "user", "claimed_sub", "presented_subject",
    "token_subject", "updated_by",
})

# Three base64url parts, the first a JSON object ("{" encodes as "eyJ"); the signature may be
# empty (alg "none").
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PEM_PRIVATE = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----.*?(?:-----END \1-----|\Z)", re.DOTALL)
# An NKey seed: "S" then the key type (User, Account, Operator, Server, Cluster), base32.
_NKEY_SEED = re.compile(r"\bS[UAONC][A-Z2-7]{56}\b")
# Credentials after an auth scheme: 16+ token characters, at least one not a letter (so "Basic
# authentication" in prose stays as it is).
_AUTH_HEADER = re.compile(
    r"\b(Bearer|Basic)\s+((?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{16,})", re.IGNORECASE)


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def redact_text(text: str) -> str:
    """``text`` with every secret-shaped value in it replaced by ``[redacted:KIND #fp]``."""
    if len(text) < 20:  # shorter than any shape above: the common case costs one comparison
        return text
    text = _PEM_PRIVATE.sub(lambda m: f"[redacted:pem-private-key #{_fingerprint(m[0])}]", text)
    text = _JWT.sub(lambda m: f"[redacted:jwt #{_fingerprint(m[0])}]", text)
    text = _NKEY_SEED.sub(lambda m: f"[redacted:nkey-seed #{_fingerprint(m[0])}]", text)
    return _AUTH_HEADER.sub(
        lambda m: f"{m[1]} [redacted:credentials #{_fingerprint(m[2])}]"
        if not m[2].startswith("[redacted") else m[0], text)


def is_secret_field(name: str) -> bool:
    """Whether a field is masked whole because of its name (never an identity field)."""
    k = name.lower()
    if k in IDENTITY_FIELDS:
        return False
    return k in SECRET_FIELDS or k.endswith(_SECRET_SUFFIXES)


def redact(value: object, field: str = "") -> object:
    """``value`` as it may be logged in ``field``: containers walked, strings scanned."""
    if value is None:
        return None
    if field and is_secret_field(field):
        return "[redacted]"
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    return redact_text(str(value))
