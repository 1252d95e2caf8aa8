"""The kinds of public key a token may be verified with, and the algorithm each one implies."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from xypipe._errors import AuthError

__all__ = ["VerifyKey", "algorithm_for_key"]

#: The public keys a gateway verifies tokens with (the algorithm follows the key).
VerifyKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def algorithm_for_key(key: object) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise AuthError(f"EC public key on {key.curve.name}: expected P-256 (ES256)")
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise AuthError(f"RSA public key of {key.key_size} bits: expected at least 2048")
        return "RS256"
    raise AuthError(
        f"public key of type {type(key).__name__}: expected Ed25519, EC P-256 or RSA"
    )
