"""Gateway fan-out benchmark: N browser connections, each subscribed to 5 groups at 30 deltas/s.

Three processes, as in production: the gateway (``xypipe run`` on a generated config, one core),
the load generator (one process holding all N WebSocket connections), and this script, which
runs nats-server and a publisher emitting 5 groups x 30 deltas/s (valid ``Delta`` protos: 4
symbols, 5 levels a side, ~0.6 KB) plus a snapshot per group every 2 s.

For each N it measures over ``--seconds`` (after ``--warmup`` seconds with every client up):

- frames/s delivered (all clients together) and the ideal (N x 30: one frame per connection per
  flush tick carrying that tick's 5 deltas), deltas per frame (more than 5 when the gateway falls
  behind and merges), MB/s of frame payload;
- each side's CPU, read from ``/proc/<pid>/stat`` at the window's ends: the gateway's process
  and the load generator's, as % of one core and as **µs of CPU per delivered frame**;
- latency p50/p99 from the publisher's ``ts_emit_us`` (just before the NATS publish) to the
  client holding the frame, sampled on every 10th frame of every client: NATS → gateway →
  socket → client process. Both ends share this machine's clock.

    python bench/fanout.py                         # 100, 500, 1000 clients, 3 runs each
    python bench/fanout.py --clients 100 --runs 1 --seconds 5
    python bench/fanout.py --compare-clients       # every client kind side by side
    python bench/fanout.py --compare-clients picows wsproto --clients 100 500

Writes bench/results/fanout.{json,md} (``--compare-clients``: fanout_clients.{json,md};
``--results DIR`` elsewhere); the tables quote medians of the runs. It drives only the public
CLI (``xypipe run``, ``xypipe token``) and the contracts, so it runs unchanged in older
checkouts (copy ``bench/fanout.py``, ``bench/_fanout_lean.py``, ``bench/fanout_client.mjs``;
install picows and uvloop, and ``ws`` for the node client).

**The load generator must cost less than the server it measures**, so its CPU is printed beside
the gateway's. Client kinds (``--client``), cheapest first:

- ``picows`` (default, ``bench/_fanout_lean.py``): picows' Cython WebSocket framing on uvloop,
  one callback per frame, sampled frames read through a message type holding only the stamps;
- ``node`` (``bench/fanout_client.mjs``): the ``ws`` package in one Node process, sampled frames
  scanned with protobuf-es' wire reader — an independent stack, to cross-check the latency;
- ``wsproto``: the previous default, wsproto on trio sockets (pure Python framing);
- ``sdk-lean`` / ``sdk``: :mod:`xypipe.client` with frames handed over undecoded / fully
  decoded and verified — what a program using the SDK costs, not a load generator.

``--compare-clients`` runs the kinds interleaved at the same load (one run's noise shared by
all); ``bench/results/fanout_clients.md`` has the last such run.
"""


from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from xypipe._errors import BridgeError

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
REPO = HERE.parent
RESULTS = HERE / "results"
GROUPS = [f"g{i}" for i in range(5)]
RATE_HZ = 30
SAMPLE_EVERY = 10
_PORT = [0]


# --------------------------------------------------------------------------- the client process


CLIENT_KINDS = ("picows", "node", "wsproto", "sdk-lean", "sdk")
NODE_CLIENT = HERE / "fanout_client.mjs"


async def _sdk_client(port: int, token: str, stats: dict[str, Any], ready: trio.Event,
                      connected: list[int], total: int, stop: trio.Event, slow: bool = False,
                      lean: bool = True) -> None:
    """The same load through :mod:`xypipe.client` (lean: frames undecoded; else every frame
    decoded, sequence and checksum checked)."""
    from xypipe import client as xc
    from xypipe.contracts import ServerFrame

    async with xc.connect(f"ws://127.0.0.1:{port}/ws", token=token, lean=lean, verify=not lean,
                          buffer=64, client_name="bench") as c:
        await c.subscribe(*GROUPS)
        stats["sdk"].append(c)  # the worker reads every client's counters at the window's ends
        connected[0] += 1
        if connected[0] == total:
            ready.set()
        lat = stats["lat"]
        n = 0
        async for u in c:
            if stop.is_set():
                break
            if slow and stats.get("pause_until", 0) > time.monotonic():
                # The slow reader: not reading, so the client's buffer, its socket and then
                # its queue at the gateway fill up.
                await trio.sleep_until(trio.current_time()
                                       + stats["pause_until"] - time.monotonic())
            if not stats["measuring"]:
                continue
            now_us = time.time() * 1e6
            if isinstance(u, xc.FrameReceived):
                n += 1
                if slow or n % SAMPLE_EVERY == 0:
                    f = ServerFrame.FromString(u.data)
                    stats["deltas_sampled"] += len(f.deltas)
                    if f.deltas:
                        lat.append((now_us - min(d.ts_emit_us for d in f.deltas)) / 1000)
            elif isinstance(u, xc.DeltaApplied):
                n += 1
                if slow or n % (SAMPLE_EVERY * len(GROUPS)) == 0:
                    stats["deltas_sampled"] += len(GROUPS)
                    lat.append((now_us - u.ts_emit_us) / 1000)
            elif isinstance(u, xc.Degraded):
                stats["degrades"].append(int(u.level))


async def _client(port: int, token: str, stats: dict[str, Any], ready: trio.Event,
                  connected: list[int], total: int, stop: trio.Event, slow: bool = False) -> None:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request

    from xypipe.contracts import ClientFrame, GroupRef, Hello, ServerFrame, Subscribe

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="127.0.0.1", target="/ws")))
    accepted = False
    while not accepted:
        ws.receive_data(await stream.receive_some(65536))
        accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
    from wsproto.events import Message

    hello = ClientFrame(id=1, hello=Hello(token=token, protocol_version=1, client="bench"))
    sub = ClientFrame(id=2, subscribe=Subscribe(groups=[GroupRef(group=g) for g in GROUPS]))
    await stream.send_all(ws.send(Message(data=hello.SerializeToString()))
                          + ws.send(Message(data=sub.SerializeToString())))
    connected[0] += 1
    if connected[0] == total:
        ready.set()
    buf = bytearray()
    n = 0
    last_ping = time.monotonic()
    lat = stats["lat"]
    while not stop.is_set():
        if slow and stats.get("pause_until", 0) > time.monotonic():
            # The slow reader: not reading at all, so its socket and then its queue fill up.
            await trio.sleep_until(trio.current_time()
                                   + stats["pause_until"] - time.monotonic())
            continue
        data = await stream.receive_some(65536)
        if not data:
            return
        ws.receive_data(data)
        now_us = time.time() * 1e6
        for e in ws.events():
            if isinstance(e, BytesMessage):
                buf += e.data
                if not e.message_finished:
                    continue
                n += 1
                if stats["measuring"]:
                    stats["frames"] += 1
                    stats["bytes"] += len(buf)
                    if slow or n % SAMPLE_EVERY == 0:
                        f = ServerFrame()
                        f.ParseFromString(bytes(buf))
                        stats["deltas_sampled"] += len(f.deltas)
                        if f.deltas:
                            lat.append((now_us - min(d.ts_emit_us for d in f.deltas)) / 1000)
                        if f.HasField("degrade"):
                            stats["degrades"].append(f.degrade.level)
                buf.clear()
            elif isinstance(e, Ping):
                await stream.send_all(ws.send(e.response()))
            elif isinstance(e, CloseConnection):
                return
        if time.monotonic() - last_ping > 2.0:
            last_ping = time.monotonic()
            from xypipe.contracts import Ping as PingMsg

            await stream.send_all(ws.send(Message(
                data=ClientFrame(ping=PingMsg(nonce=1)).SerializeToString())))
    await trio.aclose_forcefully(stream)


def _new_stats() -> dict[str, Any]:
    return {"frames": 0, "bytes": 0, "deltas_sampled": 0, "lat": [], "measuring": False,
            "degrades": [], "sdk": []}


def _sdk_counters(stats: dict[str, Any], sign: int) -> None:
    """Add (1) or take off (-1) the SDK clients' frame and byte counters."""
    for c in stats["sdk"]:
        st = c.statistics()
        stats["frames"] += sign * st.frames
        stats["bytes"] += sign * st.bytes


async def _worker(port: int, token: str, clients: int, seconds: float, slow: int = 0,
                  slow_pause: float = 0.0, kind: str = "wsproto",
                  warmup: float = 5.0) -> dict[str, Any]:
    stats = _new_stats()
    slow_stats = _new_stats()
    ready, stop = trio.Event(), trio.Event()
    connected = [0]
    if kind == "wsproto":
        client = _client
    else:
        client = functools.partial(_sdk_client, lean=kind == "sdk-lean")
    async with trio.open_nursery() as nursery:
        limiter = trio.CapacityLimiter(50)

        async def one() -> None:
            async with limiter:
                pass
            await client(port, token, stats, ready, connected, clients, stop)

        for _ in range(clients):
            nursery.start_soon(one)
        for _ in range(slow):
            nursery.start_soon(client, port, token, slow_stats, trio.Event(), [0], -1, stop,
                               True)
        await ready.wait()
        await trio.sleep(warmup)  # snapshots delivered, levels settled at L0
        print("READY", flush=True)
        for st in (stats, slow_stats):
            _sdk_counters(st, -1)
        stats["measuring"] = slow_stats["measuring"] = True
        slow_stats["pause_until"] = time.monotonic() + slow_pause
        t0 = time.monotonic()
        cpu0 = time.process_time()
        await trio.sleep(seconds)
        stats["measuring"] = slow_stats["measuring"] = False
        elapsed = time.monotonic() - t0
        client_cpu = time.process_time() - cpu0
        for st in (stats, slow_stats):
            _sdk_counters(st, 1)
        stop.set()
        nursery.cancel_scope.cancel()
    lat = sorted(stats["lat"])
    return {
        "client_kind": kind, "client_cpu_pct": 100 * client_cpu / elapsed,
        "clients": clients, "seconds": elapsed,
        "frames_per_s": stats["frames"] / elapsed,
        "mbytes_per_s": stats["bytes"] / elapsed / 1e6,
        "deltas_per_frame": stats["deltas_sampled"] / max(1, len(lat)),
        "lat_p50_ms": _pct(lat, 0.50), "lat_p99_ms": _pct(lat, 0.99),
        "lat_samples": len(lat),
        "slow_levels": _squash(slow_stats["degrades"]),
        "slow_frames": slow_stats["frames"],
    }


def _squash(levels: list[int]) -> list[int]:
    out: list[int] = []
    for lvl in levels:
        if not out or out[-1] != lvl:
            out.append(lvl)
    return out


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# --------------------------------------------------------------------------- the orchestrator


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gateway_pid(parent: int) -> int:
    """The process actually serving the gateway (xypipe run may supervise a child)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else parent


async def _publish(nc: Any, stop: trio.Event) -> None:
    from xypipe._md.book import state_checksum
    from xypipe.contracts import Delta, PriceLevel, Snapshot, SymbolState

    seq = dict.fromkeys(GROUPS, 0)
    version = dict.fromkeys(GROUPS, 0)
    js = nc.jetstream()
    await js.ensure_stream("XY_MD_SNAPSHOT", ["xy.md.snapshot.>"], max_msgs_per_subject=1,
                           storage="memory")

    def symbols(g: str, now_us: int) -> list[SymbolState]:
        out = [SymbolState(venue="XBEN", symbol=f"{g}-{i}", seq=seq[g], last=10_000 + seq[g],
                           ts_arrival_us=now_us, vol=seq[g] * 10,
                           bids=[PriceLevel(price=9_999 - k, size=5) for k in range(5)],
                           asks=[PriceLevel(price=10_001 + k, size=5) for k in range(5)])
               for i in range(4)]
        for s in out:
            s.checksum = state_checksum(s)  # as the aggregator stamps it; clients verify it
        return out

    async def snapshots() -> None:
        now_us = int(time.time() * 1e6)
        for g in GROUPS:
            version[g] += 1
            s = Snapshot(group=g, version=version[g], epoch=1, shard_seq={0: seq[g]}, shards=1,
                         ts_emit_us=now_us, symbols=symbols(g, now_us))
            # Core publish: the stream still stores it, and a slow ack cannot stall the cadence.
            nc.publish_nowait(f"xy.md.snapshot.{g}", s.SerializeToString())

    await snapshots()
    period = 1 / RATE_HZ
    next_t = trio.current_time()
    tick = 0
    while not stop.is_set():
        now_us = int(time.time() * 1e6)
        for g in GROUPS:
            seq[g] += 1
            d = Delta(group=g, shard=0, seq=seq[g], epoch=1, ts_emit_us=now_us,
                      symbols=symbols(g, now_us), window_ms=33)
            nc.publish_nowait(f"xy.md.tick.{g}", d.SerializeToString())
        tick += 1
        if tick % (2 * RATE_HZ) == 0:
            await snapshots()
        next_t += period
        await trio.sleep_until(next_t)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gateway_config(nats_url: str, port: int, extra: str = "") -> str:
    return f"""
[log]
level = "warning"
[nats]
url = "{nats_url}"
[http]
port = {port}
[pipelines.gateway]
[[pipelines.gateway.stages]]
use = "nats_source"
name = "md"
subjects = ["xy.md.tick.>", "xy.md.snapshot.>"]
budget = {{ max_items = 4096 }}
[[pipelines.gateway.stages]]
use = "gateway"
name = "gateway"
public_key = "{REPO / 'configs/dev-keys/gateway-dev.pub.pem'}"
allowed_origins = ["*"]
max_connections = 5000
{extra}
"""


def _loadgen_command(kind: str, port: int, token: str, clients: int, seconds: float,
                     slow: int, slow_pause: float, warmup: float, peer: str) -> list[str]:
    if slow and kind in ("node", "picows"):
        raise SystemExit("fanout: the slow reader is a trio client (--client wsproto)")
    if kind == "node":
        node = shutil.which("node")
        if node is None:
            raise SystemExit("fanout: the node client needs Node.js on PATH "
                             "(or --client wsproto)")
        return [node, str(NODE_CLIENT), "--port", str(port), "--token", token,
                "--clients", str(clients), "--seconds", str(seconds), "--warmup", str(warmup),
                "--groups", ",".join(GROUPS)]
    return [sys.executable, str(SCRIPT), "--worker", "--port", str(port),
            "--token", token, "--clients", str(clients), "--seconds", str(seconds),
            "--slow", str(slow), "--slow-pause", str(slow_pause), "--client", kind,
            "--warmup", str(warmup), "--peer", peer]


async def _run_worker(port: int, token: str, clients: int, seconds: float,
                      gw_pid: int, slow: int = 0, slow_pause: float = 0.0,
                      kind: str = "wsproto", warmup: float = 5.0,
                      peer: str = "gateway") -> dict[str, Any]:
    """One measured window: the load generator in its own process, both sides' CPU read from
    /proc at the window's ends (the generator prints READY when it opens, RESULT when it
    closes)."""
    proc = await trio.lowlevel.open_process(
        _loadgen_command(kind, port, token, clients, seconds, slow, slow_pause, warmup, peer),
        stdout=subprocess.PIPE, cwd=str(REPO),
    )
    assert proc.stdout is not None
    out = b""
    cpu0 = gen0 = t0 = None
    slow0 = 0.0
    async with proc.stdout:
        while True:
            chunk = await proc.stdout.receive_some(65536)
            if not chunk:
                break
            out += chunk
            if cpu0 is None and b"READY" in out:
                cpu0, gen0, t0 = _cpu_seconds(gw_pid), _cpu_seconds(proc.pid), time.monotonic()
                slow0 = _metric_sum(_PORT[0], "backpressure_events_total")
            if b"RESULT" in out and out.endswith(b"\n"):
                break
    cpu1, gen1, t1 = _cpu_seconds(gw_pid), _cpu_seconds(proc.pid), time.monotonic()
    rc = await proc.wait()
    if b"RESULT " not in out:
        raise SystemExit(f"fanout: the {kind} load generator exited {rc} without a result "
                         "(its error is above)")
    result: dict[str, Any] = json.loads(out.split(b"RESULT ", 1)[1])
    assert cpu0 is not None and gen0 is not None and t0 is not None
    window = t1 - t0
    frames = result["frames_per_s"] * result["seconds"]
    # The peer counts every delta it received (one NATS MSG each); the gateway's frames carry
    # several, counted on the sampled frames.
    deltas = result.get("deltas") or frames * result["deltas_per_frame"]
    result["server"] = peer
    result["deltas_per_s"] = deltas / result["seconds"]
    # gateway_*: the server measured (`xypipe run`, or nats-server for the peer).
    result["gateway_cpu_pct"] = 100 * (cpu1 - cpu0) / window
    result["server_ms_per_mb"] = 1e3 * (cpu1 - cpu0) / max(1e-9, result["mbytes_per_s"]
                                                           * result["seconds"])
    result["loadgen_cpu_pct"] = 100 * (gen1 - gen0) / window
    # CPU per delivered frame, each side: the gateway's cost is the number the issue's goal is
    # stated in; the generator's must stay well under it for the gateway's to mean anything.
    result["gateway_us_per_frame"] = 1e6 * (cpu1 - cpu0) / max(1.0, frames)
    result["loadgen_us_per_frame"] = 1e6 * (gen1 - gen0) / max(1.0, frames)
    # Level changes during the window (connections degraded because the box was saturated).
    result["level_changes_in_window"] = (
        _metric_sum(_PORT[0], "backpressure_events_total") - slow0)
    result["ideal_frames_per_s"] = clients * RATE_HZ
    result["ideal_deltas_per_s"] = clients * RATE_HZ * len(GROUPS)
    return result


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return bytes(r.read())


def _metric_sum(port: int, sample: str) -> float:
    """Sum of every sample named ``sample`` on the gateway's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == sample)


@attrs.frozen
class NatsServer:
    url: str
    pid: int
    ws_port: int | None  # nats-server's own WebSocket listener (--peer nats-ws), else None


@asynccontextmanager
async def _nats_server(websocket: bool = False) -> AsyncIterator[NatsServer]:
    """A nats-server child for the benchmark's lifetime (started directly: see the report on
    die-with-parent children); with ``websocket``, its WebSocket listener open as the peer."""
    from xypipe._embedded import find_nats_server
    from xypipe._nats import connect

    port = _free_port()
    ws_port = _free_port() if websocket else None
    with tempfile.TemporaryDirectory(prefix="xy-bench-nats-") as data:
        args = [str(find_nats_server()), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", data]
        if ws_port is not None:
            conf = Path(data) / "ws.conf"
            conf.write_text(f"websocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n"
                            "  no_tls: true\n  compression: false\n}\n")
            args += ["-c", str(conf)]
        proc = await trio.lowlevel.open_process(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"nats://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    async with connect(url, connect_timeout=0.2):
                        break
                except BridgeError:
                    await trio.sleep(0.05)  # the server is starting
            yield NatsServer(url, proc.pid, ws_port)
        finally:
            proc.terminate()
            await proc.wait()


def _token() -> str:
    """A dev token from the public CLI (the gateway trusts the committed dev key)."""
    out = subprocess.run(
        [sys.executable, "-m", "xypipe", "token", "--key",
         str(REPO / "configs/dev-keys/gateway-dev.key.pem"), "--sub", "bench",
         "--allow", "xy.md.>", "--ttl", "3600"],
        cwd=str(REPO), check=True, capture_output=True, text=True)
    return out.stdout.strip()


async def bench(sizes: list[int], runs: int, seconds: float, extra: str = "",
                slow: tuple[int, float] | None = None,
                kinds: tuple[str, ...] = ("wsproto",), warmup: float = 5.0,
                peer: str | None = None) -> list[dict]:
    """Every (client count, run, client kind) window on one stack. ``kinds`` defaults to
    wsproto for bench/slow_consumer.py, whose slow reader is a trio client; the command line's
    default is picows."""
    from xypipe._nats import connect

    token = _token()
    results: list[dict] = []
    async with _nats_server(websocket=peer == "nats-ws") as ns, connect(ns.url) as nc:
        url = ns.url
        port = _free_port()
        _PORT[0] = port
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(_gateway_config(url, port, extra))
            cfg = f.name
        gw = await trio.lowlevel.open_process(
            [sys.executable, "-m", "xypipe", "run", cfg], cwd=str(REPO))
        try:
            for _ in range(100):
                try:
                    await trio.to_thread.run_sync(_get, f"http://127.0.0.1:{port}/healthz")
                    break
                except OSError:
                    await trio.sleep(0.1)  # the gateway process is starting
            gw_pid = _gateway_pid(gw.pid)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_publish, nc, stop)
                for n in sizes:
                    for r in range(runs):
                        for kind in kinds:  # interleaved: the kinds share the same noise
                            for nslow, pause in ([(0, 0.0), slow] if slow else [(0, 0.0)]):
                                res = await _run_worker(port, token, n, seconds, gw_pid, nslow,
                                                        pause, kind, warmup)
                                res["run"] = r
                                res["slow"] = nslow
                                results.append(res)
                            print(json.dumps(res), flush=True)
                        if ns.ws_port is not None:  # the peer, read by the same lean client
                            res = await _run_worker(ns.ws_port, token, n, seconds, ns.pid,
                                                    kind="picows", warmup=warmup,
                                                    peer="nats-ws")
                            res["run"] = r
                            res["slow"] = 0
                            results.append(res)
                            print(json.dumps(res), flush=True)
                stop.set()
        finally:
            gw.terminate()
            await gw.wait()
            os.unlink(cfg)
    return results


MEDIAN_KEYS = ("frames_per_s", "ideal_frames_per_s", "deltas_per_s", "ideal_deltas_per_s",
               "mbytes_per_s", "deltas_per_frame", "gateway_cpu_pct", "gateway_us_per_frame",
               "server_ms_per_mb", "loadgen_cpu_pct", "loadgen_us_per_frame", "lat_p50_ms",
               "lat_p99_ms")


def summarize(results: list[dict]) -> list[dict]:
    """Medians per (clients, server, client kind) over the runs."""
    rows = []
    for n in sorted({r["clients"] for r in results}):
        for server in ("gateway", "nats-ws"):
            for kind in CLIENT_KINDS:
                rs = [r for r in results if r["clients"] == n
                      and r.get("server", "gateway") == server
                      and r.get("client_kind", "wsproto") == kind]
                if not rs:
                    continue
                med: dict[str, Any] = {k: statistics.median(r[k] for r in rs)
                                       for k in MEDIAN_KEYS}
                med.update(clients=n, server=server, client_kind=kind, runs=len(rs),
                           connections_lost=sum(r.get("connections_lost", 0) for r in rs))
                rows.append(med)
    return rows


def _machine(rows: list[dict]) -> str:
    return (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; medians of {rows[0]['runs'] if rows else 0} runs. "
            "CPU % is of one core over the measured window, read from /proc for each side's "
            "own process (server: `xypipe run`'s gateway, or nats-server for the `nats-ws` "
            "peer; load generator: the client process); µs/frame is that CPU divided by the "
            "frames the clients received, ms/MB by the payload megabytes.")


def _lost(rows: list[dict]) -> list[str]:
    lost = sum(r["connections_lost"] for r in rows)
    return ["", f"**{lost} client connections were lost during measured windows** (see the "
            "JSON's `first_lost`)."] if lost else []


def markdown_clients(rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "", _machine(rows) + " The kinds run interleaved, run by run.", "",
             "| clients | client | load gen CPU % | load gen µs/frame | server CPU % "
             "| server µs/frame | frames/s delivered | ideal | latency p50 ms | p99 ms |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        client = r["client_kind"] + ("" if r["server"] == "gateway" else f" → {r['server']}")
        lines.append(
            f"| {r['clients']} | {client} | {r['loadgen_cpu_pct']:.0f} | "
            f"{r['loadgen_us_per_frame']:.1f} | {r['gateway_cpu_pct']:.0f} | "
            f"{r['gateway_us_per_frame']:.1f} | {r['frames_per_s']:.0f} | "
            f"{r['ideal_frames_per_s']:.0f} | {r['lat_p50_ms']:.1f} | {r['lat_p99_ms']:.1f} |")
    return "\n".join(lines + _lost(rows)) + "\n"


def markdown(rows: list[dict], title: str) -> str:
    kinds = ", ".join(sorted({r["client_kind"] for r in rows}))
    lines = [f"# {title}", "", _machine(rows) + f" Load generator: `{kinds}`.", "",
             "| clients | server | frames/s delivered | ideal | deltas/frame | deltas/s "
             "| MB/s | server CPU % | server µs/frame | server ms/MB | load gen CPU % "
             "| load gen µs/frame | latency p50 ms | p99 ms |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        peer = r["server"] != "gateway"
        lines.append(
            f"| {r['clients']} | {r['server']} | {r['frames_per_s']:.0f} | "
            f"{'—' if peer else format(r['ideal_frames_per_s'], '.0f')} | "
            f"{r['deltas_per_frame']:.1f} | {r['deltas_per_s']:.0f} | "
            f"{r['mbytes_per_s']:.1f} | {r['gateway_cpu_pct']:.0f} | "
            f"{r['gateway_us_per_frame']:.1f} | {r['server_ms_per_mb']:.2f} | "
            f"{r['loadgen_cpu_pct']:.0f} | {r['loadgen_us_per_frame']:.1f} | "
            f"{r['lat_p50_ms']:.1f} | {r['lat_p99_ms']:.1f} |")
    lines += ["", "Ideal: N x 30 frames/s, N x 150 deltas/s. A `nats-ws` row is nats-server's "
              "own WebSocket listener delivering the same deltas to the same number of the same "
              "lean clients (one NATS `MSG` per delta, several per WebSocket frame): compare "
              "deltas/s, ms/MB and latency, not frames."] if any(
                  r["server"] != "gateway" for r in rows) else []
    return "\n".join(lines + _lost(rows)) + "\n"


def _write(results: list[dict], rows: list[dict], out: Path, name: str, md: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"runs": results, "medians": rows}, indent=2))
    (out / f"{name}.md").write_text(md)
    print(md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="*", default=[100, 500, 1000])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds between the last connection and the measured window")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="where the JSON and Markdown go (default bench/results)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--slow", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--slow-pause", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--client", choices=CLIENT_KINDS, default="picows",
                   help="the load generator (default picows: the cheapest; see the module's "
                        "docstring for the others)")
    p.add_argument("--peer", nargs="?", const="nats-ws", choices=["gateway", "nats-ws"],
                   help="also measure nats-server's own WebSocket listener fed the same "
                        "deltas, read by the picows client (a row per client count)")
    p.add_argument("--compare-clients", nargs="*", choices=CLIENT_KINDS, metavar="KIND",
                   help="run these client kinds (default: all) interleaved at the same load; "
                        "writes fanout_clients.*")
    args = p.parse_args()
    if args.worker and args.client == "picows":
        args.peer = args.peer or "gateway"
        import _fanout_lean

        _fanout_lean.run(args.port, args.token, args.clients[0], args.seconds, args.warmup,
                         GROUPS, args.peer)  # prints its RESULT line
        return
    if args.worker:
        res = trio.run(_worker, args.port, args.token, args.clients[0], args.seconds, args.slow,
                       args.slow_pause, args.client, args.warmup)
        print("RESULT " + json.dumps(res), flush=True)
        return
    if args.compare_clients is not None:
        kinds = tuple(k for k in CLIENT_KINDS if k in (args.compare_clients or CLIENT_KINDS))
        results = trio.run(functools.partial(bench, args.clients, args.runs, args.seconds,
                                             kinds=kinds, warmup=args.warmup,
                                             peer=args.peer))
        rows = summarize(results)
        _write(results, rows, args.results, "fanout_clients",
               markdown_clients(rows, "Fan-out load generator: what each client kind costs"))
        return
    results = trio.run(functools.partial(bench, args.clients, args.runs, args.seconds,
                                         kinds=(args.client,), warmup=args.warmup,
                                         peer=args.peer))
    rows = summarize(results)
    _write(results, rows, args.results, "fanout",
           markdown(rows, "Gateway fan-out: 5 groups x 30 deltas/s per client"))


if __name__ == "__main__":
    main()
