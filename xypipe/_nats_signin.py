"""How one process signs in to NATS: what its config says for its role, resolved once.

Every process of ``xypipe run`` signs in as its role (``AppConfig.process_role``) with
credentials of its own (docs/security.md, "Which credentials a process uses"):

- on the embedded bus, the role's NKey seed file (the supervisor passes children its path);
- ``[processes.NAME.nats]`` ``chain``, ``creds`` or ``nkey`` when set, else ``[nats]``'s:
  a ``chain`` (a ``xypipe creds init`` directory) gives ``creds/<role>.creds`` and, for TLS,
  ``tls/ca.pem`` with the client certificate ``tls/<role>.pem``/``.key``;
- ``[nats]`` ``user``/``password`` or ``token`` otherwise;
- TLS files given in ``[nats.tls]`` or ``[processes.NAME.nats.tls]`` replace the chain's, file
  by file (a process's own over the shared ones).

:func:`sign_in` is pure (it reads no file); :meth:`SignIn.check` reads the files before the
first connect and names what is missing or expired; :meth:`SignIn.explain` tells an expired or
revoked user from other refused sign-ins, which the server itself does not.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs

from xypipe._config import AppConfig, TlsConfig
from xypipe._creds import Chain, ChainPaths, decode, parse_creds
from xypipe._creds._client import user_claims
from xypipe._creds._pki import CertFiles, client_tls_context
from xypipe._errors import CredsError, WiringError, XyError
from xypipe._nats import Refusal
from xypipe._role_grants import inbox_prefix

__all__ = ["SignIn", "sign_in"]


@attrs.frozen
class SignIn:
    """The credentials and TLS files one process signs in to NATS with (paths, never secrets)."""

    role: str
    #: How the server knows this process, for audit lines (its role when it signs in as one).
    principal: str | None
    inbox_prefix: str
    creds: Path | None = None
    nkey: str | None = None
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    token: str | None = attrs.field(default=None, repr=False)
    #: The trust chain the credentials come from (revocations are read there).
    chain: Path | None = None
    ca: Path | None = None
    cert: CertFiles | None = None
    verify: bool = True
    #: Whether TLS is used at all (a ``[nats.tls]`` table, a chain, or a ``tls://`` URL).
    tls: bool = False

    @property
    def method(self) -> str:
        """How it signs in, in one word (for the log line at start)."""
        if self.creds is not None:
            return "chain" if self.chain is not None else "creds"
        if self.nkey is not None:
            return "nkey"
        if self.user is not None:
            return "user"
        return "token" if self.token is not None else "none"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context: trusts ``ca`` (the system's CAs without one), presents
        ``cert`` (mutual TLS); None without TLS."""
        if not self.tls:
            return None
        if self.ca is not None:
            ctx = client_tls_context(self.ca, self.cert)
        else:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            if self.cert is not None:
                ctx.load_cert_chain(str(self.cert.cert), str(self.cert.key))
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def check(self, now: float) -> None:
        """Before connecting: every file is there, the ``.creds`` file holds a JWT and a seed
        and its JWT is valid at ``now``. Raises :class:`CredsError` naming the file."""
        files = [self.creds, self.ca, *((self.cert.cert, self.cert.key) if self.cert else ())]
        if self.nkey is not None:
            files.append(Path(self.nkey))
        for path in files:
            if path is not None and not path.is_file():
                raise CredsError(f"{path}: no such file (NATS credentials of role "
                                 f"{self.role!r}, signing in by {self.method})")
        if self.creds is None:
            return
        user_claims(self.creds, self.role, now)

    def explain(self, refusal: Refusal, now: float) -> Refusal:
        """``refusal`` with its reason made precise where the credentials tell why: a JWT
        that has expired, a user key the chain's account revoked. The server says only
        ``Authorization Violation`` for both."""
        if refusal.reason != "auth" or self.creds is None:
            return refusal
        try:
            jwt, _ = parse_creds(self.creds.read_text())
            claims = decode(jwt, kind="user")
        except (XyError, OSError, UnicodeDecodeError):
            return refusal
        if claims.expires_at is not None and claims.expires_at <= now:
            return attrs.evolve(refusal, reason="expired")
        if self.chain is not None:
            try:
                revoked = claims.subject in Chain.load(self.chain).revocations()
            except (XyError, OSError, UnicodeDecodeError):
                revoked = False
            if revoked:
                return attrs.evolve(refusal, reason="revoked")
        return refusal


def _merged(shared: TlsConfig | None, own: TlsConfig | None) -> TlsConfig | None:
    if own is None:
        return shared
    if shared is None:
        return own
    return TlsConfig(ca=own.ca or shared.ca, cert=own.cert or shared.cert,
                     key=own.key or shared.key, verify=own.verify and shared.verify)


def sign_in(cfg: AppConfig, process: str, *, embedded_nkey: str | None = None) -> SignIn:
    """How ``process`` of ``cfg`` signs in (``embedded_nkey``: the seed file of its role on
    the embedded bus, when it is on one)."""
    nats = cfg.nats
    if nats is None:
        raise XyError(f"process {process!r}: the config has no [nats] section")
    own = cfg.nats_for(process)
    method_own = own is not None and bool(own.chain or own.creds or own.nkey)
    chain = (own.chain if own is not None and method_own else nats.chain)
    creds = (own.creds if own is not None and method_own else nats.creds)
    nkey = (own.nkey if own is not None and method_own else nats.nkey)
    tls = _merged(nats.tls, own.tls if own is not None else None)
    embedded = cfg.embedded_auth and embedded_nkey is not None
    if embedded:
        nkey, creds, chain = embedded_nkey, None, None
    as_role = embedded or bool(chain or creds)
    try:
        role = cfg.process_role(process)
    except WiringError:
        if as_role:
            raise  # one connection is one user
        role = "basic"  # an open bus or a shared user: the role is only a name here
    ca = Path(tls.ca) if tls is not None and tls.ca else None
    cert = (CertFiles(Path(tls.cert), Path(tls.key))
            if tls is not None and tls.cert and tls.key else None)
    chain_path = Path(chain) if chain else None
    creds_path = Path(creds) if creds else None
    if chain_path is not None:
        paths = ChainPaths(chain_path)
        creds_path = paths.creds(role)
        ca = ca or paths.ca.cert
        cert = cert or paths.client_cert(role)
    prefix = nats.inbox_prefix or (inbox_prefix(role) if as_role else "_INBOX")
    principal = role if as_role else nats.user
    return SignIn(
        role=role, principal=principal, inbox_prefix=prefix, creds=creds_path, nkey=nkey,
        user=None if as_role else nats.user, password=None if as_role else nats.password,
        token=None if as_role else nats.token, chain=chain_path, ca=ca, cert=cert,
        verify=tls.verify if tls is not None else True,
        tls=tls is not None or chain_path is not None or nats.tls_url)
