"""The aggregator against a real nats-server: faulty feed in, exact books out; restart."""

from __future__ import annotations

import pytest
import trio
from _agg_nats import (
    Runner,
    Subscriber,
    converged,
    faults_of,
    mismatches,
    publisher_config,
    start_aggregator,
    truth_of,
)

from xypipe import Level
from xypipe._nats import connect

pytestmark = pytest.mark.nats

FAULTS = {"duplicate": 0.01, "reorder": 0.01, "seed": 11}


async def _publish(url: str, **options: object) -> Runner:
    runner = Runner(publisher_config(url, **options))
    await runner.run()
    return runner


@pytest.mark.parametrize("level", [Level.L0, Level.L1])
async def test_faulty_feed_rebuilds_exact_books_with_every_checksum_verified(
    nats_url: str, level: Level,
) -> None:
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        sub = Subscriber(nc)
        await nursery.start(sub.run)
        agg, scope = await start_aggregator(nursery, nats_url)
        if level:
            agg.pipelines[0].force_level(level)
        pub = await _publish(nats_url, symbols=40, rate=3000, max_ticks=5000, **FAULTS)
        truth = truth_of(pub)
        faults = faults_of(pub)
        m = agg.metrics
        # Converged, and the last duplicates (sent right after the last ticks) counted too.
        await sub.wait_until(lambda: converged(sub.view, truth) and (
            m.sample("src_duplicates_total") == faults.duplicates))
        ingest = agg.pipelines[0].stages[0].ctx
        scope.cancel()
        nursery.cancel_scope.cancel()
    # Ingest reports the stream backlog it read from the deliveries (drained by now).
    assert ingest.reported_pressure is not None
    assert ingest.reported_pressure.source.startswith("stream XY_SRC backlog ")
    assert mismatches(sub.view, truth) == []
    stats = sub.view.stats
    assert (stats.gaps, stats.repeats, stats.checksum_mismatches) == (0, 0, 0), stats.problems
    assert stats.verified > 100
    # Cumulative volume and trade counts equal the ground truth (also with longer windows).
    state = sub.view.state()
    assert sum(s.total_trades for s in state.values()) == sum(truth.trades.values())
    assert sum(s.vol for s in state.values()) == sum(t.vol for t in truth.last.values())
    assert sub.levels == {int(level)}
    nominal = 33 if level == Level.L0 else 99
    # Windows never close early (their exact cadence is tested under the mock clock).
    assert min(sub.windows) >= nominal, sub.windows
    assert m.sample("src_duplicates_total") == faults.duplicates
    assert m.sample("reorder_count_total") == faults.reordered
    assert m.sample("src_gap_total") == 0
    assert m.sample("ticks_out_total") > 0 and m.sample("snapshots_out_total") > 0
    assert m.sample("src_ingest_total") == truth.ticks + faults.duplicates
    assert m.sample("src_contracts_total") == len(truth.last)  # published once at start


async def test_malformed_payloads_are_counted_and_skipped(nats_url: str) -> None:
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        sub = Subscriber(nc)
        await nursery.start(sub.run)
        agg, scope = await start_aggregator(nursery, nats_url)
        pub = await _publish(nats_url, symbols=10, rate=3000, max_ticks=1500, malformed=0.02,
                             gap=0.01, seed=5)
        truth = truth_of(pub)
        faults = faults_of(pub)
        await sub.wait_until(lambda: converged(sub.view, truth))
        scope.cancel()
        nursery.cancel_scope.cancel()
    assert faults.malformed > 5 and faults.gaps > 5
    assert agg.metrics.sample("src_bad_total", {"reason": "decode"}) == faults.malformed
    assert agg.metrics.sample("src_gap_total") >= 1
    assert mismatches(sub.view, truth) == []


async def test_killed_aggregator_restarts_without_a_sequence_hole_or_repeat(
    nats_url: str,
) -> None:
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        sub = Subscriber(nc)
        await nursery.start(sub.run)
        _, scope = await start_aggregator(nursery, nats_url)
        pub_done = trio.Event()
        box: dict[str, Runner] = {}

        async def publish() -> None:
            box["pub"] = await _publish(nats_url, symbols=60, rate=2500, max_ticks=9000,
                                        **FAULTS)
            pub_done.set()

        nursery.start_soon(publish)
        sub.condition = lambda: sub.view.stats.snapshots >= 4 and sub.deltas > 100
        with trio.fail_after(20):
            await sub.settled.wait()
        scope.cancel()  # killed mid-stream
        deltas_before = sub.deltas
        second, scope2 = await start_aggregator(nursery, nats_url)
        with trio.fail_after(30):
            await pub_done.wait()
        truth = truth_of(box["pub"])
        await sub.wait_until(lambda: converged(sub.view, truth))
        scope2.cancel()
        nursery.cancel_scope.cancel()
    stats = sub.view.stats
    assert sub.deltas > deltas_before
    assert (stats.gaps, stats.repeats, stats.epoch_changes) == (0, 0, 0), stats.problems
    assert stats.checksum_mismatches == 0
    assert mismatches(sub.view, truth) == []
    assert second.metrics.sample("aggregator_rebuilds_total", {"continued": "true"}) == 1
    rebuild_s = second.metrics.sample("aggregator_rebuild_seconds")
    assert rebuild_s is not None and rebuild_s > 0


async def test_a_restarted_publisher_is_followed_after_an_aggregator_restart(
    nats_url: str,
) -> None:
    """`make demo` twice: the aggregator restores last session's state, and the publisher starts
    its sequences over at 1 with newer timestamps — a new session, not duplicates."""
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        sub = Subscriber(nc)
        await nursery.start(sub.run)
        _, scope = await start_aggregator(nursery, nats_url)
        first = await _publish(nats_url, symbols=30, rate=3000, max_ticks=3000, seed=5)
        await sub.wait_until(lambda: converged(sub.view, truth_of(first)))
        scope.cancel()
        agg, scope2 = await start_aggregator(nursery, nats_url)
        second = await _publish(nats_url, symbols=30, rate=3000, max_ticks=1500, seed=5)
        truth = truth_of(second)
        await sub.wait_until(lambda: converged(sub.view, truth))
        scope2.cancel()
        nursery.cancel_scope.cancel()
    state = sub.view.state()
    assert {(t.venue, t.symbol): t.seq for t in truth.last.values()} == {
        k: state[k].seq for k in ((t.venue, t.symbol) for t in truth.last.values())}
    assert agg.metrics.sample("src_resets_total") == len(truth.last)
    assert agg.metrics.sample("src_duplicates_total") == 0
    stats = sub.view.stats
    assert (stats.gaps, stats.repeats, stats.checksum_mismatches) == (0, 0, 0), stats.problems
