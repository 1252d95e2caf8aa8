"""The WebSocket gateway: browsers in, market data out (see docs/protocol.md, "Browser protocol").

Sans-I/O cores: :mod:`._session` (one connection's protocol), :mod:`._wire_core` (one
connection between its socket and its session), :mod:`._auth` (JWT), :mod:`._acl` (subject
patterns), :mod:`._throttle`, :mod:`._hub` (history, snapshots, frames). Trio shells:
:mod:`._conn` (one socket), :mod:`._snapfetch` (JetStream reads), :mod:`._flagwatch` and
:mod:`._admin` (feature flags), :mod:`._groupwatch` (known groups), wired by :mod:`._server`
(the composition root). docs/architecture.md, "The gateway's modules", has the map. The stage
is ``xypipe._stages.gateway``.
"""

from xypipe._gateway._acl import Acl, covers, group_subjects
from xypipe._gateway._auth import AuthExpired, AuthInvalid, Principal, TokenVerifier
from xypipe._gateway._hub import Hub, Outbox
from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._session import (
    CLOSE_BASE,
    LocalProtocolError,
    RemoteProtocolError,
    Session,
    SessionPolicy,
    State,
    close_code,
)

__all__ = [
    "CLOSE_BASE",
    "Acl",
    "AuthExpired",
    "AuthInvalid",
    "GatewayOptions",
    "Hub",
    "LocalProtocolError",
    "Outbox",
    "Principal",
    "RemoteProtocolError",
    "Session",
    "SessionPolicy",
    "State",
    "TokenVerifier",
    "close_code",
    "covers",
    "group_subjects",
]
