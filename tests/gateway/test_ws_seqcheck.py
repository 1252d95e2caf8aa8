"""Implausible sequences against a live gateway: a real nats-server, real WebSocket clients
(:mod:`xypipe.client`, which checks every sequence and checksum it is sent; a raw client for the
hostile resume point).

A forged delta far ahead of a live group's stream (published with permitted credentials, as a
stray publisher on an open bus would) must not stop the group for anyone; a resume point ahead
of the stream gets a snapshot at once; a gateway that lost more deltas than the gap bound
re-anchors from the aggregator's checkpoint stored in JetStream.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from gw_support import (
    FakeAggregator,
    JsonLogCapture,
    Keys,
    caught_up,
    http_port,
    no_hole,
    running_gateway,
    sdk,
    server_of,
    updates_until,
    ws_client,
)

from xypipe._gateway._streams import StreamHistory
from xypipe._nats import NatsClient
from xypipe.client import SnapshotApplied
from xypipe.contracts import Delta, Resume, ResumePoint

CHECKPOINT_STREAM = "XY_AGG_SEQ"


class CheckpointingAggregator(FakeAggregator):
    """Also stores, before each delta, its checkpoint on ``xy.agg.seq.{group}.{shard}`` (the
    aggregator's publish stage does the same), and can lose deltas on the way out."""

    async def setup(self) -> None:
        await super().setup()
        await self.nc.jetstream().ensure_stream(
            CHECKPOINT_STREAM, ["xy.agg.seq.>"], max_msgs_per_subject=1, storage="file")

    async def publish_deltas(self, n: int = 1, groups: Sequence[str] | None = None,
                             *, lost: bool = False) -> None:
        js = self.nc.jetstream()
        for _ in range(n):
            for g in groups or self.groups:
                raw = self.delta_bytes(g)
                await js.publish(f"xy.agg.seq.{g}.0", Delta(
                    group=g, shard=0, seq=self.seq[g], epoch=self.epoch).SerializeToString())
                if not lost:
                    self.nc.publish_nowait(f"xy.md.tick.{g}", raw)
        await self.nc.flush()


async def forge(nc: NatsClient, group: str, epoch: int, seq: int) -> None:
    nc.publish_nowait(f"xy.md.tick.{group}", Delta(group=group, seq=seq, epoch=epoch)
                      .SerializeToString())
    await nc.flush()


async def test_forged_far_future_delta_does_not_stop_the_group(
    nats_server, keys: Keys, aggregator: FakeAggregator, json_logs: JsonLogCapture
):
    await aggregator.publish_deltas(3, ["fx"])
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner:
        port = http_port(runner)
        token = keys.token("alice", ["xy.md.>"])
        async with sdk(port, token) as old:
            await old.subscribe("fx")
            seen = await updates_until(old, lambda u: isinstance(u, SnapshotApplied))
            await forge(aggregator.nc, "fx", aggregator.epoch, aggregator.seq["fx"] + 10**9)
            await forge(aggregator.nc, "fx", aggregator.epoch - 1, aggregator.seq["fx"] + 1)
            await aggregator.publish_deltas(3, ["fx"])
            # Every frame is checked by the client: no gap, no repeat, one epoch.
            seen += await caught_up(old, "fx", aggregator.seq["fx"])
            async with sdk(port, token) as new:
                await new.subscribe("fx")
                await aggregator.publish_snapshots(["fx"])
                fresh = await updates_until(new, lambda u: isinstance(u, SnapshotApplied))
                await aggregator.publish_deltas(2, ["fx"])
                seen += await caught_up(old, "fx", aggregator.seq["fx"])
                fresh += await caught_up(new, "fx", aggregator.seq["fx"])
            no_hole(seen + fresh)
            # The stale one reset nothing: the first client never went back to a snapshot.
            assert old.statistics().snapshots == 1
            assert old.statistics().checksum_mismatches == 0
        m = runner.metrics
        assert m.sample("gateway_deltas_total", {"verdict": "far_future"}) == 1
        assert m.sample("gateway_deltas_total", {"verdict": "stale_epoch"}) == 1
        # The stale one reset nothing: no subscriber was sent back to a snapshot.
        assert not m.sample("ws_resyncs_total", {"reason": "epoch"})
    rejected = json_logs.find(code="XY-GW-010")
    assert {line["reason"] for line in rejected} == {"delta:far_future", "delta:stale_epoch"}
    assert all(line["group"] == "fx" and line["count"] == 1 for line in rejected)


async def test_far_future_resume_point_gets_a_snapshot(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_deltas(3, ["fx"])
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner:
        port = http_port(runner)
        await aggregator.publish_deltas(2, ["fx"])
        # The point is judged against the stream's head: wait until the gateway holds it (on a
        # busy machine the resume could otherwise reach a gateway that knows no stream yet).
        hub = server_of(runner).hub

        def held(stream: StreamHistory | None) -> bool:
            return stream is not None and stream.last_seq == aggregator.seq["fx"]

        with trio.fail_after(10):
            while not held(hub.streams.get(("fx", 0))):  # noqa: ASYNC110
                await trio.sleep(0.01)
        async with ws_client(port) as c:
            await c.hello(keys.token("alice", ["xy.md.>"]))
            await c.send(resume=Resume(points=[
                ResumePoint(group="fx", shard=0, epoch=aggregator.epoch, seq=10**12)]))
            # The bound is a hang guard: the snapshot comes at once, not when the stream
            # catches up with the claimed point.
            f = await c.recv_until(lambda f: len(f.snapshots) > 0, limit_s=5)
            assert f.snapshots[0].group == "fx"
            await aggregator.publish_deltas(1, ["fx"])
            await c.recv_until(lambda f: c.last[("fx", 0)][1] == aggregator.seq["fx"])
        assert runner.metrics.sample("ws_resumes_total",
                                     {"outcome": "snapshot", "reason": "ahead"}) == 1


async def test_gateway_that_lost_more_than_the_bound_re_anchors_from_the_checkpoint(
    nats_server, keys: Keys, publisher: NatsClient, json_logs: JsonLogCapture
):
    agg = CheckpointingAggregator(publisher, ["fx"])
    await agg.setup()
    await agg.publish_deltas(2)
    await agg.publish_snapshots()
    async with running_gateway(nats_server.url, keys, max_seq_gap=4) as runner:
        port = http_port(runner)
        async with sdk(port, keys.token("alice", ["xy.md.>"])) as c:
            await c.subscribe("fx")
            seen = await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
            await agg.publish_deltas(1)
            seen += await caught_up(c, "fx", agg.seq["fx"])
            await agg.publish_deltas(10, lost=True)  # the gateway never sees these
            await agg.publish_deltas(1)  # 11 ahead: beyond the bound of 4, rejected...
            # ...and the checkpoint in JetStream says the aggregator really is there. The
            # look-up runs in the gateway's own task: poll its counter, with a hang guard.
            with trio.fail_after(10):
                while not runner.metrics.sample(  # noqa: ASYNC110
                        "gateway_reanchors_total", {"reason": "checkpoint_ahead"}):
                    await trio.sleep(0.02)
            await agg.publish_deltas(1)
            await agg.publish_snapshots()
            await agg.publish_deltas(1)
            seen += await caught_up(c, "fx", agg.seq["fx"])
            no_hole(seen)
    assert json_logs.find(code="XY-GW-012", reason="checkpoint_ahead")
