"""Resume: from the gateway's history, across a gateway restart, across a NATS restart."""

from __future__ import annotations

import trio
from gw_support import FakeAggregator, Keys, http_port, running_gateway, ws_client

from xypipe._errors import BridgeError
from xypipe.contracts import GroupRef, Ping, Resume, Subscribe


async def _subscribed_client_state(port: int, keys: Keys, agg: FakeAggregator,
                                   deltas: int = 3) -> tuple[str, list]:
    async with ws_client(port) as c:
        w = await c.hello(keys.token())
        await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
        await c.recv_until(lambda f: len(f.snapshots) > 0)
        await agg.publish_deltas(deltas, ["fx"])
        await c.recv_until(lambda f: c.last[("fx", 0)][1] == agg.seq["fx"])
        return w.welcome.session_id, c.resume_points()


async def test_resume_within_the_history_sends_only_the_missed_deltas(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner:
        port = http_port(runner)
        session_id, points = await _subscribed_client_state(port, keys, aggregator)
        await aggregator.publish_deltas(4, ["fx"])  # missed while away
        async with ws_client(port) as c:
            await c.hello(keys.token(), session_id=session_id)
            c.last = {(p.group, p.shard): (p.epoch, p.seq) for p in points}
            await c.send(resume=Resume(points=points))
            await c.recv_until(lambda f: c.last[("fx", 0)][1] == aggregator.seq["fx"])
            assert c.deltas == 4
            assert not any(f.snapshots for f in c.frames)
        assert runner.metrics.sample("ws_resumes_total",
                                     {"outcome": "bridged", "reason": "bridged"}) == 1


async def test_resume_across_a_gateway_restart_falls_back_to_a_snapshot(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner:
        session_id, points = await _subscribed_client_state(http_port(runner), keys, aggregator)
    # The gateway is gone; the market is not.
    await aggregator.publish_deltas(5, ["fx"])
    await aggregator.publish_snapshots(["fx"])
    await aggregator.publish_deltas(1, ["fx"])  # published before the new gateway listens
    async with running_gateway(nats_server.url, keys) as runner:
        async with ws_client(http_port(runner)) as c:
            await c.hello(keys.token(), session_id=session_id)
            c.last = {(p.group, p.shard): (p.epoch, p.seq) for p in points}
            await c.send(resume=Resume(points=points))
            # The stored snapshot is one delta behind what the new gateway can bridge, so it
            # waits for the next snapshot rather than leave a hole.
            # The aggregator's cadence: a delta every ~50 ms, a snapshot every 5 deltas.
            with trio.fail_after(10):
                i = 0
                while not c.snapshots.get("fx", 0) or c.last[("fx", 0)][1] < aggregator.seq["fx"]:
                    i += 1
                    await aggregator.publish_deltas(1, ["fx"])
                    if i % 5 == 0:
                        await aggregator.publish_snapshots(["fx"])
                    with trio.move_on_after(0.05):
                        await c.recv()
            await aggregator.publish_deltas(3, ["fx"])
            await c.recv_until(lambda f: c.last[("fx", 0)][1] == aggregator.seq["fx"])
        assert runner.metrics.sample("ws_resumes_total",
                                     {"outcome": "snapshot", "reason": "no_history"}) == 1


async def test_connected_client_stays_consistent_across_a_nats_restart(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner, \
            ws_client(http_port(runner)) as c:
        await c.hello(keys.token())
        await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
        await c.recv_until(lambda f: len(f.snapshots) > 0)
        await aggregator.publish_deltas(3, ["fx"])
        await c.recv_until(lambda f: c.last[("fx", 0)][1] == aggregator.seq["fx"])
        seen = c.deltas

        # The server goes away while the aggregator keeps publishing (nats-py buffers those and
        # sends them after reconnecting, maybe before the gateway has re-subscribed: a hole the
        # gateway must bridge with a snapshot, never hand to the client).
        await nats_server.stop()
        for _ in range(3):
            aggregator.nc.publish_nowait("xy.md.tick.fx", aggregator.delta_bytes("fx"))
        await nats_server.start()
        # The aggregator keeps its cadence: a delta every 20 ms, a snapshot every 10 deltas.
        # The client's own checks (tests/gateway/gw_support.py) fail on any hole or repeat.
        with trio.fail_after(20):
            i = 0
            tick = last_ping = trio.current_time()
            while c.last[("fx", 0)][1] < aggregator.seq["fx"] or c.deltas < seen + 5:
                i += 1
                tick += 0.02
                try:
                    await aggregator.publish_deltas(1, ["fx"])
                    if i % 10 == 0:
                        await aggregator.publish_snapshots(["fx"])
                except BridgeError:
                    pass  # the publisher itself may still be reconnecting; it retries
                if trio.current_time() - last_ping >= 1.0:  # a heartbeat, as a browser sends
                    last_ping = trio.current_time()
                    await c.send(ping=Ping(nonce=i))
                # Read everything that arrives until the next tick: the cadence stays 50 Hz
                # however fast the gateway answers.
                with trio.move_on_at(tick):
                    while True:
                        await c.recv()
        assert not [e for e in c.errors if e.fatal]
