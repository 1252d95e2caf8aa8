"""Faults, and what must hold after each: the machinery shared by the chaos suite
(``tests/chaos/test_chaos.py``: one injection of each kind) and ``bench/chaos.py`` (many).

A :class:`Stack` is everything running (NATS, ``xypipe run``, the feed, the clients, the health
watches). :data:`FAULTS` maps a fault kind to a coroutine that injects it and says when it was
*cleared* — the kill itself for a process the system must bring back on its own, the restart
for a nats-server that an orchestrator restarts, SIGCONT for a stopped process. After each
injection :func:`inject_and_check` measures and checks:

* **recovery**: cleared → every client has applied, in sequence, a delta of every group
  emitted after that moment (a silent freeze never ends, and fails the bound);
* **health**: every affected process's ``/healthz`` went not-ready (or unreachable) after the
  injection and came back ready;
* **continuity**: no client saw a gap, a repeat, an epoch change without a snapshot, or a
  checksum mismatch (a snapshot resync is allowed and counted).

:func:`check_conservation` runs once at the end: the feed stops, and every client's book must
show, per symbol, what the source stream accepted — newest sequence, session volume and the
number of trades.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from chaos_clients import GROUPS, Subscriber
from chaos_feed import Feed, accepted
from chaos_stack import (
    START_GUARD_S,
    HealthWatch,
    XypipeRun,
    embedded_nats_section,
    external_nats,
    external_nats_section,
    free_port,
    process_state,
    send,
    snapshot_interval_s,
    tree_toml,
)

from xypipe._embedded import EmbeddedNats
from xypipe._nats import NatsClient, connect
from xypipe._nats_keys import seed_file_of
from xypipe._nats_roles import inbox_prefix
from xypipe.contracts import Snapshot

SNAPSHOT_STREAM = "XY_MD_SNAPSHOT"

#: Hang guards. Generous: the bar (1 s p95) is the benchmark's business, not the suite's.
RECOVERY_GUARD_S = 30.0
HEALTH_GUARD_S = 30.0
SETTLE_GUARD_S = 30.0
#: How long a stopped process stays stopped: longer than the staleness thresholds health
#: is built on (ingest: source ahead and silent for 5 s; gateway: 3 missed snapshots of 2 s),
#: so /healthz has a freeze to report — a shorter one is invisible by design.
FREEZE_S = 8.0


@attrs.define
class Stack:
    tmp: Path
    nursery: trio.Nursery
    tree: XypipeRun
    nats: EmbeddedNats | None  # None: the tree's own embedded server
    nats_url: str
    feed_nc: NatsClient
    feed: Feed
    snapshot_ms: int
    freeze_s: float
    clients: list[Subscriber] = attrs.field(factory=list)
    health: dict[str, HealthWatch] = attrs.field(factory=dict)
    extra_runs: list[XypipeRun] = attrs.field(factory=list)
    #: Arrival time (monotonic) of the latest snapshot seen on the snapshot subjects.
    last_snapshot_at: float = 0.0

    def nats_pid(self) -> int | None:
        return self.nats.pid if self.nats is not None else self.tree.nats_pid()

    def add_client(self, name: str, port: int) -> Subscriber:
        c = Subscriber(name, port)
        self.clients.append(c)
        self.nursery.start_soon(c.run)
        return c

    def watch(self, name: str, port: int) -> HealthWatch:
        w = HealthWatch(name, port)
        self.health[name] = w
        self.nursery.start_soon(w.run)
        return w

    async def retire_extras(self) -> None:
        """Stop the extra gateways a previous injection started, and their clients."""
        for c in [c for c in self.clients if c.name.startswith("late-")]:
            c.close()
            self.clients.remove(c)
        for name in [n for n in self.health if n.startswith("gateway-")]:
            self.health.pop(name).close()
        while self.extra_runs:
            await self.extra_runs.pop().stop()

    def diagnostics(self) -> str:
        lines = [f"health {n}: {w.describe()}" for n, w in self.health.items()]
        lines += [f"client {c.name}: {c.summary()}" for c in self.clients]
        lines.append(f"xypipe run exit status: {self.tree.exited}")
        lines.append("xypipe run warnings and errors (tail):\n" + self.tree.log_tail(20))
        return "\n".join(lines)


@asynccontextmanager
async def running_stack(tmp: Path, *, nats: str = "external", clients: int = 3,
                        symbols: int = 40, rate: float = 200.0,
                        restart: str | None = None, freeze_s: float = FREEZE_S,
                        snapshot_ms: int | None = None) -> AsyncIterator[Stack]:
    """Start everything; yield once every client receives live deltas of every group."""
    ports = {"main": free_port(), "aggregator": free_port(), "gateway": free_port()}
    async with trio.open_nursery() as nursery:
        server: EmbeddedNats | None = None
        if nats == "external":
            server = await nursery.start(_hold_nats, tmp)
            url = server.url
            section = external_nats_section(url)
        else:
            port = free_port()
            url = f"nats://127.0.0.1:{port}"
            section = embedded_nats_section(port, tmp / "nats-embedded", restart)
        config = tmp / "chaos.toml"
        config.write_text(tree_toml(section, ports, restart=restart, snapshot_ms=snapshot_ms))
        snapshot_ms = int(snapshot_interval_s(config) * 1000)
        tree = XypipeRun(config, tmp / "xypipe-run.log")
        extra_runs: list[XypipeRun] = []
        tree.start()
        try:
            watches = {name: HealthWatch(name, port) for name, port in ports.items()
                       if name != "main"}  # the parent runs no pipeline of its own
            for w in watches.values():
                nursery.start_soon(w.run)
            # The market starts once the aggregator can take it; a gateway is ready only once
            # snapshots flow, which needs a market.
            await watches["aggregator"].wait_ready(START_GUARD_S, "after start")
            # The embedded bus admits its role users only: the harness is an operator.
            auth = {} if nats == "external" else {
                "nkeys_seed": str(seed_file_of(tmp / "nats-embedded", "superuser")),
                "inbox_prefix": inbox_prefix("superuser")}
            async with connect(url, name="chaos-feed", **auth) as nc, \
                    trio.open_nursery() as inner:
                feed = Feed(nc, symbols=symbols, rate=rate)
                stack = Stack(tmp, inner, tree, server, url, nc, feed, snapshot_ms, freeze_s,
                              health=watches, extra_runs=extra_runs)
                await inner.start(feed.watch_connection)
                await inner.start(feed.run)
                await inner.start(_follow_snapshots, stack)
                await watches["gateway"].wait_ready(START_GUARD_S, "after start")
                for i in range(clients):
                    stack.add_client(f"client-{i}", ports["gateway"])
                with trio.fail_after(START_GUARD_S):
                    for c in stack.clients:
                        await c.wait_synced()
                # Faults start only once every client receives live deltas of every group.
                for c in stack.clients:
                    c.mark(time.time())
                with trio.move_on_after(START_GUARD_S):
                    for c in stack.clients:
                        await c.wait_fresh()
                stale = {c.name: c.stale_groups() for c in stack.clients if c.stale_groups()}
                if stale:
                    raise AssertionError(f"no deltas flowing before any fault: {stale}\n"
                                         + stack.diagnostics())
                try:
                    yield stack
                finally:
                    feed.stop()
                    inner.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if server is not None and server.pid is not None \
                        and process_state(server.pid) == "T":
                    send(server.pid, signal.SIGCONT)
                for run in (*extra_runs, tree):
                    await run.stop()
            nursery.cancel_scope.cancel()


async def _hold_nats(tmp: Path, *, task_status: trio.TaskStatus[EmbeddedNats]) -> None:
    async with external_nats(tmp) as server:
        task_status.started(server)
        await trio.sleep_forever()


async def _follow_snapshots(stack: Stack, *, task_status: trio.TaskStatus[None]) -> None:
    async with stack.feed_nc.subscribe("xy.md.snapshot.>") as sub:
        task_status.started()
        async for _batch in sub:
            stack.last_snapshot_at = time.monotonic()


# --------------------------------------------------------------------------- faults


@attrs.frozen
class Injected:
    t_inject: float  # monotonic
    t_clear: float  # monotonic: from here the system is on its own
    t_clear_wall: float  # the same instant, time.time()
    affected: tuple[str, ...]  # processes whose health must dip and come back
    note: str = ""
    #: A check of this fault's own, run once the clients have recovered: failures.
    verify: Callable[[], Awaitable[list[str]]] | None = None


def _now() -> tuple[float, float]:
    return time.monotonic(), time.time()


async def kill_child(stack: Stack, process: str) -> Injected:
    pid = stack.tree.child_pid(process)
    t, wall = _now()
    send(pid, signal.SIGKILL)
    return Injected(t, t, wall, (process,), f"SIGKILL {process} pid {pid}")


async def kill_nats_and_restart(stack: Stack) -> Injected:
    assert stack.nats is not None, "needs the external nats-server"
    pid = stack.nats.pid
    t0 = time.monotonic()
    send(pid, signal.SIGKILL)
    await stack.nats.stop()  # reaps it
    await stack.nats.start()  # same port, same data dir
    t, wall = _now()
    return Injected(t0, t, wall, ("aggregator", "gateway"),
                    f"SIGKILL nats-server pid {pid}, restarted after {t - t0:.2f} s")


async def kill_embedded_nats(stack: Stack) -> Injected:
    pid = stack.tree.nats_pid()
    t, wall = _now()
    send(pid, signal.SIGKILL)
    return Injected(t, t, wall, ("aggregator", "gateway"),
                    f"SIGKILL of the embedded nats-server pid {pid} (xypipe run restarts it)")


async def lame_duck_nats(stack: Stack) -> Injected:
    assert stack.nats is not None, "needs the external nats-server"
    server = stack.nats
    pid = server.pid
    t0 = time.monotonic()
    send(pid, signal.SIGUSR2)  # what `nats-server --signal ldm=PID` sends
    with trio.fail_after(45):  # nats-server's minimum lame-duck duration is 30 s
        while server.running:  # noqa: ASYNC110 (the server exits on its own: poll, bounded)
            await trio.sleep(0.02)
    t_gone = time.monotonic()
    await server.start()
    t, wall = _now()
    return Injected(t0, t, wall, ("aggregator", "gateway"),
                    f"lame duck: server gone after {t_gone - t0:.2f} s, restarted after "
                    f"{t - t0:.2f} s")


async def freeze(pid: int | None, hold_s: float) -> tuple[float, float, float]:
    t0 = time.monotonic()
    send(pid, signal.SIGSTOP)
    try:
        await trio.sleep(hold_s)  # the fault's duration, not a wait for something
    finally:
        send(pid, signal.SIGCONT)
    t, wall = _now()
    return t0, t, wall


async def stop_gateway(stack: Stack) -> Injected:
    t0, t, wall = await freeze(stack.tree.child_pid("gateway"), stack.freeze_s)
    return Injected(t0, t, wall, ("gateway",), f"SIGSTOP gateway for {stack.freeze_s} s")


async def stop_nats(stack: Stack) -> Injected:
    t0, t, wall = await freeze(stack.nats_pid(), stack.freeze_s)
    return Injected(t0, t, wall, ("aggregator", "gateway"),
                    f"SIGSTOP nats for {stack.freeze_s} s")


async def stored_snapshots(stack: Stack) -> dict[str, Snapshot]:
    """The newest snapshot of every client group in the snapshot store (direct get)."""
    js = stack.feed_nc.jetstream()
    out = {}
    for group in GROUPS:
        msg = await js.direct_get_last(SNAPSHOT_STREAM, f"xy.md.snapshot.{group}")
        if msg is not None:
            out[group] = Snapshot.FromString(msg.data)
    return out


async def nats_down_over_snapshot_write(stack: Stack) -> Injected:
    """Freeze NATS from 0.5 s before the aggregator's next snapshot is due until well after:
    the snapshot (and its JetStream write) happens while the store cannot take it. Afterwards
    the store must move on again (the restore point of a restart)."""
    period = stack.snapshot_ms / 1000
    await next_snapshot_round(stack)
    before = await stored_snapshots(stack)
    # Timing the injection against the snapshot clock (not waiting for anything).
    await trio.sleep_until(trio.current_time() + period - 0.5)
    t0, t, wall = await freeze(stack.nats_pid(), stack.freeze_s)

    async def store_moves_on() -> list[str]:
        behind: dict[str, str] = {}
        with trio.move_on_after(period * 3):
            while True:
                now = await stored_snapshots(stack)
                behind = {g: f"version {s.version} epoch {s.epoch}" for g, s in before.items()
                          if g not in now or (now[g].epoch, now[g].version)
                          <= (s.epoch, s.version)}
                if not behind:
                    return []
                await trio.sleep(0.1)
        return [f"the snapshot store did not move on within {period * 3:.0f} s after the "
                f"outage; still the snapshot from before it for {behind}"]

    return Injected(t0, t, wall, ("aggregator", "gateway"),
                    f"SIGSTOP nats for {stack.freeze_s} s across a snapshot write",
                    verify=store_moves_on)


async def next_snapshot_round(stack: Stack) -> float:
    """Until the aggregator's next round of snapshots is seen (bounded); its time."""
    with trio.fail_after(stack.snapshot_ms / 1000 * 3):
        seen = stack.last_snapshot_at
        while stack.last_snapshot_at == seen:  # noqa: ASYNC110 (a phase reference, bounded)
            await trio.sleep(0.01)
    return stack.last_snapshot_at


async def nats_down_during_direct_get(stack: Stack) -> Injected:
    """A new gateway instance (scale-out) has no snapshot cached; a client subscribes to it
    while NATS is frozen, so every snapshot direct get meets an unavailable JetStream.

    The gateway is started right after a round of snapshots, and NATS frozen as soon as it is
    ready; if another round arrived meanwhile (it would hold them in its cache and never need
    a direct get), it is stopped and started again — on a loaded machine a Python process can
    take longer to start than the snapshot interval, so a few more tries than an idle one needs."""
    for _attempt in range(10):
        await stack.retire_extras()
        await next_snapshot_round(stack)
        port = free_port()
        config = stack.tmp / f"gateway-{port}.toml"
        # A gateway-only deployment of the demo (gateways scale out on their own).
        config.write_text(tree_toml(external_nats_section(stack.nats_url),
                                    {"main": free_port(), "gateway": port}))
        run = XypipeRun(config, stack.tmp / f"gateway-{port}.log")
        stack.extra_runs.append(run)
        round_at = stack.last_snapshot_at
        run.start()
        name = f"gateway-{port}"
        watch = stack.watch(name, port)
        await watch.wait_serving(START_GUARD_S, "(second gateway starting)")
        pid = stack.nats_pid()
        t0 = time.monotonic()
        send(pid, signal.SIGSTOP)
        if stack.last_snapshot_at == round_at:
            break
        send(pid, signal.SIGCONT)  # a round reached the new gateway first: start over
    else:
        raise AssertionError("could not start a gateway between two rounds of snapshots")
    try:
        stack.add_client(f"late-client-{port}", port)
        await trio.sleep(stack.freeze_s)  # the fault's duration
    finally:
        send(pid, signal.SIGCONT)
    t, wall = _now()
    return Injected(t0, t, wall, (name,),
                    f"second gateway :{port}; client subscribed while NATS was frozen "
                    f"{stack.freeze_s} s")


Fault = Callable[[Stack], Awaitable[Injected]]

FAULTS: dict[str, Fault] = {
    "kill-aggregator": lambda s: kill_child(s, "aggregator"),
    "kill-gateway": lambda s: kill_child(s, "gateway"),
    "kill-nats": kill_nats_and_restart,
    "kill-embedded-nats": kill_embedded_nats,
    "lame-duck-nats": lame_duck_nats,
    "stop-gateway": stop_gateway,
    "stop-nats": stop_nats,
    "nats-down-snapshot-write": nats_down_over_snapshot_write,
    "nats-down-direct-get": nats_down_during_direct_get,
}

#: Faults that need the tree's own embedded nats-server rather than an external one.
EMBEDDED_ONLY = frozenset({"kill-embedded-nats"})

#: Faults timed between two rounds of snapshots that must fit a process start in between: the
#: suite runs them with a longer interval (on a busy 2-core machine a gateway can take longer
#: to start than the demo's 2 s, ten times in a row).
SNAPSHOT_MS = {"nats-down-direct-get": 8000}


# --------------------------------------------------------------------------- checks


@attrs.frozen
class Outcome:
    kind: str
    note: str
    #: Cleared → every client has fresh deltas of every group (None: never, within the guard).
    recovery_s: float | None
    #: Injection → the same.
    outage_s: float | None
    #: Per affected process: (went not-ready after s, ready again after s), from injection.
    health: dict[str, tuple[float, float] | None]
    clients: dict[str, dict[str, Any]]
    #: What the clients saw during this injection, summed over them (see COUNTS).
    counts: dict[str, int]
    #: Cleared → the feed's own NATS connection was back (None: it never dropped).
    feed_reconnect_s: float | None
    failures: tuple[str, ...]


#: Client counters an injection is accounted by (problems first, then the allowed resyncs).
COUNTS = ("gaps", "repeats", "epoch_changes", "checksum_mismatches", "resyncs", "rewinds",
          "snapshot_unavailable")


async def inject_and_check(stack: Stack, kind: str) -> Outcome:
    before = {c.name: c.summary() for c in stack.clients}
    inj = await FAULTS[kind](stack)
    failures: list[str] = []
    for c in stack.clients:
        c.mark(inj.t_clear_wall)

    recovery: float | None = None
    with trio.move_on_after(RECOVERY_GUARD_S):
        fresh = [await c.wait_fresh() for c in stack.clients]
        recovery = max(t for f in fresh for t in f.values()) - inj.t_clear_wall
    if recovery is None:
        stale = {c.name: c.stale_groups() for c in stack.clients if c.stale_groups()}
        failures.append(f"{kind}: no fresh deltas within {RECOVERY_GUARD_S} s after the fault "
                        f"was cleared; still stale: {stale}")
        liars = [n for n, w in stack.health.items() if w.state == "ready"]
        if liars:
            failures.append(f"{kind}: /healthz of {liars} says ready although no fresh delta "
                            f"has reached any client for {RECOVERY_GUARD_S} s")

    if recovery is not None and inj.verify is not None:
        failures += [f"{kind}: {f}" for f in await inj.verify()]

    health: dict[str, tuple[float, float] | None] = {}
    deadline = trio.current_time() + HEALTH_GUARD_S  # one bound for all: the dips overlap
    for name in inj.affected:
        watch = stack.health[name]
        dip = None
        with trio.move_on_at(deadline):
            while (dip := watch.dip_after(inj.t_inject)) is None:
                await watch.changed()
        if dip is None:
            went = any(p.t >= inj.t_inject and p.state != "ready" for p in watch.timeline)
            failures.append(
                f"{kind}: {name} /healthz " + (
                    f"went not-ready but was not ready again within {HEALTH_GUARD_S} s"
                    if went else "stayed ready through the fault")
                + f"; timeline: {watch.describe(since=inj.t_inject)}")
            health[name] = None
        else:
            health[name] = (dip[0].t - inj.t_inject, dip[1].t - inj.t_inject)

    counts = dict.fromkeys(COUNTS, 0)
    for c in stack.clients:
        now = c.summary()
        was = before.get(c.name, dict.fromkeys(COUNTS, 0))
        for k in COUNTS:
            counts[k] += now[k] - was[k]
        new = {k: v - was[k] for k, v in c.problems().items() if v > was[k]}
        if new:
            failures.append(f"{kind}: {c.name} saw {new}: {c.details()[-5:]}")

    outage = recovery + (inj.t_clear - inj.t_inject) if recovery is not None else None
    back = stack.feed.reconnected_after(inj.t_inject)
    feed_back = back - (inj.t_clear - inj.t_inject) if back is not None else None
    return Outcome(kind, inj.note, recovery, outage, health,
                   {c.name: c.summary() for c in stack.clients}, counts, feed_back,
                   tuple(failures))


async def check_conservation(stack: Stack) -> tuple[list[str], dict[str, int]]:
    """Stop the feed; every client's books must reach what ``XY_SRC`` accepted: per symbol
    the newest sequence, the session volume the newest accepted tick carried, and the number
    of accepted trades. Returns the failures and the traded volumes (see :func:`volumes`)."""
    stack.feed.stop()
    with trio.fail_after(SETTLE_GUARD_S):
        await stack.feed.done.wait()
    truth = await accepted(stack.feed_nc)
    failures: list[str] = []
    if not truth:
        return ["the source stream XY_SRC holds no ticks"], {}

    def diff(c: Subscriber) -> list[str]:
        books = c.books()
        out = []
        for key, want in sorted(truth.items()):
            got = books.get(key)
            if got is None:
                out.append(f"{key}: missing (accepted seq {want.last_seq})")
            elif (got.seq, got.vol, got.total_trades) != (want.last_seq, want.vol,
                                                          want.trades):
                out.append(f"{key}: book seq/vol/trades {got.seq}/{got.vol}/"
                           f"{got.total_trades}, accepted {want.last_seq}/{want.vol}/"
                           f"{want.trades}")
        return out

    with trio.move_on_after(SETTLE_GUARD_S):
        while any(diff(c) for c in stack.clients):  # noqa: ASYNC110 (books settle: poll)
            await trio.sleep(0.2)
    for c in stack.clients:
        wrong = diff(c)
        if wrong:
            failures.append(f"{c.name}: {len(wrong)} of {len(truth)} symbols differ from what "
                            f"XY_SRC accepted {SETTLE_GUARD_S} s after the feed stopped: "
                            f"{wrong[:5]}")
    return failures, volumes(stack, truth)


def volumes(stack: Stack, truth: dict[str, Any]) -> dict[str, int]:
    """Traded volume the feed sent, the stream accepted, and the first client's books show
    (a difference between the first two was lost before acceptance, e.g. in an outage)."""
    books = stack.clients[0].books() if stack.clients else {}
    return {
        "sent": sum(stack.feed.sent.traded_volume.values()),
        "accepted": sum(t.traded_volume for t in truth.values()),
        "in_books": sum(b.vol for k, b in books.items() if k in truth),
    }
