"""Rolling restart benchmark: delivery p99 and each client's worst gap during a rollout vs
steady state, measured in the same run.

The tree is the one the rollout test uses (tests/gateway/test_rollout_tree.py): one ``xypipe
run`` on a generated config (free ports) with the embedded NATS server, the demo market's
publisher, an aggregator on ownership leases and two gateway workers on one port. The clients
are :mod:`xypipe.client` connections (every sequence and checksum checked, GoAway followed),
all held by one separate process (this script with ``--worker``) that reports its own CPU.

One run, three windows:

- **steady**: ``--steady`` seconds with every client synced;
- **rollout**: from the SIGHUP to ``xypipe run`` until it logs the rollout's end (XY-SUP-042
  done, XY-SUP-043 rolled back): the aggregator and both workers replaced one at a time;
- **after**: ``--after`` seconds more, so a hole or repeat that shows only once the last worker
  is gone is still counted.

For each window: delivery latency p50/p99 from the publisher's ``ts_emit_us`` to the client
applying the delta (every delta; both ends share this machine's clock), the worst gap between
two deltas of one client (max over clients, and the median client's worst), reconnects per
client, holes/repeats (deltas the SDK skipped as gap, duplicate, stale or future: must be 0),
epoch changes seen by clients and snapshots applied as a resync, and the client process's CPU.

    python bench/rollout.py              # 50 clients, 10 s steady
    python bench/rollout.py --quick      # 5 clients, 2 s steady, short gates (the smoke test)

Writes bench/results/rollout.{json,md} (``--results DIR`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
GROUPS = ("equities", "futures", "fx", "crypto", "rates")
PHASES = ("steady", "rollout", "after")
#: A DeltaSkipped verdict that is not a hole or a repeat (a delta held while a snapshot the
#: client asked for is on its way).
_HELD = "held"


# --------------------------------------------------------------------------- the tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports() -> dict[str, int]:
    ports = {name: _free_port() for name in ("nats", "sup", "agg", "ws")}
    while True:  # two consecutive free ports: the workers' own /metrics (metrics_port + index)
        base = _free_port()
        if base < 65535 and _bindable(base + 1):
            ports["w0"], ports["w1"] = base, base + 1
            return ports


def tree_toml(tmp: Path, ports: dict[str, int], gate_s: float) -> str:
    """The rollout test's tree: embedded NATS, demo publisher, leased aggregator, 2 workers."""
    gateway = {"use": "gateway", "name": "gateway",
               "public_key": str(REPO / "configs/dev-keys/gateway-dev.pub.pem"),
               "allowed_origins": ["*"], "issuer": "xypipe-dev",
               "audience": "xypipe-gateway", "drain_s": 1.0}
    restart = '{ policy = "on-failure", max_restarts = 5, window_s = 60, backoff_ms = 50 }'
    return (
        f'[nats]\nurl = "embedded"\n[nats.embedded]\nport = {ports["nats"]}\n'
        f'data_dir = "{tmp / "nats"}"\n'
        f'[http]\nport = {ports["sup"]}\n'
        f"[rollout]\ngate_s = {gate_s}\nready_timeout_s = 60.0\npoll_ms = 200\n"
        f'[processes.aggregator]\nhttp = {{ host = "127.0.0.1", port = {ports["agg"]} }}\n'
        f"restart = {restart}\n"
        f'[processes.gateway]\nworkers = 2\nmetrics_port = {ports["w0"]}\n'
        f'http = {{ host = "127.0.0.1", port = {ports["ws"]} }}\nrestart = {restart}\n'
        '[pipelines.aggregator]\nprocess = "aggregator"\n'
        '[[pipelines.aggregator.stages]]\nuse = "ingest"\n'
        "ownership = { enabled = true, ttl_ms = 1500, renew_ms = 300 }\n"
        '[[pipelines.aggregator.stages]]\nuse = "dedupe"\nhold_ms = 20\n'
        '[[pipelines.aggregator.stages]]\nuse = "shard"\nshards = 1\n'
        '[[pipelines.aggregator.stages]]\nuse = "conflate"\ninterval_ms = 33\n'
        '[[pipelines.aggregator.stages]]\nuse = "snapshot"\ninterval_ms = 500\n'
        '[[pipelines.aggregator.stages]]\nuse = "publish"\n'
        '[pipelines.publisher]\n[[pipelines.publisher.stages]]\nuse = "publisher"\n'
        "symbols = 40\nrate = 400.0\nseed = 7\ncontracts_every_s = 2.0\n"
        '[pipelines.gateway]\nprocess = "gateway"\n'
        '[[pipelines.gateway.stages]]\nuse = "nats_source"\nname = "md"\n'
        'subjects = ["xy.md.tick.>", "xy.md.snapshot.>"]\n'
        "[[pipelines.gateway.stages]]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in gateway.items())
    )


def _token() -> str:
    """A dev token from the public CLI (the tree trusts the committed dev key)."""
    out = subprocess.run(
        [sys.executable, "-m", "xypipe", "token", "--key",
         str(REPO / "configs/dev-keys/gateway-dev.key.pem"), "--sub", "bench",
         "--allow", "xy.md.>", "--ttl", "3600"],
        cwd=str(REPO), check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False


async def _wait_healthy(port: int, within: float) -> None:
    with trio.fail_after(within):
        while True:  # another process's HTTP endpoint: nothing to await but its answer
            if await trio.to_thread.run_sync(_healthy, port):
                return
            await trio.sleep(0.2)


class _Log:
    """``xypipe run``'s stderr as JSON lines; wakes whoever waits for a line."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.text: list[str] = []
        self.closed = False
        self._more = trio.Event()

    async def pump(self) -> None:
        assert self.proc.stderr is not None
        buf = b""
        while chunk := await self.proc.stderr.receive_some(65536):
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace")
                self.text.append(line)
                if line.startswith("{"):
                    try:
                        self.lines.append(json.loads(line))
                    except ValueError:
                        pass
            self._more.set()
            self._more = trio.Event()
        self.closed = True
        self._more.set()

    async def wait_code(self, codes: tuple[str, ...], within: float) -> dict[str, Any]:
        with trio.fail_after(within):
            while True:
                for line in self.lines:
                    if line.get("code") in codes:
                        return line
                if self.closed:
                    raise RuntimeError("xypipe run exited:\n" + "\n".join(self.text[-40:]))
                await self._more.wait()


# --------------------------------------------------------------------------- the client process


class _Window:
    """What the clients saw in one window."""

    def __init__(self, n: int) -> None:
        self.lat_ms: list[float] = []
        self.worst_gap = [0.0] * n
        self.reconnects = [0] * n
        self.skipped: dict[str, int] = {}
        self.held = 0
        self.resyncs = 0
        self.began = time.monotonic()
        self.cpu0 = _own_cpu()
        self.load0 = os.getloadavg()[0]
        self.ended = 0.0
        self.cpu1 = 0.0

    def close(self) -> None:
        self.ended, self.cpu1 = time.monotonic(), _own_cpu()


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _clients(port: int, token: str, n: int) -> None:
    """N SDK clients; phase marks on stdin (``steady``, ``rollout``, ``after``, ``stop``);
    prints ``READY`` once every book is synced and ``RESULT {json}`` at ``stop``."""
    from xypipe import client as xc

    windows: dict[str, _Window] = {}
    current: list[_Window | None] = [None]
    last = [0.0] * n
    epochs: list[dict[str, set[int]]] = [{} for _ in range(n)]
    conns: list[xc.Client] = []
    changed = [trio.Event()]  # set on every update: the readiness wait re-checks the books

    async def read(i: int, c: xc.Client) -> None:
        async for u in c:
            changed[0].set()
            w = current[0]
            now = time.monotonic()
            if isinstance(u, xc.DeltaApplied):
                epochs[i].setdefault(u.group, set()).add(u.epoch)
                if w is not None:
                    w.lat_ms.append((time.time() * 1e6 - u.ts_emit_us) / 1000)
                    if last[i]:
                        w.worst_gap[i] = max(w.worst_gap[i], now - last[i])
                last[i] = now
            elif isinstance(u, xc.SnapshotApplied):
                epochs[i].setdefault(u.group, set()).add(u.epoch)
                if w is not None and u.resync:
                    w.resyncs += 1
            elif w is None:
                continue
            elif isinstance(u, xc.Connected) and u.reconnects:
                w.reconnects[i] += 1
            elif isinstance(u, xc.DeltaSkipped):
                if u.verdict == _HELD:
                    w.held += 1
                else:
                    w.skipped[u.verdict] = w.skipped.get(u.verdict, 0) + 1

    def synced() -> bool:
        return all(all((b := c.book(g)) is not None and b.synced for g in GROUPS)
                   for c in conns)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            c = await nursery.start(_hold, port, token)
            conns.append(c)
            nursery.start_soon(read, i, c)
            await c.subscribe(*GROUPS)
        with trio.fail_after(120):
            while not synced():
                changed[0] = trio.Event()
                await changed[0].wait()
        print("READY", flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buf = b""
        while True:
            chunk = await stdin.receive_some(4096)
            buf += chunk
            *marks, buf = buf.split(b"\n")
            stop = not chunk
            for mark in (m.decode().strip() for m in marks):
                if current[0] is not None:
                    current[0].close()
                if mark == "stop":
                    stop = True
                    current[0] = None
                    break
                current[0] = windows[mark] = _Window(n)
            if stop:
                break
        nursery.cancel_scope.cancel()
    epoch_changes = sum(1 for e in epochs if any(len(s) > 1 for s in e.values()))
    out = {name: _summary(w) for name, w in windows.items()}
    print("RESULT " + json.dumps({"windows": out, "clients_with_epoch_change": epoch_changes}),
          flush=True)


async def _hold(port: int, token: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    from xypipe import client as xc

    async with xc.connect(f"ws://127.0.0.1:{port}/ws", token=token,
                          client_name="rollout-bench") as c:
        task_status.started(c)
        await trio.sleep_forever()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


def _summary(w: _Window) -> dict[str, Any]:
    secs = max(w.ended - w.began, 1e-9)
    gaps = sorted(w.worst_gap)
    holes = sum(w.skipped.values())
    return {
        "seconds": round(secs, 2),
        "deltas": len(w.lat_ms),
        "lat_p50_ms": _pct(w.lat_ms, 0.50),
        "lat_p99_ms": _pct(w.lat_ms, 0.99),
        "lat_max_ms": round(max(w.lat_ms, default=float("nan")), 2),
        "worst_gap_ms": round(gaps[-1] * 1000, 1) if gaps else float("nan"),
        "median_client_worst_gap_ms": round(gaps[len(gaps) // 2] * 1000, 1) if gaps else 0.0,
        "reconnects_max": max(w.reconnects, default=0),
        "reconnects_total": sum(w.reconnects),
        "holes_or_repeats": holes,
        "skipped_by_verdict": w.skipped,
        "held": w.held,
        "resync_snapshots": w.resyncs,
        "client_cpu_pct": round(100 * (w.cpu1 - w.cpu0) / secs, 1),
        # The machine's 1-minute load average at the window's start (2 cores: other jobs show).
        "loadavg_1m": round(w.load0, 2),
    }


# --------------------------------------------------------------------------- the orchestrator


async def _line(stream: trio.abc.ReceiveStream, buf: list[bytes], prefix: str,
                within: float) -> str:
    """The first stdout line of the client process starting with ``prefix``."""
    with trio.fail_after(within):
        while True:
            text = b"".join(buf)
            for raw in text.split(b"\n")[:-1]:
                if raw.startswith(prefix.encode()):
                    rest = text.split(raw, 1)[1]
                    buf[:] = [rest]
                    return raw.decode()
            chunk = await stream.receive_some(1 << 20)
            if not chunk:
                raise RuntimeError(f"the client process ended before {prefix!r}")
            buf.append(bytes(chunk))


async def bench(clients: int, steady: float, after: float, gate_s: float) -> dict[str, Any]:
    token = _token()
    with tempfile.TemporaryDirectory(prefix="xy-rollout-") as d:
        tmp = Path(d)
        ports = _ports()
        path = tmp / "tree.toml"
        path.write_text(tree_toml(tmp, ports, gate_s))
        tree = await trio.lowlevel.open_process(
            [sys.executable, "-m", "xypipe", "run", str(path)], cwd=str(REPO),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log = _Log(tree)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(log.pump)
                for key in ("agg", "w0", "w1", "sup"):
                    await _wait_healthy(ports[key], 90)
                result = await _measure(tree, log, ports["ws"], token, clients, steady, after)
                os.killpg(tree.pid, signal.SIGINT)
                with trio.fail_after(30):
                    await tree.wait()
        finally:
            if tree.returncode is None:
                os.killpg(tree.pid, signal.SIGKILL)
                await tree.wait()
    result.update(clients=clients, steady_s=steady, gate_s=gate_s)
    return result


async def _measure(tree: trio.Process, log: _Log, port: int, token: str, clients: int,
                   steady: float, after: float) -> dict[str, Any]:
    worker = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / "rollout.py"), "--worker", "--port", str(port),
         "--token", token, "--clients", str(clients)],
        cwd=str(REPO), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert worker.stdin is not None and worker.stdout is not None
    buf: list[bytes] = []
    try:
        await _line(worker.stdout, buf, "READY", 180)
        await worker.stdin.send_all(b"steady\n")
        await trio.sleep(steady)  # the steady window is a span of time, not a wait for an event
        await worker.stdin.send_all(b"rollout\n")
        began = time.monotonic()
        os.kill(tree.pid, signal.SIGHUP)
        done = await log.wait_code(("XY-SUP-042", "XY-SUP-043"), 300)
        rollout_s = time.monotonic() - began
        await worker.stdin.send_all(b"after\n")
        await trio.sleep(after)
        await worker.stdin.send_all(b"stop\n")
        line = await _line(worker.stdout, buf, "RESULT ", 60)
        with trio.fail_after(30):
            await worker.wait()
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    result: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    steps = [ln.get("unit") for ln in log.lines if ln.get("code") == "XY-SUP-041"]
    result.update(rollout_s=round(rollout_s, 1), rollout_outcome=(
        "done" if done["code"] == "XY-SUP-042" else "rolled_back"), rollout_msg=done.get("msg"),
        replaced=steps)
    return result


def markdown(r: dict[str, Any]) -> str:
    w = r["windows"]
    rows = [
        ("delivery p50 (ms)", "lat_p50_ms"), ("delivery p99 (ms)", "lat_p99_ms"),
        ("delivery max (ms)", "lat_max_ms"), ("worst client gap (ms)", "worst_gap_ms"),
        ("median client's worst gap (ms)", "median_client_worst_gap_ms"),
        ("reconnects per client (max)", "reconnects_max"),
        ("reconnects (all clients)", "reconnects_total"),
        ("holes or repeats", "holes_or_repeats"),
        ("deltas held for a requested snapshot", "held"),
        ("snapshots replacing a book (resync)", "resync_snapshots"),
        ("deltas applied", "deltas"), ("window (s)", "seconds"),
        ("client process CPU (% of a core)", "client_cpu_pct"),
        ("machine load average (1 min) at start", "loadavg_1m"),
    ]
    lines = [
        f"# Rolling restart under {r['clients']} clients: steady vs rollout, one run",
        "",
        f"`python bench/rollout.py` — one `xypipe run` (embedded NATS, demo publisher 40 "
        f"symbols at 400 ticks/s, an aggregator on ownership leases, 2 gateway workers), "
        f"{r['clients']} `xypipe.client` connections in one separate process, each subscribed "
        f"to the 5 groups. SIGHUP replaced {', '.join(r['replaced']) or 'nothing'} one at a "
        f"time (gate {r['gate_s']} s each): outcome **{r['rollout_outcome']}** in "
        f"**{r['rollout_s']} s**. Clients with an epoch change: "
        f"**{r['clients_with_epoch_change']}**.",
        "",
        "| | " + " | ".join(p for p in PHASES if p in w) + " |",
        "|---|" + "---:|" * sum(1 for p in PHASES if p in w),
    ]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(str(w[p][key]) for p in PHASES if p in w)
                     + " |")
    lines += [
        "",
        "Delivery latency: the publisher's `ts_emit_us` to the SDK applying the delta, every "
        "delta of every client. Worst gap: the longest a client went between two applied deltas "
        "(a window's gap is counted in the window where it ends). Holes or repeats: deltas the "
        "SDK skipped as gap / duplicate / stale / future (must be 0). Resync: a snapshot that "
        "replaced a book the client already had (a resume the gateway's history did not "
        "cover). `after` is a short window past the rollout's end, so a late hole still "
        "counts.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. **Shared machine**: other jobs ran at the same time and "
        "the bench ran under `nice -n 10`, so absolute latencies are noisy; steady and rollout "
        "come from the same run, so the comparison between them is what this row is for.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--steady", type=float, default=10.0, help="steady window (s)")
    p.add_argument("--after", type=float, default=3.0, help="window after the rollout (s)")
    p.add_argument("--gate", type=float, default=2.0, help="[rollout] gate_s of the tree")
    p.add_argument("--quick", action="store_true",
                   help="5 clients, 2 s steady, 1 s after, 0.5 s gates (the smoke test)")
    p.add_argument("--results", type=Path, default=None,
                   help="where the JSON and Markdown go (default bench/results; with --quick "
                   "bench/results/quick, so a smoke run never replaces the reference results)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        trio.run(_clients, args.port, args.token, args.clients)
        return
    if args.quick:
        args.clients, args.steady, args.after, args.gate = 5, 2.0, 1.0, 0.5
    result = trio.run(bench, args.clients, args.steady, args.after, args.gate)
    md = markdown(result)
    if args.results is None:
        args.results = RESULTS / "quick" if args.quick else RESULTS
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "rollout.json").write_text(json.dumps(result, indent=2))
    (args.results / "rollout.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
