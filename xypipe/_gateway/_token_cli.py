"""``xypipe token``: mint a gateway JWT with a private key (dev keypair by default).

::

    xypipe token --sub alice --allow 'xy.md.>'            # browser token, 5 minutes
    xypipe token --sub root --role admin --ttl 600          # admin token for /admin/feature-flags
    xypipe token keygen var/keys                            # a fresh Ed25519 keypair
    xypipe token keygen --dir var/token-keys                # one more key, a new kid
    xypipe token --key var/token-keys/KID.key.pem ...       # header kid = KID

The default key is ``configs/dev-keys/gateway-dev.key.pem``, which only the dev/demo config
trusts. Production tokens come from the deployment's identity provider, signed with a key that
never sits in the repository.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from xypipe._errors import OutputExists, UsageError
from xypipe._gateway._keyset import kid_of
from xypipe._gateway._tokens import (
    DEV_AUDIENCE,
    DEV_ISSUER,
    generate_ed25519_keypair,
    load_private_key,
    mint,
    new_kid,
)
from xypipe._validate import _is_subject

DEV_PRIVATE_KEY = "configs/dev-keys/gateway-dev.key.pem"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("token", help="mint a gateway JWT (dev key by default)")
    p.add_argument("--key", default=DEV_PRIVATE_KEY, help="PEM private key (Ed25519/P-256/RSA)")
    p.add_argument("--kid", default=None,
                   help="header kid (default: the key file's name without .key.pem/.pem)")
    p.add_argument("--sub", default="dev-user", help="subject (principal)")
    p.add_argument("--allow", action="append", default=None, metavar="PATTERN",
                   help='subject pattern the token may use (repeatable; default "xy.md.>")')
    p.add_argument("--role", action="append", default=[], help="role, e.g. admin (repeatable)")
    p.add_argument("--ttl", type=float, default=300.0, help="lifetime in seconds (default 300)")
    p.add_argument("--iss", default=DEV_ISSUER,
                   help=f"issuer claim; the gateway's [issuer] (default {DEV_ISSUER})")
    p.add_argument("--aud", default=DEV_AUDIENCE,
                   help=f"audience claim; the gateway's [audience] (default {DEV_AUDIENCE})")
    p.set_defaults(func=_cmd_token)
    sub = p.add_subparsers(dest="token_cmd", metavar="SUBCOMMAND")
    k = sub.add_parser("keygen", help="write a fresh Ed25519 keypair into a directory")
    k.add_argument("directory", nargs="?", default=None,
                   help="where to write NAME.key.pem and NAME.pub.pem")
    k.add_argument("--dir", dest="key_dir", default=None, metavar="DIR",
                   help="a gateway key directory: writes KID.pub.pem and KID.key.pem with a "
                        "new kid (the name defaults to one)")
    k.add_argument("--name", default=None,
                   help="file name stem = kid (default: gateway; a new kid with --dir)")
    k.set_defaults(func=_cmd_keygen)


def _cmd_token(args: argparse.Namespace) -> int:
    allow = args.allow or ["xy.md.>"]
    bad = [a for a in allow if not _is_subject(a)]
    if bad:
        raise UsageError(f"--allow: expected NATS subject patterns like 'xy.md.>', got {bad}")
    if not 1 <= args.ttl <= 86400:
        raise UsageError(f"--ttl: expected 1..86400 seconds, got {args.ttl:g}")
    key = load_private_key(args.key)
    kid = args.kid if args.kid is not None else kid_of(args.key)
    token = mint(key, subject=args.sub, allow=allow, now=time.time(), ttl_s=args.ttl,
                 roles=args.role, issuer=args.iss, audience=args.aud, kid=kid)
    print(token)
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    if (args.directory is None) == (args.key_dir is None):
        raise UsageError("keygen: expected a DIRECTORY or --dir DIR (one of them)")
    directory = Path(args.directory or args.key_dir)
    name = args.name or (new_kid(time.time()) if args.key_dir is not None else "gateway")
    if "/" in name or name.startswith("."):
        raise UsageError(f"keygen: --name {name!r}: expected a plain file name stem")
    directory.mkdir(parents=True, exist_ok=True)
    private, public = generate_ed25519_keypair()
    key_path = directory / f"{name}.key.pem"
    pub_path = directory / f"{name}.pub.pem"
    if key_path.exists():
        raise OutputExists(f"keygen: {key_path} exists; not overwriting it")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    pub_path.write_bytes(public)
    print(f"wrote {key_path} (private, 0600) and {pub_path} (public: the gateway's public_key, "
          f"or one key of its key directory); kid {name}")
    return 0
