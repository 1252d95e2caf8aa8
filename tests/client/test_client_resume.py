"""The client SDK comes back by itself: a cut link resumes from the gateway's history, a
gateway restart resumes from a snapshot, a dead link is noticed by its silence, a quiet one is
kept open by heartbeats — against a real gateway and nats-server, through a real TCP proxy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from client_support import Proxy
from gw_support import (
    FakeAggregator,
    Keys,
    book_matches,
    caught_up,
    http_port,
    no_hole,
    running_gateway,
    updates_until,
)

import xypipe
import xypipe.client
from xypipe.client import (
    Connected,
    DeltaApplied,
    Disconnected,
    GatewayUnreachable,
    Reconnect,
    ReconnectGaveUp,
    SnapshotApplied,
    Subscribed,
    Update,
)

pytestmark = pytest.mark.nats

FAST = Reconnect(base_s=0.05, cap_s=0.2)


def is_(kind: type[Update]) -> Callable[[Update], bool]:
    return lambda u: isinstance(u, kind)


async def test_a_cut_link_resumes_from_the_history_with_only_the_missed_deltas(
    nats_server, keys: Keys, aggregator: FakeAggregator, proxy: Proxy
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner:
        proxy.target = http_port(runner)
        async with xypipe.client.connect(f"ws://127.0.0.1:{proxy.port}/ws", token=keys.token(),
                                         reconnect=FAST) as c:
            await c.subscribe("fx")
            await updates_until(c, is_(SnapshotApplied))
            await aggregator.publish_deltas(3, ["fx"])
            seen = await updates_until(c, lambda u: isinstance(u, DeltaApplied) and u.seq == 3)

            proxy.refuse = True
            assert proxy.cut() == 1
            gone = await updates_until(c, is_(Disconnected))
            assert isinstance(gone[-1], Disconnected) and gone[-1].close_code == 1006
            await aggregator.publish_deltas(4, ["fx"])  # missed while away
            proxy.refuse = False

            back = await updates_until(c, lambda u: isinstance(u, DeltaApplied) and u.seq == 7)
            hello = [u for u in back if isinstance(u, Connected)]
            assert [(u.reconnects, u.resumed, u.subscribed) for u in hello] == [(1, ("fx",), ())]
            assert [u.seq for u in back if isinstance(u, DeltaApplied)] == [4, 5, 6, 7]
            assert not [u for u in back if isinstance(u, SnapshotApplied)]
            no_hole(seen + back)
            assert book_matches(c, "fx", aggregator.state["fx"])
            assert c.statistics().resumed_groups == 1
        assert runner.metrics.sample("ws_resumes_total",
                                     {"outcome": "bridged", "reason": "bridged"}) == 1


async def gateway_task(nats_url: str, keys: Keys, stop: trio.Event,
                       task_status: trio.TaskStatus[xypipe.Runner] = trio.TASK_STATUS_IGNORED
                       ) -> None:
    """A gateway in a task of its own, so it can stop while the client lives on."""
    async with running_gateway(nats_url, keys) as runner:
        task_status.started(runner)
        await stop.wait()


async def test_a_gateway_restart_resumes_from_a_snapshot_without_a_hole(
    nats_server, keys: Keys, aggregator: FakeAggregator, proxy: Proxy
):
    await aggregator.publish_snapshots(["fx"])
    async with trio.open_nursery() as gateways:
        stop_first, stop_second = trio.Event(), trio.Event()
        first = await gateways.start(gateway_task, nats_server.url, keys, stop_first)
        proxy.target = http_port(first)
        async with xypipe.client.connect(f"ws://127.0.0.1:{proxy.port}/ws", token=keys.token(),
                                         reconnect=FAST) as c:
            await c.subscribe("fx")
            await updates_until(c, is_(SnapshotApplied))
            await aggregator.publish_deltas(3, ["fx"])
            before = await updates_until(c, lambda u: isinstance(u, DeltaApplied) and u.seq == 3)

            stop_first.set()  # the gateway goes away, closing its sockets; the market goes on
            gone = await updates_until(c, is_(Disconnected))
            assert isinstance(gone[-1], Disconnected) and gone[-1].close_code == 1001
            await aggregator.publish_deltas(5, ["fx"])
            await aggregator.publish_snapshots(["fx"])
            await aggregator.publish_deltas(1, ["fx"])
            second = await gateways.start(gateway_task, nats_server.url, keys, stop_second)
            proxy.target = http_port(second)
            # Resumed before the new gateway holds any delta of the group: nothing to bridge
            # from (its history is in memory only), so it restarts the group from a snapshot.
            back = await updates_until(c, is_(Subscribed))
            hello = [u for u in back if isinstance(u, Connected)]
            assert [(u.resumed, u.subscribed) for u in hello] == [(("fx",), ())]

            async with trio.open_nursery() as market:
                async def cadence() -> None:
                    # The aggregator's rhythm: a delta every 50 ms, a snapshot every 5 deltas.
                    i = 0
                    while True:
                        i += 1
                        await aggregator.publish_deltas(1, ["fx"])
                        if i % 5 == 0:
                            await aggregator.publish_snapshots(["fx"])
                        await trio.sleep(0.05)

                market.start_soon(cadence)
                back += await updates_until(c, is_(SnapshotApplied))
                resync = back[-1]
                assert isinstance(resync, SnapshotApplied) and resync.resync
                # Live again: deltas continue the snapshot (the gateway may resync the group
                # once more if the first live delta it sees left a hole; never the client).
                back += await updates_until(c, is_(DeltaApplied))
                market.cancel_scope.cancel()
            await aggregator.publish_snapshots(["fx"])  # for a gateway still waiting for one
            last = aggregator.seq["fx"]
            back += await caught_up(c, "fx", last)
            no_hole(before + gone + back)
            assert book_matches(c, "fx", aggregator.state["fx"])
        assert second.metrics.sample("ws_resumes_total",
                                     {"outcome": "snapshot", "reason": "no_history"}) == 1
        stop_second.set()


async def test_a_silent_link_is_declared_dead_and_replaced(
    nats_server, keys: Keys, aggregator: FakeAggregator, proxy: Proxy
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys, heartbeat_ms=100,
                               heartbeat_timeout_ms=5000) as runner:
        proxy.target = http_port(runner)
        async with xypipe.client.connect(f"ws://127.0.0.1:{proxy.port}/ws", token=keys.token(),
                                         reconnect=FAST) as c:
            await c.subscribe("fx")
            await updates_until(c, is_(SnapshotApplied))
            proxy.stall()  # the sockets stay open, nothing gets through any more
            gone = await updates_until(c, is_(Disconnected))
            dead = gone[-1]
            assert isinstance(dead, Disconnected) and dead.close_code is None
            assert "nothing received for 0.3 s (3 heartbeats)" in dead.reason
            await updates_until(c, is_(Subscribed))  # a new connection, the group resumed
            await aggregator.publish_deltas(1, ["fx"])
            after = await updates_until(c, lambda u: isinstance(u, DeltaApplied) and u.seq == 1)
            no_hole(after)
            assert proxy.accepted == 2


async def test_heartbeats_keep_a_quiet_connection_open(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    # The gateway closes a client silent for 600 ms and sends a frame every 100 ms itself.
    async with running_gateway(nats_server.url, keys, heartbeat_ms=100,
                               heartbeat_timeout_ms=600) as runner, \
            xypipe.client.connect(f"ws://127.0.0.1:{http_port(runner)}/ws",
                                  token=keys.token()) as c:
        await c.subscribe("fx")
        await updates_until(c, is_(SnapshotApplied))
        frames = c.statistics().frames
        with trio.fail_after(10):
            while c.statistics().frames < frames + 20:  # noqa: ASYNC110 (heartbeat frames yield no update)
                await trio.sleep(0.1)
        stats = c.statistics()
        assert c.connected and stats.connects == 1 and stats.best_rtt_ms is not None
        assert runner.metrics.sample("ws_active") == 1


async def test_reconnecting_gives_up_after_max_attempts(
    nats_server, keys: Keys, aggregator: FakeAggregator, proxy: Proxy
):
    async with running_gateway(nats_server.url, keys) as runner:
        proxy.target = http_port(runner)
        policy = Reconnect(base_s=0.01, cap_s=0.02, max_attempts=2)
        gone: list[Update] = []
        with pytest.raises(ReconnectGaveUp) as caught:
            async with xypipe.client.connect(f"ws://127.0.0.1:{proxy.port}/ws",
                                             token=keys.token(), reconnect=policy) as c:
                await updates_until(c, is_(Connected))
                proxy.refuse = True
                proxy.cut()
                with trio.fail_after(10):
                    async for u in c:
                        gone.append(u)
        assert [type(u) for u in gone] == [Disconnected] * 2  # one per retry announced
        err = caught.value
        assert err.attempts == 2 and err.code == "XY-SDK-006"
        assert isinstance(err.last, GatewayUnreachable)
        assert proxy.accepted == 1
