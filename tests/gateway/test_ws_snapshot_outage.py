"""A browser asking for a group's snapshot while JetStream is unavailable gets it once JetStream
is back: the gateway retries the direct get with backoff and counts the failures."""

from __future__ import annotations

import trio
from gw_support import (
    FakeAggregator,
    Keys,
    caught_up,
    http_port,
    no_hole,
    running_gateway,
    sdk,
    server_of,
    updates_until,
)

from xypipe._embedded import EmbeddedNats
from xypipe._gateway._flags import DISABLED_GROUPS, FlagValue
from xypipe.client import DeltaApplied, ErrorReceived, SnapshotApplied


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
        async with sdk(http_port(runner), keys.token("alice", ["xy.md.>"])) as c:
            await c.subscribe("fx")
            seen = await updates_until(c, lambda u: isinstance(u, ErrorReceived), limit_s=20)
            err = seen[-1]
            assert isinstance(err, ErrorReceived)
            assert (err.name, err.group, err.fatal) == ("ERROR_CODE_SNAPSHOT_UNAVAILABLE", "fx",
                                                        False)
            assert "could not be reached" in err.message
            assert runner.metrics.sample("gateway_snapshot_get_failures_total") >= 1
            assert runner.metrics.sample("gateway_snapshot_lookups_total",
                                         {"outcome": "failed"}) >= 1
            nats_server.jetstream = True
            await nats_server.restart()
            seen += await updates_until(c, lambda u: isinstance(u, SnapshotApplied), limit_s=20)
            got = seen[-1]
            assert isinstance(got, SnapshotApplied) and got.group == "fx"
            assert got.shard_seq == ((0, aggregator.seq["fx"]),)
            assert runner.metrics.sample("gateway_snapshot_lookups_total",
                                         {"outcome": "found"}) == 1
            # The live feed continues after the stored snapshot without a hole.
            await aggregator.publish_deltas(2, ["fx"])
            seen += await caught_up(c, "fx", aggregator.seq["fx"])
            no_hole(seen)
            assert len([u for u in seen if isinstance(u, DeltaApplied)]) == 2

            # The feature-flag watch came back with JetStream too: a change made now applies.
            kv = await aggregator.nc.jetstream().kv("xy_feature_flags", create=False)
            await kv.put(DISABLED_GROUPS, FlagValue(DISABLED_GROUPS, ["rates"], "ops").encode())
            gw = server_of(runner)
            with trio.fail_after(20):
                while gw.flags[DISABLED_GROUPS].value != ["rates"]:  # noqa: ASYNC110 (no event)
                    await trio.sleep(0.02)
