"""The aggregator's source consumer survives the nats-server going away: SIGKILL and restart on
the same port and data dir, lame-duck mode then restart, and the consumer deleted behind its
back. After each, every tick published afterwards reaches the books once — none missing, none
doubled — and the re-creation is counted."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from _agg_nats import (
    Runner,
    Subscriber,
    converged,
    mismatches,
    publisher_config,
    start_aggregator,
    truth_of,
)

from xypipe._embedded import EmbeddedNats, embedded_nats
from xypipe._nats import connect

pytestmark = pytest.mark.nats

STREAM = "XY_SRC"


async def _publish(url: str, **options: object) -> Runner:
    runner = Runner(publisher_config(url, **options))
    await runner.run()
    return runner


def _recreated(agg: Runner, reason: str) -> float:
    return agg.metrics.sample("js_consumer_recreated_total",
                              {"stream": STREAM, "reason": reason}) or 0.0


async def _until(pred: Any, limit_s: float = 20) -> None:
    """Poll a condition that has no event of its own (a metric), with a hang guard."""
    with trio.fail_after(limit_s):
        while not pred():  # noqa: ASYNC110 (a metric has no event to await)
            await trio.sleep(0.02)


async def _reconnected(events: Any) -> None:
    async for ev in events:
        if ev.kind == "reconnected":
            return


async def _scenario(server: EmbeddedNats, fault: Any, reason: str) -> None:
    """Ticks before the fault converge; the fault; ticks after it converge exactly."""
    url = server.url
    async with connect(url, name="test-subscriber") as nc, trio.open_nursery() as nursery:
        sub = Subscriber(nc)
        await nursery.start(sub.run)
        agg, scope = await start_aggregator(nursery, url)
        first = await _publish(url, symbols=20, rate=3000, max_ticks=1500, seed=3)
        await sub.wait_until(lambda: converged(sub.view, truth_of(first)))
        ingested = agg.metrics.sample("src_ingest_total")
        assert ingested == truth_of(first).ticks

        events = nc.events()
        await fault(server)
        # The subscriber's own connection is back (else it would miss deltas, not ingest).
        with trio.fail_after(20):
            await _reconnected(events)
        await _until(lambda: _recreated(agg, reason) >= 1)

        second = await _publish(url, symbols=20, rate=3000, max_ticks=1500, seed=4,
                                venues=["XAFT"])  # new symbols: totals start at 0
        truth = truth_of(second)
        await sub.wait_until(lambda: converged(sub.view, truth))
        scope.cancel()
        nursery.cancel_scope.cancel()
    # Every tick published after the fault was ingested exactly once.
    assert agg.metrics.sample("src_ingest_total") == ingested + truth.ticks
    assert agg.metrics.sample("src_duplicates_total") == 0
    assert mismatches(sub.view, truth) == []
    stats = sub.view.stats
    assert (stats.gaps, stats.repeats, stats.checksum_mismatches) == (0, 0, 0), stats.problems


async def test_ingest_resumes_after_the_server_is_killed_and_restarted(
    nats_server: EmbeddedNats,
) -> None:
    async def sigkill_and_restart(server: EmbeddedNats) -> None:
        await server.kill(signal.SIGKILL)
        await server.start()

    await _scenario(nats_server, sigkill_and_restart, "reconnected")


async def test_ingest_resumes_after_lame_duck_mode_and_a_restart(tmp_path: Path) -> None:
    # nats-server's minimum lame-duck duration is 30 s; clients are closed one at most every
    # second after the grace period, then the server exits by itself.
    conf = tmp_path / "ldm.conf"
    conf.write_text('lame_duck_duration: "30s"\nlame_duck_grace_period: "0.2s"\n')

    async def lame_duck_and_restart(server: EmbeddedNats) -> None:
        with trio.fail_after(20):
            await server.kill(signal.SIGUSR2)
        await server.start()

    async with embedded_nats(port=0, data_dir=tmp_path / "nats", config_file=conf) as server:
        await _scenario(server, lame_duck_and_restart, "reconnected")


async def test_a_consumer_deleted_behind_the_feeds_back_is_recreated(
    nats_server: EmbeddedNats,
) -> None:
    async def delete_consumers(server: EmbeddedNats) -> None:
        async with connect(server.url, name="operator") as op:
            names = json.loads((await op.request(f"$JS.API.CONSUMER.NAMES.{STREAM}", b"",
                                                 timeout=2.0)).data)["consumers"]
            assert len(names) == 1, names
            doc = json.loads((await op.request(f"$JS.API.CONSUMER.DELETE.{STREAM}.{names[0]}",
                                               b"", timeout=2.0)).data)
            assert doc.get("success"), doc

    await _scenario_without_reconnect(nats_server, delete_consumers, "missing")


async def _scenario_without_reconnect(server: EmbeddedNats, fault: Any, reason: str) -> None:
    """Like :func:`_scenario` for a fault with no reconnect; the ticks after it are published
    before the feed can have noticed (they wait in the stream)."""
    url = server.url
    async with connect(url, name="test-subscriber") as nc, trio.open_nursery() as nursery:
        sub = Subscriber(nc)
        await nursery.start(sub.run)
        agg, scope = await start_aggregator(nursery, url)
        first = await _publish(url, symbols=20, rate=3000, max_ticks=1000, seed=3)
        await sub.wait_until(lambda: converged(sub.view, truth_of(first)))
        ingested = agg.metrics.sample("src_ingest_total")
        await fault(server)
        # Published while the consumer is gone and before anything noticed: must not be lost.
        second = await _publish(url, symbols=20, rate=3000, max_ticks=1000, seed=4,
                                venues=["XAFT"])
        truth = truth_of(second)
        await _until(lambda: _recreated(agg, reason) >= 1)
        await sub.wait_until(lambda: converged(sub.view, truth))
        scope.cancel()
        nursery.cancel_scope.cancel()
    assert agg.metrics.sample("src_ingest_total") == ingested + truth.ticks
    assert mismatches(sub.view, truth) == []
    stats = sub.view.stats
    assert (stats.gaps, stats.repeats, stats.checksum_mismatches) == (0, 0, 0), stats.problems
