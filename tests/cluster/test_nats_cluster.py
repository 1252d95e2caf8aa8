"""The embedded 3-node JetStream cluster (``[nats.embedded] cluster``), on real nats-servers.

Each node is killed with SIGKILL in turn while a client keeps publishing to an R3 stream and
writing an R3 KV bucket: every acknowledged message and value is still there afterwards, the
node is restarted by its own supervision loop, rejoins and catches up (all replicas current),
and a client that was connected to the killed node carries on from another one.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import nats.js.errors
import pytest
import trio
from _nats_fixtures import ClusterUnderTest, cluster_config, stream_info, wait_current

from xypipe._embedded import EmbeddedBus, supervised_embedded_nats
from xypipe._errors import NatsJsUnavailable, NatsRefused, XyError
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._nats import NatsClient, connect
from xypipe._nats._boundary import map_error
from xypipe._nats_keys import seed_file_of
from xypipe._retry import transient
from xypipe._stages._srcstream import SourceStream

pytestmark = pytest.mark.nats

STREAM = "CL_TEST"
BUCKET = "cl_test"
KEYS = 16


async def read_all(nc: NatsClient, count: int) -> dict[int, int]:
    """Message number -> stream sequence of every message of the stream (a consumer made
    while the cluster still elects a meta leader is asked for again)."""
    js = nc.jetstream(timeout=2.0)
    with trio.fail_after(60):
        while True:
            stored: dict[int, int] = {}
            try:
                async with js.pull(STREAM, "cl.test.>", deliver="all", batch=512) as sub:
                    while len(stored) < count:
                        for msg in await sub.fetch(512, timeout=1.0):
                            number = int(msg.data)
                            assert number not in stored, f"message {number} stored twice"
                            assert msg.seq is not None
                            stored[number] = msg.seq
                return stored
            except XyError:
                await trio.sleep(0.1)


class Writer:
    """Publishes numbered messages (each with a message id, retried until acknowledged, so a
    retry after a lost ack is deduplicated by the stream) and puts KV values, one at a time."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.acked: dict[int, int] = {}  # message number -> stream sequence
        self.kv_last: dict[str, bytes] = {}
        self.retries = 0
        self.stop = trio.Event()
        self.progress = trio.Event()

    async def run(self) -> None:
        js = self.nc.jetstream(timeout=1.0)
        kv = await js.kv(BUCKET)
        n = 0
        while not self.stop.is_set():
            n += 1
            seq = await self._until_acked(lambda n=n: js.publish(
                f"cl.test.{n % 4}", str(n).encode(), headers={"Nats-Msg-Id": f"m{n}"}))
            self.acked[n] = seq
            key, value = f"k{n % KEYS}", str(n).encode()
            await self._until_acked(lambda key=key, value=value: kv.put(key, value))
            self.kv_last[key] = value
            self.progress.set()
            self.progress = trio.Event()

    async def _until_acked(self, op):  # type: ignore[no-untyped-def]
        with trio.fail_after(30):
            while True:
                try:
                    return await op()
                except XyError:
                    # A leader election or a reconnect in progress: the same message again.
                    self.retries += 1
                    await trio.sleep(0.02)

    async def advance(self, count: int) -> None:
        """Wait until ``count`` more messages have been acknowledged."""
        target = len(self.acked) + count
        with trio.fail_after(30):
            while len(self.acked) < target:
                await self.progress.wait()


async def test_r3_stream_and_kv_survive_sigkill_of_each_node(nats_cluster: ClusterUnderTest):
    cluster = nats_cluster
    async with connect(cluster.bus.urls, name="writer", replicas=3, reconnect_wait=0.05) as nc:
        js = nc.jetstream()
        assert js.replicas == 3
        await js.ensure_stream(STREAM, ["cl.test.>"])
        await js.kv(BUCKET)
        info = await stream_info(nc, STREAM)
        assert info["config"]["num_replicas"] == 3  # type: ignore[index]
        kv_info = await stream_info(nc, f"KV_{BUCKET}")
        assert kv_info["config"]["num_replicas"] == 3  # type: ignore[index]
        writer = Writer(nc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.advance(50)
            for index, node in enumerate(cluster.bus.nodes):
                old_pid = node.pid
                assert old_pid is not None
                os.kill(old_pid, signal.SIGKILL)
                await writer.advance(50)  # publishing goes on with a node down or back
                with trio.fail_after(30):
                    # Another process's restart: a state to poll, not an event.
                    while not (node.running and node.pid != old_pid  # noqa: ASYNC110
                               and cluster.restarts(index) == 1):
                        await trio.sleep(0.05)
                await wait_current(nc, STREAM)
                await wait_current(nc, f"KV_{BUCKET}")
                await writer.advance(20)
            writer.stop.set()

        # Every acknowledged message is there exactly once, in acknowledgement order.
        assert await read_all(nc, len(writer.acked)) == writer.acked
        kv = await js.kv(BUCKET, create=False)
        for key, value in writer.kv_last.items():
            entry = await kv.get(key)
            assert entry is not None and entry.value == value, key


async def test_a_client_on_a_killed_node_moves_to_another(nats_cluster: ClusterUnderTest):
    cluster = nats_cluster
    victim = cluster.bus.nodes[1]
    # Given the killed node's address only: the others are learnt from the cluster itself.
    async with connect(victim.url, name="follower", reconnect_wait=0.05) as nc:
        assert nc.connected_url == victim.url
        events = nc.events()
        async with nc.subscribe("cl.ping") as sub:
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            with trio.fail_after(15):
                async for event in events:
                    if event.kind == "reconnected":
                        break
            moved_to = nc.connected_url
            assert moved_to is not None and moved_to != victim.url
            assert moved_to in cluster.bus.urls
            # The subscription was restored on the new server: a message from another node.
            other = next(n for n in cluster.bus.nodes if n.url not in (victim.url, moved_to))
            async with connect(other.url, name="pinger") as pinger:
                with trio.fail_after(10):
                    while True:
                        await pinger.publish("cl.ping", b"hello")
                        await pinger.flush()
                        with trio.move_on_after(0.5):
                            batch = await sub.__anext__()
                            assert batch[0].data == b"hello"
                            break


async def test_every_node_admits_the_same_role_users_only(tmp_path: Path):
    cfg = cluster_config(tmp_path / "nats", auth="roles")
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        bus: EmbeddedBus = await nursery.start(
            lambda task_status: supervised_embedded_nats(
                cfg, metrics=Metrics(), stopping=stopping, task_status=task_status))
        seed = str(seed_file_of(cfg.data_dir, "superuser"))
        for node in bus.nodes:
            async with connect(node.url, nkeys_seed=seed, name="admin") as nc:
                assert nc.connected_url == node.url
            with pytest.raises(NatsRefused):
                async with connect(node.url, name="stranger"):
                    pass
        # Routes are closed to strangers too: a route password only the nodes know.
        route_conf = (Path(cfg.data_dir) / "auth" / "node-0.conf").read_text()
        assert oct((Path(cfg.data_dir) / "auth" / "node-0.conf").stat().st_mode & 0o777) == "0o600"
        assert '"password"' in route_conf
        stopping.set()


async def test_the_aggregator_moves_a_source_stream_made_on_one_copy_to_the_replicas(
        nats_cluster: ClusterUnderTest):
    source = SourceStream(name="XY_SRC_R", subjects=["r.src.>"])
    async with connect(nats_cluster.bus.urls, name="before", replicas=1) as nc:
        await source.ensure(nc.jetstream(), owner=True, log=get_logger("test"))
        assert (await stream_info(nc, "XY_SRC_R"))["config"]["num_replicas"] == 1  # type: ignore[index]
    async with connect(nats_cluster.bus.urls, name="cluster", replicas=3) as nc:
        # A publisher leaves it as it is; the aggregator's ingest (the owner) moves it.
        await source.ensure(nc.jetstream(), owner=False, log=get_logger("test"))
        assert (await stream_info(nc, "XY_SRC_R"))["config"]["num_replicas"] == 1  # type: ignore[index]
        await source.ensure(nc.jetstream(), owner=True, log=get_logger("test"))
        assert (await stream_info(nc, "XY_SRC_R"))["config"]["num_replicas"] == 3  # type: ignore[index]
        await wait_current(nc, "XY_SRC_R")


def test_too_few_servers_for_the_replicas_is_ridden_out_with_a_retry():
    # What JetStream answers a creation while a cluster node is down (or still joining).
    refused = nats.js.errors.BadRequestError(
        code=400, err_code=10005, description="no suitable peers for placement")
    error = map_error(refused, "ensure stream 'XY_SRC'")
    assert isinstance(error, NatsJsUnavailable) and transient(error)
    assert str(error).startswith("ensure stream 'XY_SRC': not enough JetStream servers up for "
                                 "the replicas asked for")
    other = map_error(nats.js.errors.BadRequestError(code=400, err_code=10058), "x")
    assert not transient(other)
