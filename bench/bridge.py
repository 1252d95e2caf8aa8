"""Benchmark of the Trio ↔ asyncio bridges that carry nats-py (xypipe/_nats/).

For each candidate — plain asyncio nats-py (the baseline, no bridge), the ``trio-asyncio`` bridge,
the ``thread`` bridge (asyncio loop in its own thread) and the ``anyio`` bridge (the same, through
anyio's blocking portal) — it measures, through a real
nats-server this script starts on a random port, with 200 B payloads, publisher and subscriber in
one process:

- throughput: msgs/s of a publish → subscribe round, the publisher kept at most ``--window``
  messages ahead of the subscriber (so nothing is dropped as a slow consumer);
- latency at a fixed rate (4k and 40k msgs/s): p50/p99 from publish (timestamp in the payload) to
  the moment the subscribing code holds the message; "added" is the bridge minus the baseline.

Every measurement runs in a fresh interpreter (trio-asyncio changes asyncio's loop policy for the
whole process) and is repeated ``--runs`` times; the tables quote medians.

    python bench/bridge.py                 # prints a table, writes bench/results/bridge.{json,md}
    python bench/bridge.py --runs 1 --messages 20000 --seconds 1   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAYLOAD_SIZE = 200
SUBJECT = "bench.bridge"
CANDIDATES = ("asyncio-baseline", "trio-asyncio", "thread", "anyio")
RATES = (4000, 40000)
WARMUP_S = 0.3


def _payload(ts_ns: int) -> bytes:
    return ts_ns.to_bytes(8, "big") + b"x" * (PAYLOAD_SIZE - 8)


def _percentiles(lat_ns: list[int]) -> dict[str, float]:
    lat_ns.sort()
    n = len(lat_ns)

    def pct(p: float) -> float:
        return lat_ns[min(n - 1, int(p * n))] / 1e6

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "samples": n}


# -------------------------------------------------------------------------------------------
# Workers (each runs in its own interpreter)


async def _aio_throughput(url: str, n: int, window: int) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url)
    received = 0
    room = asyncio.Event()
    done = asyncio.Event()

    async def cb(_msg: Any) -> None:
        nonlocal received
        received += 1
        if received >= n:
            done.set()
        room.set()

    await nc.subscribe(SUBJECT, cb=cb, pending_msgs_limit=window * 2)
    await nc.flush()
    payload = b"x" * PAYLOAD_SIZE
    start = time.perf_counter()
    sent = 0
    while sent < n:
        while sent - received >= window:
            room.clear()
            await room.wait()
        k = min(1000, n - sent, window - (sent - received))
        for _ in range(k):
            await nc.publish(SUBJECT, payload)
        sent += k
        await asyncio.sleep(0)
    await done.wait()
    elapsed = time.perf_counter() - start
    await nc.close()
    return {"msgs_per_s": n / elapsed, "batches": None}


async def _aio_latency(url: str, rate: int, seconds: float) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url)
    lat: list[int] = []
    warm_until = time.perf_counter_ns() + int(WARMUP_S * 1e9)

    async def cb(msg: Any) -> None:
        now = time.perf_counter_ns()
        if now >= warm_until:
            lat.append(now - int.from_bytes(msg.data[:8], "big"))

    await nc.subscribe(SUBJECT, cb=cb)
    await nc.flush()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent = 0
    total = int(rate * (seconds + WARMUP_S))
    tick = 0.001
    while sent < total:
        due = min(total, int((loop.time() - t0) * rate) + 1)
        while sent < due:
            await nc.publish(SUBJECT, _payload(time.perf_counter_ns()))
            sent += 1
        await asyncio.sleep(tick)
    await nc.flush()
    await asyncio.sleep(0.05)
    await nc.close()
    return _percentiles(lat)


async def _bridge_throughput(url: str, kind: str, n: int, window: int) -> dict[str, Any]:
    from xypipe._nats import connect

    async with connect(url, bridge=kind, publish_queue=window * 2) as nc:  # type: ignore[arg-type]
        async with nc.subscribe(SUBJECT, max_batch=256, max_pending=window * 2) as sub:
            received = 0
            batches = 0
            room = trio.Event()
            payload = b"x" * PAYLOAD_SIZE
            publish = nc.publish_nowait

            async def consume() -> None:
                nonlocal received, batches, room
                async for batch in sub:
                    received += len(batch)
                    batches += 1
                    room.set()
                    if received >= n:
                        return

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                sent = 0
                while sent < n:
                    while sent - received >= window:
                        room = trio.Event()
                        await room.wait()
                    k = min(1000, n - sent, window - (sent - received))
                    for _ in range(k):
                        publish(SUBJECT, payload)
                    sent += k
                    await trio.lowlevel.checkpoint()
            elapsed = time.perf_counter() - start
    return {"msgs_per_s": n / elapsed, "mean_batch": received / max(1, batches)}


async def _bridge_latency(url: str, kind: str, rate: int, seconds: float) -> dict[str, Any]:
    from xypipe._nats import connect

    lat: list[int] = []
    warm_until = time.perf_counter_ns() + int(WARMUP_S * 1e9)
    total = int(rate * (seconds + WARMUP_S))
    async with connect(url, bridge=kind) as nc:  # type: ignore[arg-type]
        async with nc.subscribe(SUBJECT) as sub:
            received = 0

            async def consume() -> None:
                nonlocal received
                async for batch in sub:
                    now = time.perf_counter_ns()
                    if now >= warm_until:
                        lat.extend(now - int.from_bytes(m.data[:8], "big") for m in batch)
                    received += len(batch)
                    if received >= total:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                t0 = trio.current_time()
                sent = 0
                tick = 0.001
                while sent < total:
                    due = min(total, int((trio.current_time() - t0) * rate) + 1)
                    while sent < due:
                        nc.publish_nowait(SUBJECT, _payload(time.perf_counter_ns()))
                        sent += 1
                    await trio.sleep(tick)
    return _percentiles(lat)


def _worker(args: argparse.Namespace) -> None:
    kind, mode = args.worker, args.mode
    if kind == "asyncio-baseline":
        if mode == "throughput":
            out = asyncio.run(_aio_throughput(args.url, args.messages, args.window))
        else:
            out = asyncio.run(_aio_latency(args.url, args.rate, args.seconds))
    elif mode == "throughput":
        out = trio.run(_bridge_throughput, args.url, kind, args.messages, args.window)
    else:
        out = trio.run(_bridge_latency, args.url, kind, args.rate, args.seconds)
    print(json.dumps(out))


# -------------------------------------------------------------------------------------------
# Orchestration


async def _run_worker(extra: list[str]) -> dict[str, Any]:
    proc = await trio.run_process(
        [sys.executable, __file__, *extra], capture_stdout=True, capture_stderr=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {extra} failed:\n{proc.stderr.decode()}")
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


async def _orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    from xypipe._embedded import embedded_nats

    results: dict[str, Any] = {
        kind: {"throughput": [], "latency": {str(r): [] for r in RATES}} for kind in args.candidates
    }
    async with embedded_nats(port=0) as server:
        # Candidates interleaved within each round, so load from elsewhere on the machine
        # spreads over all of them instead of landing on one.
        for round_no in range(args.runs):
            for kind in args.candidates:
                entry = results[kind]
                entry["throughput"].append(
                    await _run_worker(
                        [
                            "--worker",
                            kind,
                            "--mode",
                            "throughput",
                            "--url",
                            server.url,
                            "--messages",
                            str(args.messages),
                            "--window",
                            str(args.window),
                        ]
                    )
                )
                for rate in RATES:
                    entry["latency"][str(rate)].append(
                        await _run_worker(
                            [
                                "--worker",
                                kind,
                                "--mode",
                                "latency",
                                "--url",
                                server.url,
                                "--rate",
                                str(rate),
                                "--seconds",
                                str(args.seconds),
                            ]
                        )
                    )
                print(
                    f"round {round_no + 1}: {kind:18s} "
                    f"{entry['throughput'][-1]['msgs_per_s']:>10,.0f} msgs/s",
                    flush=True,
                )
    for entry in results.values():
        tp = [r["msgs_per_s"] for r in entry["throughput"]]
        entry["throughput_median"] = statistics.median(tp)
        entry["latency_median"] = {
            rate: {
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            }
            for rate, runs in entry["latency"].items()
        }
    return results


def _markdown(doc: dict[str, Any]) -> str:
    res = doc["results"]
    base = res.get("asyncio-baseline")
    lines = [
        "# Trio ↔ asyncio bridge for nats-py",
        "",
        f"Medians of {doc['params']['runs']} runs; {PAYLOAD_SIZE} B payloads; publish → "
        "subscribe through a local nats-server in one process; "
        f"{doc['machine']['cpus']} CPUs, Python {doc['machine']['python']}, "
        f"{doc['machine']['date']}. Produced by `python bench/bridge.py`.",
        "",
        "| candidate | msgs/s | p50 @4k/s (ms) | p99 @4k/s (ms) | p50 @40k/s (ms) "
        "| p99 @40k/s (ms) | added p50 @4k/s (ms) | added p50 @40k/s (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, entry in res.items():
        lm = entry["latency_median"]
        added = []
        for rate in ("4000", "40000"):
            if base is None or kind == "asyncio-baseline":
                added.append("—")
            else:
                d = lm[rate]["p50_ms"] - base["latency_median"][rate]["p50_ms"]
                added.append(f"{d:+.3f}")
        lines.append(
            f"| {kind} | {entry['throughput_median']:,.0f} | {lm['4000']['p50_ms']:.3f} "
            f"| {lm['4000']['p99_ms']:.3f} | {lm['40000']['p50_ms']:.3f} "
            f"| {lm['40000']['p99_ms']:.3f} | {added[0]} | {added[1]} |"
        )
    lines.append("")
    lines.append(
        "Throughput runs (msgs/s): "
        + "; ".join(
            f"{k}: " + ", ".join(f"{r['msgs_per_s']:,.0f}" for r in e["throughput"])
            for k, e in res.items()
        )
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--no-save", action="store_true")
    # Worker mode (internal).
    parser.add_argument("--worker", choices=CANDIDATES)
    parser.add_argument("--mode", choices=("throughput", "latency"))
    parser.add_argument("--url")
    parser.add_argument("--rate", type=int)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    load_at_start = os.getloadavg()
    results = trio.run(_orchestrate, args)
    doc = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d"),
            "load_average_at_start": load_at_start,
        },
        "params": {
            "runs": args.runs,
            "messages": args.messages,
            "window": args.window,
            "latency_seconds": args.seconds,
            "payload_bytes": PAYLOAD_SIZE,
            "rates": list(RATES),
        },
        "results": results,
    }
    md = _markdown(doc)
    print()
    print(md)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bridge.json").write_text(json.dumps(doc, indent=2) + "\n")
        (RESULTS / "bridge.md").write_text(md)


if __name__ == "__main__":
    main()
