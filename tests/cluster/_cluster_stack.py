"""``configs/cluster.toml`` run as a user runs it (one ``xypipe run``), on free loopback ports,
with the chaos suite's market feed in place of the config's publisher (so the test knows what
was accepted) and its browser-like clients on the gateway's shared port."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
from _nats_fixtures import free_port_blocks, stream_info, wait_current
from chaos_clients import Subscriber
from chaos_feed import Feed, accepted
from chaos_stack import HealthWatch, XypipeRun, children_of
from google.protobuf.message import DecodeError

from xypipe._nats import NatsClient, connect
from xypipe._nats_keys import seed_file_of
from xypipe._nats_roles import inbox_prefix
from xypipe._retry import retrying
from xypipe.contracts import Delta, Snapshot

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_TOML = ROOT / "configs" / "cluster.toml"
#: Starting the tree, settling the books: generous bounds for a loaded 2-core CI machine.
GUARD_S = 60.0


@attrs.frozen
class Ports:
    nats: int  # node i: nats + i
    routes: int
    gateway: int
    gateway_metrics: int  # worker i: + i
    aggregator: int
    aggregator_metrics: int
    main: int
    ui: int
    admin: int

    @classmethod
    def free(cls) -> Ports:
        return cls(*free_port_blocks(3, 3, 1, 2, 1, 2, 1, 1, 1))


def cluster_toml(tmp: Path, ports: Ports, *, scale_out: bool) -> Path:
    """configs/cluster.toml on ``ports`` with its data in ``tmp``, the publisher left out (the
    test feeds the market). ``scale_out=False``: one aggregator and one gateway (a tree without
    ``workers`` and ``ownership``)."""
    text = CLUSTER_TOML.read_text()
    text = text[:text.index("# --- publisher")] + text[text.index("# --- gateway"):]
    swaps = {r"port = 4222\b": f"port = {ports.nats}",
             r"route_port = 6222\b": f"route_port = {ports.routes}",
             r"\b8080\b": str(ports.gateway),
             r"metrics_port = 8081\b": f"metrics_port = {ports.gateway_metrics}",
             r"port = 8090\b": f"port = {ports.aggregator}",
             r"metrics_port = 8094\b": f"metrics_port = {ports.aggregator_metrics}",
             r"port = 8091\b": f"port = {ports.main}",
             r"port = 5174\b": f"port = {ports.ui}",
             r"port = 8092\b": f"port = {ports.admin}",
             r'data_dir = "var/nats-cluster"': f'data_dir = "{tmp / "nats"}"',
             r'"configs/': f'"{ROOT}/configs/',
             r'root = "ui-static"': f'root = "{ROOT}/ui-static"'}
    for pattern, value in swaps.items():
        text, count = re.subn(pattern, value, text)
        assert count, f"{pattern} not found in {CLUSTER_TOML}"
    if not scale_out:
        text = re.sub(r"(?m)^(workers|metrics_port|ownership) = .*\n", "", text)
    path = tmp / "cluster.toml"
    path.write_text(text)
    return path


def scrape(port: int, name: str) -> float | None:
    """Sum of a metric's samples on ``127.0.0.1:port/metrics`` (None: not served)."""
    import urllib.request  # a blocking GET of a local page, run in a thread below

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
            text = page.read().decode()
    except OSError:
        return None
    values = [float(m.group(2)) for m in
              re.finditer(rf"(?m)^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text)]
    return sum(values) if values else None


def connected_node(pid: int, nats_base: int, nodes: int = 3) -> int | None:
    """Which node (client port ``nats_base + i``) process ``pid`` holds an established TCP
    connection to: its socket inodes matched against the kernel's connection table."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fd_dir.iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        established = fields[3] == "01"
        if established and fields[9] in inodes and nats_base <= remote_port < nats_base + nodes:
            return remote_port - nats_base
    return None


async def metric(port: int, name: str) -> float | None:
    return await trio.to_thread.run_sync(scrape, port, name)


class FenceWatch:
    """Every delta and snapshot on ``xy.md.>``: per group, the fences in arrival order. Two
    publishers of one group at once would show as a fence that comes back after a higher one."""

    def __init__(self) -> None:
        self.highest: dict[str, int] = {}
        self.interleaved: list[str] = []
        self.fences: dict[str, list[int]] = {}
        self.undecodable = 0

    def see(self, subject: str, data: bytes) -> None:
        try:
            msg: Delta | Snapshot = (Snapshot.FromString(data) if ".snapshot." in subject
                                     else Delta.FromString(data))
        except DecodeError:
            self.undecodable += 1
            return
        group, fence = msg.group, msg.fence
        seen = self.fences.setdefault(group, [])
        if not seen or seen[-1] != fence:
            seen.append(fence)
        if fence < self.highest.get(group, 0):
            self.interleaved.append(f"{group}: fence {fence} after {self.highest[group]} "
                                    f"({subject})")
        self.highest[group] = max(self.highest.get(group, 0), fence)

    async def run(self, nc: NatsClient, *, task_status: trio.TaskStatus[None]) -> None:
        async with nc.subscribe("xy.md.>") as sub:
            task_status.started()
            async for batch in sub:
                for m in batch:
                    self.see(m.subject, m.data)


@attrs.define
class ClusterStack:
    tmp: Path
    ports: Ports
    tree: XypipeRun
    nc: NatsClient
    feed: Feed
    nursery: trio.Nursery
    fences: FenceWatch
    clients: list[Subscriber] = attrs.field(factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{self.ports.nats + i}" for i in range(3)]

    def add_client(self, name: str) -> Subscriber:
        client = Subscriber(name, self.ports.gateway)
        self.clients.append(client)
        self.nursery.start_soon(client.run)
        return client

    def nats_pid(self, node: int) -> int | None:
        """The live nats-server of node ``node`` (its store is ``.../node-<node>``)."""
        for pid, cmd in children_of(self.tree.pid):
            if "nats-server" in cmd.split(" ", 1)[0] and f"/node-{node}" in cmd:
                return pid
        return None

    def worker_pid(self, process: str, index: int) -> int | None:
        """The live child running copy ``index`` of ``process``."""
        for pid, cmd in children_of(self.tree.pid):
            if f"--process {process}" not in cmd:
                continue
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"XYPIPE_WORKER={index}".encode() in env:
                return pid
        return None

    def connected_node(self, pid: int) -> int | None:
        """The node process ``pid`` has its NATS connection to (from its sockets in /proc)."""
        return connected_node(pid, self.ports.nats)

    async def stream_leader(self, stream: str) -> int:
        """The node index of ``stream``'s leader (server names are ``xypipe-<i>``)."""
        await wait_current(self.nc, stream)
        cluster = (await stream_info(self.nc, stream))["cluster"]
        assert isinstance(cluster, dict)
        return int(str(cluster["leader"]).rsplit("-", 1)[1])

    def problems(self) -> dict[str, dict[str, int]]:
        return {c.name: p for c in self.clients if any((p := c.problems()).values())}

    def diagnostics(self) -> str:
        return "\n".join([*(f"{c.name}: {c.summary()}" for c in self.clients),
                          "tree log:", self.tree.log_tail(40)])

    async def all_fresh(self) -> float:
        """Mark now; wait until every client applied a delta emitted after it, of every
        group; the seconds that took (the slowest group of the slowest client)."""
        t0 = time.time()
        for c in self.clients:
            c.mark(t0)
        with trio.fail_after(GUARD_S):
            done = [await c.wait_fresh() for c in self.clients]
        return max(max(fresh.values()) for fresh in done) - t0

    async def books_match_accepted(self) -> list[str]:
        """Stop the feed; every client's books must reach what ``XY_SRC`` accepted."""
        self.feed.stop()
        with trio.fail_after(GUARD_S):
            await self.feed.done.wait()
        # A node killed a moment ago may still be catching up (a stream info then times out).
        await wait_current(self.nc, "XY_SRC")
        # JetStream may still be electing (its API then answers "temporarily unavailable").
        with trio.fail_after(GUARD_S):
            truth = await retrying("read what XY_SRC accepted", lambda: accepted(self.nc))
        assert truth, "the source stream XY_SRC holds no ticks"

        def diff(c: Subscriber) -> list[str]:
            books = c.books()
            out = []
            for key, want in sorted(truth.items()):
                got = books.get(key)
                if got is None or (got.seq, got.vol, got.total_trades) != (
                        want.last_seq, want.vol, want.trades):
                    out.append(f"{key}: book {got and (got.seq, got.vol, got.total_trades)}, "
                               f"accepted {(want.last_seq, want.vol, want.trades)}")
            return out

        with trio.move_on_after(GUARD_S):
            while any(diff(c) for c in self.clients):  # noqa: ASYNC110 (books settle: poll)
                await trio.sleep(0.2)
        return [f"{c.name}: {d[:5]}" for c in self.clients if (d := diff(c))]


@asynccontextmanager
async def running_cluster(tmp: Path, *, scale_out: bool, clients: int = 2,
                          ) -> AsyncIterator[ClusterStack]:
    """``xypipe run`` of the cluster config; yields once every client receives live deltas of
    every group."""
    ports = Ports.free()
    tree = XypipeRun(cluster_toml(tmp, ports, scale_out=scale_out), tmp / "xypipe-run.log")
    tree.start()
    try:
        async with trio.open_nursery() as nursery:
            aggregator = HealthWatch("aggregator", ports.aggregator)
            gateway = HealthWatch("gateway", ports.gateway)
            nursery.start_soon(aggregator.run)
            nursery.start_soon(gateway.run)
            await aggregator.wait_ready(GUARD_S, "after start")
            urls = [f"nats://127.0.0.1:{ports.nats + i}" for i in range(3)]
            # The embedded bus admits its role users only: the harness is an operator.
            async with connect(urls, name="cluster-feed", reconnect_wait=0.05,
                               nkeys_seed=str(seed_file_of(tmp / "nats", "superuser")),
                               inbox_prefix=inbox_prefix("superuser"), replicas=3) as nc:
                feed = Feed(nc, symbols=40, rate=200.0)
                fences = FenceWatch()
                stack = ClusterStack(tmp, ports, tree, nc, feed, nursery, fences)
                await nursery.start(feed.watch_connection)
                await nursery.start(feed.run)
                await nursery.start(fences.run, nc)
                await gateway.wait_ready(GUARD_S, "after start")
                for i in range(clients):
                    stack.add_client(f"client-{i}")
                with trio.fail_after(GUARD_S):
                    for c in stack.clients:
                        await c.wait_synced()
                await stack.all_fresh()
                try:
                    yield stack
                finally:
                    feed.stop()
                    nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await tree.stop()
