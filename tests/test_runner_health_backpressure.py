"""A process outlives its own heartbeat: with the connection's publish queue full (here: a stalled
nats-server and a flood of messages), the periodic health report is skipped and logged, not
raised (it once stopped the demo publisher mid-benchmark with XY-NATS-006)."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import trio

import xypipe
import xypipe._runner as runner_module
from xypipe import parse_config
from xypipe._embedded import EmbeddedNats
from xypipe._errors import NatsBackpressure

pytestmark = pytest.mark.nats


async def test_a_full_publish_queue_skips_the_health_report(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner_module, "HEALTH_INTERVAL", 0.05)
    caplog.set_level(logging.WARNING, logger="xypipe")
    stage = {"use": "publisher", "symbols": 5, "rate": 1.0, "ensure_stream": False}
    runner = xypipe.Runner(parse_config({
        "nats": {"url": nats_server.url}, "http": {"enabled": False},
        "pipelines": {"publisher": {"stages": [stage]}}}))

    def skipped() -> bool:
        return any(getattr(r, "xy_fields", {}).get("code") == "XY-NATS-006"
                   and "health report skipped" in r.getMessage() for r in caplog.records)

    assert nats_server.pid is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        os.kill(nats_server.pid, signal.SIGSTOP)
        try:
            # Nothing drains: large messages fill the socket, then small ones the queue.
            nc = runner.nats
            assert nc is not None
            with trio.fail_after(9):
                for _ in range(64):
                    await nc.publish("bench.fill", b"x" * 512 * 1024)
                while True:
                    try:
                        nc.publish_nowait("bench.fill", b"x")
                    except NatsBackpressure:
                        break
                    await trio.lowlevel.checkpoint_if_cancelled()
            with trio.fail_after(9):
                while True:
                    if skipped():
                        break
                    await trio.sleep(0.05)  # polled under the fail_after hang guard
        finally:
            os.kill(nats_server.pid, signal.SIGCONT)
        # Still running (a raise would have ended the nursery with XY-NATS-006).
        assert runner.health()["pipelines"]["publisher"]["state"] == "running"
        nursery.cancel_scope.cancel()
