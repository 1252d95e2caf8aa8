"""Scaling out on one host: what a second aggregator process and a second gateway worker add.

    python bench/scale.py            # both curves, the default run (about 5 minutes)
    python bench/scale.py --quick    # a smoke: one short step / window per point
    python bench/scale.py --only gateway --clients 100 1000 --seconds 5

Two curves, each measured in one run, printed and saved (bench/results/scale.{json,md}):

1. **Aggregator, sustained ticks/s at L0 with 1 and 2 processes** (``[processes.aggregator]
   workers = N``, ``ownership = { enabled = true }`` on the ingest stage, so the workers split
   the groups through JetStream KV leases): bench/aggregator.py's search, each step a fresh
   nats-server and aggregator tree fed by its lean publisher; with 2 a rate holds only when
   *both* stay at L0 and together ingest what was offered (no consumer lags). See
   bench/_scale_agg.py.
2. **Gateway, delivered frames/s and p99 send latency at 100 / 500 / 1,000 / 2,000 clients with
   1 and 2 workers** (``[processes.gateway] workers = N``, one port, ``SO_REUSEPORT``):
   bench/fanout.py's stack, the clients in ``--loadgens`` processes of bench/_fanout_lean.py
   (picows on uvloop), the same generators for both worker counts. 2,000 is beyond the issue's
   three points: one worker keeps up at 1,000 on an idle machine, and a ratio only shows where
   one worker does not. See bench/_scale_gw.py.

For every step and window the CPU of **every side** is read from /proc over the same interval:
each aggregator or gateway worker, the supervisor, each load generator, nats-server, the
publisher, and the machine's busy share of all its cores. The report gives the 2-vs-1 ratio per
point and where the bottleneck is: a side at >= 90 % of a core, the machine's cores saturated, or
the load generators themselves — the issue asks >= 1.6x from a second process where the clients
are not the bottleneck, and the verdict says which case each point is.

Every number depends on the machine being otherwise idle: on a shared machine the figures are
indicative only (the JSON keeps the machine's busy share of each window to show it).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _scale_agg  # noqa: E402  (bench/ is not a package)
import _scale_gw  # noqa: E402
import _sides  # noqa: E402
from _aggbench import RESULTS, save, search_rate  # noqa: E402

GOAL = 1.6


def workers_supported() -> bool:
    """Whether this checkout knows ``[processes.X] workers`` (a process of N copies)."""
    import attrs

    from xypipe._config import ProcessConfig

    return any(f.name == "workers" for f in attrs.fields(ProcessConfig))


def ownership_supported() -> bool:
    """Whether the ingest stage takes ``ownership = {...}`` (aggregators splitting groups)."""
    import attrs

    from xypipe._stages.ingest import IngestConfig

    return any(f.name == "ownership" for f in attrs.fields(IngestConfig))


# --------------------------------------------------------------------------- the aggregator


async def agg_curve(args: argparse.Namespace, counts: list[int], ownership: bool,
                    workers_key: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    groups, how = _scale_agg.group_names()
    print(f"aggregator groups: {', '.join(groups)} ({how})", flush=True)
    with tempfile.TemporaryDirectory(prefix="xy-scale-agg-") as tmp:
        work = Path(tmp)
        first = 0.0
        for n in counts:
            steps: list[dict[str, Any]] = []

            async def tried(rate: float, n: int = n, steps: list[dict[str, Any]] = steps
                            ) -> bool:
                r = await _scale_agg.one_step(work, n, rate, args.duration, groups=groups,
                                              ownership=ownership, workers_key=workers_key)
                steps.append(r)
                print("  " + _scale_agg.line(r), flush=True)
                return bool(r["held"])

            print(f"aggregator, {n} process(es) (steps of {args.duration:g} s):", flush=True)
            if args.quick:
                await tried(args.start)
                held = [s for s in steps if s["held"]]
                sustained = max((s["offered"] for s in held), default=0.0)
                failed = 0.0
            else:
                # A second process starts from what one sustained: that point must hold.
                start = first if first and n > 1 else args.start
                sustained, failed = await search_rate(tried, start, args.max_rate,
                                                      args.precision)
            first = first or sustained
            at = next((s for s in steps if s["offered"] == sustained), None)
            fail = next((s for s in steps if s["offered"] == failed), None)
            out.append({"workers": n, "sustained": sustained, "first_failed": failed,
                        "steps": steps, "at_sustained": at, "at_failed": fail,
                        "groups": groups, "groups_chosen": how})
            print(f"  -> {n} process(es): sustained at L0 {sustained:,.0f} ticks/s",
                  flush=True)
    return out


def agg_verdict(curve: list[dict[str, Any]]) -> dict[str, Any]:
    by = {c["workers"]: c for c in curve}
    if 1 not in by or 2 not in by or not by[1]["sustained"]:
        return {"ratio": None, "text": "only one process count measured"}
    ratio = by[2]["sustained"] / by[1]["sustained"]
    est = _ceilings(by[1]["at_sustained"], by[2]["at_sustained"], "ingest_rate", "aggregator.")
    limit = by[2]["at_failed"] or by[2]["at_sustained"]
    where = limit["bottleneck"]["text"] if limit else "unknown"
    machine = bool(limit and limit["bottleneck"]["machine_saturated"])
    disturbed = [s for c in curve for s in c["steps"] if s["bottleneck"].get("disturbed")]
    if disturbed:
        worst = max(s["window"].get("others", 0.0) for s in disturbed)
        text = (f"{ratio:.2f}x, not a measurement: other processes used the machine in "
                f"{len(disturbed)} of the steps (up to {worst:.0%} of a core); re-run on an idle "
                "machine")
    elif ratio >= GOAL:
        text = f"{ratio:.2f}x: the >= {GOAL}x goal is met"
    elif machine:
        text = (f"{ratio:.2f}x, below {GOAL}x: the machine's cores are saturated at 2 "
                "processes' limit (the publisher and nats-server share them)")
    else:
        text = f"{ratio:.2f}x, below {GOAL}x"
    return {"ratio": ratio, "bottleneck_at_limit": where, "ceiling": est,
            "text": f"{text}; at the limit: {where}; {est['text']}"}


def _ceilings(one: dict[str, Any] | None, two: dict[str, Any] | None, rate: str,
              workers: str) -> dict[str, Any]:
    """What this machine allows at the costs measured with 1 and with 2 processes
    (:func:`_sides.ceiling`), and the ratio those allow."""
    if not one or not two:
        return {"ratio": None, "text": "no ceiling (a point is missing)"}
    c1 = _sides.ceiling(one["window"], one[rate], workers)
    c2 = _sides.ceiling(two["window"], two[rate], workers)
    r = float(c2["rate"]) / max(float(c1["rate"]), 1e-9)  # type: ignore[arg-type]
    return {"one": c1, "two": c2, "ratio": r,
            "text": f"at the measured costs 1 process tops out near {c1['rate']:,.0f}/s "
                    f"({c1['limited_by']}), 2 near {c2['rate']:,.0f}/s ({c2['limited_by']}): "
                    f"at most {r:.2f}x on this machine"}


# --------------------------------------------------------------------------- the gateway


def gw_verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per client count: the 2-vs-1 ratio of delivered frames/s and p99, and why."""
    by = {(r["workers"], r["clients"]): r for r in rows}
    out = []
    for n in sorted({r["clients"] for r in rows}):
        one, two = by.get((1, n)), by.get((2, n))
        if one is None or two is None:
            continue
        ratio = two["frames_per_s"] / max(one["frames_per_s"], 1e-9)
        b1, b2 = one["bottleneck"], two["bottleneck"]
        keeps_up = one["frames_per_s"] >= 0.97 * one["ideal_frames_per_s"]
        shed = [f"{r['workers']} worker(s): {r['connected_at_start']} of {n} connected"
                for r in (one, two) if r.get("connected_at_start", n) < n]
        if b1.get("disturbed") or b2.get("disturbed"):
            why = ("not a measurement: other processes used the machine during the window "
                   "(see the bottleneck columns); re-run on an idle machine")
        elif b1["clients_bottleneck"] or b2["clients_bottleneck"]:
            why = "the load generators are the bottleneck: the ratio says nothing of the gateway"
        elif keeps_up:
            why = ("1 worker already delivers every frame due: frames/s cannot grow, the "
                   "ratio shows in p99 and CPU per worker only")
        elif ratio >= GOAL:
            why = f">= {GOAL}x goal met"
        elif b2["machine_saturated"]:
            why = (f"below {GOAL}x: the machine's cores are saturated with 2 workers "
                   "(clients, nats-server and publisher share them)")
        else:
            why = f"below {GOAL}x"
        if shed:
            why += ("; the gateway closed clients too slow to read before the window ("
                    + ", ".join(shed) + ")")
        out.append({
            "clients": n, "frames_ratio": ratio,
            "ceiling": _ceilings(one, two, "frames_per_s", "gateway."),
            "p99_ratio": two["lat_p99_ms"] / max(one["lat_p99_ms"], 1e-9),
            "one_worker": b1["text"], "two_workers": b2["text"], "verdict": why})
    return out


# --------------------------------------------------------------------------- the report


def _cpu_cell(win: dict[str, Any]) -> str:
    cpu = win.get("cpu", {})
    return ", ".join(f"{n} {c:.0%}" for n, c in cpu.items()) + (
        f"; machine {win.get('machine_busy', 0):.0%}" if cpu else "")


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# Scaling out on one host: 1 vs 2 processes", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, {doc['when']}. CPU is the share of one core each "
             "side's process used over the same window, read from /proc; machine = busy share "
             "of all cores (anything else running counts).", ""]
    windows = [s["window"] for c in (doc.get("aggregator") or {}).get("curve", [])
               for s in c["steps"]] + [r["window"] for r in (doc.get("gateway") or {}).get(
                   "rows", [])]
    busy = [w for w in windows if w.get("others", 0.0) >= _sides.DISTURBED]
    if busy:
        doc["notes"].append(
            f"in {len(busy)} of {len(windows)} windows other processes used the machine (up to "
            f"{max(w['others'] for w in busy):.0%} of a core besides the sides measured): the "
            "figures measure the competition as much as xypipe. Re-run on an idle machine.")
    for note in doc["notes"]:
        lines.append(f"**Note:** {note}")
        lines.append("")
    agg = doc.get("aggregator")
    if agg:
        lines += [f"## Aggregator, {_scale_agg.SYMBOLS:,} symbols in {_scale_agg.GROUPS} groups",
                  "", "| processes | sustained at L0 ticks/s | first failed | groups owned "
                  "| ticks ingested per worker | aggregators' µs/tick | CPU at the sustained "
                  "rate |", "|---:|---:|---:|---|---|---:|---|"]
        for c in agg["curve"]:
            at = c["at_sustained"] or {}
            per = " / ".join(f"{x:,.0f}" for x in at.get("per_worker_ingested", []))
            lines.append(
                f"| {c['workers']} | **{c['sustained']:,.0f}** | "
                f"{c['first_failed']:,.0f} | {at.get('groups_owned') or '—'} | {per} | "
                f"{at.get('agg_us_per_tick', float('nan')):.1f} | "
                f"{_cpu_cell(at.get('window', {}))} |")
        lines += ["", f"2 vs 1: **{agg['verdict']['text']}**", "",
                  f"Groups: {agg['curve'][0]['groups_chosen']}. Aggregators' µs/tick: every "
                  "worker's CPU over the ticks ingested — with 2, each also reads and skips the "
                  "other's ticks.", "", "Every step:", "",
                  "| processes | offered | ingested/s | share | level | held | aggregators' "
                  "µs/tick | CPU |", "|---:|---:|---:|---:|---:|:---:|---:|---|"]
        for c in agg["curve"]:
            for s in c["steps"]:
                lines.append(
                    f"| {s['workers']} | {s['offered']:,.0f} | {s['ingest_rate']:,.0f} | "
                    f"{s['ingested_share']:.1%} | L{s['max_level']:.0f} | "
                    f"{'yes' if s['held'] else 'no'} | {s['agg_us_per_tick']:.1f} | "
                    f"{_cpu_cell(s['window'])} |")
        lines += ["", "Held = every worker at L0 for the whole step, >= 98 % of the ticks "
                  "offered ingested (by the workers together) within 1 s of the last, and every "
                  "worker read >= 98 % of them (no consumer lags).", ""]
    gw = doc.get("gateway")
    if gw:
        lines += ["## Gateway, 5 groups x 30 deltas/s per client", "",
                  f"Load generators: {gw['loadgens']} picows processes for every point.", "",
                  "| clients | workers | frames/s | ideal | p50 ms | p99 ms | connections "
                  "per worker | gateway µs/frame | load gen µs/frame | CPU |",
                  "|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
        for r in sorted(gw["rows"], key=lambda r: (r["clients"], r["workers"])):
            conns = " / ".join(str(v) for v in r["connections_per_worker"].values())
            lines.append(
                f"| {r['clients']} | {r['workers']} | {r['frames_per_s']:,.0f} | "
                f"{r['ideal_frames_per_s']:,.0f} | {r['lat_p50_ms']:.1f} | "
                f"{r['lat_p99_ms']:.1f} | {conns} | {r['gateway_us_per_frame']:.1f} | "
                f"{r['loadgen_us_per_frame']:.1f} | {_cpu_cell(r['window'])} |")
        if gw["verdicts"]:
            lines += ["", "| clients | frames/s 2 vs 1 | p99 2 vs 1 | bottleneck, 1 worker | "
                      "bottleneck, 2 workers | verdict | ceiling at the measured costs |",
                      "|---:|---:|---:|---|---|---|---|"]
            for v in gw["verdicts"]:
                lines.append(f"| {v['clients']} | {v['frames_ratio']:.2f}x | "
                             f"{v['p99_ratio']:.2f}x | {v['one_worker']} | {v['two_workers']} "
                             f"| {v['verdict']} | {v['ceiling']['text']} |")
            lines += ["", "Ceiling: each side's CPU per delivered frame in that window, "
                      "extrapolated until a gateway worker fills its core or all the sides "
                      "together fill every core — an estimate of which limit comes first, not a "
                      "measurement."]
        lost = sum(r["connections_lost"] for r in gw["rows"])
        if lost:
            lines += ["", f"**{lost} client connections were lost during measured windows.**"]
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> None:
    notes: list[str] = []
    counts = [1, 2]
    workers_key = workers_supported()
    ownership = ownership_supported() and not args.no_ownership
    if not workers_key:
        counts = [1]
        notes.append("this checkout has no `[processes.X] workers`: only 1 process measured")
    if not ownership:
        notes.append("aggregators without `ownership` (not in this checkout, or "
                      "--no-ownership): 2 aggregators would each do all the groups")
        counts = [1]
    given = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    doc: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "args": given,
                           "cores": os.cpu_count(), "notes": notes}
    t0 = time.monotonic()
    if args.only in (None, "aggregator"):
        curve = await agg_curve(args, counts, ownership, workers_key)
        verdict = agg_verdict(curve)
        if args.quick:
            verdict["text"] = ("a smoke (--quick): one step per process count at the same "
                               "rate, no search — no ratio to read; " + verdict["text"])
        doc["aggregator"] = {"curve": curve, "verdict": verdict}
        print(f"aggregator 2 vs 1: {doc['aggregator']['verdict']['text']}", flush=True)
    if args.only in (None, "gateway"):
        rows: list[dict[str, Any]] = []
        for n in ([1, 2] if workers_key else [1]):
            print(f"gateway, {n} worker(s):", flush=True)
            rows += await _scale_gw.curve(
                n, args.clients, args.loadgens, args.seconds, args.warmup,
                workers_key=workers_key, say=lambda s: print("  " + s, flush=True))
        verdicts = gw_verdicts(rows)
        for r in rows:
            r["window"]["cpu"] = dict(r["window"]["cpu"])
        doc["gateway"] = {"rows": rows, "verdicts": verdicts, "loadgens": args.loadgens}
        for v in verdicts:
            print(f"gateway {v['clients']} clients 2 vs 1: frames/s {v['frames_ratio']:.2f}x, "
                  f"p99 {v['p99_ratio']:.2f}x — {v['verdict']} (1 worker: {v['one_worker']}; "
                  f"2 workers: {v['two_workers']}); {v['ceiling']['text']}", flush=True)
    doc["seconds"] = time.monotonic() - t0
    md = markdown(doc)
    print(md)
    if args.results is None and args.quick:
        args.results = RESULTS / "quick"
    if args.results is None:
        save("scale", doc, md)
    else:
        import json

        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "scale.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.results / "scale.md").write_text(md)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a smoke: one 2 s step per aggregator count at --start, 20 clients "
                        "in 1.5 s windows")
    p.add_argument("--only", choices=["aggregator", "gateway"])
    p.add_argument("--start", type=float, default=10_000, help="first rate tried (ticks/s)")
    p.add_argument("--max-rate", type=float, default=320_000)
    p.add_argument("--precision", type=float, default=0.1)
    p.add_argument("--duration", type=float, default=6.0, help="seconds per aggregator step")
    p.add_argument("--clients", type=int, nargs="+", default=[100, 500, 1000, 2000])
    p.add_argument("--loadgens", type=int, default=2,
                   help="load generator processes sharing the clients (the same for 1 and 2 "
                        "workers)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured window per point")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--no-ownership", action="store_true",
                   help="aggregators without ownership (1 process only)")
    p.add_argument("--results", type=Path, default=None,
                   help="where scale.json and scale.md go (default bench/results; with "
                   "--quick bench/results/quick, so a smoke run never replaces the reference "
                   "results)")
    # The child roles this script plays.
    p.add_argument("--publisher", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.start, args.duration = 2_000.0, 2.0
        args.clients, args.seconds, args.warmup = [20], 1.5, 0.5
    return args


if __name__ == "__main__":
    a = parse()
    if a.publisher:
        trio.run(_scale_gw.publisher_main, a.publisher)
    elif a.loadgen:
        _scale_gw.loadgen_main(a.port, a.token, a.clients[0], a.seconds, a.warmup)
    else:
        trio.run(main, a)
