"""Resume: a client stays consistent across a NATS restart, through :mod:`xypipe.client` (which
checks every sequence and checksum it is sent).

Resuming from the gateway's history after a dropped link, and from a snapshot after a gateway
restart, are tested from the client's side with the same gateway metrics in
``tests/client/test_client_resume.py``.
"""

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
    updates_until,
)

from xypipe._errors import BridgeError
from xypipe.client import DeltaApplied, ErrorReceived, SnapshotApplied, Update


async def test_connected_client_stays_consistent_across_a_nats_restart(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner, \
            sdk(http_port(runner), keys.token()) as c:
        await c.subscribe("fx")
        seen: list[Update] = await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
        await aggregator.publish_deltas(3, ["fx"])
        seen += await caught_up(c, "fx", aggregator.seq["fx"])
        applied = sum(isinstance(u, DeltaApplied) for u in seen)

        # The server goes away while the aggregator keeps publishing (nats-py buffers those and
        # sends them after reconnecting, maybe before the gateway has re-subscribed: a hole the
        # gateway must bridge with a snapshot, never hand to the client).
        await nats_server.stop()
        for _ in range(3):
            aggregator.nc.publish_nowait("xy.md.tick.fx", aggregator.delta_bytes("fx"))
        await nats_server.start()
        # The aggregator keeps its cadence: a delta every 20 ms, a snapshot every 10 deltas.
        # The client's own checks fail on any hole or repeat; it pings by itself.
        with trio.fail_after(20):
            i = 0
            tick = trio.current_time()
            book = c.book("fx")
            assert book is not None
            while book.seqs.get(0) != aggregator.seq["fx"] or not book.synced or (
                    sum(isinstance(u, DeltaApplied) for u in seen) < applied + 5):
                i += 1
                tick += 0.02
                try:
                    await aggregator.publish_deltas(1, ["fx"])
                    if i % 10 == 0:
                        await aggregator.publish_snapshots(["fx"])
                except BridgeError:
                    pass  # the publisher itself may still be reconnecting; it retries
                # Read everything that arrives until the next tick: the cadence stays 50 Hz
                # however fast the gateway answers.
                with trio.move_on_at(tick):
                    async for u in c:
                        seen.append(u)
        no_hole(seen)
        assert not [u for u in seen if isinstance(u, ErrorReceived) and u.fatal]
        stats = c.statistics()
        assert stats.connects == 1 and stats.checksum_mismatches == 0
