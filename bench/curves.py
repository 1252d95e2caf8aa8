"""Scaling curves on the replay benchmark's stack: where each budget breaks, which level engages.

As the ingest rate and the clients grow (and with one gateway worker, then two).

    xypipe bench curves [--quick] [--rates 1000,3000,10000,30000,100000]
        [--clients 10,30,100,300,1000] [--workers 1,2] [--duration 5] [--warmup 2]
        [--slo "e2e_p99<180ms"] [--results bench/results]

(``xypipe bench curves`` runs this script; ``python bench/curves.py ...`` is the same.)

The stack is bench/replay.py's, each part its own process: nats-server, the aggregator and the
gateway (``xypipe run``), the load generator (bench/_fanout_lean.py, picows on uvloop).

- **ingest curve**: for each offered rate, bench/_aggbench.py's lean publisher sends a seeded
  market (a venue of its own per point, so no point's ticks are another's duplicates; its
  contracts first) at that rate for the whole point while ``--curve-clients`` clients read the
  gateway. Offered = what the publisher's connection delivered to nats-server (its ``in_msgs``
  in ``/connz``, per second); ingested = the aggregator's ``src_ingest_total`` per second.
- **clients curve**: the demo tape looped at 1x (bench/_tape_loop.py) while N clients read the
  gateway, for each N, once per gateway worker count (``[processes.gateway] workers``; the
  workers share the port with SO_REUSEPORT, each serves its own /metrics).

Each point: the offered load, what was delivered (ticks/s ingested; frames/s and bytes/s per
client), E2E p50/p95/p99 (tick arrival at the aggregator -> client receive, every 10th frame of
every client), the highest degradation level seen (the aggregator's ``degradation_level``, the
gateway's pipeline level and its connections' levels, sampled every 0.25 s), the CPU of every
process over the window (% of one core: nats-server, aggregator, gateway — each worker too —,
the input or the publisher, the load generator) and the budgets that point breaks. Budgets,
judged on every point: the spec's E2E bar (``e2e_p95<120ms``, ``e2e_p99<180ms``, by the SLO
gates' evaluator), ``level L0`` (no degradation level engaged: the spec's ingest bar is at L0),
``keeps up`` (ingest: ≥ 95 % of the offered ticks ingested; clients: no connection lost and
deltas/s per client ≥ 90 % of the curve's lightest point) and any ``--slo`` objective a point
measures (``e2e_*``, ``bytes_per_client``, ``ingest_l0``). Each curve names the first point that
breaks a budget and which, and the first level engaged.

Writes ``bench/results/curves.json``, ``curves.md`` and ``curves.png``. The exit status is 0
whatever breaks (the curves say where; ``xypipe bench replay --slo`` is the gate), 2 for a bad
argument (``XY-BENCH-010``, ``XY-BENCH-001``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _sides  # noqa: E402  (bench/ is not a package)
import replay  # noqa: E402

RESULTS = HERE / "results"
#: The spec's budgets judged on every point (the rest of the bar needs faults or tabs).
SPEC_E2E = "e2e_p95<120ms,e2e_p99<180ms"
#: Share of the offered ticks the aggregator must ingest for the ingest curve to keep up.
KEEP_UP_INGEST = 0.95
#: Share of the lightest point's deltas/s per client a heavier point must deliver.
KEEP_UP_DELTAS = 0.90
#: Seconds of the publisher's market written per point beyond the window (the load
#: generator's start and the warm-up run meanwhile).
PUBLISH_SLACK_S = 6.0


def levels_list(text: str, what: str) -> list[int]:
    """``"1000,3000"`` -> ``[1000, 3000]``: positive integers in rising order."""
    from xypipe._errors import CurvesSpecError

    try:
        values = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CurvesSpecError(f"xypipe bench curves: {what} {text!r}: expected positive "
                              "integers separated by commas, e.g. 10,100,1000") from None
    if not values or any(v < 1 for v in values) or values != sorted(set(values)):
        raise CurvesSpecError(f"xypipe bench curves: {what} {text!r}: expected positive "
                              "integers in rising order, each once, e.g. 10,100,1000")
    return values


# --------------------------------------------------------------------------- the stack


class CurvesStack(replay.Stack):
    """bench/replay.py's stack with a gateway of ``workers`` copies on one port."""

    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        super().__init__(tmp, args)
        self.workers = 1
        self.metrics_base = 0

    def gateway_ports(self) -> list[int]:
        """The /metrics port of each gateway worker."""
        if self.workers == 1:
            return [self.gw_port]
        return [self.metrics_base + i for i in range(self.workers)]

    def set_workers(self, workers: int) -> None:
        """The gateway's config for ``workers`` copies (the next start uses it)."""
        self.workers = workers
        text = replay.GW_CONFIG.format(nats=self.nats_url, port=self.gw_port, repo=replay.REPO)
        if workers > 1:
            self.metrics_base = _sides.free_ports(workers)
            sup = replay.free_port()
            text = replay.GW_CONFIG.format(nats=self.nats_url, port=sup, repo=replay.REPO)
            text = text.replace("[pipelines.gateway]\n", (
                f'[processes.gateway]\nhttp = {{ host = "127.0.0.1", port = {self.gw_port} }}\n'
                f'restart = {{ policy = "never" }}\nworkers = {workers}\n'
                f"metrics_port = {self.metrics_base}\n"
                '[pipelines.gateway]\nprocess = "gateway"\n'), 1)
        (self.tmp / "gateway.toml").write_text(text)

    async def gateway_ready(self) -> None:
        if self.workers == 1:
            await self.wait_ready("gateway")
            return
        with trio.fail_after(90):
            while True:
                p = self.procs["gateway"]
                if p.poll() is not None:
                    log = (self.tmp / "gateway.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"curves: the gateway exited {p.returncode}:\n{log}")
                if (len(_sides.workers(p.pid, "gateway")) == self.workers
                        and all(replay.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
                                for port in self.gateway_ports())):
                    return
                await trio.sleep(0.1)  # polling other processes' readiness

    def worker_pids(self) -> dict[str, int]:
        if self.workers == 1:
            return {}
        return {f"gateway.{i}": pid
                for i, pid in _sides.workers(self.pid("gateway"), "gateway").items()}

    def levels(self) -> tuple[int, int]:
        """(the aggregator's level, the gateway's: its pipelines' and its connections' worst)."""
        agg = int(replay.metric(self.agg_port, "degradation_level"))
        gw = 0
        for port in self.gateway_ports():
            gw = max(gw, int(replay.metric(port, "degradation_level")))
            for lvl in (1, 2, 3):
                if replay.metric(port, "ws_connections_by_level", level=f"L{lvl}") > 0:
                    gw = max(gw, lvl)
        return agg, gw


def publisher_in_msgs(stack: replay.Stack) -> float | None:
    """What the lean publisher's connection has delivered to nats-server so far."""
    import _tabs

    try:
        conns = _tabs.connz(stack.monitor_port)
    except OSError:
        return None
    return float(sum(c.get("in_msgs", 0) for c in conns if c.get("name") == "aggbench-publisher"))


# --------------------------------------------------------------------------- points


class Sampler:
    """Levels and counters every 0.25 s while a point runs."""

    def __init__(self, stack: CurvesStack) -> None:
        self.stack = stack
        self.rows: list[tuple[float, int, int, float, float | None]] = []

    async def run(self) -> None:
        while True:
            agg, gw = self.stack.levels()
            self.rows.append((time.monotonic(), agg, gw,
                              replay.metric(self.stack.agg_port, "src_ingest_total"),
                              publisher_in_msgs(self.stack)))
            await trio.sleep(0.25)  # a sampling period, not a wait for anything

    def rate(self, column: int) -> float | None:
        rows = [r for r in self.rows if r[column] is not None]
        if len(rows) < 2 or rows[-1][0] - rows[0][0] <= 0:
            return None
        return (rows[-1][column] - rows[0][column]) / (rows[-1][0] - rows[0][0])  # type: ignore[operator]


async def point(stack: CurvesStack, tok: str, clients: int, args: argparse.Namespace,
                extra: dict[str, int]) -> dict[str, Any]:
    """One window of ``clients`` on the gateway, levels sampled throughout."""
    sampler = Sampler(stack)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        res = await replay.clients_window(
            stack, "gateway", tok, clients, args.duration, args.warmup, lambda _dt: None,
            lambda: extra | stack.worker_pids())
        nursery.cancel_scope.cancel()
    s = sampler.rows
    return {
        "clients": clients, "workers": stack.workers,
        "e2e_ms": replay.percentiles([ms for _, ms in res["e2e_ms"]]),
        "frames_per_client_s": round(res["frames"] / res["seconds"] / clients, 1),
        # Frames merge whatever deltas a gateway tick holds: deltas are what must keep coming.
        "deltas_per_client_s": round(res["frames"] / res["seconds"] / clients
                                     * res["deltas_per_frame"], 1),
        "bytes_per_client_s": round(res["bytes_per_client_s"]),
        "connections_lost": res["connections_lost"],
        "ingested_per_s": _round(sampler.rate(3)),
        "published_per_s": _round(sampler.rate(4)),
        "level_aggregator": max((r[1] for r in s), default=0),
        "level_gateway": max((r[2] for r in s), default=0),
        "cpu_pct": res["cpu_pct"], "rss_mb": res["rss_mb"],
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _market(path: Path, venue: str, ticks: int, symbols: int, seed: int) -> Path:
    from xypipe._publisher import MarketSim, write_tape

    sim = MarketSim(symbols, seed=seed, venues=(venue,))
    write_tape(path, (sim.next_tick(0) for _ in range(ticks)))
    return path


async def ingest_curve(stack: CurvesStack, tok: str, args: argparse.Namespace,
                       status: Any) -> list[dict[str, Any]]:
    import _aggbench

    out = []
    for i, rate in enumerate(args.rates):
        status(f"ingest curve: {rate:,} ticks/s")
        count = int(rate * (args.warmup + args.duration + PUBLISH_SLACK_S))
        tape = await trio.to_thread.run_sync(
            _market, stack.tmp / f"ingest-{i}.tape", f"C{i}", count, args.symbols, args.seed + i)
        before = replay.metric(stack.agg_port, "src_ingest_total")
        pub = _aggbench.publish_lean(stack.nats_url, tape, rate, count)
        try:
            # Its frames are built before its clock starts: the point begins once ticks arrive.
            with trio.fail_after(120):
                while replay.metric(stack.agg_port, "src_ingest_total") - before < min(
                        count, max(50, rate * 0.25)):
                    if pub.poll() is not None:
                        raise SystemExit(f"curves: the publisher exited {pub.returncode}: "
                                         f"{pub.stderr.read()[-1000:] if pub.stderr else ''}")
                    await trio.sleep(0.1)  # the publisher is another process
            p = await point(stack, tok, args.curve_clients, args, {"publisher": pub.pid})
            if pub.poll() is not None:
                p["publisher_finished_early"] = True
        finally:
            pub.terminate()
            pub.wait()
        p["offered_per_s"] = rate
        out.append(p)
        # The next point starts from a settled aggregator.
        with trio.move_on_after(60):
            while True:
                if replay.metric(stack.agg_port, "degradation_level") == 0:
                    break
                await trio.sleep(0.2)  # the aggregator's level is another process's to lower
    return out


async def clients_curve(stack: CurvesStack, tok: str, args: argparse.Namespace,
                        status: Any) -> list[dict[str, Any]]:
    out = []
    for workers in args.workers:
        if workers != stack.workers:
            stack.kill("gateway")
            stack.set_workers(workers)
            stack.start("gateway")
            await stack.gateway_ready()
        for n in args.clients:
            status(f"clients curve: {n:,} clients, {workers} gateway worker(s)")
            out.append(await point(stack, tok, n, args, {}))
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    console = Console(stderr=True)

    def status(text: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}", highlight=False)

    tmp = Path(tempfile.mkdtemp(prefix="xy-curves-"))
    stack = CurvesStack(tmp, args)
    result: dict[str, Any] = {}
    try:
        status("starting the stack")
        stack.set_workers(args.workers[0])
        stack.start("nats")
        await stack.wait_ready("nats")
        stack.start("aggregator")
        await stack.wait_ready("aggregator")
        stack.start("gateway")
        await stack.gateway_ready()
        stack.start("input")
        tok = replay.token()
        result["clients"] = await clients_curve(stack, tok, args, status)
        stack.kill("input")
        if stack.workers != 1:
            stack.kill("gateway")
            stack.set_workers(1)
            stack.start("gateway")
            await stack.gateway_ready()
        result["ingest"] = await ingest_curve(stack, tok, args, status)
    except BaseException:
        stack.close()
        print(f"xypipe bench curves: the processes' logs are kept in {tmp}", file=sys.stderr)
        raise
    stack.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- budgets


def judge(points: list[dict[str, Any]], curve: str, objectives: tuple[Any, ...]) -> None:
    """Every point's broken budgets (``broken``, in a fixed order), written into the points."""
    from xypipe._slo import evaluate

    base: dict[int, float] = {}
    for p in points:
        e2e = p["e2e_ms"]
        values = {f"e2e_{q}": None if e2e[q] is None else e2e[q] / 1000
                  for q in ("p50", "p95", "p99", "max")}
        values["bytes_per_client"] = float(p["bytes_per_client_s"])
        at_l0 = p["level_aggregator"] == 0 and p["level_gateway"] == 0
        values["ingest_l0"] = p["ingested_per_s"] if at_l0 else None
        broken = [v.objective.metric for v in evaluate(objectives, values) if not v.ok]
        if not at_l0:
            broken.append("level L0")
        if curve == "ingest":
            offered = p["published_per_s"] or p["offered_per_s"]
            keeps = (p["ingested_per_s"] or 0) >= KEEP_UP_INGEST * offered
        else:
            first = base.setdefault(p["workers"], p["deltas_per_client_s"])
            keeps = (p["connections_lost"] == 0
                     and p["deltas_per_client_s"] >= KEEP_UP_DELTAS * first)
        if not keeps:
            broken.append("keeps up")
        p["broken"] = list(dict.fromkeys(broken))
        p["hot"] = sorted((n for n, c in p["cpu_pct"].items() if c >= 100 * _sides.SATURATED),
                          key=lambda n: -p["cpu_pct"][n])


def verdict(points: list[dict[str, Any]], key: str, unit: str) -> dict[str, Any]:
    """Where a curve (one series of points, lightest first) first breaks a budget, and where a
    degradation level first engages."""
    first = next((p for p in points if p["broken"]), None)
    level = next((p for p in points if p["level_aggregator"] or p["level_gateway"]), None)
    out: dict[str, Any] = {
        "breaks_first": None if first is None else {"at": first[key], "budgets": first["broken"]},
        "level_engages": None if level is None else {
            "at": level[key], "aggregator": level["level_aggregator"],
            "gateway": level["level_gateway"]}}
    if first is None:
        out["text"] = f"no budget broken up to {points[-1][key]:,} {unit}" if points else ""
    else:
        out["text"] = (f"breaks first at {first[key]:,} {unit}: "
                       + ", ".join(first["broken"]))
    if level is not None:
        out["text"] += (f"; a level engages at {level[key]:,} {unit} (aggregator "
                        f"L{level['level_aggregator']}, gateway L{level['level_gateway']})")
    else:
        out["text"] += "; no level engaged"
    return out


# --------------------------------------------------------------------------- report


def _f(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _cpu(p: dict[str, Any]) -> str:
    return ", ".join(f"{n} {c:g}" for n, c in p["cpu_pct"].items())


INGEST_HEAD = ["offered ticks/s", "sent ticks/s", "ingested ticks/s", "deltas/s per client",
               "E2E p50 ms", "E2E p99 ms", "level agg/gw", "CPU % per process",
               "budgets broken"]
CLIENTS_HEAD = ["clients", "gateway workers", "deltas/s per client", "kB/s per client",
                "E2E p50 ms", "E2E p99 ms", "level agg/gw", "CPU % per process",
                "budgets broken"]


def ingest_rows(points: list[dict[str, Any]]) -> list[list[str]]:
    return [[_f(p["offered_per_s"]), _f(p["published_per_s"], 0), _f(p["ingested_per_s"], 0),
             _f(p["deltas_per_client_s"]), _f(p["e2e_ms"]["p50"]), _f(p["e2e_ms"]["p99"]),
             f"L{p['level_aggregator']}/L{p['level_gateway']}", _cpu(p),
             ", ".join(p["broken"]) or "none"] for p in points]


def clients_rows(points: list[dict[str, Any]]) -> list[list[str]]:
    return [[_f(p["clients"]), _f(p["workers"]), _f(p["deltas_per_client_s"]),
             _f(p["bytes_per_client_s"] / 1e3), _f(p["e2e_ms"]["p50"]),
             _f(p["e2e_ms"]["p99"]), f"L{p['level_aggregator']}/L{p['level_gateway']}",
             _cpu(p), ", ".join(p["broken"]) or "none"] for p in points]


def clients_series(result: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for p in result["clients"]:
        out.setdefault(p["workers"], []).append(p)
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["meta"]

    def table(head: list[str], body: list[list[str]]) -> list[str]:
        return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                + ["| " + " | ".join(r) + " |" for r in body])

    lines = [f"# Scaling curves — {m['date']}", "",
             f"Machine: {m['machine']}. {m['duration']} s measured per point after "
             f"{m['warmup']} s warm-up{' (--quick)' if m['quick'] else ''}. Budgets on every "
             f"point: {', '.join(m['budgets'])}.", "",
             f"## Ingest: offered ticks/s ({m['curve_clients']} clients on the gateway)", ""]
    lines += table(INGEST_HEAD, ingest_rows(result["ingest"]))
    lines += ["", f"- {result['verdicts']['ingest']['text']}", "",
              "## Clients (the demo tape at 1x)", ""]
    lines += table(CLIENTS_HEAD, clients_rows(result["clients"]))
    lines += [""] + [f"- {w} gateway worker(s): {v['text']}"
                     for w, v in result["verdicts"]["clients"].items()]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((a1, a2), (a3, a4)) = plt.subplots(2, 2, figsize=(13, 8))
    ing = result["ingest"]
    xs = [p["offered_per_s"] for p in ing]
    for q, style in (("p50", "o-"), ("p99", "s--")):
        a1.plot(xs, [p["e2e_ms"][q] for p in ing], style, label=f"E2E {q}")
    a1.axhline(180, color="grey", lw=0.8, ls=":", label="spec p99 180 ms")
    a2.plot(xs, xs, ":", color="grey", label="offered")
    a2.plot(xs, [p["ingested_per_s"] for p in ing], "o-", label="ingested (ticks/s)")
    cpu = a2.twinx()
    for name, style in (("aggregator", "s--"), ("nats", "^:"), ("publisher", "v:")):
        cpu.plot(xs, [p["cpu_pct"].get(name, 0) for p in ing], style, alpha=0.6,
                 label=f"{name} CPU %")
    cpu.set_ylabel("% of one core")
    cpu.legend(fontsize=7, loc="lower right")
    for p in ing:
        lvl = max(p["level_aggregator"], p["level_gateway"])
        if lvl:
            a1.annotate(f"L{lvl}", (p["offered_per_s"], p["e2e_ms"]["p99"] or 0), fontsize=8)
    a1.set(xscale="log", title="ingest curve: E2E vs offered", xlabel="offered ticks/s",
           ylabel="ms")
    a2.set(xscale="log", yscale="log", title="ingest curve: ingested vs offered",
           xlabel="offered ticks/s", ylabel="ticks/s")
    for workers, pts in clients_series(result).items():
        cx = [p["clients"] for p in pts]
        a3.plot(cx, [p["e2e_ms"]["p50"] for p in pts], "o-", label=f"p50, {workers} worker(s)")
        a3.plot(cx, [p["e2e_ms"]["p99"] for p in pts], "s--", label=f"p99, {workers} worker(s)")
        a4.plot(cx, [p["cpu_pct"].get("gateway", 0) for p in pts], "o-",
                label=f"gateway, {workers} worker(s)")
        a4.plot(cx, [p["cpu_pct"].get("loadgen", 0) for p in pts], "^:",
                label=f"load generator, {workers} worker(s)")
        for p in pts:
            lvl = max(p["level_aggregator"], p["level_gateway"])
            if lvl:
                a3.annotate(f"L{lvl}", (p["clients"], p["e2e_ms"]["p99"] or 0), fontsize=8)
    a3.axhline(180, color="grey", lw=0.8, ls=":", label="spec p99 180 ms")
    # Where each curve first breaks a budget.
    verdicts = result.get("verdicts", {})
    if first := (verdicts.get("ingest") or {}).get("breaks_first"):
        a1.axvline(first["at"], color="red", lw=0.8, ls="--",
                   label="breaks: " + ", ".join(first["budgets"]))
    for workers, v in (verdicts.get("clients") or {}).items():
        if first := v.get("breaks_first"):
            a3.axvline(first["at"], color="red", lw=0.8, ls="--",
                       label=f"{workers} worker(s) breaks: " + ", ".join(first["budgets"]))
    a3.set(xscale="log", title="clients curve: E2E vs clients", xlabel="clients", ylabel="ms")
    a4.set(xscale="log", title="clients curve: CPU", xlabel="clients", ylabel="% of one core")
    for ax in (a1, a2, a3, a4):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from xypipe._errors import CurvesSpecError, SloSpecError
    from xypipe._slo import METRICS, parse_slo

    p = argparse.ArgumentParser(prog="xypipe bench curves", description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="1000,3000,10000,30000,100000",
                   help="offered ticks/s of the ingest curve (default 1000,...,100000)")
    p.add_argument("--clients", default="10,30,100,300,1000",
                   help="clients of the clients curve (default 10,30,100,300,1000)")
    p.add_argument("--workers", default="1,2",
                   help="gateway worker counts the clients curve is run with (default 1,2)")
    p.add_argument("--curve-clients", type=int, default=50,
                   help="clients reading the gateway during the ingest curve (default 50)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per point")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before each point")
    p.add_argument("--quick", action="store_true",
                   help="a CI-sized run: rates 1000,10000, clients 10,40, one worker unless "
                        "--workers is given, 2 s points")
    p.add_argument("--slo", default="",
                   help="budgets for every point (e2e_*, bytes_per_client, ingest_l0), beside "
                        "the spec's E2E bar (a metric given here replaces the spec's budget)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--symbols", type=int, default=500, help="symbols per ingest point's venue")
    p.add_argument("--results", type=Path, default=None,
                   help="where the results go (default bench/results; with --quick "
                   "bench/results/quick, so a smoke run never replaces the reference results)")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    given = {a.split("=", 1)[0] for a in argv}
    if args.quick:
        args.rates = args.rates if "--rates" in given else "1000,10000"
        args.clients = args.clients if "--clients" in given else "10,40"
        args.workers = args.workers if "--workers" in given else "1"
        args.curve_clients = min(args.curve_clients, 10)
        args.duration, args.warmup = 2.0, 1.0
    try:
        args.rates = levels_list(args.rates, "--rates")
        args.clients = levels_list(args.clients, "--clients")
        args.workers = levels_list(args.workers, "--workers")
        # The user's budget for a metric replaces the spec's for it.
        own = parse_slo(args.slo) if args.slo else ()
        objectives = own + tuple(o for o in parse_slo(SPEC_E2E)
                                 if o.metric not in {u.metric for u in own})
        unmeasured = sorted({o.metric for o in objectives}
                            - {"e2e_p50", "e2e_p95", "e2e_p99", "e2e_max", "bytes_per_client",
                               "ingest_l0"})
        if unmeasured:
            raise CurvesSpecError(
                f"xypipe bench curves: --slo: {', '.join(unmeasured)} "
                f"({'; '.join(METRICS[m].meaning for m in unmeasured)}) are not measured on a "
                "curve's point (xypipe bench replay measures them)")
    except (SloSpecError, CurvesSpecError) as e:
        print(f"{e} [{e.code}]", file=sys.stderr)
        return 2
    # bench/replay.py's stack reads these: the demo tape at 1x for the clients curve.
    args.tape, args.speed = replay.DEMO_TAPE, "1x"
    args.rate = replay.SYNTHETIC_RATE
    result = trio.run(bench, args)
    budgets = [o.metric + o.op + o.show(o.budget) for o in objectives]
    budgets += ["level L0", "keeps up"]
    judge(result["ingest"], "ingest", objectives)
    judge(result["clients"], "clients", objectives)
    result["verdicts"] = {
        "ingest": verdict(result["ingest"], "offered_per_s", "ticks/s offered"),
        "clients": {str(w): verdict(pts, "clients", "clients")
                    for w, pts in clients_series(result).items()}}
    result["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, {platform.platform(terse=True)}",
        "duration": args.duration, "warmup": args.warmup, "quick": args.quick,
        "curve_clients": args.curve_clients, "budgets": budgets}
    out = Console(width=None if sys.stdout.isatty() else 180)
    for title, head, body in (("ingest curve", INGEST_HEAD, ingest_rows(result["ingest"])),
                              ("clients curve", CLIENTS_HEAD, clients_rows(result["clients"]))):
        table = Table(title=title)
        for h in head:
            table.add_column(h, justify="left" if h.startswith("CPU") else "right")
        for r in body:
            table.add_row(*r)
        out.print(table)
    out.print(f"ingest: {result['verdicts']['ingest']['text']}", highlight=False)
    for w, v in result["verdicts"]["clients"].items():
        out.print(f"clients, {w} gateway worker(s): {v['text']}", highlight=False)
    if args.results is None:
        args.results = RESULTS / "quick" if args.quick else RESULTS
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "curves.json").write_text(json.dumps(result, indent=1))
    (args.results / "curves.md").write_text(markdown(result))
    plot(result, args.results / "curves.png")
    out.print(f"wrote {args.results / 'curves.json'}, curves.md, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
