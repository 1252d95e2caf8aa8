"""Readiness of a real aggregator: its source consumer vanishes behind its back (as after a
nats-server restart), health goes not-ready with a reason naming the stream, and comes back when
data flows again."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from _agg_nats import Runner, publisher_config, start_aggregator

from xypipe._nats import connect

pytestmark = pytest.mark.nats

# Stale after 1.5 s (a busy CI machine must not stall a poll past it); the feed's own recovery
# (3 missed 2 s heartbeats) comes later, so the watchdog is seen acting first.
WATCH = {"watch": {"poll_ms": 100, "stale_after_ms": 1500}, "heartbeat_ms": 2000}


async def js_api(nc: Any, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    msg = await nc.request(subject, json.dumps(body).encode() if body else b"", timeout=5.0)
    doc: dict[str, Any] = json.loads(msg.data)
    assert "error" not in doc, doc
    return doc


async def until(pred: Any, _what: str, limit: float = 20.0) -> None:
    with trio.fail_after(limit):
        while not pred():  # noqa: ASYNC110 (a condition of the runner, not an event)
            await trio.sleep(0.05)  # polling a condition, bounded by the hang guard


async def test_ingest_consumer_deleted_behind_its_back_turns_health_not_ready_and_back(
    nats_url: str,
) -> None:
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        agg, scope = await start_aggregator(nursery, nats_url, ingest=WATCH)
        pub_scope = trio.CancelScope()

        async def publish() -> None:
            with pub_scope:
                await Runner(publisher_config(nats_url, symbols=20, rate=200)).run()

        nursery.start_soon(publish)
        await until(lambda: agg.health()["ready"], "ready while ticks flow")

        (name,) = (await js_api(nc, "$JS.API.CONSUMER.NAMES.XY_SRC"))["consumers"]
        info = await js_api(nc, f"$JS.API.CONSUMER.INFO.XY_SRC.{name}")
        await js_api(nc, f"$JS.API.CONSUMER.DELETE.XY_SRC.{name}")

        await until(lambda: not agg.health()["ready"], "not ready once the feed is gone")
        doc = agg.health()
        stream = doc["pipelines"]["aggregator"]["streams"]["XY_SRC"]
        assert stream["status"] == "stale"
        assert any("stream XY_SRC: no data for" in r and "while the source advanced" in r
                   for r in doc["reasons"]), doc["reasons"]
        assert agg.metrics.sample("stream_stale_total", {"stream": "XY_SRC"}) == 1

        # The feed's consumer is re-created from where it was (as the feed does after a
        # server restart): data flows again, and so does readiness.
        config = {k: v for k, v in info["config"].items() if k not in ("name", "durable_name")}
        config.update(deliver_policy="by_start_sequence",
                      opt_start_seq=info["delivered"]["stream_seq"] + 1)
        await js_api(nc, "$JS.API.CONSUMER.CREATE.XY_SRC",
                     {"stream_name": "XY_SRC", "config": config})
        await until(lambda: agg.health()["ready"], "ready again once data flows")
        assert agg.metrics.sample("stream_fresh", {"stream": "XY_SRC"}) == 1

        pub_scope.cancel()
        scope.cancel()
        nursery.cancel_scope.cancel()


async def test_idle_source_keeps_the_aggregator_ready(nats_url: str) -> None:
    async with trio.open_nursery() as nursery:
        agg, scope = await start_aggregator(nursery, nats_url, ingest=WATCH)
        await Runner(publisher_config(nats_url, symbols=5, rate=500, max_ticks=200)).run()
        await until(lambda: agg.health()["ready"], "ready after the burst")
        # Several stale windows of silence at the source: still ready, it is only quiet.
        for _ in range(3):
            await trio.sleep(1.5)
            assert agg.health()["ready"], agg.health()["reasons"]
        scope.cancel()
        nursery.cancel_scope.cancel()


async def stored(js: Any, group: str) -> Any:
    from xypipe.contracts import Snapshot

    msg = await js.direct_get_last("XY_MD_SNAPSHOT", f"xy.md.snapshot.{group}")
    return None if msg is None else Snapshot.FromString(msg.data)


async def test_a_group_emptied_at_cold_start_does_not_hold_the_restore_point_back(
    nats_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from _agg_helpers import tick

    from xypipe._stages._md_common import wall_us
    from xypipe.contracts import Contract

    caplog.set_level(logging.INFO, logger="xypipe")
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        js = nc.jetstream()
        _, scope = await start_aggregator(nursery, nats_url)
        # Cold start: ticks before their contracts land in the default group ...
        for seq in range(1, 4):
            for s in ("X", "Y"):
                t = tick(symbol=s, seq=seq, arrival_us=wall_us())
                await js.publish(f"xy.src.tick.V.{s}", t.SerializeToString())
        with trio.fail_after(10):
            while (await stored(js, "default")) is None:  # noqa: ASYNC110 (a stored state)
                await trio.sleep(0.05)
        # ... until the contracts name their group; then the market goes on.
        for s in ("X", "Y"):
            await js.publish(f"xy.ref.contract.V.{s}",
                             Contract(venue="V", symbol=s, group="fx").SerializeToString())
        for seq in range(4, 100):
            for s in ("X", "Y"):
                t = tick(symbol=s, seq=seq, arrival_us=wall_us())
                await js.publish(f"xy.src.tick.V.{s}", t.SerializeToString())
        last = (await js.stream_state("XY_SRC")).last_seq

        async def fresh(group: str) -> bool:
            snap = await stored(js, group)
            return snap is not None and snap.source_stream_seq == last

        with trio.fail_after(10):
            while not (await fresh("default") and await fresh("fx")):  # noqa: ASYNC110
                await trio.sleep(0.05)
        emptied = await stored(js, "default")
        assert list(emptied.symbols) == []
        scope.cancel()  # killed

        caplog.clear()
        second, scope2 = await start_aggregator(nursery, nats_url)
        starts = [getattr(r, "xy_fields", {}) for r in caplog.records
                  if r.getMessage() == "ingest starting"]
        assert starts and starts[-1]["deliver"] == str(("seq", last + 1))
        assert starts[-1]["continued"] is True
        with trio.fail_after(10):
            while not second.health()["ready"]:  # noqa: ASYNC110
                await trio.sleep(0.05)
        scope2.cancel()
        nursery.cancel_scope.cancel()
