"""A gateway is ready only while the aggregator's snapshots keep arriving (real nats-server)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from gw_support import DEV_AUDIENCE, DEV_ISSUER, SNAPSHOT_STREAM, FakeAggregator, Keys

import xypipe

pytestmark = pytest.mark.nats


def watched_gateway(nats_url: str, keys: Keys) -> xypipe.AppConfig:
    return xypipe.parse_config({
        "nats": {"url": nats_url},
        "http": {"port": 0},
        "pipelines": {"gateway": {"stages": [
            {"use": "nats_source", "name": "md",
             "subjects": ["xy.md.tick.>", "xy.md.snapshot.>"],
             "watch": [{"subject": "xy.md.snapshot.*", "cadence_ms": 300, "misses": 3}]},
            {"use": "gateway", "name": "gateway", "public_key": str(keys.public_path),
             "allowed_origins": ["*"], "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE,
             "snapshot_stream": SNAPSHOT_STREAM},
        ]}},
    }, "gateway-test.toml")


async def until(pred: Any, limit: float = 15.0) -> None:
    with trio.fail_after(limit):
        while not pred():  # noqa: ASYNC110 (a condition of the runner, not an event)
            await trio.sleep(0.02)  # polling a condition, bounded by the hang guard


async def test_gateway_goes_not_ready_when_snapshots_stop_and_back_when_they_resume(
    nats_server: Any, keys: Keys, aggregator: FakeAggregator,
) -> None:
    runner = xypipe.Runner(watched_gateway(nats_server.url, keys))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        doc = runner.health()
        assert not doc["ready"]  # no snapshot since start
        assert any("stream xy.md.snapshot.*: no data since start" in r for r in doc["reasons"])

        flowing = trio.CancelScope()

        async def snapshots(groups: list[str]) -> None:
            with flowing:
                while True:
                    # As the real aggregator publishes them: core NATS, no wait for a JetStream
                    # ack (which a busy machine can delay past the cadence under test).
                    for g in groups:
                        aggregator.nc.publish_nowait(f"xy.md.snapshot.{g}",
                                                     aggregator.snapshot(g).SerializeToString())
                    await aggregator.nc.flush()
                    # The aggregator's cadence; stale only after 3 x 300 ms, so a busy CI
                    # machine does not make a flowing group look stale.
                    await trio.sleep(0.05)

        nursery.start_soon(snapshots, ["fx", "rates"])
        await until(lambda: runner.health()["ready"]
                    and len(runner.health()["pipelines"]["gateway"]["streams"]) == 3)
        streams = runner.health()["pipelines"]["gateway"]["streams"]
        assert {s: v["status"] for s, v in streams.items()} == {
            "xy.md.snapshot.*": "fresh", "xy.md.snapshot.fx": "fresh",
            "xy.md.snapshot.rates": "fresh"}

        # One group stops: only that group is named.
        flowing.cancel()
        flowing = trio.CancelScope()
        nursery.start_soon(snapshots, ["fx"])
        await until(lambda: not runner.health()["ready"])
        reasons = runner.health()["reasons"]
        assert len(reasons) == 1 and "stream xy.md.snapshot.rates: no data for" in reasons[0], \
            reasons

        # The aggregator is gone altogether, then back.
        flowing.cancel()
        await until(lambda: len(runner.health()["reasons"]) == 3)
        flowing = trio.CancelScope()
        nursery.start_soon(snapshots, ["fx", "rates"])
        await until(lambda: runner.health()["ready"])
        assert runner.metrics.sample("stream_stale_total",
                                     {"stream": "xy.md.snapshot.rates"}) == 1
        assert runner.metrics.sample("stream_stale_total", {"stream": "xy.md.snapshot.fx"}) == 1
        flowing.cancel()
        runner.stop()
