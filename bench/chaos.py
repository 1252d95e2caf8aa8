"""Chaos recovery: each fault kind injected ``--repeat`` times into the whole stack; how long
until every client receives fresh deltas again, and what the clients saw meanwhile.

    python bench/chaos.py                          # every kind, 20 times each
    python bench/chaos.py --repeat 3 --kinds kill-gateway,stop-nats

One stack per fault kind (``tests/chaos/chaos_faults.py``, the chaos suite's own machinery): a
real nats-server, ``xypipe run`` with the aggregator and gateway as child processes, a feed of
200 ticks/s over 40 symbols, three WebSocket clients verifying every sequence and checksum.
Each injection is followed by the suite's checks; then ``--settle`` seconds of normal running
before the next. Recovery = from the moment the fault is cleared (the kill itself for a process
the system must restart, the restart of an externally managed nats-server, SIGCONT) to the last
client having applied, in sequence, a delta of every group emitted after it. The spec's bar is
3 s; ours is 1 s p95. Results: bench/results/chaos.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "chaos"))

from _aggbench import env_note, median, pct, save
from chaos_faults import (
    COUNTS,
    EMBEDDED_ONLY,
    FAULTS,
    FREEZE_S,
    Outcome,
    check_conservation,
    inject_and_check,
    running_stack,
)

#: Faults whose recovery relies on ``xypipe run`` restarting something: a budget for N repeats
#: in a minute, and a backoff that starts over quickly (the defaults allow 5 in 60 s).
SUPERVISED = frozenset({"kill-aggregator", "kill-gateway", "kill-embedded-nats"})
BENCH_RESTART = ('{ policy = "on-failure", max_restarts = 1000, window_s = 60, '
                 'backoff_ms = 100, max_backoff_ms = 1000, stable_s = 1.0 }')



def health_times(outcomes: list[Outcome]) -> tuple[list[float], list[float]]:
    """Per injection: the earliest not-ready and the latest ready-again of the affected
    processes, from the injection (injections where a process did not dip are left out)."""
    downs, ups = [], []
    for o in outcomes:
        dips = list(o.health.values())
        if dips and all(d is not None for d in dips):
            downs.append(min(d[0] for d in dips if d is not None))
            ups.append(max(d[1] for d in dips if d is not None))
    return downs, ups


async def one_kind(kind: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    tmp = work / kind
    tmp.mkdir()
    restart = BENCH_RESTART if kind in SUPERVISED and args.restart_config else None
    outcomes: list[Outcome] = []
    async with running_stack(tmp, nats="embedded" if kind in EMBEDDED_ONLY else "external",
                             clients=args.clients, symbols=args.symbols, rate=args.rate,
                             restart=restart, freeze_s=args.freeze) as stack:
        for i in range(args.repeat):
            outcome = await inject_and_check(stack, kind)
            outcomes.append(outcome)
            rec = f"{outcome.recovery_s * 1000:.0f} ms" if outcome.recovery_s is not None \
                else "never"
            feed = (f"; feed reconnected {outcome.feed_reconnect_s * 1000:.0f} ms after clear"
                    if outcome.feed_reconnect_s is not None else "")
            print(f"{kind} #{i + 1}: recovery {rec}{feed}; health {outcome.health}; "
                  f"clients {outcome.counts}; {len(outcome.failures)} failed check(s)",
                  flush=True)
            for f in outcome.failures:
                print(f"    {f[:300]}", flush=True)
            if outcome.recovery_s is None:
                break  # the stack did not come back: repeating would measure nothing
            await trio.sleep(args.settle)  # normal running between injections
        conservation, volumes = await check_conservation(stack)
    recoveries = [o.recovery_s for o in outcomes if o.recovery_s is not None]
    outages = [o.outage_s for o in outcomes if o.outage_s is not None]
    downs, ups = health_times(outcomes)
    return {
        "kind": kind,
        "note": outcomes[0].note if outcomes else "",
        "injections": len(outcomes),
        "recovered": len(recoveries),
        "recovery_s": recoveries,
        "p50_s": median(recoveries),
        "p95_s": pct(recoveries, 0.95),
        "max_s": max(recoveries, default=float("nan")),
        "outage_p95_s": pct(outages, 0.95),
        "health_dips": len(downs),
        "not_ready_after_p50_s": median(downs),
        "ready_again_after_p50_s": median(ups),
        "health": [o.health for o in outcomes],
        "feed_reconnect_s": [o.feed_reconnect_s for o in outcomes],
        "failures": [f for o in outcomes for f in o.failures],
        "clients": {k: sum(o.counts[k] for o in outcomes) for k in COUNTS},
        "conservation_failures": conservation,
        "volumes": volumes,
    }


def ms(x: float) -> str:
    return "—" if x != x else f"{x * 1000:.0f}"


async def main(args: argparse.Namespace) -> None:
    kinds = args.kinds.split(",") if args.kinds else sorted(FAULTS)
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown fault kind(s) {unknown}; expected some of {sorted(FAULTS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="xy-chaos-") as work:
        for kind in kinds:
            rows.append(await one_kind(kind, args, Path(work)))
    lines = [
        f"# Chaos recovery ({args.repeat} injections per kind; bar: p95 ≤ 1000 ms, spec 3000 ms)",
        "",
        "| fault | recovered | p50 (ms) | p95 (ms) | max (ms) | outage p95 (ms) "
        "| health dipped | not-ready after (ms) | ready again after (ms) | gaps | repeats "
        "| epoch jumps | checksum mismatches | resyncs | rewinds | failed checks "
        "| books = stream |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        c = r["clients"]
        lines.append(
            f"| {r['kind']} | {r['recovered']}/{r['injections']} | {ms(r['p50_s'])} | "
            f"{ms(r['p95_s'])} | {ms(r['max_s'])} | {ms(r['outage_p95_s'])} | "
            f"{r['health_dips']}/{r['injections']} | {ms(r['not_ready_after_p50_s'])} | "
            f"{ms(r['ready_again_after_p50_s'])} | {c['gaps']} | {c['repeats']} | "
            f"{c['epoch_changes']} | {c['checksum_mismatches']} | {c['resyncs']} | "
            f"{c['rewinds']} | {len(r['failures'])} | "
            f"{'yes' if not r['conservation_failures'] else 'NO'} |")
    lines += [
        "",
        "Recovery: fault cleared (kill instant for a process xypipe must restart; restart of "
        "the externally managed nats-server; SIGCONT) → every client has applied, in "
        "sequence, a delta of every group emitted after it; outage: from the injection. "
        "Health: the affected processes' /healthz (median of the earliest not-ready and the "
        "latest ready again, from the injection). Client counters are summed over the "
        f"{args.clients} clients and every injection. Failed checks: health that did not dip "
        "and come back, holes, repeats, or no recovery within the guard (each in the JSON). "
        "Books = stream: once the feed stopped, every client's books showed what XY_SRC "
        "accepted (newest seq, session volume, trades per symbol).",
        f"Stack: {args.symbols} symbols, {args.rate:.0f} ticks/s, snapshots every 2 s. "
        f"Machine: {env_note()}",
    ]
    table = "\n".join(lines)
    print(table)
    save("chaos", {"env": env_note(), "args": vars(args), "kinds": rows}, table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--kinds", default="", help=f"comma-separated, from {sorted(FAULTS)}")
    ap.add_argument("--settle", type=float, default=2.5,
                    help="seconds of normal running between injections")
    ap.add_argument("--freeze", type=float, default=FREEZE_S,
                    help="seconds a SIGSTOPped process stays stopped")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--symbols", type=int, default=40)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--no-restart-config", dest="restart_config", action="store_false",
                    help="keep the default restart policies (a budget of 5 restarts a minute)")
    trio.run(main, ap.parse_args())
