"""Group names against a real gateway, a real nats-server and WebSocket clients: a group the
aggregator does not publish (its known-groups KV bucket) is answered UNKNOWN_GROUP, the list
follows the bucket live, and snapshot look-ups per connection are rate-limited."""

from __future__ import annotations

import json

import trio
from gw_support import FakeAggregator, Keys, http_port, running_gateway, server_of, ws_client

from xypipe.contracts import ErrorCode, GroupRef, Ping, SnapshotRequest, Subscribe

BUCKET = "xy_md_groups"


async def list_groups(nc: object, *groups: str) -> None:
    """What the aggregator's publish stage does before a group's first delta."""
    kv = await nc.jetstream().kv(BUCKET, history=1)  # type: ignore[attr-defined]
    for g in groups:
        await kv.put(g, json.dumps({"group": g}).encode())


async def known_becomes(runner: object, groups: set[str]) -> None:
    server = server_of(runner)
    with trio.fail_after(10):
        while server.known_groups.groups != frozenset(groups):
            await server.groups.changed.wait()


async def test_unknown_groups_are_refused_and_the_list_follows_the_bucket(
    nats_server, nats_client, keys: Keys, aggregator: FakeAggregator,
) -> None:
    await aggregator.publish_deltas(2)
    await aggregator.publish_snapshots()
    await list_groups(nats_client, *aggregator.groups)
    async with running_gateway(nats_server.url, keys) as runner:
        await known_becomes(runner, set(aggregator.groups))
        assert runner.metrics.sample("gateway_known_groups") == len(aggregator.groups)
        async with ws_client(http_port(runner)) as c:
            await c.hello(keys.token("alice", ["xy.md.>"]))
            ref = await c.send(subscribe=Subscribe(groups=[GroupRef(group="FX"),
                                                           GroupRef(group="fx")]))
            sub = await c.recv_until(lambda f: f.HasField("subscribed"))
            assert [g.group for g in sub.subscribed.groups] == ["fx"]
            [err] = [e for e in c.errors if e.group == "FX"]
            assert err.code == ErrorCode.ERROR_CODE_UNKNOWN_GROUP and err.ref_id == ref
            assert not err.fatal and "did you mean 'fx'" in err.message
            await c.recv_until(lambda f: any(s.group == "fx" for s in f.snapshots))
            # A group listed later is accepted from then on.
            await list_groups(nats_client, "crypto")
            await known_becomes(runner, {*aggregator.groups, "crypto"})
            await c.send(subscribe=Subscribe(groups=[GroupRef(group="crypto")]))
            sub = await c.recv_until(lambda f: f.HasField("subscribed"))
            assert [g.group for g in sub.subscribed.groups] == ["crypto"]
        m = runner.metrics
        assert m.sample("ws_protocol_errors_total",
                        {"code": "ERROR_CODE_UNKNOWN_GROUP"}) == 1
        # No snapshot look-up was spent on the unknown group.
        assert m.sample("nats_req_latency_count", {"op": "direct_get"}) >= 1


async def test_snapshot_lookups_per_connection_are_rate_limited(
    nats_server, nats_client, keys: Keys, aggregator: FakeAggregator,
) -> None:
    await aggregator.publish_deltas(1)
    await aggregator.publish_snapshots()
    await list_groups(nats_client, *aggregator.groups)
    async with running_gateway(nats_server.url, keys, snapshot_lookup_burst=3,
                               snapshot_lookups_per_s=0.01) as runner:
        await known_becomes(runner, set(aggregator.groups))
        async with ws_client(http_port(runner)) as c, ws_client(http_port(runner)) as other:
            await c.hello(keys.token("alice", ["xy.md.>"]))
            await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
            await c.recv_until(lambda f: any(s.group == "fx" for s in f.snapshots))
            for _ in range(4):
                await c.send(snapshot_request=SnapshotRequest(group="fx"))
            await c.send(ping=Ping(nonce=9))
            await c.recv_until(lambda f: f.HasField("pong"))  # still open, in order
            limited = [e for e in c.errors if e.code == ErrorCode.ERROR_CODE_RATE_LIMITED]
            assert len(limited) == 2 and all(e.group == "fx" and not e.fatal for e in limited)
            assert "snapshot look-ups/s" in limited[0].message
            # The bucket is per connection: another one is not affected.
            await other.hello(keys.token("bob", ["xy.md.>"]))
            await other.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
            await other.recv_until(lambda f: any(s.group == "fx" for s in f.snapshots))
            assert other.errors == []
        assert runner.metrics.sample("ws_snapshot_lookups_limited_total",
                                     {"action": "snapshot_request"}) == 2
