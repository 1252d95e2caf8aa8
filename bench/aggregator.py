"""Aggregator throughput with 5,000 symbols: the highest rate it sustains at L0, found by search.

    python bench/aggregator.py                     # the default run (a few minutes)
    python bench/aggregator.py --duration 10 --runs 3 --replay-runs 3 --cpu-runs 3

Every measurement drives the public CLI only: a fresh nats-server (JetStream, file storage) and
a fresh ``xypipe run`` of a generated aggregator config (its own process, as deployed), fed by
a lean publisher in a third process (``bench/_aggbench.py``: the tape turned into NATS ``PUB``
frames before the clock starts, written in one ``sendall`` per 5 ms step, so it costs a few %
of what the aggregator spends). The CPU of all three is measured over the same interval and
printed side by side; the aggregator's CPU per tick (µs) is the steadiest figure on a busy
machine. The same two files run unchanged in a checkout of an older commit (before/after).

1. **Sustained at L0** (the default run prints it): an offered rate *holds* when, for the whole
   run, the pipeline stayed at L0, and the aggregator had ingested >= 98 % of what was offered
   one second after the publisher's last tick (it kept pace: no backlog). The search doubles
   the rate from ``--start`` until a step fails, then bisects between the last rate that held
   and the first that did not until they are within ``--precision``; the sustained rate is the
   highest rate that held. Each step lasts ``--duration`` seconds (after the aggregator is
   ready). With ``--runs N`` the search is repeated and the median is quoted.
2. **Replay capacity**: the tape preloaded into the source stream, an aggregator started with
   ``start = "all"`` and timed until it has ingested everything (ticks/s flat out).
3. **CPU per tick doing L0 work**: a fixed offered rate (``--cpu-rate``) with budgets too large
   to ever degrade, so the work per tick is L0's whatever else runs on the machine: aggregator
   CPU µs per tick, and the rate one core would carry at that cost.

Per step the latency figures are kept too: processing p50/p99 (tick ingest -> delta publish,
the aggregator's ``aggregator_latency_seconds``: the oldest tick of each delta, so it includes
the wait for the 33 ms window) and end-to-end p50/p99 (the aggregator's arrival stamp
``SymbolState.ts_arrival_us`` -> delta received by a subscriber in this process, per entry).
Results: bench/results/aggregator.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _aggbench import (
    Aggregator,
    env_note,
    histogram_quantile,
    median,
    pct,
    publish_lean,
    publisher_result,
    save,
    search_rate,
    tape,
)

from xypipe._embedded import embedded_nats
from xypipe._nats import connect
from xypipe.contracts import Delta

SYMBOLS = 5000
LEVEL = 'degradation_level{scope="pipeline:aggregator"}'


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def _relax(agg: Aggregator) -> None:
    """Budgets no load reaches: the level stays L0, so the work per tick is L0's."""
    text = re.sub(r"max_items = \d+, max_age_ms = \d+", "max_items = 1000000, "
                  "max_age_ms = 3600000", agg.cfg.read_text())
    text = text.replace('start = "new"\n', 'start = "new"\nmax_lag = 100000000\n')
    agg.cfg.write_text(text)


def _tape_for(ticks: int) -> Path:
    """A tape of at least ``ticks`` (whole millions, so a few sizes are generated, once)."""
    return tape(SYMBOLS, max(1, -(-ticks // 1_000_000)) * 1_000_000)


async def one_step(work: Path, rate: float, duration: float, *,
                   relaxed: bool = False) -> dict[str, Any]:
    """One offered rate against a fresh nats-server and a fresh aggregator."""
    count = int(rate * duration)
    tape_path = _tape_for(count)
    async with embedded_nats(port=0, data_dir=work / f"nats-{time.monotonic_ns()}") as srv:
        agg = Aggregator(work, srv.url, start="new")
        if relaxed:
            _relax(agg)
        await trio.to_thread.run_sync(agg.start)
        assert agg.proc is not None and srv.pid is not None
        ap, sp = psutil.Process(agg.proc.pid), psutil.Process(srv.pid)
        lat: list[float] = []
        warm_until = time.time() + 1.0
        try:
            async with connect(srv.url, name="bench-sub") as nc, trio.open_nursery() as nursery:
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
                                if n % 8:
                                    continue  # a sample: decoding everything costs a core
                                for s in Delta.FromString(m.data).symbols:
                                    lat.append((now_us - s.ts_arrival_us) / 1000)

                await nursery.start(subscribe)
                # The publisher builds its frames before its clock starts: the aggregator's
                # interval starts with the first tick it ingests.
                proc = publish_lean(srv.url, tape_path, rate, count)
                m0 = await trio.to_thread.run_sync(agg.metrics)
                levels = [m0.get(LEVEL, 0.0)]
                series: list[tuple[float, float]] = []
                a0 = s0 = t0 = None
                while proc.poll() is None:
                    await trio.sleep(0.1)
                    m = await trio.to_thread.run_sync(agg.metrics)
                    now = time.monotonic()
                    done = m.get("src_ingest_total", 0.0)
                    if a0 is None and done > m0.get("src_ingest_total", 0.0):
                        a0, s0, t0 = _cpu(ap), _cpu(sp), now
                        m0 = m
                    if a0 is not None:
                        levels.append(m.get(LEVEL, 0.0))
                        series.append((now, done))
                pub = await trio.to_thread.run_sync(publisher_result, proc)
                # Drain: what was offered but not yet ingested gets one second more.
                deadline = time.monotonic() + 1.0
                m1 = m0
                while time.monotonic() < deadline:
                    m1 = await trio.to_thread.run_sync(agg.metrics)
                    levels.append(m1.get(LEVEL, 0.0))
                    if m1.get("src_ingest_total", 0.0) >= count:
                        break
                    await trio.sleep(0.1)
                t1 = time.monotonic()
                a1, s1 = _cpu(ap), _cpu(sp)
                nursery.cancel_scope.cancel()
        finally:
            agg.stop()
    ingested = m1.get("src_ingest_total", 0.0)
    base = m0.get("src_ingest_total", 0.0)
    # While ticks flowed: from the first sample that saw them to the last that saw more.
    moved = [(t, v) for t, v in series if v > base]
    if len(moved) >= 2 and moved[-1][0] > t0:
        ingest_rate = (moved[-1][1] - base) / (moved[-1][0] - t0)
    else:
        ingest_rate = ingested / max(pub["seconds"], 1e-9)
    span = (t1 - t0) if t0 is not None else 0.0
    agg_cpu = (a1 - a0) if a0 is not None else 0.0
    nats_cpu = (s1 - s0) if s0 is not None else 0.0
    worked = max(ingested - base, 1.0)
    q = "aggregator_latency_seconds"
    share = ingested / count if count else 0.0
    max_level = max(levels)
    return {
        "offered": rate,
        "ticks": count,
        "ingest_rate": ingest_rate,
        "ingested_share": share,
        "max_level": max_level,
        "held": bool(max_level == 0 and share >= 0.98),
        "publisher_rate": pub["rate"],
        "agg_cpu_s": agg_cpu,
        "agg_cpu_share": agg_cpu / span if span else 0.0,
        "agg_us_per_tick": agg_cpu / worked * 1e6,
        "publisher_cpu_s": pub["cpu_s"],
        "publisher_us_per_tick": pub["cpu_s"] / max(pub["sent"], 1) * 1e6,
        "nats_cpu_s": nats_cpu,
        "nats_us_per_tick": nats_cpu / worked * 1e6,
        "deltas": m1.get("ticks_out_total", 0) - m0.get("ticks_out_total", 0),
        "proc_p50_ms": (histogram_quantile(m1, q, 0.5, m0) or float("nan")) * 1000,
        "proc_p99_ms": (histogram_quantile(m1, q, 0.99, m0) or float("nan")) * 1000,
        "e2e_p50_ms": pct(lat, 0.5),
        "e2e_p99_ms": pct(lat, 0.99),
    }


def _line(r: dict[str, Any]) -> str:
    return (f"offered {r['offered']:>8,.0f}/s: ingest {r['ingest_rate']:>8,.0f}/s "
            f"({r['ingested_share']:.1%}) L{r['max_level']:.0f} "
            f"{'held' if r['held'] else 'FAILED'}; CPU aggregator {r['agg_us_per_tick']:.1f} "
            f"µs/tick ({r['agg_cpu_share']:.0%} of a core), publisher "
            f"{r['publisher_us_per_tick']:.2f} µs/tick, nats-server {r['nats_us_per_tick']:.1f} "
            f"µs/tick; proc p50/p99 {r['proc_p50_ms']:.0f}/{r['proc_p99_ms']:.0f} ms, e2e "
            f"p50/p99 {r['e2e_p50_ms']:.0f}/{r['e2e_p99_ms']:.0f} ms")


async def search(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Double until a step fails, then bisect; the highest rate that held."""
    steps: list[dict[str, Any]] = []

    async def tried(rate: float) -> bool:
        r = await one_step(work, rate, args.duration)
        steps.append(r)
        print("  " + _line(r), flush=True)
        return bool(r["held"])

    lo, hi = await search_rate(tried, args.start, args.max_rate, args.precision)
    return {"sustained": lo, "first_failed": hi, "steps": steps, "capped": hi == 0.0}


async def replay_capacity(work: Path, n: int) -> dict[str, Any]:
    """Preload ``n`` ticks into the source stream, then time an aggregator reading them all."""
    tape_path = _tape_for(n)
    async with embedded_nats(port=0, data_dir=work / f"nats-cap-{time.monotonic_ns()}") as srv:
        async with connect(srv.url) as nc:
            await nc.jetstream().ensure_stream("XY_SRC", ["xy.src.>", "xy.ref.>"],
                                               max_age_s=3600)
        # Paced well below what the server stores per second, so nothing is dropped on the way.
        proc = publish_lean(srv.url, tape_path, 100_000, n)
        await trio.to_thread.run_sync(publisher_result, proc)
        agg = Aggregator(work, srv.url, start="all")
        await trio.to_thread.run_sync(lambda: agg.start(ready=False))
        assert agg.proc is not None
        ap = psutil.Process(agg.proc.pid)
        levels = [0.0]
        first: tuple[float, float, float] | None = None
        last = (time.monotonic(), 0.0)
        try:
            while True:
                m = await trio.to_thread.run_sync(agg.metrics)
                now = time.monotonic()
                done = m.get("src_ingest_total", 0)
                levels.append(m.get(LEVEL, 0.0))
                if first is None and done > 0:
                    first = (now, done, _cpu(ap))
                if done > last[1]:
                    last = (now, done)
                if done >= n or now - last[0] > 3.0:
                    break  # everything, or all the server kept (nothing more for 3 s)
                await trio.sleep(0.02)
            cpu = _cpu(ap)
            assert first is not None
            took = last[0] - first[0]
            n = int(last[1] - first[1])
        finally:
            agg.stop()
    return {"ticks": n, "seconds": took, "ticks_per_s": n / took, "max_level": max(levels),
            "agg_us_per_tick": (cpu - first[2]) / n * 1e6}


async def main(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {"env": env_note(), "symbols": SYMBOLS, "args": vars(args),
                               "searches": [], "replay": [], "cpu": []}
    with tempfile.TemporaryDirectory(prefix="xy-aggbench-") as tmp:
        work = Path(tmp)
        for i in range(args.runs):
            print(f"search {i + 1}/{args.runs} (steps of {args.duration:g} s):", flush=True)
            s = await search(work, args)
            results["searches"].append(s)
            print(f"  -> sustained at L0: {s['sustained']:,.0f} ticks/s", flush=True)
        for i in range(args.replay_runs):
            c = await replay_capacity(work, args.replay_ticks)
            results["replay"].append(c)
            print(f"replay capacity run {i + 1}: {c['ticks_per_s']:,.0f} ticks/s ({c['ticks']} "
                  f"in {c['seconds']:.2f} s, L<={c['max_level']:.0f}, aggregator "
                  f"{c['agg_us_per_tick']:.1f} µs/tick)", flush=True)
        for i in range(args.cpu_runs):
            r = await one_step(work, args.cpu_rate, args.duration, relaxed=True)
            results["cpu"].append(r)
            print(f"L0 work, run {i + 1}: " + _line(r), flush=True)
    sustained = median([s["sustained"] for s in results["searches"]])
    replay = median([c["ticks_per_s"] for c in results["replay"]])
    cpu_tick = median([r["agg_us_per_tick"] for r in results["cpu"]])
    pub_tick = median([r["publisher_us_per_tick"] for r in results["cpu"]])
    nats_tick = median([r["nats_us_per_tick"] for r in results["cpu"]])
    results["sustained_l0_ticks_per_s"] = sustained
    results["replay_ticks_per_s"] = replay
    results["l0_agg_us_per_tick"] = cpu_tick
    results["l0_publisher_us_per_tick"] = pub_tick
    results["l0_nats_us_per_tick"] = nats_tick
    steps = [r for s in results["searches"] for r in s["steps"]]
    lines = [
        f"# Aggregator, {SYMBOLS:,} symbols",
        "",
        f"**Sustained at L0: {sustained:,.0f} ticks/s** (search, median of {args.runs}); "
        f"**replay flat out: {replay:,.0f} ticks/s** (median of {args.replay_runs}); "
        f"**aggregator CPU doing L0 work: {cpu_tick:.1f} µs/tick** at {args.cpu_rate:,.0f} "
        f"offered (≈ {1e6 / cpu_tick if cpu_tick == cpu_tick else 0:,.0f} ticks/s per core); "
        f"publisher {pub_tick:.2f} µs/tick, nats-server {nats_tick:.1f} µs/tick.",
        "",
        f"Search steps ({args.duration:g} s each, in the order tried):",
        "",
        "| offered ticks/s | ingested ticks/s | share | max level | held | aggregator µs/tick "
        "(core share) | publisher µs/tick | nats-server µs/tick | processing p50 / p99 ms "
        "| end-to-end p50 / p99 ms |",
        "|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|",
    ]
    for r in steps:
        lines.append(
            f"| {r['offered']:,.0f} | {r['ingest_rate']:,.0f} | {r['ingested_share']:.1%} | "
            f"L{r['max_level']:.0f} | {'yes' if r['held'] else 'no'} | "
            f"{r['agg_us_per_tick']:.1f} ({r['agg_cpu_share']:.0%}) | "
            f"{r['publisher_us_per_tick']:.2f} | {r['nats_us_per_tick']:.1f} | "
            f"{r['proc_p50_ms']:.1f} / {r['proc_p99_ms']:.1f} | "
            f"{r['e2e_p50_ms']:.1f} / {r['e2e_p99_ms']:.1f} |")
    lines += [
        "",
        "Held = L0 for the whole step and >= 98 % of the offered ticks ingested within 1 s of "
        "the publisher's last. Processing: tick ingest to delta publish, oldest tick of "
        "each delta (includes the 33 ms window). End-to-end: the aggregator's arrival stamp to "
        "a subscriber, per entry. CPU per tick: the process's CPU over the step / ticks it "
        "ingested (the publisher: / ticks it sent).",
        f"Machine: {results['env']}",
    ]
    table = "\n".join(lines)
    print(table)
    save("aggregator", results, table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=float, default=10_000, help="first rate tried (ticks/s)")
    ap.add_argument("--max-rate", type=float, default=320_000)
    ap.add_argument("--precision", type=float, default=0.1,
                    help="bisect until the failed rate is within this of the held one")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per step")
    ap.add_argument("--runs", type=int, default=1, help="searches (median quoted)")
    ap.add_argument("--replay-runs", type=int, default=3)
    ap.add_argument("--replay-ticks", type=int, default=300_000)
    ap.add_argument("--cpu-rate", type=float, default=20_000)
    ap.add_argument("--cpu-runs", type=int, default=3)
    trio.run(main, ap.parse_args())
