"""What one process needs to sign in to a secured NATS: its role's ``.creds`` file, the CA
that signed the server's certificate, and its own client certificate.

``ClientAuth.from_chain(DIR, role)`` takes them from a ``xypipe creds init`` directory; the
constructor takes them from anywhere (an nsc-managed operator, a desk's PKI). ``check`` says
before connecting what the server would refuse at once (no file, a malformed or expired JWT),
naming the file; ``connect_options`` is what :func:`xypipe._nats.connect` takes.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TypedDict

import attrs

from xypipe._creds._chain import ChainPaths
from xypipe._creds._jwt import Claims, decode, parse_creds
from xypipe._creds._pki import CertFiles, client_tls_context
from xypipe._errors import CredsError
from xypipe._role_grants import ROLES, canonical_role, inbox_prefix

__all__ = ["ClientAuth", "ConnectOptions"]


def user_claims(creds: Path, role: str, now: float) -> Claims:
    """The user claims of the ``.creds`` file ``creds`` (role ``role``), checked: it parses, it
    holds a seed beside its JWT, and the JWT has not expired at ``now``; else a
    :class:`CredsError` that names the file and what to do."""
    try:
        jwt, seed = parse_creds(creds.read_text())
        claims = decode(jwt, kind="user")
    except (CredsError, OSError, UnicodeDecodeError) as exc:
        raise CredsError(f"{creds}: {exc}") from None
    if seed is None:
        raise CredsError(f"{creds}: holds a JWT but no seed; a .creds file has both")
    if claims.expires_at is not None and claims.expires_at <= now:
        raise CredsError(f"{creds}: the user JWT expired {now - claims.expires_at:.0f}"
                         f" s ago; rotate it (xypipe creds rotate {role})")
    return claims


class ConnectOptions(TypedDict):
    """The keyword arguments of :func:`xypipe._nats.connect` that sign a process in."""

    creds: str
    tls: ssl.SSLContext
    inbox_prefix: str


@attrs.frozen
class ClientAuth:
    """The credentials of one process of role ``role``."""

    role: str
    creds: Path
    ca: Path
    #: The client certificate (mutual TLS); None where the server does not ask for one.
    cert: CertFiles | None

    @classmethod
    def from_chain(cls, root: str | Path, role: str) -> ClientAuth:
        paths = ChainPaths(Path(root))
        role = canonical_role(role)
        return cls(role, paths.creds(role), paths.ca.cert, paths.client_cert(role))

    def check(self, now: float) -> Claims:
        """The user JWT's claims, once the files exist and the JWT is valid at ``now``.
        Raises :class:`CredsError` naming the file and the problem."""
        if canonical_role(self.role) not in ROLES:
            raise CredsError(f"role {self.role!r}: expected one of {', '.join(ROLES)}")
        for path in (self.creds, self.ca, *((self.cert.cert, self.cert.key) if self.cert else ())):
            if not path.is_file():
                raise CredsError(f"{path}: no such file (credentials of role {self.role!r})")
        return user_claims(self.creds, self.role, now)

    def tls(self) -> ssl.SSLContext:
        return client_tls_context(self.ca, self.cert)

    def connect_options(self) -> ConnectOptions:
        return ConnectOptions(creds=str(self.creds), tls=self.tls(),
                              inbox_prefix=inbox_prefix(self.role))
