"""Shared plumbing of the aggregator benchmarks: a nats-server, the aggregator in its own
process (its own core, as deployed), the publisher replaying a tape in another, a subscriber
that rebuilds the books, and reading the aggregator's /metrics."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
RESULTS = HERE / "results"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tape(symbols: int, ticks: int, seed: int = 1) -> Path:
    """A deterministic tape (generated once, then reused)."""
    sys.path.insert(0, str(ROOT))
    from xypipe._publisher import MarketSim, write_tape

    path = DATA / f"market-{symbols}sym-{ticks}-s{seed}.tape"
    if not path.exists():
        sim = MarketSim(symbols, seed=seed)
        write_tape(path, (sim.next_tick(0) for _ in range(ticks)))
    return path


def aggregator_toml(url: str, http_port: int, *, start: str = "resume", shards: int = 4,
                    snapshot_ms: int = 2000, data: str = "") -> str:
    return f"""
[nats]
url = "{url}"

[http]
port = {http_port}

[pipelines.aggregator]
degrade = {{ enter = [0.5, 0.75, 0.9], leave = [0.25, 0.5, 0.7], dwell_ms = 2000, sample_ms = 50 }}

[[pipelines.aggregator.stages]]
use = "ingest"
start = "{start}"
budget = {{ max_items = 256, max_age_ms = 100 }}

[[pipelines.aggregator.stages]]
use = "dedupe"
budget = {{ max_items = 256, max_age_ms = 100 }}

[[pipelines.aggregator.stages]]
use = "shard"
shards = {shards}
budget = {{ max_items = 256, max_age_ms = 100 }}

[[pipelines.aggregator.stages]]
use = "conflate"
budget = {{ max_items = 64, max_age_ms = 100 }}

[[pipelines.aggregator.stages]]
use = "snapshot"
interval_ms = {snapshot_ms}
budget = {{ max_items = 64, max_age_ms = 100 }}

[[pipelines.aggregator.stages]]
use = "publish"
{data}"""


class Aggregator:
    """``xypipe run`` of an aggregator config in a child process."""

    def __init__(self, workdir: Path, url: str, **kw: Any) -> None:
        self.port = free_port()
        self.cfg = workdir / f"agg-{self.port}.toml"
        self.cfg.write_text(aggregator_toml(url, self.port, **kw))
        self.log = workdir / f"agg-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True) -> float:
        """Start the process; wait until it is ready (``ready``) or merely answers (``/livez``:
        a replay keeps it not ready until it has caught up, and that is what some benchmarks
        time)."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [PY, "-m", "xypipe", "run", str(self.cfg)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        path = "/healthz" if ready else "/livez"
        while True:
            try:
                doc = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}{path}", timeout=1).read())
                if doc.get("ready") or not ready:
                    return time.monotonic() - t0
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"aggregator exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                      timeout=2).read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(10)


def publish(url: str, tape_path: Path, rate: float, count: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "xypipe", "publish", "--url", url, "--replay", str(tape_path),
         "--rate", str(rate), "--count", str(count)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def histogram_quantile(metrics: dict[str, float], name: str, q: float,
                       before: dict[str, float] | None = None) -> float | None:
    """A quantile (seconds) from a Prometheus histogram's cumulative buckets."""
    buckets = []
    for key, value in metrics.items():
        if key.startswith(f"{name}_bucket{{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            base = (before or {}).get(key, 0.0)
            buckets.append((float("inf") if le == "+Inf" else float(le), value - base))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= target:
            if le == float("inf"):
                return prev_le
            frac = (target - prev_n) / (n - prev_n) if n > prev_n else 1.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_n = le, n
    return None


async def search_rate(tried: Callable[[float], Awaitable[bool]], start: float, max_rate: float,
                      precision: float) -> tuple[float, float]:
    """The highest rate that holds: double from ``start`` until a step fails, then bisect
    between the last rate that held and the first that did not until they are within
    ``precision``. Returns (highest held, lowest failed; 0 when none failed up to
    ``max_rate``). A start that already fails is halved down to ``start / 64``."""
    lo, hi = 0.0, 0.0
    rate = start
    while rate <= max_rate:
        if not await tried(rate):
            hi = rate
            break
        lo = rate
        rate *= 2
    if hi == 0.0:
        return lo, 0.0
    if lo == 0.0:
        # Below the start: keep halving (a very slow machine still gets a figure).
        rate = start / 2
        while rate >= start / 64:
            if await tried(rate):
                lo = rate
                break
            hi = rate
            rate /= 2
    while lo and hi / lo > 1 + precision:
        mid = round((lo + hi) / 2, -2)
        if mid in (lo, hi):
            break
        if await tried(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def save(name: str, doc: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")


def env_note() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def publish_sim(url: str, *, symbols: int, rate: float, duration: float,
                seed: int = 3) -> subprocess.Popen[bytes]:
    """``xypipe publish`` simulating the market (not a tape) for ``duration`` seconds."""
    return subprocess.Popen(
        [PY, "-m", "xypipe", "publish", "--url", url, "--symbols", str(symbols), "--rate",
         str(rate), "--duration", str(duration), "--seed", str(seed)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --------------------------------------------------------------------------- lean publisher
#
# The load generator must cost less than the aggregator it feeds, and report its own CPU. It
# speaks the NATS client protocol on a plain socket (no client library, no event loop): the tape
# is turned into ``PUB`` frames once, before the clock starts, and each pacing step writes the
# slice of that buffer that is due (one ``sendall`` per step). Core NATS publishes into the
# source stream exactly as ``xypipe publish`` does (contracts first, then the ticks), minus the
# publisher's own arrival stamp, which the aggregator never reads (it stamps its own).


def contract_frames(keys: Iterable[tuple[str, str]], groups: Sequence[str] = ()) -> bytes:
    """``PUB`` frames of the reference contracts of ``keys`` (venue, symbol): the publisher's
    five groups, or the symbols spread over ``groups`` (bench/scale.py: aggregators splitting
    the groups between them need more than five to get near-equal shares)."""
    sys.path.insert(0, str(ROOT))
    from xypipe._publisher import DEFAULT_GROUPS, contract_for
    from xypipe.contracts import Priority

    spread = (tuple((g, Priority.PRIORITY_NORMAL) for g in groups) if groups
              else DEFAULT_GROUPS)
    out = []
    for venue, symbol in keys:
        c = contract_for(venue, symbol, spread).SerializeToString()
        out.append(b"PUB xy.ref.contract.%s.%s %d\r\n%s\r\n" % (
            venue.encode(), symbol.encode(), len(c), c))
    return b"".join(out)


def _pub_frames(tape_path: Path, count: int,
                groups: Sequence[str] = ()) -> tuple[bytes, list[int], bytes]:
    """``(tick frames, end offset of each, contract frames)`` for the first ``count`` ticks."""
    sys.path.insert(0, str(ROOT))
    from xypipe._publisher import read_tape
    from xypipe.contracts import Tick

    frames: list[bytes] = []
    ends: list[int] = []
    pos = 0
    keys: dict[tuple[str, str], None] = {}
    for i, payload in enumerate(read_tape(tape_path)):
        if i >= count:
            break
        t = Tick.FromString(payload)
        keys[(t.venue, t.symbol)] = None
        f = b"PUB xy.src.tick.%s.%s %d\r\n%s\r\n" % (t.venue.encode(), t.symbol.encode(),
                                                     len(payload), payload)
        frames.append(f)
        pos += len(f)
        ends.append(pos)
    if len(ends) < count:
        raise SystemExit(f"tape {tape_path} holds {len(ends)} ticks, {count} asked for")
    return b"".join(frames), ends, contract_frames(keys, groups)


class _RawNats:
    """The least of a NATS client: CONNECT, PUB frames written as given, PING/PONG."""

    def __init__(self, url: str) -> None:
        hostport = url.split("://", 1)[-1].rsplit("@", 1)[-1]
        host, _, port = hostport.rpartition(":")
        self.sock = socket.create_connection((host or "127.0.0.1", int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self._line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,'
                          b'"name":"aggbench-publisher"}\r\n')
        self.roundtrip()

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats-server closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\r\n")
        if line.startswith(b"-ERR"):
            raise ConnectionError(line.decode())
        return line

    def roundtrip(self) -> None:
        """PING and wait for its PONG: the server has processed everything sent before."""
        self.sock.sendall(b"PING\r\n")
        while (line := self._line()) != b"PONG":
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")

    def answer_pings(self) -> None:
        try:
            chunk = self.sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        self._buf += chunk
        while b"\r\n" in self._buf:
            if self._line() == b"PING":
                self.sock.sendall(b"PONG\r\n")


def lean_publish(url: str, tape_path: Path, rate: float, count: int,
                 step_s: float = 0.005, groups: Sequence[str] = ()) -> dict[str, float]:
    """Publish the tape's first ``count`` ticks at ``rate``/s; returns what it sent, how long
    it took and the CPU it used while sending (the frames are built before the clock starts).
    ``groups``: the contracts spread the symbols over these groups (none: the publisher's)."""
    blob, ends, contracts = _pub_frames(tape_path, count, groups)
    view = memoryview(blob)
    nats = _RawNats(url)
    nats.sock.sendall(contracts)
    nats.roundtrip()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    sent = 0
    next_t = t0
    while sent < count:
        due = min(count, int((time.monotonic() - t0) * rate) + 1)
        if due > sent:
            start = ends[sent - 1] if sent else 0
            nats.sock.sendall(view[start:ends[due - 1]])
            sent = due
            nats.answer_pings()
        next_t += step_s
        pause = next_t - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    nats.roundtrip()
    seconds = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    nats.sock.close()
    return {"sent": sent, "seconds": seconds, "cpu_s": cpu, "rate": sent / seconds}


def publish_lean(url: str, tape_path: Path, rate: float, count: int,
                 groups: Sequence[str] = ()) -> subprocess.Popen[str]:
    """:func:`lean_publish` in its own process; its last stdout line is the JSON result."""
    return subprocess.Popen(
        [PY, str(Path(__file__).resolve()), "publish", url, str(tape_path), str(rate),
         str(count), ",".join(groups)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def publisher_result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"publisher failed ({proc.returncode}): {err[-2000:]}")
    return dict(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__" and sys.argv[1:2] == ["publish"]:
    _url, _tape, _rate, _count = sys.argv[2:6]
    _groups = [g for g in sys.argv[6].split(",") if g] if len(sys.argv) > 6 else []
    print(json.dumps(lean_publish(_url, Path(_tape), float(_rate), int(_count),
                                  groups=_groups)), flush=True)
