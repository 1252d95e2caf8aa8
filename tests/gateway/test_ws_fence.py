"""A live gateway (real nats-server, real WebSocket client) drops what an aggregator that lost
its group's lease still publishes: the client sees one continuous stream from the new owner."""

from __future__ import annotations

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
)

from xypipe.client import SnapshotApplied
from xypipe.contracts import Delta


class FencedAggregator(FakeAggregator):
    """Stamps its lease's fence on every delta and snapshot, as the publish stage does."""

    fence = 0

    def delta_bytes(self, group: str) -> bytes:
        d = self._step(group)
        d.fence = self.fence
        return d.SerializeToString()

    def snapshot(self, group: str):  # type: ignore[no-untyped-def]
        s = super().snapshot(group)
        s.fence = self.fence
        return s


async def test_deltas_of_a_replaced_owner_never_reach_clients(
    nats_server, keys: Keys, aggregator: FakeAggregator, json_logs: JsonLogCapture
) -> None:
    owner = FencedAggregator(aggregator.nc, ["fx"])
    owner.fence = 10
    await owner.publish_deltas(3)
    await owner.publish_snapshots()
    async with running_gateway(nats_server.url, keys) as runner:
        port = http_port(runner)
        async with sdk(port, keys.token("alice", ["xy.md.>"])) as client:
            await client.subscribe("fx")
            seen = await updates_until(client, lambda u: isinstance(u, SnapshotApplied))
            await owner.publish_deltas(1)
            seen += await caught_up(client, "fx", owner.seq["fx"])
            # The group moves to another aggregator (fence 12) that continues the sequence; the
            # old one, not yet aware it lost the lease, publishes its own next delta too.
            owner.fence = 12
            await owner.publish_deltas(1)
            hub = server_of(runner).hub
            with trio.fail_after(10):
                while hub.streams[("fx", 0)].last_seq != owner.seq["fx"]:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            zombie = Delta(group="fx", shard=0, seq=owner.seq["fx"] + 1, epoch=owner.epoch,
                           fence=10)
            aggregator.nc.publish_nowait("xy.md.tick.fx", zombie.SerializeToString())
            await aggregator.nc.flush()
            await owner.publish_deltas(2)
            seen += await caught_up(client, "fx", owner.seq["fx"])
            no_hole(seen)
            assert client.statistics().checksum_mismatches == 0
            assert client.statistics().snapshots == 1
        assert runner.metrics.sample("gateway_fenced_total", {"group": "fx"}) == 1
    [line] = json_logs.find(code="XY-OWN-010")
    assert (line["group"], line["fence"], line["highest_fence"], line["count"]) == (
        "fx", 10, 12, 1)
