"""The replay benchmark's browser sides, N tabs each, measured alike in one run: N tabs of
xypipe's demo page (one SharedWorker, so one socket to the gateway) and N tabs of the NATS JS
client peer (bench/rawpeer/: each tab its own nats.ws socket to nats-server's WebSocket
listener, subscribed to the raw ticks of the same groups' symbols, drawing one row per symbol).

What each side reports, every figure read the same way for both:

- **sockets per browser**, counted by the servers while the window runs (sampled every second;
  the fewest and the most): the gateway's ``ws_active`` gauge, nats-server's ``/connz``
  connections whose client library is ``nats.ws``; the kernel's count of established sockets on
  the server's port (``/proc/net/tcp``) beside it as a cross-check.
- **bytes/s into the browser**, all its sockets together, as the server wrote them: the
  gateway's ``ws_bytes_sent_total``, the ``out_bytes`` of nats-server's nats.ws connections
  (NATS protocol bytes; WebSocket framing is left out on both sides).
- **deltas/s delivered**: the gateway's ``xy_ws_messages_forwarded_total`` (a group's delta or
  snapshot, each holding many symbols), the ``out_msgs`` of the nats.ws connections (one raw
  tick each).
- **main-thread ms per second per tab**: Chromium's own busy time of each tab's main thread,
  ``Performance.getMetrics`` ``TaskDuration`` (every task the renderer's main thread ran:
  script, style, layout, paint) and ``ScriptDuration`` (script only), as thread CPU time
  (``timeDomain: threadTicks``: time the thread was preempted by other processes is not
  counted), read over CDP at the window's ends, divided by its seconds. Tabs that Chromium
  puts in one renderer process share that main thread; ``renderers`` says how many there
  were.
- **frame interval** p95/p99 and **E2E -> drawn** p50/p95/p99 from the pages' own records
  (bench/e2e_latency.py's), every tab's samples together.
- **server CPU** of the gateway and of nats-server over the window, and each one's CPU *for
  the browser*: its CPU in its own side's window minus its CPU in the other side's (the gateway
  keeps reading NATS, nats-server keeps serving the aggregator and the gateway, in both), per
  delivered delta and per delivered kB. On a machine busy with other work this difference is
  noisy (a few % of a core), and can come out below zero.
- **RSS** of the browser (every Chromium process summed, shared pages counted in each) and of
  the servers, at the window's end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _sides
import e2e_latency

PAGE = os.sysconf("SC_PAGE_SIZE")
#: The client library nats.ws announces in its CONNECT (``lang``), as /connz shows it.
NATS_WS_LANG = "nats.ws"


def connz(port: int) -> list[dict[str, Any]]:
    """nats-server's open client connections (its monitoring port)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/connz?limit=100000", timeout=3) as r:
        conns: list[dict[str, Any]] = json.loads(r.read()).get("connections") or []
    return conns


def nats_ws(port: int) -> list[dict[str, Any]]:
    """The connections nats.ws clients hold (the peer's tabs)."""
    return [c for c in connz(port) if c.get("lang") == NATS_WS_LANG]


def _rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6
    except OSError:
        return 0.0


def chromium_pids() -> dict[int, str]:
    """Every Chromium process under this one: ``{pid: kind}``."""
    mine = _sides.children(os.getpid())
    out = {}
    for pid in mine:
        cmd = e2e_latency._cmdline(pid)
        if "chrom" not in cmd.split(" ", 1)[0]:
            continue
        out[pid] = ("renderer" if "--type=renderer" in cmd else "gpu" if "--type=gpu" in cmd
                    else "utility" if "--type=utility" in cmd
                    else "zygote" if "--type=zygote" in cmd else "browser")
    return out


class Servers:
    """What the tabs windows read of the servers: their pids, ports and counters."""

    def __init__(self, gw_pid: int, gw_port: int, nats_pid: int, ws_port: int,
                 monitor_port: int, gw_metric: Callable[[str], float]) -> None:
        self.gw_pid, self.gw_port = gw_pid, gw_port
        self.nats_pid, self.ws_port, self.monitor_port = nats_pid, ws_port, monitor_port
        self.gw_metric = gw_metric

    def cpu(self) -> dict[str, float]:
        return {name: sum(c for p in [pid, *_sides.children(pid)]
                          if (c := _sides.cpu_seconds(p)) is not None)
                for name, pid in (("gateway", self.gw_pid), ("nats", self.nats_pid))}

    def rss(self) -> dict[str, float]:
        return {name: round(sum(_rss_mb(p) for p in [pid, *_sides.children(pid)]), 1)
                for name, pid in (("gateway", self.gw_pid), ("nats", self.nats_pid))}

    def sockets(self, side: str) -> tuple[int, int]:
        """(the server's own count, the kernel's established sockets on its port)."""
        if side == "xypipe":
            return (int(self.gw_metric("ws_active")),
                    sum(_sides.established(p, self.gw_port)
                        for p in [self.gw_pid, *_sides.children(self.gw_pid)]))
        return len(nats_ws(self.monitor_port)), _sides.established(self.nats_pid, self.ws_port)

    def delivered(self, side: str) -> tuple[float, float]:
        """(deltas, bytes) the server has written to browsers so far."""
        if side == "xypipe":
            return (self.gw_metric("xy_ws_messages_forwarded_total"),
                    self.gw_metric("ws_bytes_sent_total"))
        conns = nats_ws(self.monitor_port)
        return (float(sum(c.get("out_msgs", 0) for c in conns)),
                float(sum(c.get("out_bytes", 0) for c in conns)))


class MainThread:
    """Each tab's renderer main-thread busy time, from Chromium's Performance domain."""

    def __init__(self, pages: list[Any]) -> None:
        self.sessions = []
        for page in pages:
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
            self.sessions.append(cdp)

    def read(self) -> list[dict[str, float]]:
        out = []
        for cdp in self.sessions:
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            out.append({k: float(metrics.get(k, 0.0)) for k in ("TaskDuration", "ScriptDuration")})
        return out


PEER_READ = "() => window.__peer"


def measure_side(side: str, servers: Servers, view: Any, tabs: int, ns: argparse.Namespace,
                 peer_dir: Path | None = None) -> dict[str, Any]:
    """``tabs`` tabs of one side for ``ns.duration`` s after ``ns.warmup`` s: every figure of the
    module's docstring (``side`` = ``xypipe`` or ``nats.ws``)."""
    probe = e2e_latency.Window(view)
    with e2e_latency.chromium() as browser:
        if side == "xypipe":
            pages = e2e_latency.open_windows(browser, view.base.format(view.ui_port) + "/", tabs)
            for page in pages:
                page.wait_for_function("() => (window.__xy?.received ?? 0) > 0", timeout=30_000)
            return _measure(side, servers, probe, pages, ns, tabs)
        assert peer_dir is not None
        subjects = e2e_latency.peer_subjects(ns.symbols)
        (peer_dir / "peer.json").write_text(json.dumps(
            {"nats": f"ws://127.0.0.1:{servers.ws_port}", "subjects": subjects}))
        with e2e_latency.serve(peer_dir) as port:
            pages = e2e_latency.open_windows(browser, f"http://127.0.0.1:{port}/peer.html", tabs)
            for page in pages:
                page.wait_for_function(
                    "() => (window.__peer?.messages ?? 0) > 0 || window.__peer?.error",
                    timeout=30_000)
                if error := page.evaluate(PEER_READ)["error"]:
                    raise RuntimeError(f"nats.ws peer tab: {error}")
            out = _measure(side, servers, probe, pages, ns, tabs)
            out["subjects"] = len(subjects)
            return out


def _measure(side: str, servers: Servers, probe: Any, pages: list[Any],
             ns: argparse.Namespace, tabs: int) -> dict[str, Any]:
    ours = side == "xypipe"
    main = MainThread(pages)
    pages[0].wait_for_timeout(ns.warmup * 1000)
    for page in pages:
        page.evaluate("() => window.__xyReset()" if ours else "() => window.__peerReset()")
    start, cpu0, sent0, busy0 = probe.mark(), servers.cpu(), servers.delivered(side), main.read()
    t0 = time.monotonic()
    counts = []
    # The sockets as the servers count them, every second of the window.
    while (left := ns.duration - (time.monotonic() - t0)) > 0:
        pages[0].wait_for_timeout(min(1.0, left) * 1000)
        counts.append(servers.sockets(side))
    end, cpu1, sent1, busy1 = probe.mark(), servers.cpu(), servers.delivered(side), main.read()
    wall = time.monotonic() - t0
    raw = [page.evaluate(e2e_latency.PAGE_READ if ours else PEER_READ) for page in pages]
    chrome = chromium_pids()
    out = probe.result(start, end)
    if not ours and (errors := [r["error"] for r in raw if r["error"]]):
        raise RuntimeError(f"nats.ws peer tab: {errors[0].splitlines()[0]}")
    frames = [v for r in raw for v in r["frames"]]
    drawn = [v for r in raw for v in (r["latencies"] if ours else r["drawn"])]
    work = ([v for r in raw for v in e2e_latency.work_per_frame(r["panels"])] if ours
            else [v for r in raw for v in r["work"]])
    task_ms = [1000 * (b["TaskDuration"] - a["TaskDuration"]) / wall
               for a, b in zip(busy0, busy1, strict=True)]
    script_ms = [1000 * (b["ScriptDuration"] - a["ScriptDuration"]) / wall
                 for a, b in zip(busy0, busy1, strict=True)]
    server_counts = [c for c, _ in counts]
    out.update({
        "tabs": tabs,
        "sockets": {"server_min": min(server_counts, default=None),
                    "server_max": max(server_counts, default=None),
                    "kernel_max": max((k for _, k in counts), default=None),
                    "samples": len(counts),
                    "counted_by": "gateway ws_active" if ours else "nats-server /connz "
                                  f"(lang {NATS_WS_LANG})"},
        "bytes_per_s": round((sent1[1] - sent0[1]) / wall),
        "deltas_per_s": round((sent1[0] - sent0[0]) / wall, 1),
        "main_thread_ms_per_s": {
            "mean": round(sum(task_ms) / len(task_ms), 1), "max": round(max(task_ms), 1),
            "script_mean": round(sum(script_ms) / len(script_ms), 1),
            "per_tab": [round(v, 1) for v in task_ms]},
        "latency_ms": e2e_latency.percentiles(drawn),
        "frame_interval_ms": e2e_latency.percentiles(frames),
        "frame_work_ms": e2e_latency.percentiles(work),
        "fps_per_window": round(len(frames) / wall / tabs, 1),
        "server_cpu_pct": {k: round(100 * (cpu1[k] - cpu0[k]) / wall, 1) for k in cpu1},
        "rss_mb": {"browser": round(sum(_rss_mb(p) for p in chrome), 1), **servers.rss()},
        "renderers": sum(1 for k in chrome.values() if k == "renderer"),
    })
    return out


def per_delta(result: dict[str, Any]) -> None:
    """Each server's CPU for the browser (its own window minus the other side's) and per
    delivered delta (µs), written into both sides of ``result`` (``xypipe`` and ``nats.ws``)."""
    ours, peer = result.get("xypipe"), result.get("nats.ws")
    if not ours or not peer or "error" in ours or "error" in peer:
        return
    for me, other, server in ((ours, peer, "gateway"), (peer, ours, "nats")):
        spent = me["server_cpu_pct"][server] - other["server_cpu_pct"][server]
        me["server_cpu_for_browser_pct"] = round(spent, 1)
        me["server_cpu_us_per_delta"] = (round(spent / 100 * 1e6 / me["deltas_per_s"], 2)
                                         if me["deltas_per_s"] > 0 else None)
        me["server_cpu_us_per_kb"] = (round(spent / 100 * 1e6 / (me["bytes_per_s"] / 1e3), 2)
                                      if me["bytes_per_s"] > 0 else None)
