"""The connection core, fed bytes from a real wsproto client and plain time values: no socket,
no task, no clock. The gateway's real parts are wired by GatewayServer (without NATS)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from gw_support import FakeAggregator, JsonLogCapture, Keys
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from xypipe._degrade import Level
from xypipe._gateway._flags import FORCE_LEVEL, FlagValue
from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._server import GatewayServer
from xypipe._gateway._session import State
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER
from xypipe._gateway._wire_core import (
    ConnectionCore,
    ConnectionPorts,
    MessageAssembler,
    Refusal,
    TextIn,
    TooLarge,
    Whole,
)
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe.contracts import ClientFrame, ErrorCode, GroupRef, Hello, ServerFrame, Subscribe

WALL = 1_900_000_000.0


class Wanted:
    """The snapshot look-ups the core asked for (the fetcher's port)."""

    def __init__(self) -> None:
        self.groups: list[str] = []

    def ensure_snapshot(self, group: str) -> None:
        self.groups.append(group)


def gateway(keys: Keys, **options: Any) -> GatewayServer:
    """A gateway without NATS, as the stage builds it (nothing here opens a socket)."""
    opts = GatewayOptions(public_key=str(keys.public_path), issuer=DEV_ISSUER,
                          audience=DEV_AUDIENCE, **options)
    return GatewayServer(opts, Metrics(), get_logger("gateway"), wall=lambda: WALL)


def sample(srv: GatewayServer, name: str, **labels: str) -> float | None:
    return srv.decoder.registry.get_sample_value(name, labels)


class Wire:
    """A browser's WebSocket (real wsproto, client side) wired to a core."""

    def __init__(self, ports: ConnectionPorts) -> None:
        self.core = ConnectionCore(ports, 1, "10.0.0.7:50000")
        self.client = WSConnection(ConnectionType.CLIENT)
        self.now = 0.0

    def events(self, data: bytes) -> list[Event]:
        self.client.receive_data(data)
        return list(self.client.events())

    def upgrade(self, target: str = "/ws", origin: str | None = "https://app.example"
                ) -> tuple[Refusal | None, list[Event]]:
        """The handshake; the client's answer events (or the refusal)."""
        req = self.core.handshake_data(self.client.send(Request(host="gw", target=target)))
        assert req is not None
        refusal = self.core.admit(req, origin)
        if refusal is not None:
            return refusal, self.events(self.core.reject(refusal))
        return None, self.events(self.core.accept())

    def open(self) -> None:
        refusal, answer = self.upgrade()
        assert refusal is None and isinstance(answer[0], AcceptConnection)
        self.core.start(self.now)

    def send(self, data: bytes, *, fragments: int = 1) -> bool:
        step = max(1, -(-len(data) // fragments))
        out = b""
        for i in range(0, len(data), step):
            last = i + step >= len(data)
            out += self.client.send(BytesMessage(data=data[i:i + step], message_finished=last))
        return self.core.receive_data(out, self.now, WALL)

    def frame(self, **kw: object) -> bool:
        return self.send(ClientFrame(**kw).SerializeToString())  # type: ignore[arg-type]

    def written(self) -> list[ServerFrame]:
        """Every data message the core has for the client now, decoded."""
        out = self.core.next_write(self.now, WALL)
        if out is None:
            return []
        return [ServerFrame.FromString(bytes(e.data)) for e in self.events(out.data)
                if isinstance(e, BytesMessage)]

    def hello(self, keys: Keys) -> ServerFrame:
        self.frame(hello=Hello(token=keys.token("ann", now=WALL)))
        frames = self.written()
        assert frames and frames[0].HasField("welcome"), frames
        return frames[0]


@pytest.fixture
def srv(keys: Keys) -> GatewayServer:
    return gateway(keys, allowed_origins=["https://app.example"])


# --------------------------------------------------------------------------- handshake


def test_an_upgrade_to_the_endpoint_from_an_allowed_origin_is_accepted_and_counted(
    srv: GatewayServer,
) -> None:
    w = Wire(srv.ports)
    w.open()
    assert w.core.session is not None and w.core.session.state == State.AUTH
    assert sample(srv, "ws_connections_total", outcome="accepted") == 1


@pytest.mark.parametrize(("target", "origin", "status", "outcome", "says"), [
    ("/elsewhere", "https://app.example", 404, "path", "no WebSocket endpoint at /elsewhere"),
    ("/ws", "https://evil.example", 403, "origin_denied", "'https://evil.example' is not"),
    ("/ws", None, 403, "origin_denied", "origin None is not allowed"),
])
def test_a_refused_upgrade_gets_an_http_error_that_says_why(
    srv: GatewayServer, target: str, origin: str | None, status: int, outcome: str, says: str,
) -> None:
    refusal, answer = Wire(srv.ports).upgrade(target, origin)
    assert refusal is not None and refusal.status == status and refusal.outcome == outcome
    assert isinstance(answer[0], RejectConnection) and answer[0].status_code == status
    body = b"".join(e.data for e in answer if isinstance(e, RejectData))
    assert says in body.decode()
    assert sample(srv, "ws_connections_total", outcome=outcome) == 1


def test_a_refused_origin_is_audited(srv: GatewayServer, json_logs: JsonLogCapture) -> None:
    Wire(srv.ports).upgrade(origin="https://evil.example")
    [line] = json_logs.find(audit=True, action="connect")
    assert line["code"] == "XY-WS-002" and line["outcome"] == "denied"
    assert line["origin"] == "https://evil.example" and line["peer"] == "10.0.0.7:50000"


def test_a_gateway_at_its_connection_limit_refuses_with_503(srv: GatewayServer) -> None:
    ports = attrs.evolve(srv.ports, at_capacity=lambda: True)
    refusal, _ = Wire(ports).upgrade()
    assert refusal is not None and (refusal.status, refusal.outcome) == (503, "capacity")


# --------------------------------------------------------------------------- reassembly


def test_fragments_make_one_message_and_an_oversized_one_is_never_held_whole() -> None:
    m = MessageAssembler(limit=10)
    assert m.feed(BytesMessage(data=b"12345", message_finished=False)) is None
    assert m.feed(BytesMessage(data=b"678", message_finished=True)) == Whole(b"12345678")
    for _ in range(99):
        assert m.feed(BytesMessage(data=b"x" * 10, message_finished=False)) is None
        assert len(m._buf) <= 10
    assert m.feed(BytesMessage(data=b"x" * 10, message_finished=True)) == TooLarge(1000)
    # The next message starts clean.
    assert m.feed(BytesMessage(data=b"ok", message_finished=True)) == Whole(b"ok")
    assert m.feed(TextMessage(data="hi", message_finished=True)) == TextIn()


def test_a_hello_split_over_fragments_opens_the_session(srv: GatewayServer, keys: Keys) -> None:
    w = Wire(srv.ports)
    w.open()
    hello = ClientFrame(hello=Hello(token=keys.token("ann", now=WALL))).SerializeToString()
    assert w.send(hello, fragments=5)
    assert w.core.session is not None and w.core.session.state == State.SUBSCRIBED
    [welcome] = w.written()
    assert welcome.welcome.principal == "ann"


def test_a_message_over_the_limit_is_answered_frame_too_large_and_the_session_stays(
    keys: Keys,
) -> None:
    srv = gateway(keys, allowed_origins=["*"], max_frame_bytes=1024)
    w = Wire(srv.ports)
    w.open()
    w.hello(keys)
    assert w.send(b"\x00" * 5000, fragments=10)
    [err] = w.written()
    assert err.error.code == ErrorCode.ERROR_CODE_FRAME_TOO_LARGE and not err.error.fatal
    assert "5000 bytes exceeds the limit of 1024" in err.error.message
    assert w.core.closing is None
    assert sample(srv, "ws_protocol_errors_total",
                  code="ERROR_CODE_FRAME_TOO_LARGE") == 1


def test_a_text_message_before_hello_closes_with_the_protocol_close_code(
    srv: GatewayServer,
) -> None:
    w = Wire(srv.ports)
    closing: list[bool] = []
    w.core.on_closing = lambda: closing.append(True)
    w.open()
    data = w.client.send(TextMessage(data='{"hello": {}}'))
    assert w.core.receive_data(data, 0.1, WALL)
    assert closing == [True]
    bad_frame = 4000 + ErrorCode.ERROR_CODE_BAD_FRAME
    assert w.core.closing is not None and w.core.closing.code == bad_frame
    events = w.events(w.core.close_frames())
    err = ServerFrame.FromString(
        bytes(next(e for e in events if isinstance(e, BytesMessage)).data))
    assert err.error.fatal and "text frame" in err.error.message
    close = next(e for e in events if isinstance(e, CloseConnection))
    assert close.code == bad_frame


# --------------------------------------------------------------------------- the peer


def test_a_ping_is_answered_with_a_pong_ahead_of_data(srv: GatewayServer, keys: Keys) -> None:
    w = Wire(srv.ports)
    w.open()
    w.hello(keys)
    assert w.core.receive_data(w.client.send(Ping(payload=b"hb")), 1.0, WALL)
    out = w.core.next_write(1.0, WALL)
    assert out is not None
    [pong] = w.events(out.data)
    assert isinstance(pong, Pong) and pong.payload == b"hb"


def test_a_peer_close_is_answered_and_reading_stops(srv: GatewayServer, keys: Keys) -> None:
    w = Wire(srv.ports)
    w.open()
    w.hello(keys)
    assert not w.core.receive_data(w.client.send(CloseConnection(code=1000)), 1.0, WALL)
    assert w.core.peer_closed
    assert w.core.closing is not None and w.core.closing.code == 0
    [answer] = w.events(w.core.close_frames())
    assert isinstance(answer, CloseConnection) and answer.code == 1000


def test_bytes_that_are_not_websocket_framing_end_the_connection_with_1002(
    srv: GatewayServer, json_logs: JsonLogCapture,
) -> None:
    w = Wire(srv.ports)
    w.open()
    # A client frame must be masked; an unmasked one is a framing error (RFC 6455 5.1).
    assert not w.core.receive_data(b"\x82\x02hi", 0.1, WALL)
    assert w.core.closing is not None and w.core.closing.reason == "peer sent close 1002"
    assert w.core.close_frames() == b""  # wsproto ended it: nothing left to say
    [line] = json_logs.find(msg="connection ended by peer")
    assert line["conn"] == 1 and line["peer"] == "10.0.0.7:50000"


def test_the_socket_ending_ends_the_connection(srv: GatewayServer) -> None:
    w = Wire(srv.ports)
    w.open()
    assert not w.core.receive_data(b"", 0.1, WALL)
    assert w.core.closing is not None and w.core.closing.reason == "peer closed the socket"
    w.core.finished()
    assert w.core.session is not None and w.core.session.state == State.CLOSED


# --------------------------------------------------------------------------- effects


def test_a_subscription_reaches_the_hub_and_asks_for_the_stored_snapshot(
    srv: GatewayServer, keys: Keys,
) -> None:
    wanted = Wanted()
    w = Wire(attrs.evolve(srv.ports, snapshots=wanted))
    w.open()
    w.hello(keys)
    w.frame(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
    assert w.core.outbox in srv.hub.subscribers["fx"]
    assert wanted.groups == ["fx"]
    [subscribed] = w.written()
    assert subscribed.HasField("subscribed")
    # The snapshot arrives from the aggregator: the next write carries it, counted.
    agg = FakeAggregator(None, ["fx"])
    srv.hub.on_snapshot("xy.md.snapshot.fx", agg.snapshot("fx").SerializeToString(), 1.0)
    out = w.core.next_write(1.0, WALL)
    assert out is not None and out.built is not None and out.built.snapshots == 1
    w.core.sending(len(out.data), 1.0)
    assert w.core.outbox.inflight_bytes == len(out.data)
    w.core.send_ended()
    w.core.sent(len(out.data), 1.0)
    w.core.delivered(out.built, WALL)
    assert w.core.outbox.inflight_bytes == 0 and w.core.outbox.frames == 1
    assert sample(srv, "ws_bytes_sent_total") == len(out.data)


async def test_a_forced_level_flag_moves_the_connection_and_its_gauges(
    srv: GatewayServer, keys: Keys, json_logs: JsonLogCapture,
) -> None:
    w = Wire(srv.ports)
    w.open()
    w.hello(keys)
    srv.levels.move(None, Level.L0)  # the server counts a connection in when it opens
    srv.flags.apply(FlagValue(FORCE_LEVEL, 2, "ops", 1, 1))
    w.core.refresh_flags(1.0)
    assert w.core.session is not None and w.core.session.level == Level.L2
    assert w.core.outbox.level == Level.L2
    assert w.core.hold_s() == srv.options.level_interval_ms[2] / 1000
    assert sample(srv, "ws_connections_by_level", level="L2") == 1
    assert sample(srv, "slow_consumers") == 1
    [degrade] = w.written()
    assert degrade.degrade.level == 2
    [raised] = json_logs.find(code="XY-WS-010")
    assert raised["new_level"] == 2 and raised["principal"] == "ann"


async def test_flags_changed_before_the_hello_apply_once_the_session_opens(
    srv: GatewayServer, keys: Keys,
) -> None:
    srv.flags.apply(FlagValue(FORCE_LEVEL, 1, "ops", 1, 1))
    w = Wire(srv.ports)
    w.open()
    w.hello(keys)
    assert w.core.session is not None and w.core.session.level == Level.L1


# --------------------------------------------------------------------------- writing


def test_a_quiet_connection_gets_a_heartbeat_when_one_is_due_and_nothing_before(
    srv: GatewayServer, keys: Keys,
) -> None:
    w = Wire(srv.ports)
    w.open()
    w.hello(keys)
    w.core.sent(10, 0.1)
    hb = srv.options.heartbeat_ms / 1000
    assert w.core.heartbeat_at() == pytest.approx(0.1 + hb)
    assert not w.core.due()
    assert w.core.next_write(0.1 + hb / 2, WALL) is None
    w.now = 0.1 + hb
    [beat] = w.written()
    assert beat.ts_send_us == int(WALL * 1e6) and not beat.ListFields()[1:]


def test_a_gateway_close_sends_pending_control_frames_then_the_close_frame(
    srv: GatewayServer, keys: Keys,
) -> None:
    w = Wire(srv.ports)
    w.open()
    w.hello(keys)
    w.core.close(1001, "gateway shutting down", 1.0)
    assert w.core.due() and w.core.closing is not None and w.core.closing.code == 1001
    events = w.events(w.core.close_frames())
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1001
    assert events[-1].reason == "gateway shutting down"
    assert sample(srv, "ws_closes_total", code="1001") == 1
