"""A slow reader walks up the levels and back down; twenty normal readers never notice."""

from __future__ import annotations

from typing import Any

import trio
from gw_support import (
    FakeAggregator,
    Keys,
    expect_close,
    http_port,
    level_reached,
    running_gateway,
    server_of,
    ws_client,
)

from xypipe.contracts import GroupRef, Ping, Subscribe

GROUPS = ["g0", "g1", "g2", "g3", "g4"]
SLOW_OPTIONS: dict[str, Any] = {
    "send_buffer_bytes": 4096,
    "queue_max_bytes": 256 * 1024,
    "queue_max_age_ms": 300,
    "degrade": {"enter": [0.5, 0.75, 0.9], "leave": [0.25, 0.5, 0.7], "dwell_ms": 200,
                "sample_ms": 20},
    "level_interval_ms": [0, 50, 100, 200],
    "priority_groups": ["g0"],
    "history": 512,
}


async def publish_at_cadence(agg: FakeAggregator, stop: trio.Event,
                             done: trio.Event | None = None) -> None:
    """The aggregator's cadence: 30 deltas/s per group, a snapshot per group every 0.5 s;
    ``done`` is set once the last delta went out."""
    tick = 0
    while not stop.is_set():
        await agg.publish_deltas(1)
        tick += 1
        if tick % 15 == 0:
            await agg.publish_snapshots()
        await trio.sleep(1 / 30)
    if done is not None:
        done.set()


async def _normal_reader(port: int, keys: Keys, ready: trio.Event, stop: trio.Event,
                         agg: FakeAggregator, out: list[Any], n: int) -> None:
    async with ws_client(port) as c:
        await c.hello(keys.token(f"normal-{n}"))
        await c.send(subscribe=Subscribe(groups=[GroupRef(group=g) for g in GROUPS]))
        await c.recv_until(lambda f: set(GROUPS) <= set(c.snapshots))
        out.append(c)
        ready.set()
        last_ping = trio.current_time()
        # Read until the publisher has stopped and this reader holds its last delta.
        while not (stop.is_set() and all(c.last[(g, 0)][1] == agg.seq[g] for g in GROUPS)):
            with trio.move_on_after(0.5):
                await c.recv()
            if trio.current_time() - last_ping > 1.0:
                await c.send(ping=Ping())
                last_ping = trio.current_time()


async def test_slow_reader_walks_up_the_levels_and_back_while_others_are_unaffected(
    nats_server, keys: Keys, publisher
):
    agg = FakeAggregator(publisher, GROUPS, symbols=10)
    await agg.setup()
    await agg.publish_snapshots()
    stop = trio.Event()
    normals: list[Any] = []
    async with running_gateway(nats_server.url, keys, **SLOW_OPTIONS) as runner:
        port = http_port(runner)
        server = server_of(runner)
        at_l3 = level_reached(server, 3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_at_cadence, agg, stop)
            for i in range(20):
                ready = trio.Event()
                nursery.start_soon(_normal_reader, port, keys, ready, stop, agg, normals, i)
                await ready.wait()
            async with ws_client(port) as slow:
                await slow.hello(keys.token("slow"))
                await slow.send(subscribe=Subscribe(groups=[GroupRef(group=g) for g in GROUPS]))
                # Phase 1: the slow client does not read; its queue fills and its level climbs.
                with trio.fail_after(20):
                    await at_l3.wait()
                # Phase 2: it reads as fast as it can; the level comes back down to L0.
                with trio.fail_after(30):
                    while not (slow.degrades and slow.degrades[-1].level == 0):
                        with trio.move_on_after(0.2):
                            await slow.recv()
                        await slow.send(ping=Ping())
                levels = [d.level for d in slow.degrades]
            # The normal readers end once they hold the last published delta.
            stop.set()
    assert 3 in levels and levels[-1] == 0, levels
    assert levels.index(3) > levels.index(1) if 1 in levels else True
    # Merged deltas reached the slow client (fewer, fuller messages), all checked for continuity.
    assert any(d.first_seq for f in slow.frames for d in f.deltas)
    # Low-priority groups were paused at L3 and resumed from snapshots afterwards.
    assert any(set(d.paused_groups) == {"g1", "g2", "g3", "g4"} for d in slow.degrades)
    for c in normals:
        assert not c.degrades, "a normal reader was degraded"
        assert not c.errors
        assert all(c.last[(g, 0)][1] == agg.seq[g] for g in GROUPS)
    m = runner.metrics
    assert m.sample("backpressure_events_total", {"scope": "pipeline:gateway:connection",
                                                  "direction": "up", "level": "L3"}) >= 1
    assert m.sample("slow_consumers") == 0


async def test_reader_that_never_reads_is_closed_when_l3_does_not_help(
    nats_server, keys: Keys, publisher, json_logs
):
    agg = FakeAggregator(publisher, GROUPS, symbols=10)
    await agg.setup()
    await agg.publish_snapshots()
    stop, closing = trio.Event(), trio.Event()
    opts = dict(SLOW_OPTIONS, close_after_ms=300, close_grace_ms=200, priority_groups=["g*"])
    async with running_gateway(nats_server.url, keys, **opts) as runner:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_at_cadence, agg, stop)
            server = server_of(runner)
            async with ws_client(http_port(runner)) as slow:
                await slow.hello(keys.token("stuck"))
                conn = next(iter(server.connections.values()))
                began = conn.core.on_closing

                def watch_close() -> None:
                    began()
                    closing.set()

                conn.core.on_closing = watch_close
                await slow.send(subscribe=Subscribe(groups=[GroupRef(group=g) for g in GROUPS]))
                with trio.fail_after(20):
                    await closing.wait()  # the client under test does not read, on purpose
                code = await expect_close(slow)
            stop.set()
    assert runner.metrics.sample("ws_closes_total", {"code": "4010"}) == 1
    assert code in (4010, 1006)  # 1006 when the close frame could not get through the backlog
    closing = json_logs.find(msg="closing connection", close_code=4010)
    assert closing and "slow consumer" in closing[0]["reason"]
    raised = json_logs.find(msg="slow consumer: connection level raised")
    assert [r["new_level"] for r in raised][-1] == 3
    assert all("recovery" in r and r["reason"] for r in raised)
