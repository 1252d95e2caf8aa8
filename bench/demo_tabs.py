"""One demo tab on whole groups vs on projections: bytes into its socket, its worker's CPU.

    python bench/demo_tabs.py                  # 5 runs of each, 15 s measured after 5 s
    python bench/demo_tabs.py --runs 5 --seconds 30

One process runs the stack of the browser tests (tests/browser/browser_stack.py) with the
demo's market and config: an embedded nats-server, the aggregator with configs/demo.toml's
projections, the gateway, the ui_server naming them, and the publisher (500 symbols, 4,000
ticks/s, no bursts); the page shows equities, fx and crypto as `make demo` does. One Chromium
(``/usr/bin/chromium`` via Playwright) opens one tab of the demo page at a time, in a fresh
browser context each (so a SharedWorker of its own), alternating in one run:

* ``groups`` (before): ``?streams=groups``, every panel on whole groups (the page as it was);
* ``projections`` (after): the page as configured, watchlists on ``group/watch``, top movers
  on ``group/top``.

Measured over ``--seconds`` after ``--warmup`` (panels drawn, then settled): the bytes the
gateway wrote to the tab's socket (``ws_bytes_sent_total``: the only connection open) and the
worker's own count of what it received; the CPU of the SharedWorker's thread ("SharedWorker
thread" of its renderer process, from /proc: user + system), of the renderers' main threads
(the page's: one tab is open) and of the renderer processes — each in % of one core; and
what the page took in (batches, and symbol entries per second across its subscriptions).
Tables show the median of the runs. Results: bench/results/demo_tabs.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "browser"))

from _aggbench import env_note, save
from browser_stack import running_stack, sample, scrape, with_browser

from xypipe._embedded import embedded_nats

GROUPS = ["equities", "fx", "crypto"]
VARIANTS = {"groups": "?streams=groups", "projections": ""}
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKER_THREAD = "SharedWorker th"  # "SharedWorker thread", cut to 15 characters by the kernel

DRAWN_JS = """() => ["#panel-watch-a", "#panel-watch-b", "#panel-movers", "#panel-ladder"].every(
    (p) => document.querySelector(p + " tbody tr td:nth-child(2):not(:empty)"))"""
# What the page took in so far; the worker's byte count comes with its status (every second).
PAGE_JS = """() => ({received: window.__xy.received, overview: window.__xy.overview,
    bytes: window.__xy.status?.counters?.bytes ?? 0, streams: window.__xy.streams,
    rows: document.querySelectorAll(".watch tbody tr").length})"""
# Count the symbol entries every batch carries, whichever tier (installed once the page runs).
COUNT_JS = """() => {
    window.__entries = 0;
    const c = window.__xyClient;
    c.on("batch", (b) => { window.__entries += b.symbols.length
        + (b.snapshot ? b.snapshot.symbols.length : 0); });
}"""


# --------------------------------------------------------------------------- /proc


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(d))
    return out


def renderers() -> list[int]:
    """This process's Chromium renderers (descendants of this process only: other browsers on
    the machine are not counted)."""
    kids = _children()
    todo, found = [os.getpid()], []
    while todo:
        pid = todo.pop()
        for c in kids.get(pid, []):
            todo.append(c)
            try:
                cmd = Path(f"/proc/{c}/cmdline").read_bytes()
            except OSError:
                continue
            if b"--type=renderer" in cmd:
                found.append(c)
    return found


def _ticks(path: str) -> int:
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_ticks() -> dict[str, int]:
    """CPU ticks so far: the SharedWorker threads, the page main threads, whole renderers."""
    out = {"worker": 0, "main": 0, "renderers": 0, "worker_threads": 0}
    for pid in renderers():
        try:
            out["renderers"] += _ticks(f"/proc/{pid}/stat")
            for tid in os.listdir(f"/proc/{pid}/task"):
                name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                if name == WORKER_THREAD:
                    out["worker"] += _ticks(f"/proc/{pid}/task/{tid}/stat")
                    out["worker_threads"] += 1
                elif tid == str(pid):  # the renderer's main thread: the page's
                    out["main"] += _ticks(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue  # a renderer that just went away
    return out


# --------------------------------------------------------------------------- one tab


def one_tab(browser: Any, url: str, metrics_url: str, warmup: float, seconds: float
            ) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(DRAWN_JS, timeout=60_000)
        page.evaluate(COUNT_JS)
        page.wait_for_timeout(warmup * 1000)
        p0, c0 = page.evaluate(PAGE_JS), cpu_ticks()
        g0, e0, t0 = scrape(metrics_url), page.evaluate("() => window.__entries"), time.monotonic()
        page.wait_for_timeout(seconds * 1000)
        p1, c1 = page.evaluate(PAGE_JS), cpu_ticks()
        g1, e1, t1 = scrape(metrics_url), page.evaluate("() => window.__entries"), time.monotonic()
    finally:
        context.close()
    dt = t1 - t0
    if c1["worker_threads"] != 1:
        raise RuntimeError(f"expected one SharedWorker thread, found {c1['worker_threads']}")

    def pct(key: str) -> float:
        return round(100 * (c1[key] - c0[key]) / CLK_TCK / dt, 1)

    return {
        "streams": p1["streams"], "watch_rows": p1["rows"],
        "socket_bytes_per_s": round((sample(g1, "ws_bytes_sent_total")
                                     - sample(g0, "ws_bytes_sent_total")) / dt),
        "worker_bytes_per_s": round((p1["bytes"] - p0["bytes"]) / dt),
        "entries_per_s": round((e1 - e0) / dt),
        "batches_per_s": round((p1["received"] + p1["overview"] - p0["received"]
                                - p0["overview"]) / dt, 1),
        "worker_cpu_pct": pct("worker"), "main_cpu_pct": pct("main"),
        "renderers_cpu_pct": pct("renderers"),
    }


def tabs(browser: Any, page_url: str, metrics_url: str, runs: int, warmup: float,
         seconds: float) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for run in range(runs):
        # Alternate which goes first, so a drift of the machine hits both alike.
        order = list(VARIANTS) if run % 2 == 0 else list(reversed(VARIANTS))
        for variant in order:
            r = one_tab(browser, page_url + VARIANTS[variant], metrics_url, warmup, seconds)
            print(f"run {run + 1} {variant}: {r}", flush=True)
            out[variant].append(r)
    return out


async def run(runs: int, warmup: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_nats(data_dir=Path(tmp) / "nats") as server, running_stack(
                server.url, Path(tmp), groups=GROUPS, rate=4000.0, symbols=500,
                projections=True) as stack:
            per_run = await trio.to_thread.run_sync(
                with_browser, tabs, stack.page_url, stack.gateway_metrics_url, runs, warmup,
                seconds)
    keys = [k for k, v in per_run["groups"][0].items() if isinstance(v, int | float)]
    medians = {v: {k: statistics.median(r[k] for r in rs) for k in keys}
               for v, rs in per_run.items()}
    # The stack's one process and the machine drift from run to run: each run's own
    # after / before is the steadier comparison.
    paired = {k: statistics.median(a[k] / b[k] for a, b in zip(
        per_run["projections"], per_run["groups"], strict=True) if b[k]) for k in keys
        if any(b[k] for b in per_run["groups"])}
    return {"runs": runs, "warmup_s": warmup, "seconds": seconds, "groups": GROUPS,
            "streams": {v: rs[0]["streams"] for v, rs in per_run.items()},
            "median": medians, "paired_ratio_median": paired, "per_run": per_run,
            "env": env_note()}


LABELS = [
    ("socket_bytes_per_s", "socket bytes/s (gateway)"),
    ("worker_bytes_per_s", "bytes/s (worker's count)"),
    ("entries_per_s", "symbol entries/s taken in"),
    ("batches_per_s", "batches/s to the page"),
    ("worker_cpu_pct", "SharedWorker thread CPU %"),
    ("main_cpu_pct", "page main thread CPU %"),
    ("renderers_cpu_pct", "renderer processes CPU %"),
    ("watch_rows", "watchlist rows"),
]


def markdown(r: dict[str, Any]) -> str:
    g, p = r["median"]["groups"], r["median"]["projections"]
    lines = [
        "# One demo tab: whole groups vs projections",
        "",
        f"Demo market (500 symbols, 4,000 ticks/s), page groups {', '.join(r['groups'])}; one "
        f"tab at a time in its own browser context, {r['runs']} runs of each alternating, "
        f"{r['seconds']:g} s measured after {r['warmup_s']:g} s; medians. CPU in % of one core "
        "(the SharedWorker's thread and the page's main thread from /proc). The last column is "
        "the median of each run's own after / before (the rates the one stack process keeps up "
        "with drift from run to run on a shared machine).",
        "",
        f"- before (`?streams=groups`): live {r['streams']['groups']['live']}, "
        f"overview {r['streams']['groups']['overview']}",
        f"- after (projections): live {r['streams']['projections']['live']}, "
        f"overview {r['streams']['projections']['overview']}",
        "",
        "| per tab | whole groups | projections | after / before | after / before, per run |",
        "|---|---|---|---|---|",
    ]
    paired = r["paired_ratio_median"]
    for key, label in LABELS:
        ratio = f"{p[key] / g[key]:.2f}" if g[key] else "—"
        per_run = f"{paired[key]:.2f}" if key in paired else "—"
        lines.append(f"| {label} | {g[key]:,} | {p[key]:,} | {ratio} | {per_run} |")
    env = r["env"]
    lines += ["", f"Python {env['python']}, {env['cpus']} CPUs, {env['when']}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    result = trio.run(run, args.runs, args.warmup, args.seconds)
    text = markdown(result)
    print(text)
    save("demo_tabs", result, text)


if __name__ == "__main__":
    main()
