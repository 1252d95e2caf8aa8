"""Real browser-like WebSocket clients against the gateway wired to a real nats-server."""

from __future__ import annotations

from gw_support import FakeAggregator, Keys, http_port, running_gateway, server_of, ws_client

from xypipe.contracts import ClientMetrics, GroupRef, Ping, Subscribe


async def test_hello_then_subscribe_gets_snapshot_then_consecutive_deltas(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_deltas(3)
    await aggregator.publish_snapshots()
    async with running_gateway(nats_server.url, keys) as runner:
        port = http_port(runner)
        async with ws_client(port) as c:
            welcome = await c.hello(keys.token("alice", ["xy.md.>"]))
            assert welcome.welcome.principal == "alice"
            assert welcome.welcome.heartbeat_ms > 0
            await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
            sub = await c.recv_until(lambda f: f.HasField("subscribed"))
            assert [g.group for g in sub.subscribed.groups] == ["fx"]
            first = await c.recv_until(lambda f: len(f.snapshots) > 0)
            assert first.snapshots[0].group == "fx"
            for _ in range(5):
                await aggregator.publish_deltas(1, ["fx", "rates"])
            await c.recv_until(lambda f: c.last[("fx", 0)][1] == aggregator.seq["fx"])
            # Every delta checked by the client: consecutive, after the snapshot, one epoch.
            assert c.deltas == 5
            assert server_of(runner).hub.stats.deltas_in >= 5
            m = runner.metrics
            assert m.sample("ws_active") == 1
            assert m.sample("xy_ws_messages_forwarded_total") == 6  # 1 snapshot + 5 deltas
            assert m.sample("ws_msgs_rate") > 0
            assert m.sample("ws_bytes_sent_total") > 0
            assert m.sample("ws_connections_by_level", {"level": "L0"}) == 1
            assert m.sample("e2e_latency_seconds_count", {"point": "gateway_send"}) >= 1
            assert m.sample("nats_req_latency_count", {"op": "direct_get"}) == 1
            assert m.sample("gateway_snapshot_lookups_total", {"outcome": "found"}) == 1
            await c.send(metrics=ClientMetrics(render_latency_ms=[12.5, 30.0], tabs=2))
            await c.send(ping=Ping(nonce=1))
            await c.recv_until(lambda f: f.HasField("pong"))
            assert m.sample("e2e_latency_seconds_count", {"point": "client_render"}) == 2
        text = runner.metrics.render().decode()
        for name in ("ws_active", "ws_msgs_rate", "xy_ws_messages_forwarded_total",
                     "slow_consumers", "backpressure_events", "nats_req_latency",
                     "acl_denied_total"):
            assert name in text, name
