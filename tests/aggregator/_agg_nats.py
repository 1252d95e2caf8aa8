"""Running the aggregator and the publisher against a real nats-server, and a subscriber that
rebuilds every group from snapshots + deltas (tests and benchmarks share this)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from xypipe import Runner, parse_config
from xypipe._md.client import MarketView
from xypipe._publisher import FaultCounts, GroundTruth
from xypipe._stages.publisher import Publisher
from xypipe.contracts import Delta, Snapshot


def aggregator_config(url: str, **over: Any) -> Any:
    stages = [
        {"use": "ingest", **over.get("ingest", {})},
        {"use": "dedupe", "hold_ms": 1000, "max_held": 256, **over.get("dedupe", {})},
        {"use": "shard", "shards": 2, **over.get("shard", {})},
        {"use": "conflate", **over.get("conflate", {})},
        {"use": "snapshot", "interval_ms": 300, **over.get("snapshot", {})},
        {"use": "publish", **over.get("publish", {})},
    ]
    return parse_config({"nats": {"url": url}, "http": {"enabled": False},
                         "pipelines": {"aggregator": {"stages": stages}}})


def truth_of(runner: Runner) -> GroundTruth:
    """What the publisher of a ``publisher_config`` run really sent."""
    return runner.stage("publisher", "publisher", Publisher).truth


def faults_of(runner: Runner) -> FaultCounts:
    """The faults that publisher injected."""
    return runner.stage("publisher", "publisher", Publisher).faults


def publisher_config(url: str, **options: Any) -> Any:
    return parse_config({"nats": {"url": url}, "http": {"enabled": False},
                         "pipelines": {"publisher": {"stages": [{"use": "publisher",
                                                                  **options}]}}})


async def start_aggregator(nursery: trio.Nursery, url: str, **over: Any) -> tuple[Runner,
                                                                                 trio.CancelScope]:
    """Start it in its own cancel scope (cancel = kill it mid-stream); returns once ingest is
    consuming."""
    runner = Runner(aggregator_config(url, **over))
    scope = trio.CancelScope()

    async def _run(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            try:
                await runner.run(task_status=task_status)
            except BaseException as exc:
                if not scope.cancel_called or isinstance(exc, KeyboardInterrupt):
                    raise
                # Killed on purpose: whatever its teardown raised (in-flight NATS calls end
                # with NatsConnectionError) is part of the crash being simulated, not a result.
                runner.kill_error = exc  # type: ignore[attr-defined]

    await nursery.start(_run)
    await runner.pipelines[0].stages[0].ctx.wait_ready()
    return runner, scope


class Subscriber:
    """Subscribes to ``xy.md.>`` and rebuilds every group; ``condition`` is checked after each
    batch and ``settled`` set when it holds."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.view = MarketView()
        self.deltas = 0
        self.snapshots = 0
        self.levels: set[int] = set()
        self.windows: set[int] = set()
        self.condition: Callable[[], bool] = lambda: False
        self.settled = trio.Event()
        self.on_batch: Callable[[list[Any], float], None] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with self.nc.subscribe("xy.md.>", max_batch=1024) as sub:
            task_status.started()
            async for batch in sub:
                for m in batch:
                    if m.subject.startswith("xy.md.snapshot."):
                        self.snapshots += 1
                        self.view.apply_snapshot(Snapshot.FromString(m.data))
                    elif m.subject.startswith("xy.md.tick."):
                        d = Delta.FromString(m.data)
                        self.deltas += 1
                        self.levels.add(d.level)
                        self.windows.add(d.window_ms)
                        self.view.apply_delta(d)
                self.check()

    def check(self) -> None:
        if not self.settled.is_set() and self.condition():
            self.settled.set()

    async def wait_until(self, condition: Callable[[], bool], limit: float = 20.0) -> None:
        """Until ``condition`` holds after a batch (or already does); ``limit`` is a hang
        guard."""
        self.settled = trio.Event()
        self.condition = condition
        with trio.fail_after(limit):
            self.check()
            await self.settled.wait()


def converged(view: MarketView, truth: GroundTruth) -> bool:
    state = view.state()
    for t in truth.last.values():
        s = state.get((t.venue, t.symbol))
        if s is None or s.seq != t.seq:
            return False
    return True


def _short(v: object) -> str:
    """A value of a book for a one-line diff (levels as ``price x size``)."""
    if isinstance(v, list):
        return "[" + ", ".join(f"{lv.price}x{lv.size}" for lv in v) + "]"
    return repr(v)


def mismatches(view: MarketView, truth: GroundTruth) -> list[str]:
    """Every difference between the rebuilt books and what the publisher really sent."""
    state = view.state()
    out = []
    for key, t in truth.last.items():
        s = state.get((t.venue, t.symbol))
        if s is None:
            out.append(f"{key}: missing")
            continue
        got = (s.seq, s.last, s.last_size, s.vol, s.oi, s.flags, list(s.bids), list(s.asks),
               s.total_trades)
        want = (t.seq, t.last, t.last_size, t.vol, t.oi, t.flags, list(t.bids), list(t.asks),
                truth.trades.get(key, 0))
        if got != want:
            diff = [f"{name}: got {_short(g)}, want {_short(w)}" for name, g, w in zip(
                ("seq", "last", "last_size", "vol", "oi", "flags", "bids", "asks", "trades"),
                got, want, strict=True) if g != w]
            out.append(f"{key}: " + "; ".join(diff))
    return out
