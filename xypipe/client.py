"""The Python client of the gateway: what a browser receives, for quants, bots and tools.

::

    import trio
    import xypipe.client

    async def main() -> None:
        async with xypipe.client.connect("ws://127.0.0.1:8080/ws", token=TOKEN) as c:
            await c.subscribe("fx")
            async for update in c:
                if isinstance(update, xypipe.client.DeltaApplied):
                    book = c.book(update.group)
                    ...

    trio.run(main)

It speaks the browser protocol (``docs/protocol.md``) with the browser's rules — snapshot then
deltas, the sequence rules, the canonical checksum on every applied entry, a snapshot request
on any doubt, resume after a reconnect — tested against the same scenario vectors
(``proto/scenarios/``) as the browser's worker. Errors are :class:`ClientError` and its
subclasses (all :class:`xypipe.XyError`). See ``docs/client.md``.
"""

from xypipe._client._book import GroupBook
from xypipe._client._shell import Client, Reconnect, TokenSource, connect
from xypipe._client._updates import (
    BadFrame,
    ClientStatistics,
    Connected,
    Degraded,
    DeltaApplied,
    DeltaSkipped,
    Disconnected,
    ErrorReceived,
    FrameReceived,
    MoveRequested,
    SnapshotApplied,
    SnapshotRequested,
    Subscribed,
    TokenRefreshed,
    Update,
)
from xypipe._errors import (
    ClientClosed,
    ClientError,
    GatewayAuthError,
    GatewayClosed,
    GatewayUnreachable,
    HandshakeRejected,
    ReconnectGaveUp,
    TokenUnavailable,
)

__all__ = [
    "BadFrame",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientStatistics",
    "Connected",
    "Degraded",
    "DeltaApplied",
    "DeltaSkipped",
    "Disconnected",
    "ErrorReceived",
    "FrameReceived",
    "GatewayAuthError",
    "GatewayClosed",
    "GatewayUnreachable",
    "GroupBook",
    "HandshakeRejected",
    "MoveRequested",
    "Reconnect",
    "ReconnectGaveUp",
    "SnapshotApplied",
    "SnapshotRequested",
    "Subscribed",
    "TokenRefreshed",
    "TokenSource",
    "TokenUnavailable",
    "Update",
    "connect",
]
