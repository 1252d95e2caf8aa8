"""A NATS trust chain on disk: operator, system account, the ``XY`` account, a user per role.

``xypipe creds init DIR`` builds it; ``rotate``, ``revoke`` and ``show`` work on it::

    DIR/                              0700
      chain.json                      what the chain is: public keys, roles, layout, options
      operator.jwt                    the operator (the server trusts it)
      accounts/SYS.jwt XY.jwt         account JWTs, signed by the operator
      keys/                           0700, every file 0600: the seeds that sign
        operator.nk SYS.nk XY.nk      identities (keep offline in production)
        XY-signing.nk                 the account signing key that signs user JWTs
      creds/<role>.creds              0700/0600: a user JWT + the user's seed, per role
      tls/ca.pem ca.key server.pem server.key <role>.pem <role>.key   (mTLS; keys 0600)
      tokens/gateway.key.pem gateway.pub.pem    the browser-token key pair (Ed25519)
      nats-server.conf                operator mode, resolver, TLS (no secret in it)
      jetstream/                      the server's JetStream store (named in the config)

Each user's permissions are those of its role in :data:`xypipe._role_grants.GRANTS` — the same
table the embedded bus uses — laid over the chain's :class:`~xypipe._nats_roles.BusLayout`.
User JWTs are short-lived (``user_ttl_s``) and signed by the account's *signing* key, so
re-issuing one needs neither the account's identity key nor a change to the account.

Every method takes ``now`` (unix seconds) from its caller; files are replaced atomically.
"""

from __future__ import annotations

import datetime
import json
import ssl
from collections.abc import Callable
from pathlib import Path

import attrs

from xypipe._creds._files import private_dir, write_atomic
from xypipe._creds._jwt import Claims, decode, encode, format_creds, parse_creds
from xypipe._creds._keys import KeyKind, NKey
from xypipe._creds._pki import (
    CertFiles,
    client_tls_context,
    issue_certificate,
    make_ca,
    write_token_keypair,
)
from xypipe._creds._server_conf import Resolver, ServerTls, operator_config
from xypipe._errors import (
    CREDS_USER_ISSUED,
    CREDS_USER_REVOKED,
    ChainExistsError,
    CredsError,
    UnknownRoleError,
)
from xypipe._log import get_logger
from xypipe._nats_roles import BusLayout
from xypipe._role_grants import ROLES, Layout, canonical_role, inbox_prefix, permissions

__all__ = ["Chain", "ChainOptions", "ChainPaths", "Issued", "init_chain", "user_claims"]

_log = get_logger("creds")

MANIFEST = "chain.json"
SYSTEM = "SYS"
#: Account limits: unlimited, with JetStream (memory and file storage) on.
_JETSTREAM_LIMITS: dict[str, object] = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
    "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1,
    "consumer": -1, "max_ack_pending": -1, "mem_max_stream_bytes": -1,
    "disk_max_stream_bytes": -1, "max_bytes_required": False,
}
_SYSTEM_LIMITS: dict[str, object] = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
    "conn": -1, "leaf": -1,
}


@attrs.frozen
class ChainOptions:
    """What ``creds init`` builds."""

    #: Lifetime of a user JWT; ``creds rotate`` issues a fresh one before it ends.
    user_ttl_s: float = 24 * 3600.0
    resolver: Resolver = "memory"
    #: Names the server is reached by (its certificate's SAN).
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    roles: tuple[str, ...] = ROLES
    operator: str = "xypipe"
    account: str = "XY"
    layout: BusLayout = attrs.field(factory=BusLayout)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "roles", tuple(dict.fromkeys(map(canonical_role, self.roles))))
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown:
            raise UnknownRoleError(f"roles: {', '.join(unknown)} not known; expected some of "
                                   f"{', '.join(ROLES)}")
        if not self.user_ttl_s > 0:
            raise CredsError(f"user_ttl_s: expected a positive number of seconds, got "
                             f"{self.user_ttl_s!r}")


@attrs.frozen
class ChainPaths:
    """Where each file of a chain rooted at ``root`` lives."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def operator_jwt(self) -> Path:
        return self.root / "operator.jwt"

    def account_jwt(self, name: str) -> Path:
        return self.root / "accounts" / f"{name}.jwt"

    def seed(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.nk"

    def creds(self, role: str) -> Path:
        return self.root / "creds" / f"{canonical_role(role)}.creds"

    @property
    def ca(self) -> CertFiles:
        return CertFiles(self.root / "tls" / "ca.pem", self.root / "tls" / "ca.key")

    @property
    def server_cert(self) -> CertFiles:
        return CertFiles(self.root / "tls" / "server.pem", self.root / "tls" / "server.key")

    def client_cert(self, role: str) -> CertFiles:
        role = canonical_role(role)
        return CertFiles(self.root / "tls" / f"{role}.pem", self.root / "tls" / f"{role}.key")

    @property
    def token_private_key(self) -> Path:
        return self.root / "tokens" / "gateway.key.pem"

    @property
    def token_public_key(self) -> Path:
        return self.root / "tokens" / "gateway.pub.pem"

    @property
    def server_config(self) -> Path:
        return self.root / "nats-server.conf"

    @property
    def resolver_dir(self) -> Path:
        return self.root / "jwt"

    @property
    def store_dir(self) -> Path:
        return self.root / "jetstream"


@attrs.frozen
class Issued:
    """A user JWT just issued: for whom, which key, until when, and where it was written."""

    role: str
    user: str
    expires_at: int
    path: Path
    #: The user key this one replaced and revoked (``rotate --new_key``), if any.
    revoked: str | None = None


def user_claims(role: str, layout: Layout) -> dict[str, object]:
    """The ``nats`` object of ``role``'s user JWT: its permissions from the one table."""
    p = permissions(role, layout)
    return {"pub": {"allow": list(p.publish)}, "sub": {"allow": list(p.subscribe)},
            "subs": -1, "data": -1, "payload": -1}


def _read_seed(path: Path, kind: KeyKind) -> NKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredsError(f"{path}: cannot read the seed: {exc.strerror}") from None
    try:
        return NKey.from_seed(data, kind)
    except CredsError as exc:
        raise CredsError(f"{path}: {exc}") from None


class Chain:
    """A trust chain on disk. Create with :func:`init_chain`, open with :meth:`load`."""

    def __init__(self, paths: ChainPaths, manifest: dict[str, object]) -> None:
        self.paths = paths
        self._m = manifest

    # -- reading --------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path) -> Chain:
        paths = ChainPaths(root)
        try:
            manifest = json.loads(paths.manifest.read_text())
        except FileNotFoundError:
            raise CredsError(f"{root}: no trust chain here (no {MANIFEST}); create one with "
                             "`xypipe creds init DIR`") from None
        except (OSError, ValueError) as exc:
            raise CredsError(f"{paths.manifest}: cannot read the chain's manifest: {exc}") \
                from None
        if not isinstance(manifest, dict) or manifest.get("version") != 1:
            raise CredsError(f"{paths.manifest}: expected a version 1 chain manifest")
        return cls(paths, manifest)

    def _str(self, *keys: str) -> str:
        node: object = self._m
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, str):
            raise CredsError(f"{self.paths.manifest}: {'.'.join(keys)}: expected a string")
        return node

    @property
    def operator_public(self) -> str:
        return self._str("operator", "public")

    @property
    def account_public(self) -> str:
        return self._str("account", "public")

    @property
    def account_name(self) -> str:
        return self._str("account", "name")

    @property
    def system_public(self) -> str:
        return self._str("system_account", "public")

    @property
    def resolver(self) -> Resolver:
        value = self._str("resolver")
        if value not in ("memory", "full"):
            raise CredsError(f"{self.paths.manifest}: resolver: expected memory or full")
        return "memory" if value == "memory" else "full"

    @property
    def user_ttl_s(self) -> float:
        ttl = self._m.get("user_ttl_s")
        if not isinstance(ttl, int | float) or ttl <= 0:
            raise CredsError(f"{self.paths.manifest}: user_ttl_s: expected a positive number")
        return float(ttl)

    @property
    def layout(self) -> BusLayout:
        raw = self._m.get("layout")
        if not isinstance(raw, dict):
            raise CredsError(f"{self.paths.manifest}: layout: expected an object")
        try:
            return BusLayout(**{k: tuple(v) for k, v in raw.items()})
        except TypeError as exc:
            raise CredsError(f"{self.paths.manifest}: layout: {exc}") from None

    @property
    def roles(self) -> tuple[str, ...]:
        users = self._m.get("users")
        return tuple(users) if isinstance(users, dict) else ()

    def user_public(self, role: str) -> str:
        return self._str("users", self._check_role(role))

    def _check_role(self, role: str) -> str:
        """``role`` by its current name, once it is known to be in the chain."""
        name = canonical_role(role)
        if name not in self.roles:
            raise UnknownRoleError(f"role {role!r} is not in the chain at {self.paths.root}; "
                                   f"it has {', '.join(self.roles)}")
        return name

    def account_claims(self) -> Claims:
        return decode(self.paths.account_jwt(self.account_name).read_text(), kind="account")

    def revocations(self) -> dict[str, int]:
        raw = self.account_claims().nats.get("revocations")
        if not isinstance(raw, dict):
            return {}
        return {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}

    def creds_file(self, role: str) -> Path:
        return self.paths.creds(self._check_role(role))

    def tls_context(self, role: str) -> ssl.SSLContext:
        """The client TLS context of ``role`` (trusts the chain's CA, presents its cert)."""
        return client_tls_context(self.paths.ca.cert, self.paths.client_cert(role))

    def inbox_prefix(self, role: str) -> str:
        return inbox_prefix(role)

    # -- keys -----------------------------------------------------------------------------
    def _operator_key(self) -> NKey:
        return _read_seed(self.paths.seed("operator"), KeyKind.OPERATOR)

    def _account_key(self, name: str) -> NKey:
        return _read_seed(self.paths.seed(name), KeyKind.ACCOUNT)

    def system_user_creds(self, path: Path, *, now: float, ttl_s: float) -> Path:
        """A short-lived user of the system account (to push account JWTs), written to
        ``path`` (0600). Signed by the system account's key; never kept longer than needed."""
        user = NKey.generate(KeyKind.USER)
        token = encode("user", subject=user.public, name="xypipe-creds-push",
                       signer=self._account_key(SYSTEM), now=now, expires_at=now + ttl_s,
                       nats={"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
        return write_atomic(path, format_creds(token, user.seed))

    def _signing_key(self) -> NKey:
        return _read_seed(self.paths.seed(f"{self.account_name}-signing"), KeyKind.ACCOUNT)

    # -- writing --------------------------------------------------------------------------
    def _save_manifest(self) -> None:
        write_atomic(self.paths.manifest, (json.dumps(self._m, indent=2) + "\n").encode(),
                     mode=0o644)

    def _write_account(self, *, now: float, revocations: dict[str, int]) -> str:
        nats: dict[str, object] = {
            "limits": dict(_JETSTREAM_LIMITS),
            "default_permissions": {"pub": {}, "sub": {}},
            "signing_keys": [self._str("account", "signing_key")],
        }
        if revocations:
            nats["revocations"] = dict(sorted(revocations.items()))
        token = encode("account", subject=self.account_public, name=self.account_name,
                       signer=self._operator_key(), now=now, nats=nats)
        write_atomic(self.paths.account_jwt(self.account_name), token.encode(), mode=0o644)
        return token

    def account_jwts(self) -> dict[str, str]:
        """Account public key → JWT, for every account of the chain."""
        return {
            self.system_public: self.paths.account_jwt(SYSTEM).read_text().strip(),
            self.account_public: self.paths.account_jwt(self.account_name).read_text().strip(),
        }

    def write_server_config(self) -> Path:
        """Write ``nats-server.conf`` from the chain's current account JWTs."""
        text = operator_config(
            operator_jwt=self.paths.operator_jwt, system_account=self.system_public,
            accounts=self.account_jwts(), resolver=self.resolver,
            resolver_dir=self.paths.resolver_dir if self.resolver == "full" else None,
            tls=ServerTls(self.paths.server_cert.cert, self.paths.server_cert.key,
                          self.paths.ca.cert),
            store_dir=self.paths.store_dir)
        return write_atomic(self.paths.server_config, text.encode())

    def issue_user(self, role: str, *, now: float, new_key: bool = False,
                   ttl_s: float | None = None) -> Issued:
        """(Re-)issue ``role``'s user JWT, valid ``ttl_s`` (default: the chain's) from ``now``.

        The ``.creds`` file is replaced atomically: a process that reconnects reads the old
        file or the new one. ``new_key``: a fresh user key; the old one is revoked in the
        account JWT (the server must then learn the account: reload or ``creds push``). A
        revoked key is never re-issued (that would lift its revocation): use ``new_key``.
        """
        role = self._check_role(role)
        path = self.paths.creds(role)
        old_public = self.user_public(role)
        if new_key:
            user = NKey.generate(KeyKind.USER)
        else:
            if old_public in self.revocations():
                raise CredsError(f"{role}: its user key {old_public} is revoked; issue a new "
                                 f"key (`xypipe creds rotate {role} --new-key`)")
            _, seed = parse_creds(path.read_text())
            if seed is None:
                raise CredsError(f"{path}: the .creds file holds no seed")
            user = NKey.from_seed(seed, KeyKind.USER)
            if user.public != old_public:
                raise CredsError(f"{path}: its seed is not the key of {role} in the chain "
                                 f"({old_public})")
        return self._issue(role, user, now=now, ttl_s=ttl_s,
                           revoked=old_public if new_key else None)

    def _issue(self, role: str, user: NKey, *, now: float, ttl_s: float | None,
               revoked: str | None = None) -> Issued:
        expires = int(now + (ttl_s if ttl_s is not None else self.user_ttl_s))
        token = encode("user", subject=user.public, name=role, signer=self._signing_key(),
                       now=now, expires_at=expires, nats=user_claims(role, self.layout),
                       issuer_account=self.account_public)
        path = write_atomic(self.paths.creds(role), format_creds(token, user.seed))
        users = self._m.setdefault("users", {})
        assert isinstance(users, dict)
        if users.get(role) != user.public:
            users[role] = user.public
            self._save_manifest()
        _log.info("issued a NATS user JWT", code=CREDS_USER_ISSUED, role=role, user=user.public,
                  expires_at=expires, file=str(path))
        if revoked is not None:
            self._revoke_key(revoked, role=role, now=now)
        return Issued(role, user.public, expires, path, revoked)

    def revoke(self, role: str, *, now: float) -> str:
        """Revoke ``role``'s current user key (every JWT of it issued until ``now``)."""
        role = self._check_role(role)
        public = self.user_public(role)
        self._revoke_key(public, role=role, now=now)
        return public

    def _revoke_key(self, public: str, *, role: str, now: float) -> None:
        revocations = self.revocations()
        revocations[public] = int(now)
        self._write_account(now=now, revocations=revocations)
        self.write_server_config()
        _log.warning("revoked a NATS user key", code=CREDS_USER_REVOKED, role=role, user=public,
                     resolver=self.resolver)


def init_chain(root: Path, options: ChainOptions, *, now: float,
               progress: Callable[[str], None] = lambda _: None) -> Chain:
    """Build a complete chain in ``root`` (created 0700; refused if it holds a chain)."""
    paths = ChainPaths(root)
    if paths.manifest.exists():
        raise ChainExistsError(f"{root}: already holds a trust chain ({MANIFEST}); it is never "
                               "overwritten — rotate users with `xypipe creds rotate`, or choose "
                               "another directory")
    for d in (root, root / "keys", root / "creds", root / "tls", root / "tokens",
              root / "accounts"):
        private_dir(d)
    steps = 6
    progress(f"[1/{steps}] keys: operator, accounts {SYSTEM} and {options.account}")
    operator = NKey.generate(KeyKind.OPERATOR)
    system = NKey.generate(KeyKind.ACCOUNT)
    account = NKey.generate(KeyKind.ACCOUNT)
    signing = NKey.generate(KeyKind.ACCOUNT)
    for name, key in (("operator", operator), (SYSTEM, system), (options.account, account),
                      (f"{options.account}-signing", signing)):
        write_atomic(paths.seed(name), key.seed + b"\n")

    progress(f"[2/{steps}] JWTs: operator, accounts (JetStream on in {options.account})")
    write_atomic(paths.operator_jwt, encode(
        "operator", subject=operator.public, name=options.operator, signer=operator, now=now,
        nats={"system_account": system.public}).encode(), mode=0o644)
    write_atomic(paths.account_jwt(SYSTEM), encode(
        "account", subject=system.public, name=SYSTEM, signer=operator, now=now,
        nats={"limits": dict(_SYSTEM_LIMITS), "default_permissions": {"pub": {}, "sub": {}}},
    ).encode(), mode=0o644)
    manifest: dict[str, object] = {
        "version": 1,
        "operator": {"name": options.operator, "public": operator.public},
        "system_account": {"name": SYSTEM, "public": system.public},
        "account": {"name": options.account, "public": account.public,
                    "signing_key": signing.public},
        "resolver": options.resolver,
        "user_ttl_s": options.user_ttl_s,
        "hosts": list(options.hosts),
        "layout": {k: list(v) for k, v in attrs.asdict(options.layout).items()},
        "users": {},
    }
    chain = Chain(paths, manifest)
    chain._write_account(now=now, revocations={})
    chain._save_manifest()

    progress(f"[3/{steps}] users: {', '.join(options.roles)} "
             f"(JWTs valid {options.user_ttl_s:g} s)")
    for role in options.roles:
        chain._issue(role, NKey.generate(KeyKind.USER), now=now, ttl_s=None)

    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    progress(f"[4/{steps}] TLS: a development CA, the server's certificate "
             f"({', '.join(options.hosts)}), a client certificate per role")
    make_ca(paths.ca, name=f"{options.operator} development CA", now=when)
    issue_certificate(paths.ca, paths.server_cert, common_name="nats-server",
                      hosts=options.hosts, client=False, now=when)
    # The system account's user (pushing account JWTs, ``creds push``) has a certificate too.
    for role in (*options.roles, SYSTEM):
        issue_certificate(paths.ca, paths.client_cert(role), common_name=role, client=True,
                          now=when)

    progress(f"[5/{steps}] the browser-token key pair (Ed25519)")
    write_token_keypair(paths.token_private_key, paths.token_public_key)

    progress(f"[6/{steps}] nats-server.conf (operator mode, {options.resolver} resolver, mTLS)")
    if options.resolver == "full":
        private_dir(paths.resolver_dir)
    chain.write_server_config()
    return chain

