"""Shared helpers for the gateway tests: keys, tokens, a tiny aggregator, a browser-like client."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import xypipe
import xypipe.client
from xypipe._gateway._flagwatch import FlagBoard
from xypipe._gateway._server import GatewayServer
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER, mint
from xypipe._log import JsonFormatter
from xypipe._md.book import state_checksum
from xypipe._nats import NatsClient, connect
from xypipe._stages.flag_admin import FlagAdmin
from xypipe._stages.gateway import Gateway
from xypipe.client import Client as SdkClient
from xypipe.client import DeltaApplied, DeltaSkipped, SnapshotApplied, Update
from xypipe.contracts import (
    ClientFrame,
    Delta,
    Hello,
    PriceLevel,
    ServerFrame,
    Snapshot,
    SymbolState,
)

SNAPSHOT_STREAM = "XY_MD_SNAPSHOT"


# --------------------------------------------------------------------------- keys and tokens


def new_key(kind: str = "ed25519") -> Any:
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "es256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rs256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(kind)


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Keys:
    """A keypair whose public half is a file the gateway reads."""

    def __init__(self, tmp: Path, kind: str = "ed25519") -> None:
        self.private = new_key(kind)
        self.public_path = tmp / f"gateway-{kind}.pub.pem"
        self.public_path.write_bytes(public_pem(self.private))

    def token(self, subject: str = "alice", allow: Sequence[str] = ("xy.md.>",), *,
              ttl_s: float = 300, roles: Sequence[str] = (), now: float | None = None,
              **kw: Any) -> str:
        return mint(self.private, subject=subject, allow=allow,
                    now=time.time() if now is None else now, ttl_s=ttl_s, roles=roles, **kw)


# --------------------------------------------------------------------------- the gateway


def gateway_config(nats_url: str, keys: Keys, *, admin: bool = True,
                   **options: Any) -> xypipe.AppConfig:
    """A gateway on ``nats_url``; with ``admin``, beside it (on the same HTTP port, as one
    process on an open bus may) the ``flag_admin`` stage that serves /admin/feature-flags —
    in a deployment it runs in a process of its own with the admin role."""
    gw: dict[str, Any] = {
        "use": "gateway", "name": "gateway", "public_key": str(keys.public_path),
        "allowed_origins": ["*"], "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE,
        "snapshot_stream": SNAPSHOT_STREAM,
    }
    admin_options = {k: options[k] for k in ("nats_timeout_ms", "auth_throttle", "public_key",
                                             "keys_reload_ms") if k in options}
    gw.update(options)
    pipelines: dict[str, Any] = {"gateway": {"stages": [
        {"use": "nats_source", "name": "md", "subjects": ["xy.md.tick.>", "xy.md.snapshot.>"]},
        gw,
    ]}}
    if admin:
        pipelines["admin"] = {"stages": [{
            "use": "flag_admin", "name": "admin", "public_key": str(keys.public_path),
            "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE, **admin_options}]}
    return xypipe.parse_config({"nats": {"url": nats_url}, "http": {"port": 0},
                                "pipelines": pipelines}, "gateway-test.toml")


@asynccontextmanager
async def running_gateway(nats_url: str, keys: Keys, *, admin: bool = True, **options: Any
                          ) -> AsyncIterator[xypipe.Runner]:
    runner = xypipe.Runner(gateway_config(nats_url, keys, admin=admin, **options))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        with trio.fail_after(10):
            for pipeline in runner.pipelines:
                for s in pipeline.stages:
                    await s.ctx.wait_ready()
        yield runner
        runner.stop()


def server_of(runner: xypipe.Runner) -> GatewayServer:
    server = runner.stage("gateway", "gateway", Gateway).server
    assert server is not None, "the gateway stage has not started its server"
    return server


def level_reached(server: GatewayServer, level: int) -> trio.Event:
    """An event set the first time any connection of ``server`` moves to ``level``."""
    reached = trio.Event()
    move = server.levels.move

    def watch(old: Any, new: Any) -> None:
        move(old, new)
        if new == level:
            reached.set()

    server.levels.move = watch  # type: ignore[method-assign]
    return reached


def admin_board(runner: xypipe.Runner) -> FlagBoard:
    """The flag_admin stage's board (the writer's view of the flags)."""
    board = runner.stage("admin", "admin", FlagAdmin).flags
    assert board is not None, "the flag_admin stage has not started"
    return board


# --------------------------------------------------------------------------- a tiny aggregator


class FakeAggregator:
    """Publishes valid deltas and snapshots for some groups, the way the aggregator does."""

    def __init__(self, nc: Any, groups: Sequence[str], *, symbols: int = 3, epoch: int = 7,
                 depth: int = 5) -> None:
        self.nc = nc
        self.groups = list(groups)
        self.epoch = epoch
        self.depth = depth
        self.seq = {g: 0 for g in groups}
        self.version = {g: 0 for g in groups}
        self.state: dict[str, dict[str, SymbolState]] = {
            g: {f"S{i}": SymbolState(venue="XTST", symbol=f"{g}-S{i}", last=1000 + i)
                for i in range(symbols)} for g in groups
        }
        for states in self.state.values():
            for s in states.values():
                s.checksum = state_checksum(s)

    async def setup(self) -> None:
        await self.nc.jetstream().ensure_stream(
            SNAPSHOT_STREAM, ["xy.md.snapshot.>"], max_msgs_per_subject=1, storage="file")

    def _step(self, group: str) -> Delta:
        self.seq[group] += 1
        seq = self.seq[group]
        now_us = int(time.time() * 1e6)
        changed = []
        for i, s in enumerate(self.state[group].values()):
            if (seq + i) % 2 == 0 and i:
                continue
            s.last += 1
            s.vol += 10
            s.seq = seq
            s.ts_arrival_us = now_us
            del s.bids[:]
            del s.asks[:]
            s.bids.extend(PriceLevel(price=s.last - k - 1, size=10 + k) for k in range(self.depth))
            s.asks.extend(PriceLevel(price=s.last + k + 1, size=10 + k) for k in range(self.depth))
            s.window_trades = 1
            s.window_volume = 10
            s.window_high = s.last
            s.window_low = s.last
            s.window_ticks = 1
            s.checksum = state_checksum(s)  # the canonical checksum clients verify
            c = SymbolState()
            c.CopyFrom(s)
            changed.append(c)
        return Delta(group=group, shard=0, seq=seq, epoch=self.epoch, ts_emit_us=now_us,
                     symbols=changed, window_ms=33)

    def delta_bytes(self, group: str) -> bytes:
        return self._step(group).SerializeToString()

    async def publish_deltas(self, n: int = 1, groups: Sequence[str] | None = None) -> None:
        for _ in range(n):
            for g in groups or self.groups:
                self.nc.publish_nowait(f"xy.md.tick.{g}", self.delta_bytes(g))
        await self.nc.flush()

    def snapshot(self, group: str) -> Snapshot:
        self.version[group] += 1
        return Snapshot(
            group=group, version=self.version[group], epoch=self.epoch,
            shard_seq={0: self.seq[group]}, shards=1, ts_emit_us=int(time.time() * 1e6),
            symbols=list(self.state[group].values()), window_ms=33,
        )

    async def publish_snapshots(self, groups: Sequence[str] | None = None) -> None:
        js = self.nc.jetstream()
        for g in groups or self.groups:
            await js.publish(f"xy.md.snapshot.{g}", self.snapshot(g).SerializeToString())
        await self.nc.flush()


# --------------------------------------------------------------------------- a client


class Client:
    """A browser stand-in on trio-websocket that checks every stream's continuity."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.frames: list[ServerFrame] = []
        self.errors: list[Any] = []
        self.degrades: list[Any] = []
        self.last: dict[tuple[str, int], tuple[int, int]] = {}  # (group, shard) -> (epoch, seq)
        self.snapshots: dict[str, int] = {}
        #: Group -> the epoch of the last snapshot received (a shard it does not name is at 0).
        self.snapshot_epochs: dict[str, int] = {}
        self.deltas = 0
        self.next_id = 1

    async def send(self, **fields: Any) -> int:
        fid = self.next_id
        self.next_id += 1
        await self.ws.send_message(ClientFrame(id=fid, **fields).SerializeToString())
        return fid

    async def hello(self, token: str, **kw: Any) -> ServerFrame:
        await self.send(hello=Hello(token=token, protocol_version=1, client="test", **kw))
        return await self.recv()

    async def recv(self) -> ServerFrame:
        data = await self.ws.get_message()
        assert isinstance(data, bytes), f"expected a binary frame, got {data!r}"
        f = ServerFrame()
        f.ParseFromString(data)
        self._check(f)
        self.frames.append(f)
        return f

    async def recv_until(self, pred: Any, limit_s: float = 10) -> ServerFrame:
        with trio.fail_after(limit_s):
            while True:
                f = await self.recv()
                if pred(f):
                    return f

    def _check(self, f: ServerFrame) -> None:
        if f.HasField("error"):
            self.errors.append(f.error)
        if f.HasField("degrade"):
            self.degrades.append(f.degrade)
        for s in f.snapshots:
            self.snapshots[s.group] = s.version
            self.snapshot_epochs[s.group] = s.epoch
            for shard, seq in s.shard_seq.items():
                self.last[(s.group, shard)] = (s.epoch, seq)
        for d in f.deltas:
            key = (d.group, d.shard)
            first = d.first_seq or d.seq
            assert key in self.last or d.group in self.snapshot_epochs, (
                f"delta {d.group}/{d.shard} #{d.seq} before any snapshot")
            # A shard the snapshot does not name had no delta in it yet (docs/protocol.md).
            epoch, seq = self.last.get(key, (self.snapshot_epochs.get(d.group, 0), 0))
            assert d.epoch == epoch and first == seq + 1, (
                f"{d.group}/{d.shard}: expected #{seq + 1} of epoch {epoch}, got "
                f"#{first}..{d.seq} of epoch {d.epoch}"
            )
            self.last[key] = (d.epoch, d.seq)
            self.deltas += 1

    def resume_points(self) -> list[Any]:
        from xypipe.contracts import ResumePoint

        return [ResumePoint(group=g, shard=s, epoch=e, seq=q)
                for (g, s), (e, q) in self.last.items()]


@asynccontextmanager
async def ws_client(port: int, *, origin: str | None = None, path: str = "/ws",
                    **kw: Any) -> AsyncIterator[Client]:
    """A trio-websocket client on a TCP stream this helper owns and always closes (trio-websocket
    leaves the socket to the garbage collector when the server closes first)."""
    headers = [(b"origin", origin.encode())] if origin else None
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with _unwrapped(), trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "127.0.0.1", path, extra_headers=headers,
                max_message_size=16 << 20, **kw,
            )
            try:
                yield Client(ws)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def _unwrapped() -> AsyncIterator[None]:
    """Let a lone error out of the client's nursery as itself (so pytest.raises sees it)."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise


def http_port(runner: xypipe.Runner) -> int:
    assert runner.http is not None
    return int(runner.http.port)


# --------------------------------------------------------------------------- the client SDK


def sdk(port: int, token: str, **kw: Any) -> AbstractAsyncContextManager[SdkClient]:
    """A :mod:`xypipe.client` connection to the gateway on ``port`` (it checks every sequence
    and checksum itself)."""
    return xypipe.client.connect(f"ws://127.0.0.1:{port}/ws", token=token, **kw)


async def updates_until(client: SdkClient, done: Callable[[Update], bool], limit_s: float = 10
                        ) -> list[Update]:
    """Every update up to and including the first ``done`` accepts (a hang fails the test)."""
    seen: list[Update] = []
    with trio.move_on_after(limit_s):
        async for u in client:
            seen.append(u)
            if done(u):
                return seen
        raise AssertionError(f"the client ended before the awaited update; saw {seen!r}")
    raise AssertionError(f"no awaited update within {limit_s} s; saw {seen!r}")


def book_matches(client: SdkClient, group: str, truth: Mapping[str, SymbolState]) -> bool:
    """The client's book of ``group`` holds exactly the publisher's states."""
    book = client.book(group)
    if book is None:
        return False
    want = {(s.venue, s.symbol): s for s in truth.values()}
    return dict(book.symbols) == want


async def caught_up(client: SdkClient, group: str, seq: int, shard: int = 0,
                    limit_s: float = 10) -> list[Update]:
    """The updates until ``group``'s stream ``shard`` is live at ``seq`` (none if it already
    is): a delta or a snapshot that brings it there, with nothing awaited after it."""
    def there() -> bool:
        book = client.book(group)
        return book is not None and book.synced and book.seqs.get(shard) == seq

    def done(u: Update) -> bool:
        # The book is updated a whole frame at a time, before the frame's updates are read:
        # judge by the update that brings the stream there, not by the book alone.
        if isinstance(u, DeltaApplied):
            return (u.group, u.shard, u.seq) == (group, shard, seq) and there()
        if isinstance(u, SnapshotApplied):
            return u.group == group and (shard, seq) in u.shard_seq and there()
        return False

    return [] if there() else await updates_until(client, done, limit_s)


def no_hole(updates: Sequence[Update]) -> None:
    """Over the WebSocket a client never meets a gap, a repeat or a rejected delta (a delta
    held while the client waits for a snapshot it asked for is not one of those)."""
    bad = [u for u in updates if isinstance(u, DeltaSkipped) and u.verdict != "held"]
    assert not bad, bad


# --------------------------------------------------------------------------- logs


class JsonLogCapture:
    """The JSON lines the xypipe loggers write, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def find(self, **match: Any) -> list[dict[str, Any]]:
        return [d for d in self.lines() if all(d.get(k) == v for k, v in match.items())]

    @contextmanager
    def installed(self) -> Iterator[JsonLogCapture]:
        """Capture the xypipe loggers (at INFO) for the block."""
        root = logging.getLogger("xypipe")
        old_level = root.level
        root.addHandler(self.handler)
        root.setLevel(logging.INFO)
        try:
            yield self
        finally:
            root.removeHandler(self.handler)
            root.setLevel(old_level)


# --------------------------------------------------------------------------- forged tokens


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None = None) -> str:
    """A token an attacker could write: unsigned (alg none) or HMAC-signed with ``secret``."""
    import hashlib
    import hmac

    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def claims(subject: str = "mallory", allow: Sequence[str] = ("xy.md.>",), ttl_s: float = 300,
           **kw: Any) -> dict[str, Any]:
    now = int(time.time())
    doc = {"sub": subject, "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "iat": now, "nbf": now,
           "exp": now + int(ttl_s), "allow": list(allow), "roles": ["admin"]}
    doc.update(kw)
    return doc


async def expect_close(c: Client, limit_s: float = 10) -> int:
    """Read until the server closes; returns the close code."""
    with trio.fail_after(limit_s):
        while True:
            try:
                await c.recv()
            except trio_websocket.ConnectionClosed as exc:
                return int(exc.reason.code)


# -- fixtures shared by the gateway and client SDK tests (imported by their conftest.py) --------


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
async def publisher(nats_server) -> AsyncIterator[NatsClient]:  # type: ignore[no-untyped-def]
    """The fake aggregator's NATS connection."""
    async with connect(nats_server.url, name="fake-aggregator") as nc:
        yield nc


@pytest.fixture
async def aggregator(publisher: NatsClient) -> FakeAggregator:
    agg = FakeAggregator(publisher, ["fx", "rates", "crypto"])
    await agg.setup()
    return agg
