"""One slow reader among 20 normal ones: what it costs the others (nothing, if isolation holds).

Same setup as ``bench/fanout.py`` (gateway, clients and nats-server in their own processes; 5
groups x 30 deltas/s). Each run measures the 20 normal clients twice over ``--seconds``: alone,
and with one extra client that stops reading for ``--pause`` seconds at the start of the window
and then reads normally. It prints the normal clients' frames/s and latency p50/p99 for both, and
the levels the slow client was told (``DegradeChange``) — it should walk up and back to 0.

The gateway runs with a small socket buffer and short budgets so the slow client degrades within
a second (``send_buffer_bytes = 8192``, ``queue_max_age_ms = 300``, ``dwell_ms = 500``).

    python bench/slow_consumer.py    # 3 runs; writes bench/results/slow_consumer.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fanout

EXTRA = """
send_buffer_bytes = 8192
queue_max_age_ms = 300
level_interval_ms = [0, 100, 200, 400]
priority_groups = ["g0"]
degrade = { enter = [0.5, 0.75, 0.9], leave = [0.25, 0.5, 0.7], dwell_ms = 500, sample_ms = 50 }
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--pause", type=float, default=3.0)
    args = p.parse_args()
    results = trio.run(fanout.bench, [20], args.runs, args.seconds, EXTRA, (1, args.pause))
    rows = []
    for slow in (0, 1):
        rs = [r for r in results if r["slow"] == slow]
        rows.append({
            "scenario": "20 normal + 1 slow" if slow else "20 normal alone",
            "frames_per_s": statistics.median(r["frames_per_s"] for r in rs),
            "lat_p50_ms": statistics.median(r["lat_p50_ms"] for r in rs),
            "lat_p99_ms": statistics.median(r["lat_p99_ms"] for r in rs),
            "gateway_cpu_pct": statistics.median(r["gateway_cpu_pct"] for r in rs),
            "slow_levels": [r["slow_levels"] for r in rs] if slow else [],
        })
    lines = ["# Slow consumer isolation: 20 normal readers, with and without one slow reader", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; medians of {args.runs} runs; the slow reader stops "
             f"reading for {args.pause:g} s of each {args.seconds:g} s window.", "",
             "| scenario | normal frames/s | normal p50 ms | normal p99 ms | gateway CPU % |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['frames_per_s']:.0f} | {r['lat_p50_ms']:.1f} | "
                     f"{r['lat_p99_ms']:.1f} | {r['gateway_cpu_pct']:.0f} |")
    lines += ["", "Levels the slow reader was told, per run: "
              + "; ".join(" → ".join(f"L{x}" for x in lv) for lv in rows[1]["slow_levels"])]
    md = "\n".join(lines) + "\n"
    fanout.RESULTS.mkdir(exist_ok=True)
    (fanout.RESULTS / "slow_consumer.json").write_text(
        json.dumps({"runs": results, "medians": rows}, indent=2))
    (fanout.RESULTS / "slow_consumer.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
