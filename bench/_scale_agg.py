"""bench/scale.py's first curve: the highest tick rate 1 and 2 aggregator processes sustain at L0.

One step = one offered rate against a fresh nats-server and a fresh ``xypipe run`` of an
aggregator config whose process runs ``workers = N`` copies (``ownership`` on the ingest stage:
the copies split the groups through JetStream KV leases), fed by bench/_aggbench.py's lean
publisher in its own process. The contracts spread the 5,000 symbols over ``GROUPS`` groups
that rendezvous hashing splits evenly between this host's two members (:func:`group_names`),
and are published, and every group leased by its worker, before the first tick, so no tick
falls between a group's discovery and its lease.

A step holds when every worker stayed at L0 for the whole step and, one second after the
publisher's last tick, the workers together had ingested >= 98 % of the ticks offered (each
tick is ingested by the one worker owning its group) and every worker had read >= 98 % of them
(its own ingested, the others' skipped undecoded): no consumer lags. The search
is bench/aggregator.py's: double from the start until a step fails, bisect to ``precision``.
With 2 workers it starts from the 1-worker figure, the cheapest point that must hold.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import _sides
import trio
from _aggbench import (
    PY,
    ROOT,
    _RawNats,
    contract_frames,
    free_port,
    histogram_quantile,
    publish_lean,
    publisher_result,
    tape,
)

from xypipe._embedded import embedded_nats

SYMBOLS = 5000
GROUPS = 16
DEFAULT_GROUP = "default"  # the shard stage's, always offered: it receives no tick here


def members(n: int) -> list[str]:
    """The ownership members the ``n`` workers of process ``aggregator`` on this host are."""
    from xypipe._worker import WorkerIdentity

    return [WorkerIdentity(process="aggregator", index=i, count=n).member for i in range(n)]


def group_names(split: int = 2) -> tuple[list[str], str]:
    """``GROUPS`` group names that rendezvous hashing gives in equal numbers to the ``split``
    members of this host, and how that was decided.

    The bench measures what a second process adds when the groups are split evenly. How evenly
    HRW splits a deployment's groups depends on their number and the member names (the first 17
    names ``g00``.. split 14 / 3 on one host name, 9 / 8 on another), which is not what this
    curve is about; the JSON keeps each worker's share of the ticks to show the balance."""
    try:
        from xypipe._ownership._hrw import owner_of
    except ImportError:
        return [f"g{i:02d}" for i in range(GROUPS)], "g00.. (no ownership in this checkout)"
    who = members(split)
    picked: dict[str, list[str]] = {m: [] for m in who}
    i = 0
    while any(len(v) < GROUPS // split for v in picked.values()):
        name = f"g{i:02d}"
        m = owner_of(name, who)
        if m is not None and len(picked[m]) < GROUPS // split:
            picked[m].append(name)
        i += 1
    names = sorted(n for v in picked.values() for n in v)
    return names, f"{GROUPS // split} per member of {', '.join(who)} by rendezvous hashing"
LEVEL = "degradation_level"
SCOPE = "pipeline:aggregator"


def agg_toml(url: str, sup_port: int, port: int, workers: int | None, metrics_port: int,
             ownership: bool) -> str:
    """bench/_aggbench.py's aggregator (the same stages and budgets) as a process of its own
    with ``workers`` copies, worker ``i`` serving its own /metrics on ``metrics_port + i``
    (``workers=None``: both keys left out, for a checkout without them)."""
    own = "ownership = { enabled = true }\n" if ownership else ""
    wk = (f"workers = {workers}\nmetrics_port = {metrics_port}\n" if workers is not None
          else "")
    stages = "\n".join(
        f"[[pipelines.aggregator.stages]]\nuse = \"{use}\"\n{extra}"
        f"budget = {{ max_items = {items}, max_age_ms = 100 }}\n"
        for use, extra, items in [
            ("ingest", f'start = "new"\n{own}', 256), ("dedupe", "", 256),
            ("shard", "shards = 4\n", 256), ("conflate", "", 64),
            ("snapshot", "interval_ms = 2000\n", 64)])
    return f"""
[log]
level = "warning"

[nats]
url = "{url}"

[http]
port = {sup_port}

[processes.aggregator]
http = {{ host = "127.0.0.1", port = {port} }}
restart = {{ policy = "never" }}
{wk}
[pipelines.aggregator]
process = "aggregator"
degrade = {{ enter = [0.5, 0.75, 0.9], leave = [0.25, 0.5, 0.7], dwell_ms = 2000, sample_ms = 50 }}

{stages}
[[pipelines.aggregator.stages]]
use = "publish"
"""


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def total(m: dict[str, float], name: str) -> float:
    """Sum of a metric over its label sets."""
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def consumed(m: dict[str, float]) -> float:
    """Source ticks a worker has read: those it ingested (its groups') and those it skipped
    undecoded (another worker's, ``agg_foreign_ticks_total{where="ingest"}``)."""
    return total(m, "src_ingest_total") + sum(
        v for k, v in m.items()
        if k.startswith("agg_foreign_ticks_total{") and 'where="ingest"' in k)


def owned_ingested(m: dict[str, float]) -> float:
    """Ticks of a worker's own groups it ingested: decoded ticks, less those shard dropped as
    another's (a symbol's first tick is decoded before its group is known to ingest)."""
    return total(m, "src_ingest_total") - sum(
        v for k, v in m.items()
        if k.startswith("agg_foreign_ticks_total{") and 'where="shard"' in k)


def level(m: dict[str, float]) -> float:
    return max((v for k, v in m.items() if k.startswith(LEVEL + "{") and SCOPE in k),
               default=0.0)


class AggTree:
    """``xypipe run`` of the aggregator config: the supervisor and its N workers, each
    worker's /metrics and pid."""

    def __init__(self, work: Path, url: str, workers: int, *, ownership: bool,
                 workers_key: bool) -> None:
        self.n = workers
        self.sup_port, self.port = free_port(), free_port()
        self.private = _sides.free_ports(workers) if workers_key else None
        self.cfg = work / f"scale-agg-{self.port}.toml"
        self.cfg.write_text(agg_toml(url, self.sup_port, self.port,
                                     workers if workers_key else None, self.private or 0,
                                     ownership))
        self.log = work / f"scale-agg-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: dict[int, int] = {}

    def metrics_port(self, index: int) -> int:
        """Where worker ``index`` serves its own /metrics and /healthz (the shared port lands
        on any worker); a checkout without workers: the process's port."""
        return self.port if self.private is None else self.private + index

    def metrics(self, index: int) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port(index)}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            return parse_metrics(r.read().decode())

    def all_metrics(self) -> list[dict[str, float]]:
        return [self.metrics(i) for i in range(self.n)]

    def _ready(self, index: int) -> bool:
        url = f"http://127.0.0.1:{self.metrics_port(index)}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(json.loads(r.read()).get("ready"))
        except (OSError, ValueError):
            return False

    def start(self, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen([PY, "-m", "xypipe", "run", str(self.cfg)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aggregator exited: {self.log.read_text()[-3000:]}")
            self.pids = _sides.workers(self.proc.pid, "aggregator")
            if len(self.pids) == self.n and all(self._ready(i) for i in range(self.n)):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.n} aggregator worker(s) not ready in {timeout:g} s "
                           f"(pids {self.pids}): {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _keys() -> list[tuple[str, str]]:
    from xypipe._publisher import MarketSim

    return [(c.venue, c.symbol) for c in MarketSim(SYMBOLS).contracts()]


def _tape_for(ticks: int) -> Path:
    return tape(SYMBOLS, max(1, -(-ticks // 1_000_000)) * 1_000_000)


SETTLE_S = 30.0


async def _owned_settle(tree: AggTree, groups: list[str], ownership: bool) -> list[float]:
    """Every group leased by the worker rendezvous hashing gives it (the shares settle as the
    workers see each other join): the number of groups each worker owns."""
    if not ownership:
        return []  # one worker, every group its own: no lease to count
    from xypipe._ownership._hrw import assign

    owners = assign([*groups, DEFAULT_GROUP], members(tree.n))
    want = [float(sum(1 for o in owners.values() if o == m)) for m in members(tree.n)]
    owned: list[float] = []
    with trio.move_on_after(SETTLE_S):
        while True:
            ms = await trio.to_thread.run_sync(tree.all_metrics)
            owned = [total(m, "ownership_groups_owned") for m in ms]
            if owned == want:
                return owned
            await trio.sleep(0.1)
    raise RuntimeError(f"the groups did not settle within {SETTLE_S:g} s: workers own "
                       f"{owned}, rendezvous hashing gives {want}; see {tree.log}")


async def one_step(work: Path, workers: int, rate: float, duration: float, *,
                   groups: list[str], ownership: bool, workers_key: bool) -> dict[str, Any]:
    """One offered rate: fresh nats-server, fresh aggregator tree, the lean publisher."""
    count = int(rate * duration)
    tape_path = _tape_for(count)
    async with embedded_nats(port=0, data_dir=work / f"nats-{time.monotonic_ns()}") as srv:
        tree = AggTree(work, srv.url, workers, ownership=ownership, workers_key=workers_key)
        try:
            await trio.to_thread.run_sync(tree.start)
            assert srv.pid is not None and tree.proc is not None
            # The contracts first, so every group exists and has its owner before any tick.
            raw = _RawNats(srv.url)
            raw.sock.sendall(contract_frames(_keys(), groups))
            raw.roundtrip()
            raw.sock.close()
            owned = await _owned_settle(tree, groups, ownership)
            sides = {f"aggregator.{i}": pid for i, pid in sorted(tree.pids.items())}
            sides["supervisor"] = tree.proc.pid
            sides["nats-server"] = srv.pid
            proc = publish_lean(srv.url, tape_path, rate, count, groups)
            sides["publisher"] = proc.pid
            m0 = await trio.to_thread.run_sync(tree.all_metrics)
            base = sum(owned_ingested(m) for m in m0)
            levels = [max(level(m) for m in m0)]
            series: list[tuple[float, float]] = []
            r0: _sides.Reading | None = None
            last = r0
            while proc.poll() is None:
                await trio.sleep(0.1)
                ms = await trio.to_thread.run_sync(tree.all_metrics)
                now = time.monotonic()
                done = sum(owned_ingested(m) for m in ms)
                if r0 is None and done > base:
                    r0 = _sides.read(sides, now)
                    m0 = ms
                if r0 is not None:
                    levels.append(max(level(m) for m in ms))
                    series.append((now, done))
                    last = _sides.read(sides, now)  # the publisher's CPU, before it exits
            pub = await trio.to_thread.run_sync(publisher_result, proc)
            deadline = time.monotonic() + 1.0
            m1 = m0
            while time.monotonic() < deadline:
                m1 = await trio.to_thread.run_sync(tree.all_metrics)
                levels.append(max(level(m) for m in m1))
                if min(consumed(m) for m in m1) >= count:  # fresh workers: counts from 0
                    break
                await trio.sleep(0.1)
            r1 = _sides.read(sides, time.monotonic())
        finally:
            await trio.to_thread.run_sync(tree.stop)
    ingested = sum(owned_ingested(m) for m in m1)
    start = sum(owned_ingested(m) for m in m0)
    moved = [(t, v) for t, v in series if v > start]
    t0 = r0.at if r0 is not None else 0.0
    if len(moved) >= 2 and moved[-1][0] > t0:
        ingest_rate = (moved[-1][1] - start) / (moved[-1][0] - t0)
    else:
        ingest_rate = ingested / max(pub["seconds"], 1e-9)
    win: dict[str, Any] = _sides.window(r0, r1) if r0 is not None else {"cpu": {}}
    if r0 is not None and last is not None:
        # The publisher has exited by the window's end: its share is of its own sending time.
        pub_win = _sides.window(r0, last)
        win["cpu"]["publisher"] = pub_win["cpu"].get("publisher",  # type: ignore[union-attr]
                                                     pub["cpu_s"] / max(pub["seconds"], 1e-9))
    share = ingested / count if count else 0.0
    workers_cpu = sum(c for n, c in win.get("cpu", {}).items() if n.startswith("aggregator."))
    # Every worker reads every tick (its own or skipped): the slowest one is the lag.
    read = [consumed(m) for m in m1]
    kept_pace = min(read) / count if count else 0.0
    q = "aggregator_latency_seconds"
    p99s = [histogram_quantile(b, q, 0.99, a) for a, b in zip(m0, m1, strict=True)]
    return {
        "workers": workers, "offered": rate, "ticks": count, "ingest_rate": ingest_rate,
        "ingested_share": share, "max_level": max(levels),
        "read_share": kept_pace,
        "held": bool(max(levels) == 0 and share >= 0.98 and kept_pace >= 0.98),
        "per_worker_ingested": [owned_ingested(m) for m in m1],
        "groups_owned": owned, "publisher_rate": pub["rate"],
        "window": win, "bottleneck": _sides.bottleneck(win, clients="publisher"),
        # All the workers' CPU per tick ingested: above one worker's when each worker also
        # pays for reading (and skipping) the ticks of the groups it does not own.
        "agg_us_per_tick": workers_cpu / max(ingest_rate, 1e-9) * 1e6,
        "proc_p99_ms": max(((p or 0.0) * 1000 for p in p99s), default=float("nan")),
    }


def line(r: dict[str, Any]) -> str:
    cpu = r["window"].get("cpu", {})
    sides = ", ".join(f"{n} {c:.0%}" for n, c in cpu.items())
    return (f"{r['workers']} worker(s), offered {r['offered']:>8,.0f}/s: ingest "
            f"{r['ingest_rate']:>8,.0f}/s ({r['ingested_share']:.1%}) L{r['max_level']:.0f} "
            f"{'held' if r['held'] else 'FAILED'}; owned {r['groups_owned']}; CPU of a core: "
            f"{sides}; machine {r['window'].get('machine_busy', 0):.0%} busy")
