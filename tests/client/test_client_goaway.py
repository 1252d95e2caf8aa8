"""A GoAway cannot send the client anywhere but its own URL.

The server here is hostile, not a gateway: after the Welcome it sends a forged GoAway that
carries another address in fields the contract does not have (inside the GoAway and beside it
in the frame). The client reconnects at once — to the URL it was given, and only there; a
listener at the forged address sees no connection.
"""

from __future__ import annotations

import pytest
import trio
import trio_websocket

import xypipe.client
from xypipe.client import Connected, Disconnected, MoveRequested
from xypipe.contracts import ClientFrame, GoAway, ServerFrame, Welcome


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def forged_go_away(elsewhere: str) -> bytes:
    inner = GoAway(retry_ms=0, reason="moved to " + elsewhere, close_in_ms=1000)
    go_away = inner.SerializeToString() + _field(15, elsewhere.encode())
    return _field(9, go_away) + _field(99, elsewhere.encode())


class Hostile:
    def __init__(self, elsewhere: str) -> None:
        self.elsewhere = elsewhere
        self.hellos: list[ClientFrame] = []
        self.changed = trio.Event()

    async def handle(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            hello = ClientFrame.FromString(await ws.get_message())
            self.hellos.append(hello)
            self.changed.set()
            await ws.send_message(ServerFrame(welcome=Welcome(
                session_id="s-1", protocol_version=1, heartbeat_ms=5000,
                principal="alice")).SerializeToString())
            if len(self.hellos) == 1:
                await ws.send_message(forged_go_away(self.elsewhere))
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed:
            pass


async def test_a_forged_go_away_cannot_redirect_the_client(nursery):
    elsewhere_accepts = []

    async def elsewhere(stream: trio.SocketStream) -> None:
        elsewhere_accepts.append(stream)
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, elsewhere, 0)
    evil_port = listeners[0].socket.getsockname()[1]
    hostile = Hostile(f"ws://127.0.0.1:{evil_port}/ws")
    server = await nursery.start(trio_websocket.serve_websocket, hostile.handle, "127.0.0.1", 0,
                                 None)
    url = f"ws://127.0.0.1:{server.port}/ws"
    seen = []
    async with xypipe.client.connect(url, token="t") as client:
        with trio.fail_after(10):
            async for u in client:
                seen.append(u)
                if isinstance(u, Connected) and u.reconnects:
                    break
    moves = [u for u in seen if isinstance(u, MoveRequested)]
    assert len(moves) == 1 and moves[0].retry_ms == 0
    # Reconnected at once (no backoff), to its own URL, resuming its session.
    assert [u.retry_in_s for u in seen if isinstance(u, Disconnected)] == [0.0]
    assert len(hostile.hellos) == 2 and hostile.hellos[1].hello.session_id == "s-1"
    assert elsewhere_accepts == []
    assert client.statistics().moves == 1


@pytest.fixture
async def nursery():
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()
