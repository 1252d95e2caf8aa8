"""Heartbeats, oversized and malformed frames: clear errors, and the others keep being served."""

from __future__ import annotations

import trio
from gw_support import FakeAggregator, Keys, expect_close, http_port, running_gateway, ws_client

from xypipe.contracts import ErrorCode, GroupRef, Ping, Subscribe


async def test_silent_client_is_dropped_after_the_heartbeat_timeout(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys, heartbeat_ms=100,
                               heartbeat_timeout_ms=300) as runner, \
            ws_client(http_port(runner)) as c:
        w = await c.hello(keys.token())
        assert w.welcome.heartbeat_ms == 100
        # Server heartbeats (empty frames) keep coming while the client stays silent...
        hb = await c.recv_until(lambda f: not f.ListFields() or f.ListFields()[0][0].name
                                == "ts_send_us")
        assert hb.ts_send_us > 0
        # ...until the gateway gives up on the client.
        err = await c.recv_until(lambda f: f.HasField("error"), limit_s=5)
        assert err.error.code == ErrorCode.ERROR_CODE_HEARTBEAT_TIMEOUT and err.error.fatal
        assert await expect_close(c) == 4014
        assert runner.metrics.sample("ws_closes_total", {"code": "4014"}) == 1


async def test_pinging_client_stays_connected_past_the_heartbeat_timeout(nats_server, keys):
    async with running_gateway(nats_server.url, keys, heartbeat_ms=100,
                               heartbeat_timeout_ms=300) as runner, \
            ws_client(http_port(runner)) as c:
        await c.hello(keys.token())
        for i in range(8):  # 8 x 100 ms: well past the 300 ms timeout
            await c.send(ping=Ping(nonce=i))
            pong = await c.recv_until(lambda f: f.HasField("pong"))
            assert pong.pong.nonce == i
            await trio.sleep(0.1)  # the client's own heartbeat cadence
        assert not c.errors


async def test_oversized_and_malformed_frames_get_error_frames_and_others_keep_flowing(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys, max_frame_bytes=1024) as runner:
        port = http_port(runner)
        async with ws_client(port) as bad, ws_client(port) as good:
            await bad.hello(keys.token("bad"))
            await good.hello(keys.token("good"))
            await good.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
            await good.recv_until(lambda f: len(f.snapshots) > 0)

            await bad.ws.send_message(b"\x00" * 5000)
            err = await bad.recv_until(lambda f: f.HasField("error"))
            assert err.error.code == ErrorCode.ERROR_CODE_FRAME_TOO_LARGE
            assert "5000 bytes exceeds the limit of 1024" in err.error.message
            assert not err.error.fatal

            await bad.ws.send_message(b"\xff\xff\xff")
            err = await bad.recv_until(lambda f: f.HasField("error"))
            assert err.error.code == ErrorCode.ERROR_CODE_BAD_FRAME
            assert "not a ClientFrame" in err.error.message

            await bad.ws.send_message("text is not the protocol")
            err = await bad.recv_until(lambda f: f.HasField("error"))
            assert err.error.code == ErrorCode.ERROR_CODE_BAD_FRAME

            # The offender is still served, and so is everyone else.
            await bad.send(ping=Ping(nonce=42))
            assert (await bad.recv_until(lambda f: f.HasField("pong"))).pong.nonce == 42
            await aggregator.publish_deltas(3, ["fx"])
            await good.recv_until(lambda f: good.last[("fx", 0)][1] == aggregator.seq["fx"])
            assert good.deltas == 3 and not good.errors
        m = runner.metrics
        assert m.sample("ws_protocol_errors_total", {"code": "ERROR_CODE_FRAME_TOO_LARGE"}) == 1
        assert m.sample("ws_protocol_errors_total", {"code": "ERROR_CODE_BAD_FRAME"}) == 2


async def test_too_many_bad_frames_close_the_connection(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys, max_bad_frames=2) as runner, \
            ws_client(http_port(runner)) as c:
        await c.hello(keys.token())
        for _ in range(3):
            await c.ws.send_message(b"\xff")
        assert await expect_close(c) == 4000 + ErrorCode.ERROR_CODE_BAD_FRAME
        assert [e.fatal for e in c.errors] == [False, False, True]


async def test_frame_flood_is_rate_limited_without_closing(nats_server, keys: Keys):
    async with running_gateway(nats_server.url, keys, rate_per_s=1.0, burst=5) as runner, \
            ws_client(http_port(runner)) as c:
        await c.hello(keys.token())
        for i in range(8):
            await c.send(ping=Ping(nonce=i))
        err = await c.recv_until(lambda f: f.HasField("error"))
        assert err.error.code == ErrorCode.ERROR_CODE_RATE_LIMITED and not err.error.fatal
