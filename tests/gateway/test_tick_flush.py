"""The tick's flush, sans-I/O: the gateway's real parts (no NATS), connection cores fed by real
wsproto clients, and sockets that take what a test lets them (no socket, no task).

After a batch of the aggregator's messages each due connection whose writer is parked at plain
L0 gets its frame written straight to its socket; one whose socket is full keeps the rest for
its writer, which finishes it before anything else; L1+, TLS, control frames and the close go
to the writer; a busy writer is left alone. Every delivered stream stays whole and in order.
"""

from __future__ import annotations

import pytest
import trio
from gw_support import FakeAggregator, Keys
from test_wire_core import WALL, Wire, gateway, sample
from wsproto.events import BytesMessage

from xypipe._degrade import Level
from xypipe._gateway._server import GatewayServer
from xypipe._gateway._session import State
from xypipe._gateway._wire_core import ConnectionCore
from xypipe._nats import Msg
from xypipe.contracts import GroupRef, ServerFrame, Subscribe

GROUPS = ["g0", "g1", "g2"]


class Socket:
    """A non-blocking socket's send: takes up to ``room`` bytes (None: all), else would block;
    ``broken`` raises as a reset peer does."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.broken = False
        self.data = bytearray()

    def send(self, data: bytes) -> int:
        if self.broken:
            raise ConnectionResetError(104, "Connection reset by peer")
        n = len(data) if self.room is None else min(self.room, len(data))
        if n == 0:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        if self.room is not None:
            self.room -= n
        self.data += data[:n]
        return n


class Browser(Wire):
    """One connection as the shell runs it: core, socket, a parked writer that counts wakes."""

    def __init__(self, srv: GatewayServer, conn_id: int, keys: Keys,
                 socket: Socket | None) -> None:
        super().__init__(srv.ports)
        self.core = ConnectionCore(srv.ports, conn_id, f"10.0.0.{conn_id}:5000")
        self.open()
        self.hello(keys)
        self.frame(subscribe=Subscribe(groups=[GroupRef(group=g) for g in GROUPS]))
        assert self.written()  # Subscribed
        self.socket = socket
        self.core.send_now = socket.send if socket is not None else None
        self.wakes = 0
        self.core.outbox.wake = self._woken
        self.park()
        srv.targets[conn_id] = self.core

    def _woken(self) -> None:
        self.wakes += 1
        self.core.idle = False

    def park(self) -> None:
        """The writer found nothing due and waits (as :meth:`Connection._writer` does)."""
        assert not self.core.due()
        self.core.idle = True

    def writer_round(self) -> bytes:
        """The writer's next write, if anything is due (sent whole, as ``send_all`` does)."""
        out = self.core.next_write(self.now, WALL)
        if out is None:
            return b""
        self.core.sending(len(out.data), self.now)
        self.core.send_ended()
        self.core.sent(len(out.data), self.now)
        if out.built is not None:
            self.core.delivered(out.built, WALL)
        return out.data

    def received(self, data: bytes) -> list[ServerFrame]:
        return [ServerFrame.FromString(bytes(e.data)) for e in self.events(data)
                if isinstance(e, BytesMessage)]


class Stream:
    """What one browser was sent, checked the way the client checks it."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.frames = 0

    def take(self, frames: list[ServerFrame]) -> None:
        for f in frames:
            self.frames += 1
            for s in f.snapshots:
                self.last[s.group] = s.shard_seq[0]
            for d in f.deltas:
                first = d.first_seq or d.seq
                assert d.group in self.last, f"delta {d.group} #{d.seq} before its snapshot"
                assert first == self.last[d.group] + 1, (d.group, first, self.last[d.group])
                self.last[d.group] = d.seq


@pytest.fixture
def srv(keys: Keys) -> GatewayServer:
    return gateway(keys, allowed_origins=["https://app.example"])


@pytest.fixture
def agg() -> FakeAggregator:
    return FakeAggregator(None, GROUPS)


def tick(srv: GatewayServer, agg: FakeAggregator, *, snapshots: bool = False) -> None:
    """One batch from the aggregator: a delta per group (or a snapshot per group)."""
    if snapshots:
        batch = [Msg(f"xy.md.snapshot.{g}", agg.snapshot(g).SerializeToString()) for g in GROUPS]
    else:
        batch = [Msg(f"xy.md.tick.{g}", agg.delta_bytes(g)) for g in GROUPS]
    srv.ingest(batch)


def started(srv: GatewayServer, agg: FakeAggregator, browsers: list[Browser]) -> list[Stream]:
    """Snapshots reach every browser (straight to the socket), then they are live."""
    tick(srv, agg, snapshots=True)
    streams = []
    for b in browsers:
        s = Stream()
        assert b.socket is not None
        s.take(b.received(bytes(b.socket.data)))
        b.socket.data.clear()
        assert set(s.last) == set(GROUPS)
        streams.append(s)
    return streams


async def test_a_tick_writes_one_frame_per_due_connection_straight_to_its_socket(
    srv: GatewayServer, keys: Keys, agg: FakeAggregator, autojump_clock: trio.abc.Clock,
) -> None:
    browsers = [Browser(srv, i, keys, Socket()) for i in (1, 2, 3)]
    streams = started(srv, agg, browsers)
    frames0 = sample(srv, "ws_frames_sent_total") or 0
    e2e0 = sample(srv, "e2e_latency_seconds_count", point="gateway_send") or 0
    tick(srv, agg)
    sent = [bytes(b.socket.data) for b in browsers if b.socket is not None]
    assert sent[0] == sent[1] == sent[2]  # one frame, built once, the same bytes everywhere
    for b, s in zip(browsers, streams, strict=True):
        [frame] = b.received(sent[0])
        s.take([frame])
        assert len(frame.deltas) == len(GROUPS)
        assert b.wakes == 0 and b.core.idle  # no writer woke
        assert b.core.outbox.frames == 2 and b.core.last_send == trio.current_time()
    assert sample(srv, "ws_frames_sent_total") == frames0 + 3
    assert sample(srv, "ws_frames_direct_total") == 6
    assert sample(srv, "ws_bytes_sent_total") == sum(
        b.core.outbox.bytes_out for b in browsers)
    assert sample(srv, "xy_ws_messages_forwarded_total") == 3 * 2 * len(GROUPS)
    # One latency observation per distinct frame of the flush, not one per connection.
    assert sample(srv, "e2e_latency_seconds_count", point="gateway_send") == e2e0 + 1


async def test_a_full_socket_leaves_the_rest_to_the_writer_which_finishes_it_first(
    srv: GatewayServer, keys: Keys, agg: FakeAggregator, autojump_clock: trio.abc.Clock,
) -> None:
    slow_socket, fast_socket = Socket(), Socket()
    slow, fast = Browser(srv, 1, keys, slow_socket), Browser(srv, 2, keys, fast_socket)
    slow_stream, fast_stream = started(srv, agg, [slow, fast])
    slow_socket.room = 100  # its kernel buffer is nearly full
    tick(srv, agg)
    assert len(slow_socket.data) == 100
    tail = slow.core.pending
    assert tail and slow.core.outbox.inflight_bytes == len(tail)
    assert slow.wakes == 1 and not slow.core.idle and slow.core.due()
    assert sample(srv, "ws_flush_socket_full_total") == 1
    # The send queue counts the tail: the sampler sees the connection's pressure.
    p = srv.hub.pressure(slow.core.outbox, trio.current_time(), 1000, 1.0)
    assert p.value >= len(tail) / 1000
    # The next tick: the busy connection is left alone (its writer looks for itself).
    tick(srv, agg)
    assert len(slow_socket.data) == 100 and slow.wakes == 1
    fast_stream.take(fast.received(bytes(fast_socket.data)))
    assert fast_stream.frames == 3 and fast.wakes == 0
    # The writer: the tail alone first, then one frame with everything due since.
    written = bytes(slow_socket.data)
    first = slow.writer_round()
    assert first == tail and slow.core.outbox.inflight_bytes == 0
    written += first + slow.writer_round()
    frames = slow.received(written)
    slow_stream.take(frames)
    assert [len(f.deltas) for f in frames] == [len(GROUPS), len(GROUPS)]
    assert slow_stream.last == fast_stream.last
    assert slow.core.outbox.frames == 3  # snapshot frame, the split one, the writer's
    slow.park()
    slow_socket.data.clear()
    slow_socket.room = None
    tick(srv, agg)  # back on the direct path
    slow_stream.take(slow.received(bytes(slow_socket.data)))
    assert slow_stream.last == {g: agg.seq[g] for g in GROUPS}


async def test_a_socket_that_takes_nothing_falls_back_whole(
    srv: GatewayServer, keys: Keys, agg: FakeAggregator, autojump_clock: trio.abc.Clock,
) -> None:
    sock = Socket()
    b = Browser(srv, 1, keys, sock)
    [stream] = started(srv, agg, [b])
    sock.room = 0
    tick(srv, agg)
    assert not sock.data and b.wakes == 1
    stream.take(b.received(b.writer_round()))
    assert stream.frames == 2 and b.core.outbox.frames == 2


async def test_a_degraded_connection_is_never_written_directly_its_writer_holds_frames(
    srv: GatewayServer, keys: Keys, agg: FakeAggregator, autojump_clock: trio.abc.Clock,
) -> None:
    sock = Socket()
    b = Browser(srv, 1, keys, sock)
    [stream] = started(srv, agg, [b])
    session = b.core.session
    assert session is not None
    session.force_level(trio.current_time(), Level.L1)
    b.core.apply(trio.current_time())
    assert b.core.outbox.level is Level.L1
    b.received(b.writer_round())  # the DegradeChange frame
    b.park()
    for _ in range(3):
        tick(srv, agg)
    assert not sock.data  # nothing went past the writer
    assert b.wakes == 2  # once to tell the level, once for the first tick since it parked
    frames = b.received(b.writer_round())
    stream.take(frames)
    [frame] = frames
    assert len(frame.deltas) == len(GROUPS) and all(d.first_seq for d in frame.deltas)


@pytest.mark.parametrize("why", ["tls", "control", "closing", "before_hello"])
async def test_what_a_flush_may_not_write_goes_to_the_writer(
    srv: GatewayServer, keys: Keys, agg: FakeAggregator, why: str,
    autojump_clock: trio.abc.Clock,
) -> None:
    sock = Socket()
    b = Browser(srv, 1, keys, sock)
    started(srv, agg, [b])
    if why == "tls":
        b.core.send_now = None
    elif why == "control":
        b.core.outbox.control.append(b"\x8a\x00")  # a pong the reader queued
    elif why == "closing":
        b.core.close(1001, "gateway shutting down", trio.current_time())
        b.core.idle = True
    else:
        session = b.core.session
        assert session is not None
        session.state = State.AUTH
    b.wakes = 0
    tick(srv, agg)
    assert not sock.data and b.wakes == 1 and b.core.due()


async def test_a_busy_writer_is_left_alone_and_finds_the_frame_itself(
    srv: GatewayServer, keys: Keys, agg: FakeAggregator, autojump_clock: trio.abc.Clock,
) -> None:
    sock = Socket()
    b = Browser(srv, 1, keys, sock)
    [stream] = started(srv, agg, [b])
    b.core.idle = False  # its writer is sending, or holding at L1+
    tick(srv, agg)
    assert not sock.data and b.wakes == 0
    assert b.core.due()
    stream.take(b.received(b.writer_round()))
    assert stream.frames == 2


async def test_a_socket_that_broke_ends_the_connection(
    srv: GatewayServer, keys: Keys, agg: FakeAggregator, autojump_clock: trio.abc.Clock,
) -> None:
    sock = Socket()
    b = Browser(srv, 1, keys, sock)
    started(srv, agg, [b])
    sock.broken = True
    tick(srv, agg)
    assert b.core.closing is not None and b.core.closing.code == 0
    assert "socket broke" in b.core.closing.reason
    assert b.wakes == 1 and b.core.due()


async def test_a_connection_that_missed_ticks_gets_everything_from_its_own_cursors(
    srv: GatewayServer, keys: Keys, agg: FakeAggregator, autojump_clock: trio.abc.Clock,
) -> None:
    """Positions are shared between connections only where they stand at the same cursors."""
    a_sock, b_sock = Socket(), Socket()
    a, b = Browser(srv, 1, keys, a_sock), Browser(srv, 2, keys, b_sock)
    a_stream, b_stream = started(srv, agg, [a, b])
    b.core.idle = False  # b's writer is busy for two ticks
    tick(srv, agg)
    tick(srv, agg)
    b_stream.take(b.received(b.writer_round()))
    b.park()
    tick(srv, agg)
    a_stream.take(a.received(bytes(a_sock.data)))
    b_stream.take(b.received(bytes(b_sock.data)))
    assert a_stream.frames == 4 and b_stream.frames == 3
    assert a_stream.last == b_stream.last == {g: agg.seq[g] for g in GROUPS}
    # Both stand at the same cursors again: they share them.
    for g in GROUPS:
        assert a.core.outbox.subs[g].cursors is b.core.outbox.subs[g].cursors


def test_the_flush_skips_connections_it_does_not_know(srv: GatewayServer) -> None:
    from xypipe._gateway._hub import Outbox

    tally = srv.flusher.flush({Outbox(99)}, srv.targets, 0.0, WALL)
    assert (tally.frames, tally.woken, tally.partial) == (0, 0, 0)
