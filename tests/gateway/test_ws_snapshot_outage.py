"""A browser asking for a group's snapshot while JetStream is unavailable gets it once JetStream
is back: the gateway retries the direct get with backoff and counts the failures."""

from __future__ import annotations

import trio
from gw_support import FakeAggregator, Keys, http_port, running_gateway, server_of, ws_client

from xypipe._embedded import EmbeddedNats
from xypipe._gateway._flags import DISABLED_GROUPS, FlagValue
from xypipe.contracts import ErrorCode, GroupRef, Subscribe


async def test_snapshot_asked_while_jetstream_is_away_arrives_when_it_is_back(
    nats_server: EmbeddedNats, keys: Keys, aggregator: FakeAggregator
) -> None:
    await aggregator.publish_deltas(3)
    await aggregator.publish_snapshots()
    async with running_gateway(nats_server.url, keys) as runner:
        # Core NATS back at once, JetStream not: the same server restarted without it (its
        # data dir kept for later).
        nats_server.jetstream = False
        await nats_server.restart()
        async with ws_client(http_port(runner)) as c:
            await c.hello(keys.token("alice", ["xy.md.>"]))
            await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
            err = await c.recv_until(lambda f: f.HasField("error"), limit_s=20)
            assert err.error.code == ErrorCode.ERROR_CODE_SNAPSHOT_UNAVAILABLE
            assert "could not be reached" in err.error.message
            assert runner.metrics.sample("gateway_snapshot_get_failures_total") >= 1
            assert runner.metrics.sample("gateway_snapshot_lookups_total",
                                         {"outcome": "failed"}) >= 1
            nats_server.jetstream = True
            await nats_server.restart()
            got = await c.recv_until(lambda f: len(f.snapshots) > 0, limit_s=20)
            assert got.snapshots[0].group == "fx"
            assert got.snapshots[0].shard_seq[0] == aggregator.seq["fx"]
            assert runner.metrics.sample("gateway_snapshot_lookups_total",
                                         {"outcome": "found"}) == 1
            # The live feed continues after the stored snapshot without a hole.
            await aggregator.publish_deltas(2, ["fx"])
            await c.recv_until(lambda f: c.last[("fx", 0)][1] == aggregator.seq["fx"])
            assert c.deltas == 2

            # The feature-flag watch came back with JetStream too: a change made now applies.
            kv = await aggregator.nc.jetstream().kv("xy_feature_flags", create=False)
            await kv.put(DISABLED_GROUPS, FlagValue(DISABLED_GROUPS, ["rates"], "ops").encode())
            gw = server_of(runner)
            with trio.fail_after(20):
                while gw.flags[DISABLED_GROUPS].value != ["rates"]:  # noqa: ASYNC110 (no event)
                    await trio.sleep(0.02)
