"""bench/fanout.py's default load generator: N WebSocket connections in one process, as lean as
a Python client gets.

Framing is picows' (Cython: a received frame reaches Python as one callback with its payload
still in picows' buffer) on uvloop's event loop (libuv, in C): no task per connection, no copy of
a frame that is only counted. Every ``SAMPLE_EVERY``-th frame of each connection is read for its
deltas' emit stamps through :func:`stamp_class`, a message type that declares only the fields the
latency needs, so the protobuf runtime skips the symbols instead of building them. The result:
a few µs of CPU per frame (the kernel's read is most of it), well under the gateway's cost. It
runs on asyncio because picows does; it is a separate process and nothing else in the project
uses that loop.

The protocol is the browser's (``docs/protocol.md``): hello with the token, subscribe to the
groups, a ``ClientFrame{ping}`` every 2 s, each connection at its own phase (a thousand pings
in one instant cost the gateway ~130 ms of its loop — p99 142 ms at 1,000 clients against 17 ms
with the pings spread; no fleet of independent browsers pings in step); a connection counts
as up once its welcome arrived, and a fatal error before that stops the run with what the
gateway said.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SAMPLE_EVERY = 10
PING_EVERY_S = 2.0
#: The ping period is cut into this many slots; each connection pings in its own one.
PING_SLOTS = 50
CONNECTING_AT_ONCE = 50


def stamp_class(frame_descriptor: Any) -> Any:
    """A message type reading a ServerFrame's delta emit stamps and degrade level only.

    Field numbers and types are taken from the real ``ServerFrame`` descriptor, so the stamp
    cannot drift from the contract."""
    deltas = frame_descriptor.fields_by_name["deltas"]
    degrade = frame_descriptor.fields_by_name["degrade"]
    ts = deltas.message_type.fields_by_name["ts_emit_us"]
    syms = deltas.message_type.fields_by_name["symbols"]
    arrival = syms.message_type.fields_by_name["ts_arrival_us"]
    level = degrade.message_type.fields_by_name["level"]
    fd = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="xybench_stamp.proto", package="xybench",
                                           syntax="proto3")
    # A symbol's arrival stamp: the end-to-end latency (the oldest tick in a frame -> the client)
    # starts there; the raw ticks' peer reads the same field number of a Tick.
    f.message_type.add(name="SymbolStamp").field.add(
        name="ts_arrival_us", number=arrival.number, type=arrival.type, label=fd.LABEL_OPTIONAL)
    d = f.message_type.add(name="DeltaStamp")
    d.field.add(name="ts_emit_us", number=ts.number, type=ts.type, label=fd.LABEL_OPTIONAL)
    d.field.add(name="symbols", number=syms.number, type=fd.TYPE_MESSAGE,
                label=fd.LABEL_REPEATED, type_name=".xybench.SymbolStamp")
    f.message_type.add(name="DegradeStamp").field.add(
        name="level", number=level.number, type=level.type, label=fd.LABEL_OPTIONAL)
    m = f.message_type.add(name="FrameStamp")
    m.field.add(name="deltas", number=deltas.number, type=fd.TYPE_MESSAGE,
                label=fd.LABEL_REPEATED, type_name=".xybench.DeltaStamp")
    m.field.add(name="degrade", number=degrade.number, type=fd.TYPE_MESSAGE,
                label=fd.LABEL_OPTIONAL, type_name=".xybench.DegradeStamp")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("xybench.FrameStamp"))


class Recorder:
    """Every connection's counters together: frames and bytes always, latency, deltas and
    degrade levels of the sampled frames; all only while ``measuring``."""

    def __init__(self, stamp: Any) -> None:
        self.stamp = stamp
        self.measuring = False
        self.frames = 0
        self.bytes = 0
        self.sampled = 0
        self.deltas_sampled = 0
        self.lat: list[float] = []
        self.levels: list[int] = []
        self.lost: list[str] = []
        #: (receive time s, ms since the frame's oldest tick arrived): the end-to-end latency.
        self.e2e: list[tuple[float, float]] = []

    def arrival(self, now_us: float, first_arrival_us: int) -> None:
        if first_arrival_us > 0:
            self.e2e.append((now_us / 1e6, (now_us - first_arrival_us) / 1000))

    def frame(self, payload: bytes | memoryview, n: int) -> None:
        if not self.measuring:
            return
        self.frames += 1
        self.bytes += len(payload)
        if n % SAMPLE_EVERY:
            return
        now_us = time.time() * 1e6
        s = self.stamp.FromString(payload)
        self.sampled += 1
        self.deltas_sampled += len(s.deltas)
        if s.deltas:
            self.lat.append((now_us - min(d.ts_emit_us for d in s.deltas)) / 1000)
            self.arrival(now_us, min((y.ts_arrival_us for d in s.deltas for y in d.symbols
                                      if y.ts_arrival_us), default=0))
        if s.HasField("degrade"):
            self.levels.append(s.degrade.level)


class NatsRecorder(Recorder):
    """The peer's counters: NATS over WebSocket delivers each delta as its own ``MSG`` (several
    per WebSocket frame), so deltas are counted per ``MSG`` and latency is sampled on the first
    message of every ``SAMPLE_EVERY``-th frame."""

    def __init__(self, stamp: Any, raw: bool = False) -> None:
        super().__init__(stamp)
        self.delta_stamp = message_factory.GetMessageClass(
            stamp.DESCRIPTOR.fields_by_name["deltas"].message_type)
        self.tick_stamp = message_factory.GetMessageClass(
            self.delta_stamp.DESCRIPTOR.fields_by_name["symbols"].message_type)
        self.raw = raw
        self.deltas = 0

    def frame(self, payload: bytes | memoryview, n: int) -> None:
        if not self.measuring:
            return
        data = bytes(payload)
        self.frames += 1
        self.bytes += len(data)
        self.deltas += data.count(b"MSG ")
        if n % SAMPLE_EVERY or not data.startswith(b"MSG "):
            return
        # MSG <subject> <sid> <size>\r\n<payload>\r\n
        eol = data.find(b"\r\n")
        size = int(data[:eol].rsplit(b" ", 1)[1])
        body = data[eol + 2:eol + 2 + size]
        if len(body) < size:
            return  # the message continues in the next frame
        now_us = time.time() * 1e6
        self.sampled += 1
        self.deltas_sampled += 1
        if self.raw:  # a Tick: its ts_arrival_us is the publisher's send stamp
            self.arrival(now_us, self.tick_stamp.FromString(body).ts_arrival_us)
            return
        delta = self.delta_stamp.FromString(body)
        self.lat.append((now_us - delta.ts_emit_us) / 1000)
        self.arrival(now_us, min((y.ts_arrival_us for y in delta.symbols if y.ts_arrival_us),
                                 default=0))


def _pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def _stdin_line() -> None:
    """Wait for a line on stdin (bench/scale.py starts several generators' windows at once)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()


async def _run(port: int, token: str, clients: int, seconds: float, warmup: float,
               groups: list[str], peer: str, gated: bool = False,
               samples: bool = False) -> dict[str, Any]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    from xypipe.contracts import ClientFrame, GroupRef, Hello, Ping, ServerFrame, Subscribe

    stamp = stamp_class(ServerFrame.DESCRIPTOR)
    # nats-ws-raw: the raw source ticks (xy.src.tick.>) instead of the conflated deltas.
    raw = peer == "nats-ws-raw"
    subjects = ["xy.src.tick.>"] if raw else [f"xy.md.tick.{g}" for g in groups]
    if raw:
        peer = "nats-ws"
    rec = NatsRecorder(stamp, raw) if peer == "nats-ws" else Recorder(stamp)
    if peer == "nats-ws":
        # The NATS client protocol (as nats-server's WebSocket listener speaks it): one
        # subscription per group's delta subject, and a PING whose PONG says all are in place.
        hello = (b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"name":"bench"}\r\n'
                 + b"".join(f"SUB {subject} {i}\r\n".encode()
                            for i, subject in enumerate(subjects, 1)) + b"PING\r\n")
        sub = ping = b""
    else:
        hello = ClientFrame(id=1, hello=Hello(token=token, protocol_version=1,
                                              client="bench-picows")).SerializeToString()
        sub = ClientFrame(id=2, subscribe=Subscribe(
            groups=[GroupRef(group=g) for g in groups])).SerializeToString()
        ping = ClientFrame(ping=Ping(nonce=1)).SerializeToString()
    loop = asyncio.get_running_loop()

    class Conn(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.n = 0
            self.welcome: asyncio.Future[None] = loop.create_future()
            self.parts: list[bytes] = []

        def on_ws_connected(self, t: WSTransport) -> None:
            t.send(WSMsgType.BINARY, hello)
            if sub:
                t.send(WSMsgType.BINARY, sub)

        def on_ws_frame(self, t: WSTransport, f: WSFrame) -> None:
            if f.msg_type not in (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION):
                if f.msg_type == WSMsgType.CLOSE:
                    self._gone(f"close {f.get_close_code()} {f.get_close_message()!r}")
                return  # pings are answered by picows (enable_auto_pong)
            if not f.fin or self.parts:  # a fragmented message: reassemble it
                self.parts.append(f.get_payload_as_bytes())
                if not f.fin:
                    return
                payload: bytes | memoryview = b"".join(self.parts)
                self.parts.clear()
            else:
                payload = f.get_payload_as_memoryview()
            self.n += 1
            if not self.welcome.done():
                self._handshake(payload)
            elif peer == "nats-ws" and bytes(payload[:4]) == b"PING":
                t.send(WSMsgType.BINARY, b"PONG\r\n")  # the server's keepalive
            rec.frame(payload, self.n)

        def _handshake(self, payload: bytes | memoryview) -> None:
            if peer == "nats-ws":
                text = bytes(payload)
                if b"-ERR" in text:
                    self.welcome.set_exception(RuntimeError(
                        f"nats-server refused the connection: {text[:200]!r}"))
                elif b"PONG" in text:
                    self.welcome.set_result(None)
                return
            msg = ServerFrame.FromString(payload)
            if msg.HasField("error"):
                self.welcome.set_exception(RuntimeError(
                    f"gateway refused the connection: {msg.error.code} {msg.error.message}"))
            elif msg.HasField("welcome"):
                self.welcome.set_result(None)

        def on_ws_disconnected(self, t: WSTransport) -> None:
            self._gone("disconnected")

        def _gone(self, why: str) -> None:
            if not self.welcome.done():
                self.welcome.set_exception(RuntimeError(f"connection ended before the welcome: "
                                                        f"{why}"))
            elif rec.measuring:
                rec.lost.append(why)

    limiter = asyncio.Semaphore(CONNECTING_AT_ONCE)  # a burst of SYNs overflows the backlog

    async def one() -> WSTransport:
        async with limiter:
            path = "" if peer == "nats-ws" else "/ws"
            t, conn = await ws_connect(Conn, f"ws://127.0.0.1:{port}{path}",
                                       enable_auto_pong=True,
                                       # a saturated server answers late; that is measured,
                                       # not a reason to give up
                                       websocket_handshake_timeout=120)
            await conn.welcome
            return t

    transports = await asyncio.gather(*(one() for _ in range(clients)))
    if gated:
        # Every connection is up: say so, and start the warm-up when told (the orchestrator
        # tells all its generators at once, so their windows coincide).
        print("CONNECTED", flush=True)
        await _stdin_line()

    async def pinger() -> None:
        # Each connection pings every PING_EVERY_S at its own phase, as independent browsers
        # do: a thousand pings in one instant would measure a burst no real fleet sends.
        slots = PING_SLOTS
        while ping:
            for slot in range(slots):
                await asyncio.sleep(PING_EVERY_S / slots)
                for t in transports[slot::slots]:
                    t.send(WSMsgType.BINARY, ping)

    pings = asyncio.create_task(pinger())
    await asyncio.sleep(warmup)  # snapshots delivered, levels settled at L0
    print("READY", flush=True)
    t0, cpu0 = time.monotonic(), time.process_time()
    rec.measuring = True
    await asyncio.sleep(seconds)
    rec.measuring = False
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    pings.cancel()
    lat = sorted(rec.lat)
    levels: list[int] = []
    for lvl in rec.levels:
        if not levels or levels[-1] != lvl:
            levels.append(lvl)
    result = {
        "client_kind": "picows", "server": "nats-ws-raw" if raw else peer, "clients": clients,
        "seconds": elapsed,
        "deltas": rec.deltas if isinstance(rec, NatsRecorder) else None,
        "client_cpu_pct": 100 * cpu / elapsed, "frames": rec.frames, "bytes": rec.bytes,
        "frames_per_s": rec.frames / elapsed, "mbytes_per_s": rec.bytes / elapsed / 1e6,
        "deltas_per_frame": (rec.deltas / max(1, rec.frames) if isinstance(rec, NatsRecorder)
                             else rec.deltas_sampled / max(1, rec.sampled)),
        "lat_p50_ms": _pct(lat, 0.50), "lat_p99_ms": _pct(lat, 0.99), "lat_samples": len(lat),
        "levels_seen": levels, "slow_levels": [], "slow_frames": 0,
        "connections_lost": len(rec.lost), "first_lost": rec.lost[:1],
        "e2e_ms": [[round(t, 4), round(ms, 3)] for t, ms in rec.e2e],
    }
    if samples:  # to merge several generators' percentiles exactly
        result["lat_ms"] = [round(x, 3) for x in lat]
    # Printed before the connections close: the orchestrator reads this process's CPU when the
    # line arrives, and closing a thousand connections is not part of the window.
    print("RESULT " + json.dumps(result), flush=True)
    for t in transports:
        t.disconnect()
    return result


def run(port: int, token: str, clients: int, seconds: float, warmup: float,
        groups: list[str], peer: str = "gateway", *, gated: bool = False,
        samples: bool = False) -> dict[str, Any]:
    """One window (see the module's docstring). ``gated``: print ``CONNECTED`` once every
    connection is up and wait for a line on stdin before the warm-up; ``samples``: the result
    carries every latency sample (``lat_ms``)."""
    try:
        import picows  # noqa: F401
        import uvloop
    except ImportError as e:
        raise SystemExit(f"fanout: the picows client needs picows and uvloop ({e}); install "
                         "the dev extra (pip install -e '.[dev]') or pip install picows==2.3.1 "
                         "uvloop==0.23.0") from e

    return uvloop.run(_run(port, token, clients, seconds, warmup, groups, peer, gated,
                           samples))
