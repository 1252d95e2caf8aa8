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
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from xypipe._errors import AUTH_EXPIRED, AUTH_INVALID, AUTH_UNKNOWN_KID, AuthError
from xypipe._gateway._acl import Acl, valid_pattern
from xypipe._gateway._auth_keys import VerifyKey, algorithm_for_key
from xypipe._gateway._keyset import KeySet, load_keyset

__all__ = [
    "AuthExpired",
    "AuthInvalid",
    "AuthUnknownKid",
    "Principal",
    "TokenVerifier",
    "VerifyKey",
    "algorithm_for_key",
]

class AuthInvalid(AuthError):
    """The token is malformed, forged, for someone else, or uses a refused algorithm."""

    code: ClassVar[str] = AUTH_INVALID


class AuthUnknownKid(AuthInvalid):
    """The token's ``kid`` names no loaded key (retired, not yet deployed, or forged), or it has
    no ``kid`` while several keys are loaded."""

    code: ClassVar[str] = AUTH_UNKNOWN_KID


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
    #: The kid of the key that verified the token (its session ends if that key is removed).
    kid: str = ""

    def has_role(self, role: str) -> bool:
        return role in self.roles


class TokenVerifier:
    """Verifies tokens against a set of public keys selected by ``kid`` (:mod:`._keyset`).

    Pure: the caller passes the wall time. The key set is replaced whole by
    :meth:`replace_keys` (the reload watch), so a verification sees one set or the other."""

    def __init__(
        self,
        public_key_pem: bytes | KeySet,
        *,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        allow_claim: str = "allow",
        roles_claim: str = "roles",
        max_lifetime_s: float | None = None,
    ) -> None:
        if isinstance(public_key_pem, KeySet):
            self.keys = public_key_pem
        else:
            try:
                key = load_pem_public_key(public_key_pem)
            except ValueError as exc:
                raise AuthError(f"JWT public key: not a PEM public key ({exc})") from exc
            algorithm_for_key(key)
            assert isinstance(key, VerifyKey)  # algorithm_for_key refused every other kind
            self.keys = KeySet(keys={"default": key}, source="", strict=False)
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
        """Keys from a PEM file, a directory of PEM files or a JWKS file (:mod:`._keyset`)."""
        return cls(load_keyset(path), issuer=issuer, audience=audience, leeway_s=leeway_s,
                   allow_claim=allow_claim, roles_claim=roles_claim,
                   max_lifetime_s=max_lifetime_s)

    def replace_keys(self, keys: KeySet) -> frozenset[str]:
        """Use ``keys`` from now on; the kids that were loaded and are gone."""
        removed = self.keys.kids - keys.kids
        self.keys = keys
        return removed

    def _select(self, header: Mapping[str, object]) -> tuple[str, VerifyKey, str]:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthInvalid(f"token header 'kid': expected a string, got {kid!r}")
        chosen = self.keys.select(kid)
        if chosen is None:
            loaded = ", ".join(sorted(self.keys.kids))
            if kid is None:
                raise AuthUnknownKid(f"token has no 'kid' and the gateway holds several keys "
                                     f"({loaded}): expected a kid naming one of them")
            raise AuthUnknownKid(f"token kid {kid!r} names no loaded key (loaded: {loaded})")
        key_id, key = chosen
        return key_id, key, algorithm_for_key(key)

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
        kid, key, algorithm = self._select(header)
        if alg != algorithm:
            raise AuthInvalid(
                f"token algorithm {alg!r} refused: this gateway's key {kid!r} only verifies "
                f"{algorithm}"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
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
            raise AuthInvalid("token signature does not verify with the gateway's key "
                              f"{kid!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthInvalid(f"token lacks a required claim: {exc}") from None
        except jwt.PyJWTError as exc:
            raise AuthInvalid(f"token refused: {exc}") from None
        return attrs.evolve(self._principal(claims, wall), kid=kid)

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
