"""Aggregator throughput and latency with 5,000 symbols.

    python bench/aggregator.py                      # 4k and 40k ticks/s (+ a ramp), 3 runs each
    python bench/aggregator.py --rates 4000,40000 --runs 3 --duration 6

For each offered rate a fresh aggregator (its own process, as deployed) consumes a tape replayed
by ``xypipe publish`` (another process) through a real nats-server. Reported per rate (medians
of the runs):

* ingest rate achieved and the highest degradation level reached (budgets held = stayed at L0);
* processing latency p50/p99, tick ingest -> delta publish, from the aggregator's own histogram
  (``aggregator_latency_seconds``: the oldest tick of each delta, so a conservative figure that
  includes the wait for the 33 ms window to close);
* end-to-end p50/p99, the aggregator's arrival stamp (``SymbolState.ts_arrival_us``, its wall
  clock when ingest took the tick in: metrics never use a publisher-supplied time) -> delta
  received by a subscriber, per symbol entry (again its oldest tick). Results before 2026-12-07
  measured from the publisher's stamp instead, so they include publisher -> NATS -> ingest.

Then the replay capacity: the tape preloaded into the source stream, an aggregator started with
``start = "all"`` and timed until it has ingested everything (ticks/s flat out).

The sustained capacity quoted is the highest offered rate whose runs kept L0 and ingested
>= 98 % of what was offered. Results: bench/results/aggregator.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _aggbench import (
    Aggregator,
    env_note,
    histogram_quantile,
    median,
    pct,
    publish,
    save,
    tape,
)

from xypipe._embedded import embedded_nats
from xypipe._nats import connect
from xypipe.contracts import Delta

SYMBOLS = 5000


async def one_run(url: str, work: Path, tape_path: Path, rate: float,
                  duration: float) -> dict[str, Any]:
    agg = Aggregator(work, url, start="new")
    await trio.to_thread.run_sync(agg.start)
    lat: list[float] = []
    warm_until = time.time() + 1.0
    try:
        async with connect(url, name="bench-sub") as nc, trio.open_nursery() as nursery:
            async def subscribe(task_status: trio.TaskStatus[None]) -> None:
                async with nc.subscribe("xy.md.tick.>", max_batch=1024) as sub:
                    task_status.started()
                    n = 0
                    async for batch in sub:
                        now_us = time.time_ns() // 1000
                        if now_us / 1e6 < warm_until:
                            continue
                        for m in batch:
                            n += 1
                            if n % 4:
                                continue  # a sample: decoding everything would steal a core
                            for s in Delta.FromString(m.data).symbols:
                                lat.append((now_us - s.ts_arrival_us) / 1000)

            await nursery.start(subscribe)
            m0 = await trio.to_thread.run_sync(agg.metrics)
            count = int(rate * duration)
            t0 = time.monotonic()
            proc = publish(url, tape_path, rate, count)
            levels = [0.0]
            series: list[tuple[float, float]] = []
            while proc.poll() is None:
                await trio.sleep(0.1)
                m = await trio.to_thread.run_sync(agg.metrics)
                levels.append(m.get('degradation_level{scope="pipeline:aggregator"}', 0.0))
                series.append((time.monotonic(), m.get("src_ingest_total", 0.0)))
            pub_s = time.monotonic() - t0
            await trio.sleep(0.5)
            m1 = await trio.to_thread.run_sync(agg.metrics)
            nursery.cancel_scope.cancel()
    finally:
        agg.stop()
    ingested = m1.get("src_ingest_total", 0) - m0.get("src_ingest_total", 0)
    # Rate while ticks flowed (the publisher's own start-up is not the aggregator's time).
    base = m0.get("src_ingest_total", 0)
    moving = [(t, v) for t, v in series if v > base]
    if len(moving) >= 2 and moving[-1][0] > moving[0][0]:
        ingest_rate = (moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0])
    else:
        ingest_rate = ingested / pub_s
    q = "aggregator_latency_seconds"
    return {
        "offered": rate,
        "ticks": count,
        "ingest_rate": ingest_rate,
        "ingested_share": ingested / count if count else 0.0,
        "max_level": max(levels),
        "deltas": m1.get("ticks_out_total", 0) - m0.get("ticks_out_total", 0),
        "proc_p50_ms": (histogram_quantile(m1, q, 0.5, m0) or float("nan")) * 1000,
        "proc_p99_ms": (histogram_quantile(m1, q, 0.99, m0) or float("nan")) * 1000,
        "e2e_p50_ms": pct(lat, 0.5),
        "e2e_p99_ms": pct(lat, 0.99),
        "entries_measured": len(lat),
    }


async def replay_capacity(work: Path, tape_path: Path, n: int) -> dict[str, Any]:
    """Preload ``n`` ticks into the source stream, then time an aggregator reading them all."""
    async with embedded_nats(port=0, data_dir=work / "nats-cap") as srv:
        async with connect(srv.url) as nc:
            await nc.jetstream().ensure_stream("XY_SRC", ["xy.src.>", "xy.ref.>"],
                                               max_age_s=3600)
        proc = publish(srv.url, tape_path, 2_000_000, n)
        await trio.to_thread.run_sync(proc.wait)
        agg = Aggregator(work, srv.url, start="all")
        await trio.to_thread.run_sync(lambda: agg.start(ready=False))
        levels = [0.0]
        first: tuple[float, float] | None = None
        try:
            while True:
                m = await trio.to_thread.run_sync(agg.metrics)
                now = time.monotonic()
                done = m.get("src_ingest_total", 0)
                levels.append(m.get('degradation_level{scope="pipeline:aggregator"}', 0.0))
                if first is None and done > 0:
                    first = (now, done)
                if done >= n:
                    break
                await trio.sleep(0.02)
            assert first is not None
            took = now - first[0]
            n = int(n - first[1])
        finally:
            agg.stop()
    return {"ticks": n, "seconds": took, "ticks_per_s": n / took, "max_level": max(levels)}


async def main(args: argparse.Namespace) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    need = int(max(rates) * args.duration) + 1000
    tape_path = tape(SYMBOLS, max(need, args.capacity_ticks))
    results: dict[str, Any] = {"env": env_note(), "symbols": SYMBOLS,
                               "duration_s": args.duration, "runs": {}, "medians": {}}
    with tempfile.TemporaryDirectory(prefix="xy-aggbench-") as tmp:
        work = Path(tmp)
        async with embedded_nats(port=0, data_dir=work / "nats") as srv:
            for rate in rates:
                runs = []
                for i in range(args.runs):
                    r = await one_run(srv.url, work, tape_path, rate, args.duration)
                    runs.append(r)
                    print(f"rate {rate:>7.0f}/s run {i + 1}: ingest {r['ingest_rate']:8.0f}/s "
                          f"level<= L{r['max_level']:.0f} proc p50/p99 {r['proc_p50_ms']:.1f}/"
                          f"{r['proc_p99_ms']:.1f} ms e2e p50/p99 {r['e2e_p50_ms']:.1f}/"
                          f"{r['e2e_p99_ms']:.1f} ms", flush=True)
                results["runs"][str(int(rate))] = runs
                results["medians"][str(int(rate))] = {
                    k: median([r[k] for r in runs]) for k in runs[0] if k != "offered"}
        caps = []
        for i in range(args.runs if args.capacity_ticks else 0):
            c = await replay_capacity(work, tape_path, args.capacity_ticks)
            caps.append(c)
            print(f"replay capacity run {i + 1}: {c['ticks_per_s']:.0f} ticks/s "
                  f"({c['ticks']} in {c['seconds']:.2f} s, level<= L{c['max_level']:.0f})",
                  flush=True)
        results["replay_capacity"] = {"runs": caps,
                                      "median_ticks_per_s": median([c["ticks_per_s"]
                                                                    for c in caps])}
    sustained = [r for r, m in results["medians"].items()
                 if m["max_level"] == 0 and m["ingested_share"] >= 0.98]
    results["sustained_capacity_ticks_per_s"] = max((float(r) for r in sustained), default=0)
    lines = [
        f"# Aggregator, {SYMBOLS} symbols (medians of {args.runs} runs, {args.duration:g} s each)",
        "",
        "| offered ticks/s | ingested ticks/s | max level | processing p50 / p99 ms "
        "| end-to-end p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for rate, m in results["medians"].items():
        lines.append(f"| {int(rate):,} | {m['ingest_rate']:,.0f} | L{m['max_level']:.0f} | "
                     f"{m['proc_p50_ms']:.1f} / {m['proc_p99_ms']:.1f} | "
                     f"{m['e2e_p50_ms']:.1f} / {m['e2e_p99_ms']:.1f} |")
    lines += ["", f"Sustained at L0: {results['sustained_capacity_ticks_per_s']:,.0f} ticks/s "
              "(highest offered rate tried that held L0 and kept up).",
              f"Replay capacity (flat out from the stream): "
              f"{results['replay_capacity']['median_ticks_per_s']:,.0f} ticks/s.",
              "", "Processing latency: tick ingest to delta publish, oldest tick of each delta "
              "(includes waiting for the 33 ms window). End-to-end: the aggregator's arrival "
              "stamp (SymbolState.ts_arrival_us) to delta received by a subscriber, per symbol "
              "entry.",
              f"Machine: {results['env']}"]
    table = "\n".join(lines)
    print(table)
    save("aggregator", results, table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="4000,10000,20000,40000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--capacity-ticks", type=int, default=150_000)
    trio.run(main, ap.parse_args())
