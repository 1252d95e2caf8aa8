"""``xypipe creds``: a NATS trust chain for operator mode (docs/security.md, "Operator mode").

    xypipe creds init DIR [--ttl 86400] [--resolver memory|full] [--host H]... [--config F]
    xypipe creds rotate ROLE... [--dir DIR] [--new-key] [--ttl S]
    xypipe creds revoke ROLE [--dir DIR]
    xypipe creds push URL [--dir DIR]            # account JWTs to a `full` resolver
    xypipe creds show FILE                       # claims of a .creds/.jwt file, never the seed
    xypipe creds nsc ROLE [--account XY]         # the same user in an nsc-managed operator

``--dir`` defaults to ``$XY_CREDS_DIR``, else the current directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import time
from pathlib import Path

import trio

from xypipe._bus_layout import bus_layout
from xypipe._creds import Chain, ChainOptions, Claims, decode, init_chain, parse_creds
from xypipe._creds._push import push_accounts
from xypipe._errors import CredsError, UsageError
from xypipe._nats_roles import BusLayout
from xypipe._overrides import load_effective
from xypipe._progress import progress
from xypipe._role_grants import ROLE_ALIASES, ROLES, canonical_role, permissions

__all__ = ["register"]

ENV_DIR = "XY_CREDS_DIR"
_CHAIN_DIR_HELP = f"the chain's directory (default ${ENV_DIR}, else the current directory)"

def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    creds = sub.add_parser("creds", help="NATS trust chain: operator, accounts, users, mTLS")
    cmds = creds.add_subparsers(dest="creds_cmd", required=True)

    p = cmds.add_parser("init", help="build a complete trust chain in DIR")
    p.add_argument("directory", help="where to build it (must not hold a chain already)")
    p.add_argument("--ttl", type=float, default=24 * 3600.0,
                   help="lifetime of the user JWTs in seconds (default 86400)")
    p.add_argument("--resolver", choices=["memory", "full"], default="memory",
                   help="memory: account JWTs preloaded in the server config (reload to "
                        "change); full: the server stores them, `creds push` updates them")
    p.add_argument("--host", action="append", default=[],
                   help="a name or address the server is reached by (repeatable; "
                        "default localhost, 127.0.0.1, ::1)")
    p.add_argument("--role", action="append", default=[], type=canonical_role,
                   choices=ROLES + tuple(ROLE_ALIASES),
                   help="issue users for these roles only (repeatable; default: every role)")
    p.add_argument("--config", default=None,
                   help="take the stream and bucket names from this xypipe config")
    p.set_defaults(func=_cmd_init)

    p = cmds.add_parser("rotate", help="re-issue the user JWT of ROLE (only)")
    p.add_argument("role", nargs="+", help="the roles to re-issue")
    p.add_argument("--dir", default=None, help=_CHAIN_DIR_HELP)
    p.add_argument("--new-key", action="store_true",
                   help="a new user key as well; the old key is revoked in the account")
    p.add_argument("--ttl", type=float, default=None, help="lifetime in seconds "
                   "(default: the chain's)")
    p.set_defaults(func=_cmd_rotate)

    p = cmds.add_parser("revoke", help="revoke the current user key of ROLE")
    p.add_argument("role", help="the role whose current user key is revoked")
    p.add_argument("--dir", default=None, help=_CHAIN_DIR_HELP)
    p.set_defaults(func=_cmd_revoke)

    p = cmds.add_parser("push", help="send the account JWTs to a running server's full resolver")
    p.add_argument("url", help="NATS URL of a server whose resolver is `full`")
    p.add_argument("--dir", default=None, help=_CHAIN_DIR_HELP)
    p.set_defaults(func=_cmd_push)

    p = cmds.add_parser("nsc", help="print the nsc command that creates ROLE's user in an "
                        "existing (nsc-managed) operator's account")
    p.add_argument("role", choices=ROLES + tuple(ROLE_ALIASES), type=canonical_role,
                   help="the role whose permissions the user gets")
    p.add_argument("--account", default="XY", help="the nsc account (default XY)")
    p.add_argument("--expiry", default="24h", help="nsc's --expiry (default 24h)")
    p.add_argument("--config", default=None,
                   help="take the stream and bucket names from this xypipe config")
    p.set_defaults(func=_cmd_nsc)

    p = cmds.add_parser("show", help="print the claims of a .creds or .jwt file (never a seed)")
    p.add_argument("file", help="a .creds or .jwt file")
    p.add_argument("--json", action="store_true", help="the claims as JSON only")
    p.set_defaults(func=_cmd_show)


def _chain_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get(ENV_DIR) or ".")


def _layout(config: str | None) -> BusLayout:
    """The layout of ``config`` (the defaults without one)."""
    return bus_layout(load_effective(config).config) if config else BusLayout()


def _cmd_nsc(args: argparse.Namespace) -> int:
    layout = _layout(args.config)
    p = permissions(args.role, layout)
    cmd = ["nsc", "add", "user", "--account", args.account, "--name", args.role,
           "--allow-pub", ",".join(p.publish), "--allow-sub", ",".join(p.subscribe),
           "--expiry", args.expiry]
    print(shlex.join(cmd))
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    layout = _layout(args.config)
    if not args.ttl > 0:
        raise UsageError(f"--ttl: expected a positive number of seconds, got {args.ttl:g}")
    options = ChainOptions(
        user_ttl_s=args.ttl, resolver=args.resolver, layout=layout,
        hosts=tuple(args.host) or ChainOptions().hosts, roles=tuple(args.role) or ROLES)
    with progress(f"creds init {args.directory}") as bar:
        chain = init_chain(Path(args.directory), options, now=time.time(), progress=bar.step)
    root = chain.paths.root
    print(f"trust chain in {root}:")
    print(f"  server config  {chain.paths.server_config}  (nats-server -c …)")
    for role in chain.roles:
        print(f"  {role:<10}     {chain.paths.creds(role)}  + tls/{role}.pem, tls/{role}.key")
    print(f"  CA             {chain.paths.ca.cert}")
    print(f"  token keys     {chain.paths.token_public_key} (the gateway's public_key)")
    print(f"  user JWTs expire in {options.user_ttl_s:g} s: run `xypipe creds rotate ROLE "
          f"--dir {root}` before then")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    chain = Chain.load(_chain_dir(args.dir))
    for role in args.role:
        issued = chain.issue_user(role, now=time.time(), new_key=args.new_key, ttl_s=args.ttl)
        when = datetime.datetime.fromtimestamp(issued.expires_at, datetime.UTC)
        print(f"{role}: {issued.path} re-issued for {issued.user}, valid until "
              f"{when:%Y-%m-%d %H:%M:%S} UTC")
        if issued.revoked:
            print(f"{role}: the old key {issued.revoked} is revoked — " + _apply_hint(chain))
    return 0


def _apply_hint(chain: Chain) -> str:
    if chain.resolver == "full":
        return f"push it to the running servers: xypipe creds push URL --dir {chain.paths.root}"
    return f"reload the servers ({chain.paths.server_config} was rewritten): " \
        "nats-server --signal reload"


def _cmd_revoke(args: argparse.Namespace) -> int:
    chain = Chain.load(_chain_dir(args.dir))
    public = chain.revoke(args.role, now=time.time())
    print(f"{args.role}: user key {public} revoked — {_apply_hint(chain)}; issue a new key "
          f"with `xypipe creds rotate {args.role} --new-key`")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    chain = Chain.load(_chain_dir(args.dir))
    results = trio.run(lambda: push_accounts(chain, args.url, now=time.time()))
    for r in results:
        print(f"{r.account}: {'updated' if r.ok else 'REFUSED'} ({r.message})")
    return 0 if all(r.ok for r in results) else 1


def _describe(claims: Claims, now: float) -> list[str]:
    def at(ts: int) -> str:
        return f"{datetime.datetime.fromtimestamp(ts, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"

    lines = [f"{claims.kind} {claims.name!r}", f"  subject  {claims.subject}",
             f"  issuer   {claims.issuer}"
             + (f" (signing key of account {claims.issuer_account})"
                if claims.issuer_account else ""),
             f"  issued   {at(claims.issued_at)}"]
    if claims.expires_at is None:
        lines.append("  expires  never")
    else:
        left = claims.expires_at - now
        state = f"in {left:.0f} s" if left > 0 else f"EXPIRED {-left:.0f} s ago"
        lines.append(f"  expires  {at(claims.expires_at)} ({state})")
    for key, label in (("pub", "publish"), ("sub", "subscribe")):
        perm = claims.nats.get(key)
        if isinstance(perm, dict):
            for verb in ("allow", "deny"):
                subjects = perm.get(verb)
                if isinstance(subjects, list) and subjects:
                    lines.append(f"  {label} {verb}: " + " ".join(map(str, subjects)))
    revocations = claims.nats.get("revocations")
    if isinstance(revocations, dict) and revocations:
        lines.append(f"  revoked users: {', '.join(sorted(revocations))}")
    return lines


def _cmd_show(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredsError(f"{path}: cannot read it: {exc}") from None
    try:
        token, seed = parse_creds(text)
        claims = decode(token)
    except CredsError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    if args.json:
        print(json.dumps(claims.to_json(), indent=2))
        return 0
    print(f"{path}:")
    print("\n".join(_describe(claims, time.time())))
    if seed is not None:
        print("  seed     present in the file (not shown)")
    return 0
