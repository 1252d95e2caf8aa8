"""The wire contracts (generated from ``proto/xy/md/v1``), under stable names.

Import message classes from here, never from ``xypipe._proto``::

    from xypipe.contracts import Tick, Delta, Snapshot, decode

    tick = decode(Tick, payload, where=f"subject {subject}")

``decode`` raises :class:`ContractError` on malformed bytes and counts unknown fields (a newer
producer's additions) in ``contract_unknown_fields_total``; see ``xypipe._contracts`` and
``docs/contracts.md``.
"""

from xypipe._contracts import ContractDecoder, count_unknown_fields, decode, use_registry
from xypipe._errors import ContractError
from xypipe._proto.xy.md.v1.admin_pb2 import FeatureFlag, HealthReport
from xypipe._proto.xy.md.v1.contract_pb2 import Contract, Priority
from xypipe._proto.xy.md.v1.marketdata_pb2 import Delta, Snapshot, SymbolState, TopEntry
from xypipe._proto.xy.md.v1.tick_pb2 import PriceLevel, Tick, TickFlag
from xypipe._proto.xy.md.v1.ws_pb2 import (
    ClientFrame,
    ClientMetrics,
    DegradeChange,
    Error,
    ErrorCode,
    GoAway,
    GroupRef,
    Hello,
    Ping,
    Pong,
    RefreshToken,
    Resume,
    ResumePoint,
    ServerFrame,
    SnapshotRequest,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
)

__all__ = [
    "ClientFrame",
    "ClientMetrics",
    "Contract",
    "ContractDecoder",
    "ContractError",
    "DegradeChange",
    "Delta",
    "Error",
    "ErrorCode",
    "FeatureFlag",
    "GoAway",
    "GroupRef",
    "HealthReport",
    "Hello",
    "Ping",
    "Pong",
    "PriceLevel",
    "Priority",
    "RefreshToken",
    "Resume",
    "ResumePoint",
    "ServerFrame",
    "Snapshot",
    "SnapshotRequest",
    "Subscribe",
    "Subscribed",
    "SymbolState",
    "Tick",
    "TickFlag",
    "TopEntry",
    "Unsubscribe",
    "Welcome",
    "count_unknown_fields",
    "decode",
    "use_registry",
]
