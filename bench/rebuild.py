"""Aggregator restart: how long a killed aggregator takes to rebuild 5,000 symbols when it is
killed at any moment, and whether a subscriber sees any sequence hole or repeat across it.

    python bench/rebuild.py                 # 3 trials of each kind, p50/p95/max
    python bench/rebuild.py --trials 5      # 5 of each kind

Each trial: a fresh nats-server; an aggregator (own process, snapshots every 2 s) fed by
``xypipe publish`` (5,000 symbols, 4,000 ticks/s); the aggregator is killed with SIGKILL and a
new one started. Trial kinds:

* ``random``: killed at a random moment 4-8 s in;
* ``before-snapshot``: killed 50 ms before its next round of snapshots is due (the restore
  point is then as old as it gets: a whole snapshot interval);
* ``stale-group``: a cold start first — 500 extra symbols tick before their contracts exist (so
  they land in the default group), then their contracts move them all to another group,
  leaving the default group empty; killed at a random moment after that.

Reported per trial and as p50/p95/max: the rebuild time the new aggregator measured itself
(``aggregator_rebuild_seconds``: from its ingest stage starting to the state being rebuilt =
last snapshots loaded + source stream replayed up to where it was), how many source messages it
replayed, the time from spawning the process to that point and to the first delta it emitted
reaching a subscriber, and what that subscriber, rebuilding every group, saw (gaps, repeats,
epoch changes, checksum mismatches). A restarted aggregator that reports no rebuild within 30 s
is counted as not rebuilt (on a machine too busy for the first one to store a snapshot before
the kill there is nothing to rebuild from). The bar is 1 s. Runs unchanged against older
checkouts of the project (it drives ``xypipe run``/``xypipe publish`` and reads /metrics).
Results: bench/results/rebuild.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _aggbench import Aggregator, env_note, pct, publish_sim, save

from xypipe._embedded import embedded_nats
from xypipe._md.client import MarketView
from xypipe._nats import connect
from xypipe._publisher import contract_subject
from xypipe._stages.snapshot import SnapshotConfig
from xypipe.contracts import Contract, Delta, PriceLevel, Snapshot, Tick

KINDS = ("random", "before-snapshot", "stale-group")
SNAPSHOT_S = 2.0
COLD_SYMBOLS = 500
STORED_DEFAULT = "xy.md.snapshot.default"
#: A restarted aggregator that has not reported its rebuild by then is counted as not rebuilt.
REBUILD_TIMEOUT_S = 30.0


def cold_tick(symbol: str, seq: int) -> bytes:
    return Tick(venue="XCLD", symbol=symbol, seq=seq, last=1000 + seq,
                ts_exchange_us=time.time_ns() // 1000, ts_arrival_us=time.time_ns() // 1000,
                bids=[PriceLevel(price=999, size=1, orders=1)],
                asks=[PriceLevel(price=1001, size=1, orders=1)]).SerializeToString()


async def cold_start(nc: Any) -> None:
    """Ticks of symbols without contracts (default group), then contracts moving them away."""
    js = nc.jetstream()
    names = [f"COLD{i}" for i in range(COLD_SYMBOLS)]
    await js.publish_many([(f"xy.src.tick.XCLD.{s}", cold_tick(s, 1)) for s in names])
    with trio.fail_after(3 * SNAPSHOT_S):  # until the default group's snapshot is stored
        while await js.direct_get_last("XY_MD_SNAPSHOT", STORED_DEFAULT) is None:  # noqa: ASYNC110
            await trio.sleep(0.05)
    await js.publish_many([(contract_subject("XCLD", s),
                            Contract(venue="XCLD", symbol=s, group="cold").SerializeToString())
                           for s in names])
    await js.publish_many([(f"xy.src.tick.XCLD.{s}", cold_tick(s, 2)) for s in names])


def replay_range(log: Path) -> tuple[int | None, int]:
    """First and last source sequence the restarted aggregator replayed (from its "ingest
    starting" and "state rebuilt" log lines)."""
    start, done = None, 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("msg") == "ingest starting":
            found = re.fullmatch(r"\('seq', (\d+)\)", str(doc.get("deliver")))
            start = int(found.group(1)) if found else None
        elif doc.get("msg") == "state rebuilt":
            done = int(doc["replayed_to"])
    return start, done


async def one_run(work: Path, kind: str, rng: random.Random) -> dict[str, Any]:
    """One trial; whatever it started is gone when it ends, even when it fails (a busy machine
    can miss the snapshot round a "before-snapshot" trial waits for)."""
    started: list[Aggregator | subprocess.Popen[bytes]] = []
    try:
        return await _one_run(work, kind, rng, started)
    finally:
        for child in started:
            proc = child.proc if isinstance(child, Aggregator) else child
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


async def _one_run(work: Path, kind: str, rng: random.Random,
                   started: list[Aggregator | subprocess.Popen[bytes]]) -> dict[str, Any]:
    async with embedded_nats(port=0, data_dir=work / f"nats-{time.monotonic_ns()}") as srv:
        view = MarketView()
        first = Aggregator(work, srv.url, start="resume", snapshot_ms=int(SNAPSHOT_S * 1000))
        started.append(first)
        await trio.to_thread.run_sync(first.start)
        rounds: list[float] = []
        first_round = trio.Event()
        # The restarted aggregator's first delta: the first one emitted after its spawn.
        spawn_wall_us = [1 << 62]
        first_delta: list[float] = []
        async with connect(srv.url, name="bench-sub") as nc, trio.open_nursery() as nursery:
            async def follow(task_status: trio.TaskStatus[None]) -> None:
                async with nc.subscribe("xy.md.>", max_batch=1024) as sub:
                    task_status.started()
                    async for batch in sub:
                        for m in batch:
                            if m.subject.startswith("xy.md.snapshot."):
                                view.apply_snapshot(Snapshot.FromString(m.data))
                                now = trio.current_time()
                                if not rounds or now - rounds[-1] > 0.5:
                                    rounds.append(now)
                                    first_round.set()
                            elif m.subject.startswith("xy.md.tick."):
                                d = Delta.FromString(m.data)
                                view.apply_delta(d)
                                if not first_delta and d.ts_emit_us > spawn_wall_us[0]:
                                    first_delta.append(time.monotonic())

            await nursery.start(follow)
            t0 = trio.current_time()
            kill_at = rng.uniform(4.0, 8.0)
            pub = publish_sim(srv.url, symbols=5000, rate=4000, duration=kill_at + 8)
            started.append(pub)
            if kind == "stale-group":
                await cold_start(nc)
            await trio.sleep_until(t0 + kill_at)
            if kind == "before-snapshot":
                # Rounds come every interval_ms or sooner (by count): the next is due one
                # observed period after the last one seen. Kill 50 ms before it.
                with trio.fail_after(3 * SNAPSHOT_S):
                    await first_round.wait()
                period = rounds[-1] - rounds[-2] if len(rounds) > 1 else SNAPSHOT_S
                due = rounds[-1] + period
                while due - 0.05 < trio.current_time():
                    due += period
                await trio.sleep_until(due - 0.05)
            deltas_before = view.stats.deltas
            first.stop(kill=True)
            source_at_kill = (await nc.jetstream().stream_state("XY_SRC")).last_seq
            killed_after = trio.current_time() - t0
            since_round = trio.current_time() - rounds[-1] if rounds else float("nan")
            period_s = rounds[-1] - rounds[-2] if len(rounds) > 1 else float("nan")
            second = Aggregator(work, srv.url, start="resume", snapshot_ms=int(SNAPSHOT_S * 1000))
            started.append(second)
            spawned = time.monotonic()
            spawn_wall_us[0] = time.time_ns() // 1000
            await trio.to_thread.run_sync(second.start)
            rebuilt, m = False, {}
            with trio.move_on_after(REBUILD_TIMEOUT_S):
                while not rebuilt:
                    m = await trio.to_thread.run_sync(second.metrics)
                    rebuilt = any(k.startswith("aggregator_rebuilds_total{") for k in m)
                    if not rebuilt:
                        await trio.sleep(0.01)
            to_rebuilt = time.monotonic() - spawned if rebuilt else float("nan")
            with trio.move_on_after(10):
                while not first_delta:  # noqa: ASYNC110 (set by the subscriber task)
                    await trio.sleep(0.01)
            to_first_delta = first_delta[0] - spawned if first_delta else float("nan")
            rebuild_s = m["aggregator_rebuild_seconds"] if rebuilt else float("nan")
            continued = m.get('aggregator_rebuilds_total{continued="true"}', 0.0)
            await trio.to_thread.run_sync(pub.wait)
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        second.stop()
    s = view.stats
    replay_from, replayed_to = replay_range(second.log)
    replayed = None if replay_from is None else max(replayed_to - replay_from + 1, 0)
    return {"kind": kind, "killed_after_s": round(killed_after, 3),
            "since_last_snapshot_s": round(since_round, 3),
            "snapshot_period_s": round(period_s, 3),
            "rebuild_s": rebuild_s, "spawn_to_rebuilt_s": to_rebuilt,
            "spawn_to_first_delta_s": to_first_delta,
            "replayed_msgs": replayed,
            "behind_at_kill_msgs": (None if replay_from is None
                                    else max(source_at_kill - replay_from + 1, 0)),
            "rebuilt": rebuilt, "continued": bool(continued),
            "deltas_before_kill": deltas_before,
            "deltas": s.deltas, "snapshots": s.snapshots, "gaps": s.gaps, "repeats": s.repeats,
            "epoch_changes": s.epoch_changes, "checksum_mismatches": s.checksum_mismatches,
            "verified": s.verified, "symbols": len(view.state()), "problems": s.problems[:5]}


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    failed = [r for r in runs if not r["rebuilt"]]
    done = [r for r in runs if r["rebuilt"]] or runs
    rb = [float(r["rebuild_s"]) for r in done]
    sp = [float(r["spawn_to_rebuilt_s"]) for r in done]
    fd = [float(r["spawn_to_first_delta_s"]) for r in runs]
    rp = [float(r["replayed_msgs"]) for r in runs if r["replayed_msgs"] is not None]
    bh = [float(r["behind_at_kill_msgs"]) for r in runs if r["behind_at_kill_msgs"] is not None]
    return {"trials": len(runs), "not_rebuilt": len(failed),
            "rebuild_p50_s": pct(rb, 0.5), "rebuild_p95_s": pct(rb, 0.95),
            "rebuild_max_s": max(rb), "spawn_to_rebuilt_p50_s": pct(sp, 0.5),
            "spawn_to_first_delta_p50_s": pct(fd, 0.5),
            "replayed_max_msgs": max(rp) if rp else float("nan"),
            "behind_at_kill_max_msgs": max(bh) if bh else float("nan"),
            "gaps": sum(r["gaps"] for r in runs), "repeats": sum(r["repeats"] for r in runs),
            "epoch_changes": sum(r["epoch_changes"] for r in runs),
            "checksum_mismatches": sum(r["checksum_mismatches"] for r in runs)}


def row(name: str, s: dict[str, float]) -> str:
    return (f"| {name} | {s['trials']:.0f} | {s['rebuild_p50_s'] * 1000:.0f} ms | "
            f"{s['rebuild_p95_s'] * 1000:.0f} ms | {s['rebuild_max_s'] * 1000:.0f} ms | "
            f"{s['behind_at_kill_max_msgs']:.0f} | {s['replayed_max_msgs']:.0f} | "
            f"{s['spawn_to_rebuilt_p50_s'] * 1000:.0f} ms | "
            f"{s['spawn_to_first_delta_p50_s'] * 1000:.0f} ms | "
            f"{s['gaps']:.0f} | {s['repeats']:.0f} | {s['epoch_changes']:.0f} | "
            f"{s['checksum_mismatches']:.0f} |")


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    runs = []
    plan = [k for _ in range(args.trials) for k in KINDS]
    with tempfile.TemporaryDirectory(prefix="xy-rebuild-") as tmp:
        for i, kind in enumerate(plan):
            r = await one_run(Path(tmp), kind, rng)
            runs.append(r)
            print(f"trial {i + 1}/{len(plan)} [{kind}] killed at {r['killed_after_s']:.2f} s "
                  f"({r['since_last_snapshot_s']:.2f} s after a snapshot round, rounds every "
                  f"{r['snapshot_period_s']:.2f} s): rebuilt in "
                  f"{r['rebuild_s'] * 1000:.0f} ms, restore point {r['behind_at_kill_msgs']} msgs "
                  f"behind at the kill, replayed {r['replayed_msgs']} msgs "
                  f"(spawn to rebuilt {r['spawn_to_rebuilt_s'] * 1000:.0f} ms, to its first "
                  f"delta {r['spawn_to_first_delta_s'] * 1000:.0f} ms), "
                  f"rebuilt={r['rebuilt']} continued={r['continued']} "
                  f"symbols={r['symbols']} gaps={r['gaps']} "
                  f"repeats={r['repeats']} epoch_changes={r['epoch_changes']} "
                  f"checksum_mismatches={r['checksum_mismatches']}", flush=True)
    snap = SnapshotConfig()
    overall = summary(runs)
    by_kind = {k: summary([r for r in runs if r["kind"] == k]) for k in KINDS}
    table = "\n".join([
        "# Aggregator killed (SIGKILL) at any moment, 5,000 symbols at 4,000 ticks/s",
        "",
        "| trials | n | rebuild p50 | rebuild p95 | rebuild max | restore point behind at kill "
        "(max msgs) | replayed (max msgs) | spawn to rebuilt p50 | spawn to first delta p50 "
        "| gaps | repeats | epoch changes | checksum mismatches |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("all", overall),
        *(row(k, s) for k, s in by_kind.items()),
        "",
        "Rebuild: from the restarted aggregator's ingest stage starting to its state holding "
        "everything the stream had when it started (last snapshot per group + replay since). "
        "Restore point behind: source messages between the restore point and the stream's "
        "end at the kill; the replay adds what arrived while the new process started. "
        "Spawn to first delta: from starting the new process to a subscriber receiving the "
        "first delta it emitted. "
        f"Snapshots every 2 s, and early once {snap.max_replay_msgs:,} source messages have "
        f"passed (at most every {snap.min_interval_ms / 1000:g} s: the snapshot stage's "
        "defaults); kinds in bench/rebuild.py. Bar: 1 s.",
        *([f"Not rebuilt within {REBUILD_TIMEOUT_S:.0f} s (left out of the times above): "
           f"{overall['not_rebuilt']:.0f} of {overall['trials']:.0f} trials."]
          if overall["not_rebuilt"] else []),
        f"Machine: {env_note()}",
    ])
    print(table)
    save("rebuild", {"env": env_note(), "runs": runs, "summary": overall, "by_kind": by_kind},
         table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3, help="trials of each kind")
    ap.add_argument("--seed", type=int, default=7)
    trio.run(main, ap.parse_args())
