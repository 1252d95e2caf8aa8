"""Minting tokens with a private key (the dev keypair, tests, ``xypipe token``).

Production tokens come from the deployment's identity provider; this exists so the demo, the
tests and the browser tests can speak to a gateway configured with the dev public key.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from xypipe._errors import AuthError
from xypipe._gateway._auth import algorithm_for_key

DEV_ISSUER = "xypipe-dev"
DEV_AUDIENCE = "xypipe-gateway"

#: The private keys tokens are signed with (the algorithm follows the key).
SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def load_private_key(path: str | os.PathLike[str]) -> SigningKey:
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError as exc:
        raise AuthError(f"private key file {os.fspath(path)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise AuthError(f"private key file {os.fspath(path)!r}: not a PEM private key") from exc
    if not isinstance(key, SigningKey):
        raise AuthError(f"private key file {os.fspath(path)!r}: a {type(key).__name__}: "
                        "expected Ed25519, EC P-256 or RSA")
    return key


def mint(
    private_key: SigningKey,
    *,
    subject: str,
    allow: Sequence[str],
    now: float,
    ttl_s: float = 300.0,
    roles: Sequence[str] = (),
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    extra: Mapping[str, object] | None = None,
    kid: str | None = None,
) -> str:
    """A signed JWT; the algorithm follows the key (EdDSA, ES256, RS256). ``kid`` goes into the
    header: it selects the gateway's key when it holds several (docs/security.md)."""
    alg = algorithm_for_key(private_key.public_key())
    claims: dict[str, object] = {
        "sub": subject,
        "iss": issuer,
        "aud": audience,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + ttl_s),
        "jti": uuid.uuid4().hex,
        "allow": list(allow),
        "roles": list(roles),
    }
    claims.update(extra or {})
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, private_key, algorithm=alg, headers=headers)


def new_kid(now: float) -> str:
    """A fresh key id: the UTC date and time it was made, and a random tail (never reused)."""
    return time.strftime("k%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)


def generate_ed25519_keypair() -> tuple[bytes, bytes]:
    """``(private_pem, public_pem)`` of a fresh Ed25519 key."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
