"""Fixtures that give a test a real nats-server (JetStream on, random port) and a client, or a
real 3-node JetStream cluster on loopback (``nats_cluster``)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import pytest
import trio

from xypipe._config import EmbeddedClusterConfig, EmbeddedNatsConfig, ProcessRestartPolicy
from xypipe._embedded import EmbeddedBus, EmbeddedNats, embedded_nats, supervised_embedded_nats
from xypipe._errors import XyError
from xypipe._metrics import Metrics
from xypipe._nats import NatsClient, connect
from xypipe._retry import retrying


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server child with JetStream and its own data dir, stopped after the test."""
    async with embedded_nats(port=0, data_dir=tmp_path / "nats-data") as server:
        yield server


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture(params=["trio-asyncio", "thread", "anyio"])
def nats_bridge(request: pytest.FixtureRequest) -> str:
    """Every Trio/asyncio bridge; tests that take this run once per bridge."""
    return str(request.param)


@pytest.fixture
async def nats_client(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    """A client on the default bridge, connected to ``nats_server``."""
    async with connect(nats_server.url, name="xypipe-tests") as nc:
        yield nc


def free_port_blocks(*counts: int, host: str = "127.0.0.1") -> list[int]:
    """The first port of each of ``counts`` runs of consecutive ports, all free on ``host``
    right now and apart from each other (every port stays bound until all are found). A
    cluster's route ports must be known before its nodes start, so they cannot be read back
    from a log."""
    firsts: list[int] = []
    with ExitStack() as held:
        for count in counts:
            for _ in range(200):
                with socket.socket() as probe:
                    probe.bind((host, 0))
                    base = int(probe.getsockname()[1])
                if base + count > 65535:
                    continue
                with ExitStack() as run:
                    try:
                        for port in range(base, base + count):
                            sock = run.enter_context(socket.socket())
                            sock.bind((host, port))
                    except OSError:
                        continue
                    held.enter_context(run.pop_all())
                firsts.append(base)
                break
            else:
                raise RuntimeError(f"no {count} consecutive free ports on {host}")
    return firsts


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports free on ``host`` right now."""
    return free_port_blocks(count, host=host)[0]


def cluster_config(data_dir: Path, *, nodes: int = 3, auth: str = "none") -> EmbeddedNatsConfig:
    """``[nats.embedded]`` of a ``nodes``-node cluster on free loopback ports, each node
    restarted at once when it dies."""
    return EmbeddedNatsConfig(
        port=0, data_dir=str(data_dir), auth=auth,
        cluster=EmbeddedClusterConfig(nodes=nodes, name="xytest",
                                      route_port=free_port_block(nodes)),
        restart=ProcessRestartPolicy(policy="always", max_restarts=20, window_s=60,
                                     backoff_ms=50, max_backoff_ms=200))


class ClusterUnderTest:
    """A running embedded cluster and the registry its supervision counts restarts in."""

    def __init__(self, bus: EmbeddedBus, config: EmbeddedNatsConfig, metrics: Metrics) -> None:
        self.bus = bus
        self.config = config
        self.metrics = metrics

    @property
    def url(self) -> str:
        return self.bus.url

    def restarts(self, index: int) -> float:
        value = self.metrics.registry.get_sample_value(
            "process_restarts_total", {"process": f"nats-{index}"})
        return value or 0.0


async def stream_info(nc: NatsClient, name: str) -> dict[str, object]:
    """A stream's info as the server reports it (its replicas, and whether each is current)."""
    reply = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=2.0)
    info = json.loads(reply.data)
    assert isinstance(info, dict) and "error" not in info, info
    return info


async def replicas_current(nc: NatsClient, name: str, nodes: int = 3) -> bool:
    """Whether the stream has a leader and ``nodes - 1`` followers, all current."""
    try:
        info = await stream_info(nc, name)
    except (XyError, AssertionError):
        return False  # no leader yet (an election after a kill): asked again
    cluster = info.get("cluster")
    assert isinstance(cluster, dict)
    followers = cluster.get("replicas") or []
    return (bool(cluster.get("leader")) and len(followers) == nodes - 1
            and all(f.get("current") and not f.get("offline") for f in followers))


async def wait_current(nc: NatsClient, name: str, nodes: int = 3) -> None:
    """Until every replica of the stream is current (a node that was down has caught up)."""
    with trio.fail_after(30):
        # The server's view of its replicas: a state to poll, not an event.
        while not await replicas_current(nc, name, nodes):  # noqa: ASYNC110
            await trio.sleep(0.1)


async def placement_ready(urls: list[str], nodes: int) -> None:
    """Until JetStream places a stream on ``nodes`` servers: a cluster whose nodes all know
    their meta leader may not yet know every peer's JetStream (placement then fails,
    transiently)."""
    async with connect(urls, name="placement-probe", replicas=nodes) as nc:
        js = nc.jetstream(timeout=2.0)
        with trio.fail_after(30):
            await retrying("place a probe stream", lambda: js.ensure_stream(
                "XYTEST_PROBE", ["xytest.probe"], storage="memory"))
        await js.delete_stream("XYTEST_PROBE")


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[ClusterUnderTest]:
    """A 3-node JetStream cluster (routes, a store per node, R3 by default), every node
    supervised like ``xypipe run`` does it, ready to place R3 streams; stopped after the
    test."""
    cfg = cluster_config(tmp_path / "nats-cluster")
    metrics = Metrics()
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        bus = await nursery.start(partial(
            supervised_embedded_nats, cfg, metrics=metrics, stopping=stopping))
        await placement_ready(bus.urls, len(bus.nodes))
        try:
            yield ClusterUnderTest(bus, cfg, metrics)
        finally:
            stopping.set()
