"""bench/scale.py's second curve: gateway fan-out with 1 and 2 gateway workers on one port.

One stack per worker count: a nats-server, bench/fanout.py's publisher (5 groups x 30 deltas/s
plus a snapshot per group every 2 s) in a process of its own, and ``xypipe run`` of
bench/fanout.py's gateway config as a process with ``workers = N`` (every worker binds the same
port with ``SO_REUSEPORT``; the kernel spreads the connections). Per client count, ``loadgens``
processes of bench/_fanout_lean.py (picows on uvloop) share the clients; each prints
``CONNECTED`` when its connections are up, all are told to start at once (a line on stdin), so
their warm-ups and measured windows coincide, and every side's CPU is read from /proc at the
window's ends: each gateway worker, the supervisor, each load generator, nats-server and the
publisher. Frames/s is the generators' sum; p50/p99 come from their latency samples merged.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import _sides
import fanout
import trio

SCRIPT = Path(__file__).resolve().parent / "scale.py"


def gateway_toml(url: str, sup_port: int, port: int, workers: int | None,
                 metrics_port: int = 0) -> str:
    """bench/fanout.py's gateway config, its pipeline moved to a process of ``workers`` copies
    on ``port``, worker ``i`` serving its own /healthz on ``metrics_port + i`` (``workers=None``:
    both keys left out, for a checkout without them)."""
    wk = (f"workers = {workers}\nmetrics_port = {metrics_port}\n" if workers is not None
          else "")
    base = fanout._gateway_config(url, sup_port)
    return base.replace("[pipelines.gateway]\n", (
        f'[processes.gateway]\nhttp = {{ host = "127.0.0.1", port = {port} }}\n'
        f'restart = {{ policy = "never" }}\n{wk}'
        '[pipelines.gateway]\nprocess = "gateway"\n'), 1)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as r:
        return bytes(r.read())


async def _ready(port: int) -> bool:
    try:
        doc = json.loads(await trio.to_thread.run_sync(_get,
                                                       f"http://127.0.0.1:{port}/healthz"))
    except (OSError, ValueError):
        return False
    return bool(doc.get("ready", True))


async def _start_tree(cfg: Path, ports: list[int], workers: int,
                      log: Path) -> tuple[trio.Process, dict[int, int]]:
    """``xypipe run`` of the gateway config; returns once every worker runs and answers ready
    on ``ports`` (each worker's own, or the shared port in a checkout without workers)."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(cfg)], cwd=str(fanout.REPO),
        stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    pids: dict[int, int] = {}
    with trio.fail_after(60):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited {proc.returncode}; its log: {log}")
            pids = _sides.workers(proc.pid, "gateway")
            if len(pids) == workers and all([await _ready(p) for p in ports]):
                return proc, pids
            await trio.sleep(0.1)


async def _publisher(url: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, str(SCRIPT), "--publisher", url], cwd=str(fanout.REPO),
        stdin=subprocess.PIPE)


async def publisher_main(url: str) -> None:
    """bench/fanout.py's publisher until stdin closes (``--publisher``)."""
    from xypipe._nats import connect

    stop = trio.Event()
    async with connect(url, name="scale-publisher") as nc, trio.open_nursery() as nursery:
        nursery.start_soon(fanout._publish, nc, stop)
        await trio.to_thread.run_sync(sys.stdin.read)
        stop.set()


def loadgen_main(port: int, token: str, clients: int, seconds: float, warmup: float) -> None:
    """One gated load generator (``--loadgen``): prints CONNECTED, waits for stdin, RESULT."""
    import _fanout_lean

    _fanout_lean.run(port, token, clients, seconds, warmup, fanout.GROUPS, "gateway",
                     gated=True, samples=True)


async def _lines(proc: trio.Process, into: list[bytes], seen: dict[str, trio.Event]) -> None:
    """Collect a generator's stdout; set the event of each marker line as it arrives."""
    assert proc.stdout is not None
    buf = b""
    async with proc.stdout:
        while True:
            chunk = await proc.stdout.receive_some(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                into.append(line)
                for marker, event in seen.items():
                    if line.startswith(marker.encode()):
                        event.set()
    for event in seen.values():
        event.set()  # an early exit must not hang the orchestrator: checked by the caller


async def window(port: int, token: str, clients: int, loadgens: int, seconds: float,
                 warmup: float, fixed: dict[str, int]) -> dict[str, Any]:
    """One measured window of ``clients`` split over ``loadgens`` generator processes."""
    share = [clients // loadgens + (1 if i < clients % loadgens else 0)
             for i in range(loadgens)]
    share = [n for n in share if n]
    procs: list[trio.Process] = []
    outs: list[list[bytes]] = []
    marks: list[dict[str, trio.Event]] = []
    async with trio.open_nursery() as nursery:
        for n in share:
            p = await trio.lowlevel.open_process(
                [sys.executable, str(SCRIPT), "--loadgen", "--port", str(port), "--token",
                 token, "--clients", str(n), "--seconds", str(seconds), "--warmup",
                 str(warmup)], cwd=str(fanout.REPO), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE)
            procs.append(p)
            outs.append([])
            marks.append({m: trio.Event() for m in ("CONNECTED", "READY", "RESULT")})
            nursery.start_soon(_lines, p, outs[-1], marks[-1])
        with trio.fail_after(180 + warmup + seconds):
            for m in marks:
                await m["CONNECTED"].wait()
            for p in procs:
                assert p.stdin is not None
                await p.stdin.send_all(b"GO\n")
            for m in marks:
                await m["READY"].wait()
            sides = dict(fixed)
            sides.update({f"loadgen.{i}": p.pid for i, p in enumerate(procs)})
            r0 = _sides.read(sides, time.monotonic())
            conns = {name: _sides.established(pid, port) for name, pid in fixed.items()
                     if name.startswith("gateway.")}
            for m in marks:
                await m["RESULT"].wait()
            r1 = _sides.read(sides, time.monotonic())
        for p in procs:
            assert p.stdin is not None
            await p.stdin.aclose()
            await p.wait()
    results = []
    for p, out in zip(procs, outs, strict=True):
        line = next((x for x in out if x.startswith(b"RESULT ")), None)
        if line is None:
            raise RuntimeError(f"a load generator exited {p.returncode} without a result: "
                               f"{b' '.join(out)[-2000:]!r}")
        results.append(json.loads(line[7:]))
    return merge(results, clients, _sides.window(r0, r1), conns)


def merge(results: list[dict[str, Any]], clients: int, win: dict[str, Any],
          conns: dict[str, int]) -> dict[str, Any]:
    """The generators' results as one window's: frames summed, latency samples merged."""
    lat = sorted(x for r in results for x in r["lat_ms"])
    frames = sum(r["frames"] for r in results)
    secs = max(r["seconds"] for r in results)
    deltas_frame = (sum(r["deltas_per_frame"] * r["frames"] for r in results)
                    / max(frames, 1))
    cpu = win["cpu"]
    gw = sum(c for n, c in cpu.items() if n.startswith("gateway."))
    gen = sum(c for n, c in cpu.items() if n.startswith("loadgen."))
    return {
        "clients": clients, "loadgens": len(results), "seconds": secs,
        "frames_per_s": frames / secs, "ideal_frames_per_s": clients * fanout.RATE_HZ,
        "deltas_per_frame": deltas_frame, "mbytes_per_s": sum(r["bytes"] for r in results)
        / secs / 1e6,
        "lat_p50_ms": fanout._pct(lat, 0.5), "lat_p99_ms": fanout._pct(lat, 0.99),
        "lat_samples": len(lat),
        "connections_lost": sum(r["connections_lost"] for r in results),
        "connections_per_worker": conns,
        # Fewer than ``clients`` when the gateway closed some before the window (a client too
        # slow to read is disconnected: docs/architecture.md, "The gateway").
        "connected_at_start": sum(conns.values()),
        "gateway_us_per_frame": 1e6 * gw * secs / max(frames, 1),
        "loadgen_us_per_frame": 1e6 * gen * secs / max(frames, 1),
        "window": win, "bottleneck": _sides.bottleneck(win),
    }


async def curve(workers: int, sizes: list[int], loadgens: int, seconds: float, warmup: float,
                *, workers_key: bool, say: Any = print) -> list[dict[str, Any]]:
    """Every client count against one stack with ``workers`` gateway workers."""
    from xypipe._nats import connect

    token = fanout._token()
    out: list[dict[str, Any]] = []
    async with fanout._nats_server() as ns:
        sup_port, port = fanout._free_port(), fanout._free_port()
        private = _sides.free_ports(workers) if workers_key else 0
        ports = [private + i for i in range(workers)] if workers_key else [port]
        with tempfile.TemporaryDirectory(prefix="xy-scale-gw-") as tmp:
            cfg = Path(tmp) / "gateway.toml"
            cfg.write_text(gateway_toml(ns.url, sup_port, port,
                                        workers if workers_key else None, private))
            # The snapshot stream exists before the gateway looks for it.
            async with connect(ns.url) as nc:
                await nc.jetstream().ensure_stream(
                    "XY_MD_SNAPSHOT", ["xy.md.snapshot.>"], max_msgs_per_subject=1,
                    storage="memory")
            pub = await _publisher(ns.url)
            tree, pids = await _start_tree(cfg, ports, workers, Path(tmp) / "gateway.log")
            try:
                fixed = {f"gateway.{i}": pid for i, pid in sorted(pids.items())}
                fixed.update({"supervisor": tree.pid, "nats-server": ns.pid,
                              "publisher": pub.pid})
                for n in sizes:
                    r = await window(port, token, n, loadgens, seconds, warmup, fixed)
                    r["workers"] = workers
                    out.append(r)
                    say(line(r))
            finally:
                tree.terminate()
                await tree.wait()
                assert pub.stdin is not None
                await pub.stdin.aclose()
                with trio.move_on_after(5):
                    await pub.wait()
                if pub.poll() is None:
                    pub.kill()
                    await pub.wait()
    return out


def line(r: dict[str, Any]) -> str:
    cpu = r["window"]["cpu"]
    sides = ", ".join(f"{n} {c:.0%}" for n, c in cpu.items())
    return (f"{r['workers']} worker(s), {r['clients']:>5} clients: {r['frames_per_s']:>8,.0f} "
            f"frames/s of {r['ideal_frames_per_s']:,.0f}, p50/p99 {r['lat_p50_ms']:.1f}/"
            f"{r['lat_p99_ms']:.1f} ms; connections {r['connections_per_worker']}; CPU of a "
            f"core: {sides}; machine {r['window']['machine_busy']:.0%} busy")
