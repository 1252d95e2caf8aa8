"""Aggregator restart: how long a killed aggregator takes to rebuild 5,000 symbols, and whether
a subscriber sees any sequence hole or repeat across the restart.

    python bench/rebuild.py              # 3 runs, medians

Each run: a fresh nats-server; an aggregator (own process) fed by ``xypipe publish`` (5,000
symbols, 4,000 ticks/s) with snapshots every 2 s; after 6 s the aggregator is killed (SIGKILL)
and a new one started. Reported: the rebuild time the new aggregator measured itself
(``aggregator_rebuild_seconds``: from its ingest stage starting to the state being rebuilt =
last snapshots loaded + source stream replayed up to where it was), the time from spawning the
process to that point, and what a subscriber rebuilding every group saw (gaps, repeats, epoch
changes, checksum mismatches). Results: bench/results/rebuild.{json,md}.
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

from _aggbench import Aggregator, env_note, median, publish_sim, save

from xypipe._embedded import embedded_nats
from xypipe._md.client import MarketView
from xypipe._nats import connect
from xypipe.contracts import Delta, Snapshot


async def one_run(work: Path, seconds_before_kill: float) -> dict[str, Any]:
    async with embedded_nats(port=0, data_dir=work / f"nats-{time.monotonic_ns()}") as srv:
        view = MarketView()
        first = Aggregator(work, srv.url, start="resume")
        await trio.to_thread.run_sync(first.start)
        async with connect(srv.url, name="bench-sub") as nc, trio.open_nursery() as nursery:
            async def follow(task_status: trio.TaskStatus[None]) -> None:
                async with nc.subscribe("xy.md.>", max_batch=1024) as sub:
                    task_status.started()
                    async for batch in sub:
                        for m in batch:
                            if m.subject.startswith("xy.md.snapshot."):
                                view.apply_snapshot(Snapshot.FromString(m.data))
                            elif m.subject.startswith("xy.md.tick."):
                                view.apply_delta(Delta.FromString(m.data))

            await nursery.start(follow)
            pub = publish_sim(srv.url, symbols=5000, rate=4000,
                              duration=seconds_before_kill + 6)
            await trio.sleep(seconds_before_kill)
            deltas_before = view.stats.deltas
            first.stop(kill=True)
            second = Aggregator(work, srv.url, start="resume")
            spawned = time.monotonic()
            await trio.to_thread.run_sync(second.start)
            while True:
                m = await trio.to_thread.run_sync(second.metrics)
                if any(k.startswith("aggregator_rebuilds_total{") for k in m):
                    break
                await trio.sleep(0.01)
            to_rebuilt = time.monotonic() - spawned
            rebuild_s = m["aggregator_rebuild_seconds"]
            continued = m.get('aggregator_rebuilds_total{continued="true"}', 0.0)
            await trio.to_thread.run_sync(pub.wait)
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        second.stop()
    s = view.stats
    return {"rebuild_s": rebuild_s, "spawn_to_rebuilt_s": to_rebuilt,
            "continued": bool(continued), "deltas_before_kill": deltas_before,
            "deltas": s.deltas, "snapshots": s.snapshots, "gaps": s.gaps, "repeats": s.repeats,
            "epoch_changes": s.epoch_changes, "checksum_mismatches": s.checksum_mismatches,
            "verified": s.verified, "symbols": len(view.state()), "problems": s.problems[:5]}


async def main(args: argparse.Namespace) -> None:
    runs = []
    with tempfile.TemporaryDirectory(prefix="xy-rebuild-") as tmp:
        for i in range(args.runs):
            r = await one_run(Path(tmp), args.kill_after)
            runs.append(r)
            print(f"run {i + 1}: rebuilt in {r['rebuild_s'] * 1000:.0f} ms "
                  f"(spawn to rebuilt {r['spawn_to_rebuilt_s'] * 1000:.0f} ms), "
                  f"continued={r['continued']} symbols={r['symbols']} gaps={r['gaps']} "
                  f"repeats={r['repeats']} epoch_changes={r['epoch_changes']} "
                  f"checksum_mismatches={r['checksum_mismatches']}", flush=True)
    med = {k: median([float(r[k]) for r in runs])
           for k in ("rebuild_s", "spawn_to_rebuilt_s", "gaps", "repeats", "epoch_changes",
                     "checksum_mismatches")}
    table = "\n".join([
        f"# Aggregator restart, 5,000 symbols at 4,000 ticks/s (medians of {args.runs} runs)",
        "",
        "| rebuild (snapshots + replay) | process spawn to rebuilt | gaps | repeats "
        "| epoch changes | checksum mismatches |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {med['rebuild_s'] * 1000:.0f} ms | {med['spawn_to_rebuilt_s'] * 1000:.0f} ms | "
        f"{med['gaps']:.0f} | {med['repeats']:.0f} | {med['epoch_changes']:.0f} | "
        f"{med['checksum_mismatches']:.0f} |",
        "",
        "Rebuild: from the restarted aggregator's ingest stage starting to its state holding "
        "everything the stream had when it started (last snapshot per group + replay since).",
        f"Machine: {env_note()}",
    ])
    print(table)
    save("rebuild", {"env": env_note(), "runs": runs, "medians": med}, table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kill-after", type=float, default=6.0)
    trio.run(main, ap.parse_args())
