"""End-to-end latency: adapter -> aggregator -> WebSocket -> UI render, in a real Chromium; one
window and five, side by side, and (optionally) a raw-tick peer reading NATS directly.

The stack runs as compose runs it — a nats-server and one ``xypipe run`` per service
(aggregator, gateway, ui_server, publisher), each in its own process. The publisher starts only
once the aggregator answers ``/healthz`` ready (its source stream exists and ingest consumes),
so every contract reaches the aggregator before the first tick and each run routes the same
symbols to the same groups. It sends synthetic ticks at ``--rate`` (4,000/s) over ``--symbols``
(500); the aggregator conflates every ``--interval-ms`` (33; 16..100).

Each run measures, on that one stack and in an order that rotates from run to run (so the
machine's noise hits every variant alike):

* ``1w`` / ``5w``: one and five Chromium windows (one SharedWorker socket) on the demo page.
  Latency = tick arrival at the aggregator (``SymbolState.ts_arrival_us``) -> row written in
  the DOM, on the gateway's clock via the worker's ping/pong offset. Frame times from the page's
  own records (``window.__xy``): the interval between animation frames, and the page's drawing
  work per frame (the sum of its panels' render times in that frame; style, layout and paint
  come after and show in the renderers' CPU).
* ``raw1`` (``--raw-peer``, on by default when ``npm ci`` installed nats.ws): one window
  subscribed straight to nats-server's WebSocket listener for the raw ticks of the same symbols
  (``bench/rawpeer/``), drawing one row per symbol per frame. Latency = the publisher's
  ``ts_arrival_us`` stamp (same host clock) -> received / drawn: it starts *earlier* than ours
  (before NATS, JetStream and ingest), so it flatters nothing of ours.

For each: latency p50/p95/p99, frame interval and work per frame p50/p95, fps per window, the
bytes per second the browser received (ours: the gateway's ``ws_bytes_sent_total``, and the
worker's own count; the peer: NATS protocol bytes counted in the page), the CPU of Chromium's
processes (renderers, GPU, browser) and of each service, each in % of one core. After
``--warmup`` seconds the records are cleared and ``--duration`` seconds are measured. The
tables show the median of the runs that worked; a failed run is listed with its reason.

    .venv/bin/python bench/e2e_latency.py [--rate 4000] [--windows 1,5] [--runs 3]
        [--interval-ms 33] [--batch-ms 16] [--no-raw-peer]

Results: bench/results/e2e_latency.json and .md. It drives only the CLI, nats-server, the demo
page and Chromium (``/usr/bin/chromium`` via Playwright), so it runs unchanged on older
checkouts; the raw peer needs ``node_modules`` with ``nats.ws`` (``npm ci`` here).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEER_SRC = ROOT / "bench" / "rawpeer"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
GROUPS = ["equities", "fx"]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# One `xypipe run` per service (as compose runs them): each on its own core, and no process
# tree, so the benchmark measures the services rather than their supervision.
HEADER = """
[log]
level = "warning"

[nats]
url = "{nats_url}"

[http]
port = {http_port}
"""

SERVICES = {
    "aggregator": """
[pipelines.aggregator]

[[pipelines.aggregator.stages]]
use = "ingest"
storage = "memory"
start = "new"
state = {{ storage = "memory" }}

[[pipelines.aggregator.stages]]
use = "dedupe"

[[pipelines.aggregator.stages]]
use = "shard"

[[pipelines.aggregator.stages]]
use = "conflate"
interval_ms = {interval_ms}

[[pipelines.aggregator.stages]]
use = "snapshot"
interval_ms = 2000

[[pipelines.aggregator.stages]]
use = "publish"
state = {{ storage = "memory" }}
""",
    "gateway": """
[pipelines.gateway]

[[pipelines.gateway.stages]]
use = "nats_source"
subjects = ["xy.md.tick.>", "xy.md.snapshot.>"]

[[pipelines.gateway.stages]]
use = "gateway"
public_key = "{tmp}/dev.pub"
allowed_origins = ["*"]
""",
    "ui": """
[pipelines.ui]

[[pipelines.ui.stages]]
use = "ui_server"
port = {ui_port}
gateway_url = "ws://{{host}}:{gw_port}/ws"
groups = {groups}
batch_ms = {batch_ms}
token_private_key = "{tmp}/dev.key"
token_subject = "bench"
""",
    # Started last, once the aggregator is ready (see the module doc).
    "publisher": """
[pipelines.publisher]

[[pipelines.publisher.stages]]
use = "publisher"
rate = {rate}
symbols = {symbols}
""",
}

NATS_CONF = """
listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{tmp}/nats" }}
websocket {{ listen: "127.0.0.1:{ws_port}", no_tls: true }}
"""


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def wait_ready(url: str, deadline_s: float, proc: subprocess.Popen[bytes], name: str) -> None:
    """Until ``url`` answers 200 (a service's /healthz: ready), or the process dies."""
    end = time.monotonic() + deadline_s
    while http_get(url)[0] != 200:
        if proc.poll() is not None:
            raise RuntimeError(f"{name}: xypipe run exited with {proc.returncode} during start-up")
        if time.monotonic() > end:
            raise RuntimeError(f"{name} not ready within {deadline_s} s ({url})")
        time.sleep(0.1)  # polling another process's health endpoint


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def rank(p: float) -> float:
        return round(s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))], 2)

    return {"n": len(s), "p50": rank(50), "p95": rank(95), "p99": rank(99),
            "max": round(s[-1], 2)}


def scrape(url: str) -> list[Any]:
    status, text = http_get(url)
    if status != 200:
        return []
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def histogram(url: str, name: str, labels: dict[str, str]) -> dict[float, float]:
    """A Prometheus histogram's cumulative buckets {le: count} from one scrape."""
    out: dict[float, float] = {}
    for s in scrape(url):
        if s.name == f"{name}_bucket" and {
            k: v for k, v in s.labels.items() if k != "le"
        } == labels:
            out[float(s.labels["le"])] = s.value
    return out


def quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """p50/p95/p99 (ms) of what a histogram observed between two scrapes, interpolated
    within buckets (an upper bound of +Inf shows as ">last bound")."""
    buckets = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    count = buckets[-1][1] if buckets else 0.0
    if not count:
        return {"n": 0}
    out: dict[str, Any] = {"n": int(count)}
    for p in (50, 95, 99):
        target = count * p / 100
        lo_bound, lo_count = 0.0, 0.0
        for bound, c in buckets:
            if c >= target:
                if math.isinf(bound):
                    out[f"p{p}"] = f">{lo_bound * 1000:g}"
                else:
                    frac = (target - lo_count) / (c - lo_count) if c > lo_count else 1.0
                    out[f"p{p}"] = round((lo_bound + frac * (bound - lo_bound)) * 1000, 2)
                break
            lo_bound, lo_count = bound, c
    return out


def counter_sum(url: str, name: str, **labels: str) -> float | None:
    """Sum of a counter's samples whose labels include ``labels`` (None: no such counter)."""
    found = [s.value for s in scrape(url)
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return float(sum(found)) if found else None


# ----------------------------------------------------------------------------- CPU from /proc


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def chromium_cpu() -> dict[str, float]:
    """CPU seconds so far of every Chromium process under this one, by kind."""
    parents: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = st
    mine = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    out: dict[str, float] = {}
    for pid in mine - {os.getpid()}:
        cmd = _cmdline(pid)
        if "chrom" not in cmd.split(" ", 1)[0]:
            continue
        kind = ("renderer" if "--type=renderer" in cmd else "gpu" if "--type=gpu" in cmd
                else "utility" if "--type=utility" in cmd else "zygote" if "--type=zygote" in cmd
                else "browser")
        out[kind] = out.get(kind, 0.0) + parents[pid][1]
    return out


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def proc_cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: st[1] for name, pid in pids.items() if (st := _stat(pid)) is not None}


def cpu_share(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """% of one core each used between two readings."""
    return {k: round(100 * (after[k] - before.get(k, 0.0)) / wall, 1) for k in sorted(after)}


# ----------------------------------------------------------------------------- the stack


class Stack:
    """nats-server (with a WebSocket listener) and one ``xypipe run`` per service."""

    def __init__(self, args: argparse.Namespace, tmp: str) -> None:
        self.args, self.tmp = args, tmp
        self.nats_port, self.ws_port = free_port(), free_port()
        self.ports = {name: free_port() for name in SERVICES}
        self.ui_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.base = "http://127.0.0.1:{}"

    def url(self, service: str, path: str) -> str:
        return self.base.format(self.ports[service]) + path

    def start(self) -> None:
        from xypipe._gateway._tokens import generate_ed25519_keypair

        private, public = generate_ed25519_keypair()
        Path(self.tmp, "dev.key").write_bytes(private)
        Path(self.tmp, "dev.pub").write_bytes(public)
        self._start_nats()
        for name in ("aggregator", "gateway", "ui"):
            self._start_service(name)
        # The publisher only once the aggregator is ready: its ingest has made the source
        # stream and consumes it, so contracts and ticks reach it in order.
        wait_ready(self.url("aggregator", "/healthz"), 60, self.procs["aggregator"],
                   "aggregator")
        self._start_service("publisher")
        for name in ("gateway", "ui", "publisher"):
            wait_ready(self.url(name, "/healthz"), 60, self.procs[name], name)

    def _start_nats(self) -> None:
        from xypipe._embedded import find_nats_server

        conf = Path(self.tmp, "nats.conf")
        conf.write_text(NATS_CONF.format(port=self.nats_port, ws_port=self.ws_port, tmp=self.tmp))
        proc = subprocess.Popen([str(find_nats_server()), "-c", str(conf)],
                                stdout=subprocess.DEVNULL,
                                stderr=open(Path(self.tmp, "nats.log"), "wb"))
        self.procs["nats"] = proc
        end = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.nats_port), timeout=1):
                    return
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("nats-server did not start: "
                                       + self.log_tail("nats")) from None
                time.sleep(0.05)  # polling another process's port

    def _start_service(self, name: str) -> None:
        a = self.args
        cfg = Path(self.tmp, f"{name}.toml")
        cfg.write_text(HEADER.format(nats_url=f"nats://127.0.0.1:{self.nats_port}",
                                     http_port=self.ports[name]) + SERVICES[name].format(
            tmp=self.tmp, rate=float(a.rate), symbols=a.symbols, ui_port=self.ui_port,
            gw_port=self.ports["gateway"], groups=json.dumps(GROUPS), batch_ms=a.batch_ms,
            interval_ms=a.interval_ms))
        xypipe = Path(sys.executable).with_name("xypipe")
        self.procs[name] = subprocess.Popen(
            [str(xypipe), "run", str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=open(Path(self.tmp, f"{name}.log"), "wb"))

    def log_tail(self, name: str, lines: int = 3) -> str:
        try:
            text = Path(self.tmp, f"{name}.log").read_text(errors="replace").strip()
        except OSError:
            return ""
        return " / ".join(line[:200] for line in text.splitlines()[-lines:])

    def dead(self) -> list[str]:
        return [f"{n} (exit {p.returncode}: {self.log_tail(n)})"
                for n, p in self.procs.items() if p.poll() is not None]

    def stop(self) -> None:
        order = [n for n in ("publisher", "ui", "gateway", "aggregator") if n in self.procs]
        for group in (order, ["nats"] if "nats" in self.procs else []):
            for name in group:
                if self.procs[name].poll() is None:
                    self.procs[name].send_signal(signal.SIGINT)
            for name in group:
                try:
                    self.procs[name].wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.procs[name].kill()
                    self.procs[name].wait()


class Window:
    """What one measured window of a variant reads at its start and end."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        gw, agg = stack.url("gateway", "/metrics"), stack.url("aggregator", "/metrics")
        self.hists = {
            "gateway_send_ms": (gw, "e2e_latency_seconds", {"point": "gateway_send"}),
            "aggregator_ms": (agg, "aggregator_latency_seconds", {}),
        }

    def mark(self) -> dict[str, Any]:
        s = self.stack
        return {"t": time.monotonic(), "chromium": chromium_cpu(), "machine": machine_cpu(),
                "services": proc_cpu({n: p.pid for n, p in s.procs.items()}),
                "hists": {k: histogram(*h) for k, h in self.hists.items()},
                "gw_bytes": counter_sum(s.url("gateway", "/metrics"), "ws_bytes_sent_total"),
                "ingested": counter_sum(s.url("aggregator", "/metrics"), "src_ingest_total")}

    def result(self, start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
        wall = end["t"] - start["t"]
        out: dict[str, Any] = {
            "measured_s": round(wall, 2),
            "chromium_cpu_pct": cpu_share(start["chromium"], end["chromium"], wall),
            "service_cpu_pct": cpu_share(start["services"], end["services"], wall),
        }
        out["chromium_cpu_pct"]["total"] = round(sum(out["chromium_cpu_pct"].values()), 1)
        # What the rest of the machine took meanwhile (other users of a shared machine).
        busy = 100 * (end["machine"] - start["machine"]) / wall
        out["other_cpu_pct"] = round(busy - out["chromium_cpu_pct"]["total"]
                                     - sum(out["service_cpu_pct"].values()), 1)
        for key in self.hists:
            out[key] = quantiles(start["hists"][key], end["hists"][key])
        if start["gw_bytes"] is not None and end["gw_bytes"] is not None:
            out["gateway_bytes_per_s"] = round((end["gw_bytes"] - start["gw_bytes"]) / wall)
        if start["ingested"] is not None and end["ingested"] is not None:
            out["ingest_ticks_per_s"] = round((end["ingested"] - start["ingested"]) / wall)
        return out


# ----------------------------------------------------------------------------- browsers


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_windows(browser: Any, url: str, windows: int) -> list[Any]:
    """``windows`` separate, visible windows of one browser context (one SharedWorker)."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    cdp = browser.new_browser_cdp_session()
    first = context.new_page()
    first.goto(url)
    targets = cdp.send("Target.getTargets")["targetInfos"]
    ctx_id = next(t["browserContextId"] for t in targets if t["type"] == "page")
    pages = [first]
    for _ in range(windows - 1):
        with context.expect_page() as info:
            cdp.send("Target.createTarget", {"url": url, "newWindow": True,
                                             "browserContextId": ctx_id})
        pages.append(info.value)
    return pages


PAGE_READ = """() => {
  const x = window.__xy ?? {};
  const st = x.status ?? null;
  return { latencies: x.latencies ?? [], frames: x.frames ?? [], panels: x.panels ?? {},
           received: x.received ?? 0, reconnects: st?.reconnects ?? null,
           level: st?.degrade?.level ?? null, bytes: st?.counters?.bytes ?? null };
}"""


def work_per_frame(panels: dict[str, list[float]]) -> list[float]:
    """The page's drawing time per frame: its panels' render times summed frame by frame
    (every panel records one value per frame; anything else cannot be summed)."""
    lists = list(panels.values())
    if not lists or len({len(v) for v in lists}) != 1:
        return []
    return [sum(vs) for vs in zip(*lists, strict=True)]


def measure_page(stack: Stack, windows: int, args: argparse.Namespace) -> dict[str, Any]:
    probe = Window(stack)
    with chromium() as browser:
        pages = open_windows(browser, stack.base.format(stack.ui_port) + "/", windows)
        for page in pages:
            page.wait_for_function("() => (window.__xy?.received ?? 0) > 0", timeout=30_000)
        pages[0].wait_for_timeout(args.warmup * 1000)
        for page in pages:
            page.evaluate("() => window.__xyReset()")
        start = probe.mark()
        bytes0 = pages[0].evaluate(PAGE_READ)["bytes"]
        pages[0].wait_for_timeout(args.duration * 1000)
        end = probe.mark()
        raw = [page.evaluate(PAGE_READ) for page in pages]
    out = probe.result(start, end)
    frames = [v for r in raw for v in r["frames"]]
    work = [v for r in raw for v in work_per_frame(r["panels"])]
    out.update({
        "latency_ms": percentiles([v for r in raw for v in r["latencies"]]),
        "frame_interval_ms": percentiles(frames),
        "frame_work_ms": percentiles(work),
        "fps_per_window": round(len(frames) / out["measured_s"] / windows, 1),
        "reconnects": [r["reconnects"] for r in raw],
        "gateway_level_at_end": raw[0]["level"],
    })
    if bytes0 is not None and raw[0]["bytes"] is not None:
        # The worker's count arrives with its status (every second): ± a second's worth.
        out["worker_bytes_per_s"] = round((raw[0]["bytes"] - bytes0) / out["measured_s"])
    out["bytes_per_s"] = out.get("gateway_bytes_per_s", out.get("worker_bytes_per_s"))
    return out


def build_peer(dest: Path, modules: Path) -> str | None:
    """Bundle the raw-tick peer into ``dest`` with the packages in ``modules`` (an older
    checkout without nats.ws can point at a newer one's); the reason when it cannot be."""
    esbuild = modules / ".bin" / "esbuild"
    if not (modules / "nats.ws").is_dir() or not esbuild.exists():
        return f"{modules} has no nats.ws/esbuild (run npm ci, or pass --node-modules)"
    if not (PEER_SRC / "peer.js").is_file():
        return f"{PEER_SRC} is missing"
    done = subprocess.run(
        [str(esbuild), str(PEER_SRC / "peer.js"), "--bundle", "--format=iife",
         "--platform=browser", "--external:crypto", f"--outfile={dest / 'peer.bundle.js'}",
         "--log-level=error"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "NODE_PATH": str(modules)})
    if done.returncode:
        return f"esbuild failed: {done.stderr.strip()[-300:]}"
    shutil.copy(PEER_SRC / "peer.html", dest / "peer.html")
    return None


@contextmanager
def serve(directory: Path) -> Iterator[int]:
    """A static file server for the peer's page, on a thread of this process."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def peer_subjects(symbols: int) -> list[str]:
    """The raw-tick subjects of the symbols the demo page shows (its groups)."""
    from xypipe._publisher import MarketSim, tick_subject

    return [tick_subject(c.venue, c.symbol) for c in MarketSim(symbols).contracts()
            if c.group in GROUPS]


def measure_peer(stack: Stack, args: argparse.Namespace, peer_dir: Path) -> dict[str, Any]:
    probe = Window(stack)
    subjects = peer_subjects(args.symbols)
    (peer_dir / "peer.json").write_text(json.dumps(
        {"nats": f"ws://127.0.0.1:{stack.ws_port}", "subjects": subjects}))
    read = "() => window.__peer"
    with serve(peer_dir) as port, chromium() as browser:
        page = open_windows(browser, f"http://127.0.0.1:{port}/peer.html", 1)[0]
        page.wait_for_function(
            "() => (window.__peer?.messages ?? 0) > 0 || window.__peer?.error", timeout=30_000)
        if error := page.evaluate(read)["error"]:
            raise RuntimeError(f"raw peer: {error}")
        page.wait_for_timeout(args.warmup * 1000)
        page.evaluate("() => window.__peerReset()")
        start = probe.mark()
        page.wait_for_timeout(args.duration * 1000)
        end = probe.mark()
        raw = page.evaluate(read)
    if raw["error"]:
        raise RuntimeError(f"raw peer: {raw['error'].splitlines()[0]}")
    out = probe.result(start, end)
    out.update({
        "subjects": len(subjects),
        "received_ms": percentiles(raw["received"]),
        "latency_ms": percentiles(raw["drawn"]),
        "frame_interval_ms": percentiles(raw["frames"]),
        "frame_work_ms": percentiles(raw["work"]),
        "fps_per_window": round(len(raw["frames"]) / out["measured_s"], 1),
        "messages_per_s": round(raw["messages"] / out["measured_s"]),
        "bytes_per_s": round(raw["bytes"] / out["measured_s"]),
    })
    return out


# ----------------------------------------------------------------------------- runs


def variants(args: argparse.Namespace, peer: bool) -> list[str]:
    return [f"{w}w" for w in args.windows] + (["raw1"] if peer else [])


def one_run(args: argparse.Namespace, run: int, order: list[str],
            peer_dir: Path | None) -> list[dict[str, Any]]:
    """One stack, every variant on it in ``order``; a failure is recorded, not raised."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="xy-e2e-") as tmp:
        stack = Stack(args, tmp)
        try:
            stack.start()
        except Exception as exc:  # a run that could not start is a result too
            stack.stop()
            reason = f"stack did not start: {exc}"
            return [{"run": run, "variant": v, "error": reason} for v in order]
        try:
            for variant in order:
                t0 = time.monotonic()
                try:
                    if variant == "raw1":
                        assert peer_dir is not None
                        r = measure_peer(stack, args, peer_dir)
                    else:
                        r = measure_page(stack, int(variant[:-1]), args)
                    if dead := stack.dead():
                        raise RuntimeError(f"services exited during the run: {dead}")
                except Exception as exc:  # recorded with its reason; the next variant runs
                    r = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                                  if str(exc) else type(exc).__name__}
                    if args.verbose:
                        traceback.print_exc()
                r.update({"run": run, "variant": variant,
                          "load_average": [round(v, 2) for v in os.getloadavg()],
                          "wall_s": round(time.monotonic() - t0, 1)})
                print(line_of(r), flush=True)
                results.append(r)
                if stack.dead():
                    break
        finally:
            stack.stop()
            if any("error" in r for r in results):
                keep = tempfile.mkdtemp(prefix=f"xy-e2e-failed-run{run}-")
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, keep)
                print(f"run {run}: the services' logs are kept in {keep}", file=sys.stderr)
        done = {r["variant"] for r in results}
        results += [{"run": run, "variant": v, "error": f"not measured: {stack.dead()}"}
                    for v in order if v not in done]
    return results


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def dig(r: dict[str, Any], *path: str) -> Any:
    v: Any = r
    for key in path:
        v = v.get(key) if isinstance(v, dict) else None
    return v


def line_of(r: dict[str, Any]) -> str:
    head = f"run {r['run']} {r['variant']:>4}:"
    if "error" in r:
        return f"{head} FAILED — {r['error']}"
    lat = r["latency_ms"]
    return (f"{head} latency p50/p95/p99 {fmt(lat['p50'])}/{fmt(lat['p95'])}/{fmt(lat['p99'])} "
            f"ms (n={lat['n']}), frame interval p50/p95 {fmt(r['frame_interval_ms']['p50'])}/"
            f"{fmt(r['frame_interval_ms']['p95'])} ms, work/frame p50/p95 "
            f"{fmt(r['frame_work_ms']['p50'])}/{fmt(r['frame_work_ms']['p95'])} ms, "
            f"{r['fps_per_window']} fps/window, {fmt(r.get('bytes_per_s'))} B/s, chromium "
            f"{fmt(r['chromium_cpu_pct'].get('total'))} % (renderers "
            f"{fmt(r['chromium_cpu_pct'].get('renderer'))} %)")


SUMMARY = {
    "latency_p50": ("latency_ms", "p50"), "latency_p95": ("latency_ms", "p95"),
    "latency_p99": ("latency_ms", "p99"),
    "frame_interval_p50": ("frame_interval_ms", "p50"),
    "frame_interval_p95": ("frame_interval_ms", "p95"),
    "frame_work_p50": ("frame_work_ms", "p50"), "frame_work_p95": ("frame_work_ms", "p95"),
    "fps_per_window": ("fps_per_window",), "bytes_per_s": ("bytes_per_s",),
    "renderer_cpu_pct": ("chromium_cpu_pct", "renderer"),
    "chromium_cpu_pct": ("chromium_cpu_pct", "total"),
    "received_p50": ("received_ms", "p50"), "received_p99": ("received_ms", "p99"),
    "gateway_send_p95": ("gateway_send_ms", "p95"), "aggregator_p95": ("aggregator_ms", "p95"),
    "ingest_ticks_per_s": ("ingest_ticks_per_s",), "other_cpu_pct": ("other_cpu_pct",),
}


def medians(results: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    ok = [r for r in results if r["variant"] == variant and "error" not in r]
    out: dict[str, Any] = {"runs_ok": len(ok),
                           "runs_failed": sum(1 for r in results
                                              if r["variant"] == variant and "error" in r)}
    for key, path in SUMMARY.items():
        values = [float(v) for r in ok if isinstance(v := dig(r, *path), int | float)]
        out[key] = round(statistics.median(values), 2) if values else None
    services: dict[str, list[float]] = {}
    for r in ok:
        for name, pct in r["service_cpu_pct"].items():
            services.setdefault(name, []).append(pct)
    out["service_cpu_pct"] = {k: round(statistics.median(v), 1) for k, v in services.items()}
    return out


def comparison(med: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Our one window against the raw-tick peer: the goal is p99 ≤ 35 ms at ≥ 3x fewer bytes."""
    ours, peer = med.get("1w"), med.get("raw1")
    if not ours or not peer or not ours.get("bytes_per_s") or not peer.get("bytes_per_s"):
        return {}
    return {"peer_bytes_over_ours": round(peer["bytes_per_s"] / ours["bytes_per_s"], 2),
            "ours_p99": ours["latency_p99"], "peer_p99": peer["latency_p99"],
            "goal": "ours p99 <= 35 ms, peer bytes / ours >= 3"}


def markdown(doc: dict[str, Any]) -> str:
    med, results = doc["median"], doc["results"]
    lines = [
        "# End-to-end latency (adapter → aggregator → WS → UI render)",
        "",
        f"{doc['rate']:g} ticks/s over {doc['symbols']} symbols; conflation every "
        f"{doc['interval_ms']} ms, worker batch {doc['batch_ms']} ms; {doc['duration_s']:g} s "
        f"measured after {doc['warmup_s']:g} s warm-up; {doc['runs']} runs, each on a fresh "
        f"stack measuring every variant in a rotating order. Machine: {doc['machine']}. "
        "Spec: P95 < 120 ms, P99 < 180 ms; frame p95 ≤ 16.7 ms.",
        "",
        "Median of the runs that worked (`Nw` = N windows of the demo page, one SharedWorker "
        "socket; `raw1` = one window reading raw ticks straight from nats-server's WebSocket):",
        "",
        "| variant | ok/failed | latency p50 | p95 | p99 | frame interval p50 | p95 "
        "| work/frame p50 | p95 | fps/window | bytes/s | renderers % | chromium % "
        "| gateway send p95 | aggregator p95 | ingest ticks/s | others' CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in doc["variants"]:
        m = med[v]
        lines.append(
            f"| {v} | {m['runs_ok']}/{m['runs_failed']} | {fmt(m['latency_p50'])} | "
            f"{fmt(m['latency_p95'])} | **{fmt(m['latency_p99'])}** | "
            f"{fmt(m['frame_interval_p50'])} | {fmt(m['frame_interval_p95'])} | "
            f"{fmt(m['frame_work_p50'])} | **{fmt(m['frame_work_p95'])}** | "
            f"{fmt(m['fps_per_window'])} | {fmt(m['bytes_per_s'])} | "
            f"{fmt(m['renderer_cpu_pct'])} | {fmt(m['chromium_cpu_pct'])} | "
            f"{fmt(m['gateway_send_p95'])} | {fmt(m['aggregator_p95'])} | "
            f"{fmt(m['ingest_ticks_per_s'])} | {fmt(m['other_cpu_pct'])} |")
    if c := doc.get("comparison"):
        lines += ["", f"Raw-tick peer against our one window: the peer receives "
                      f"**{c['peer_bytes_over_ours']}x** our bytes; p99 ours "
                      f"{fmt(c['ours_p99'])} ms, peer {fmt(c['peer_p99'])} ms (goal: ours "
                      "≤ 35 ms at ≥ 3x fewer bytes)."]
    elif doc.get("peer_skipped"):
        lines += ["", f"Raw-tick peer not measured: {doc['peer_skipped']}."]
    lines += ["", "Every run:", "",
              "| run | variant | latency p50 | p95 | p99 | frame interval p95 | work/frame p95 "
              "| fps/window | bytes/s | renderers % | services % | ingest ticks/s "
              "| others' CPU % | load avg |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            reason = r["error"].replace("|", "/")
            lines.append(f"| {r['run']} | {r['variant']} | failed: {reason} "
                         "| | | | | | | | | | | |")
            continue
        svc = ", ".join(f"{k} {v:g}" for k, v in r["service_cpu_pct"].items())
        lines.append(
            f"| {r['run']} | {r['variant']} | {fmt(r['latency_ms']['p50'])} | "
            f"{fmt(r['latency_ms']['p95'])} | {fmt(r['latency_ms']['p99'])} | "
            f"{fmt(r['frame_interval_ms']['p95'])} | {fmt(r['frame_work_ms']['p95'])} | "
            f"{r['fps_per_window']} | {fmt(r.get('bytes_per_s'))} | "
            f"{fmt(r['chromium_cpu_pct'].get('renderer'))} | {svc} | "
            f"{fmt(r.get('ingest_ticks_per_s'))} | {fmt(r.get('other_cpu_pct'))} | "
            f"{r['load_average'][0]} |")
    lines += ["", "Latencies in ms. Ours: `SymbolState.ts_arrival_us` (the aggregator's stamp "
              "when it takes the tick in) → row written in the DOM, on the gateway's clock via "
              "the worker's ping/pong offset. The raw peer: the publisher's `ts_arrival_us` "
              "(earlier: before NATS, JetStream and ingest) → row written. Frame interval = "
              "time between animation frames; work/frame = the page's own drawing time in a "
              "frame (style, layout and paint follow it and show in the renderers' CPU). "
              "Bytes/s: ours as the gateway wrote them (`ws_bytes_sent_total`), the peer's as "
              "NATS protocol bytes counted in the page. CPU in % of one core over the measured "
              "window; others' CPU = what the rest of the machine used meanwhile (a shared "
              "machine's noise). Server-side percentiles are interpolated from Prometheus "
              "histogram buckets over that window.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=4000)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--windows", default="1,5",
                    help="window counts measured side by side in each run (default 1,5)")
    ap.add_argument("--interval-ms", type=int, default=33,
                    help="the aggregator's conflation window (16..100)")
    ap.add_argument("--batch-ms", type=int, default=16, help="the worker's batch period")
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--raw-peer", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure a window reading raw ticks from NATS (default on)")
    ap.add_argument("--node-modules", type=Path, default=ROOT / "node_modules",
                    help="where nats.ws and esbuild are installed (for the raw peer)")
    ap.add_argument("--verbose", action="store_true", help="print a failed run's traceback")
    ap.add_argument("--out", default=str(RESULTS / "e2e_latency"))
    args = ap.parse_args()
    args.windows = [int(w) for w in str(args.windows).split(",") if w.strip()]
    if not 16 <= args.interval_ms <= 100:
        ap.error("--interval-ms: expected 16..100 (the conflate stage's range)")
    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} missing: run scripts/setup_browser.sh", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="xy-e2e-peer-") as peer_tmp:
        peer_dir: Path | None = Path(peer_tmp)
        peer_skipped = (build_peer(Path(peer_tmp), args.node_modules) if args.raw_peer
                        else "--no-raw-peer")
        if peer_skipped:
            print(f"raw-tick peer not measured: {peer_skipped}", flush=True)
            peer_dir = None
        names = variants(args, peer_dir is not None)
        results: list[dict[str, Any]] = []
        for i in range(args.runs):
            order = names[i % len(names):] + names[:i % len(names)]
            results += one_run(args, i + 1, order, peer_dir)
    med = {v: medians(results, v) for v in names}
    doc = {
        "bench": "e2e_latency", "rate": args.rate, "symbols": args.symbols,
        "variants": names, "interval_ms": args.interval_ms, "batch_ms": args.batch_ms,
        "warmup_s": args.warmup, "duration_s": args.duration, "runs": args.runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, {platform.system()}",
        "peer_skipped": peer_skipped,
        "median": med, "comparison": comparison(med), "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    if c := doc["comparison"]:
        print(f"peer bytes / ours = {c['peer_bytes_over_ours']}x; p99 ours {c['ours_p99']} ms, "
              f"peer {c['peer_p99']} ms")
    return 0 if any("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
