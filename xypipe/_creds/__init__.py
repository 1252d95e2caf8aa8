"""The NATS trust chain: operator-mode JWT/NKey accounts, per-role users, mTLS material.

Built by ``xypipe creds`` (:mod:`xypipe._cli_creds`); see docs/security.md, "Operator mode".
"""

from xypipe._creds._chain import Chain, ChainOptions, ChainPaths, Issued, init_chain, user_claims
from xypipe._creds._client import ClientAuth, ConnectOptions
from xypipe._creds._jwt import Claims, decode, encode, format_creds, parse_creds
from xypipe._creds._keys import KeyKind, NKey
from xypipe._creds._pki import CertFiles, client_tls_context
from xypipe._creds._push import PushResult, push_accounts
from xypipe._creds._rotation import CredsFollower, follow_creds
from xypipe._creds._server_conf import Resolver, ServerTls, operator_config

__all__ = [
    "CertFiles",
    "Chain",
    "ChainOptions",
    "ChainPaths",
    "Claims",
    "ClientAuth",
    "ConnectOptions",
    "CredsFollower",
    "Issued",
    "KeyKind",
    "NKey",
    "PushResult",
    "Resolver",
    "ServerTls",
    "client_tls_context",
    "decode",
    "encode",
    "follow_creds",
    "format_creds",
    "init_chain",
    "operator_config",
    "parse_creds",
    "push_accounts",
    "user_claims",
]
