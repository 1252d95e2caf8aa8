"""Real sockets, a real nats-server: the tick's flush writes frames straight to the readers'
sockets; one reader stops reading, its socket fills, the flush falls back to that connection's
writer, the connection climbs the levels and comes back down — while the other readers
(:mod:`xypipe.client`, which checks every sequence and checksum) get every delta in order."""

from __future__ import annotations

from typing import Any

import trio
from gw_support import (
    FakeAggregator,
    Keys,
    book_matches,
    caught_up,
    http_port,
    level_reached,
    no_hole,
    running_gateway,
    sdk,
    server_of,
    updates_until,
    ws_client,
)
from test_ws_slow_consumer import GROUPS, SLOW_OPTIONS, publish_at_cadence

from xypipe.client import SnapshotApplied, Update
from xypipe.contracts import GroupRef, Ping, Subscribe


async def _reader(port: int, keys: Keys, n: int, agg: FakeAggregator, ready: trio.Event,
                  published: trio.Event, results: dict[int, Any]) -> None:
    async with sdk(port, keys.token(f"reader-{n}")) as c:
        await c.subscribe(*GROUPS)
        snapped: set[str] = set()

        def all_snapped(u: Update) -> bool:
            if isinstance(u, SnapshotApplied):
                snapped.add(u.group)
            return snapped == set(GROUPS)

        updates = await updates_until(c, all_snapped)
        ready.set()
        while not published.is_set():
            with trio.move_on_after(0.2):
                async for u in c:
                    updates.append(u)
        for g in GROUPS:
            updates += await caught_up(c, g, agg.seq[g], limit_s=20)
        books = all(book_matches(c, g, agg.state[g]) for g in GROUPS)
        results[n] = (updates, c.statistics(), books)


async def test_a_reader_that_stops_reading_falls_back_while_the_others_get_every_delta(
    nats_server, keys: Keys, publisher
):
    agg = FakeAggregator(publisher, GROUPS, symbols=10)
    await agg.setup()
    await agg.publish_snapshots()
    stop, published = trio.Event(), trio.Event()
    results: dict[int, Any] = {}
    async with running_gateway(nats_server.url, keys, **SLOW_OPTIONS) as runner:
        port = http_port(runner)
        server = server_of(runner)
        at_l3 = level_reached(server, 3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_at_cadence, agg, stop, published)
            for i in range(5):
                ready = trio.Event()
                nursery.start_soon(_reader, port, keys, i, agg, ready, published, results)
                with trio.fail_after(10):
                    await ready.wait()
            async with ws_client(port) as slow:
                await slow.hello(keys.token("slow"))
                await slow.send(subscribe=Subscribe(groups=[GroupRef(group=g) for g in GROUPS]))
                # It stops reading: its socket fills, then its queue, and its level climbs.
                with trio.fail_after(20):
                    await at_l3.wait()
                full = runner.metrics.sample("ws_flush_socket_full_total") or 0
                # It reads again as fast as it can; the level comes back down to L0.
                with trio.fail_after(30):
                    while not (slow.degrades and slow.degrades[-1].level == 0):
                        with trio.move_on_after(0.2):
                            await slow.recv()
                        await slow.send(ping=Ping())
                # Back at L0 the flush writes its frames again: every one continues its stream.
                for _ in range(10):
                    await slow.recv()
            stop.set()
    levels = [d.level for d in slow.degrades]
    assert 1 in levels and 3 in levels and levels.index(1) < levels.index(3), levels
    assert levels[-1] == 0, levels
    # The flush began frames the slow reader's socket could not take: its writer finished them.
    assert full >= 1
    m = runner.metrics
    assert (m.sample("ws_frames_direct_total") or 0) > 0
    assert len(results) == 5
    for updates, stats, books in results.values():
        no_hole(updates)
        # One snapshot per group, then every delta applied in order: never resynced.
        snaps = [u.group for u in updates if isinstance(u, SnapshotApplied)]
        assert sorted(snaps) == sorted(GROUPS), snaps
        assert stats.checksum_mismatches == 0 and stats.checksums_verified > 0
        assert not stats.skipped and not stats.errors
        assert books
