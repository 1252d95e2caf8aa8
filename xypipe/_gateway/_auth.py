"""JWT verification for the hello frame, token refresh and the admin API.

The gateway holds one *public* key (EdDSA, ES256 or RS256, a PEM file). The algorithm is taken
from the key, never from the token: a token whose header names another algorithm is refused
before any signature check, so ``alg=none`` and the HS256-with-the-public-key-as-secret confusion
cannot get through. pyjwt checks the signature, ``iss`` and ``aud``; ``exp``/``nbf`` are checked
here against the ``wall`` time the caller passes (seconds since the epoch), so the session core
stays free of clocks and tests drive expiry with plain numbers.

Claims::

    {"sub": "alice", "iss": "...", "aud": "...", "exp": ..., "nbf": ...,
     "allow": ["xy.md.*.fx", "xy.md.*.fx.>"], "roles": ["admin"]}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from xypipe._errors import AUTH_EXPIRED, AUTH_INVALID, AuthError
from xypipe._gateway._acl import Acl, valid_pattern

__all__ = [
    "AuthExpired",
    "AuthInvalid",
    "Principal",
    "TokenVerifier",
    "VerifyKey",
    "algorithm_for_key",
]

#: The public keys a gateway verifies tokens with (the algorithm follows the key).
VerifyKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class AuthInvalid(AuthError):
    """The token is malformed, forged, for someone else, or uses a refused algorithm."""

    code: ClassVar[str] = AUTH_INVALID


class AuthExpired(AuthError):
    """The token's ``exp`` has passed (beyond the leeway), or its ``nbf`` is still ahead."""

    code: ClassVar[str] = AUTH_EXPIRED


@attrs.frozen
class Principal:
    """Who a verified token speaks for and what it may do."""

    subject: str
    acl: Acl
    roles: frozenset[str]
    expires_at: float
    token_id: str = ""

    def has_role(self, role: str) -> bool:
        return role in self.roles


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


class TokenVerifier:
    """Verifies tokens against one public key. Pure: the caller passes the wall time."""

    def __init__(
        self,
        public_key_pem: bytes,
        *,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        allow_claim: str = "allow",
        roles_claim: str = "roles",
        max_lifetime_s: float | None = None,
    ) -> None:
        try:
            key = load_pem_public_key(public_key_pem)
        except ValueError as exc:
            raise AuthError(f"JWT public key: not a PEM public key ({exc})") from exc
        self.algorithm = algorithm_for_key(key)
        assert isinstance(key, VerifyKey)  # algorithm_for_key refused every other kind
        self._key: VerifyKey = key
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.allow_claim = allow_claim
        self.roles_claim = roles_claim
        self.max_lifetime_s = max_lifetime_s

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        allow_claim: str = "allow",
        roles_claim: str = "roles",
        max_lifetime_s: float | None = None,
    ) -> TokenVerifier:
        try:
            with open(path, "rb") as f:
                pem = f.read()
        except OSError as exc:
            raise AuthError(f"JWT public key file {os.fspath(path)!r}: {exc.strerror}") from exc
        return cls(pem, issuer=issuer, audience=audience, leeway_s=leeway_s,
                   allow_claim=allow_claim, roles_claim=roles_claim,
                   max_lifetime_s=max_lifetime_s)

    def verify(self, token: str, wall: float) -> Principal:
        """The principal of a valid token; :class:`AuthInvalid` / :class:`AuthExpired` otherwise."""
        if not token:
            raise AuthInvalid("no token in the hello frame")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthInvalid(f"token is not a JWT: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise AuthInvalid(
                f"token algorithm {alg!r} refused: unsigned tokens are never accepted"
            )
        if alg != self.algorithm:
            raise AuthInvalid(
                f"token algorithm {alg!r} refused: this gateway's key only verifies "
                f"{self.algorithm}"
            )
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "sub", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError as exc:
            raise AuthInvalid(
                f"token audience refused: {exc} (expected {self.audience!r})"
            ) from None
        except jwt.InvalidIssuerError as exc:
            raise AuthInvalid(f"token issuer refused: {exc} (expected {self.issuer!r})") from None
        except jwt.InvalidSignatureError:
            raise AuthInvalid("token signature does not verify with the gateway's key") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthInvalid(f"token lacks a required claim: {exc}") from None
        except jwt.PyJWTError as exc:
            raise AuthInvalid(f"token refused: {exc}") from None
        return self._principal(claims, wall)

    def _principal(self, claims: Mapping[str, object], wall: float) -> Principal:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthInvalid(f"token claim 'exp': expected a number, got {exp!r}")
        if wall > exp + self.leeway_s:
            raise AuthExpired(f"token expired {wall - exp:.1f} s ago (leeway {self.leeway_s:g} s)")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not isinstance(nbf, int | float) or isinstance(nbf, bool):
                raise AuthInvalid(f"token claim 'nbf': expected a number, got {nbf!r}")
            if wall < nbf - self.leeway_s:
                raise AuthExpired(f"token not valid for another {nbf - wall:.1f} s (nbf)")
        iat = claims.get("iat")
        if self.max_lifetime_s is not None and isinstance(iat, int | float):
            if exp - iat > self.max_lifetime_s:
                raise AuthInvalid(
                    f"token lifetime {exp - iat:.0f} s exceeds the gateway's maximum "
                    f"{self.max_lifetime_s:g} s"
                )
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthInvalid(f"token claim 'sub': expected a non-empty string, got {sub!r}")
        allow = claims.get(self.allow_claim, [])
        if not isinstance(allow, list) or not all(
            isinstance(p, str) and valid_pattern(p) for p in allow
        ):
            raise AuthInvalid(
                f"token claim {self.allow_claim!r}: expected a list of NATS subject patterns, "
                f"got {allow!r}"
            )
        roles = claims.get(self.roles_claim, [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthInvalid(
                f"token claim {self.roles_claim!r}: expected a list of strings, got {roles!r}"
            )
        jti = claims.get("jti", "")
        return Principal(
            subject=sub, acl=Acl(allow), roles=frozenset(roles), expires_at=float(exp),
            token_id=str(jti),
        )
