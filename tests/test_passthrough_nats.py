"""The runner and the bridge end to end: publish -> pipeline -> subscribe, on a real nats-server."""

from __future__ import annotations

import json
import urllib.request

import trio

import xypipe
from xypipe._nats import connect


def passthrough_config(nats_url: str) -> xypipe.AppConfig:
    return xypipe.parse_config({
        "nats": {"url": nats_url},
        "http": {"port": 0},
        "pipelines": {"passthrough": {"stages": [
            {"use": "nats_source", "name": "ingest", "subjects": ["xy.src.tick.>"]},
            {"use": "nats_sink", "name": "publish", "prefix_from": "xy.src.tick",
             "prefix_to": "xy.md.raw"},
        ]}},
    }, "passthrough.toml")


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    return await trio.to_thread.run_sync(get)


async def receive_n(sub, n: int) -> list:
    got: list = []
    with trio.fail_after(10):
        async for batch in sub:
            got.extend(batch)
            if len(got) >= n:
                return got
    return got


async def test_messages_pass_through_the_pipeline_and_health_reports_ready(nats_server):
    runner = xypipe.Runner(passthrough_config(nats_server.url))
    async with trio.open_nursery() as nursery, connect(nats_server.url) as client:
        await nursery.start(runner.run)
        async with client.subscribe("xy.md.raw.>") as sub:
            with trio.fail_after(10):
                await runner.pipelines[0].stages[0].ctx.wait_ready()
            for i in range(100):
                await client.publish(f"xy.src.tick.XNAS.S{i % 7}", b"tick-%d" % i)
            await client.flush()
            got = await receive_n(sub, 100)
        assert sorted(m.data for m in got) == sorted(b"tick-%d" % i for i in range(100))
        assert {m.subject for m in got} == {f"xy.md.raw.XNAS.S{i}" for i in range(7)}

        status, body = await http_get(runner.http.port, "/healthz")
        health = json.loads(body)
        assert status == 200, health
        assert health["ready"] and health["nats"]["connected"]
        assert health["pipelines"]["passthrough"]["state"] == "running"

        status, body = await http_get(runner.http.port, "/metrics")
        text = body.decode()
        assert status == 200
        assert 'pipeline_running{pipeline="passthrough"} 1.0' in text
        assert 'nats_sink_msgs_total{stage="publish"} 100.0' in text
        assert "# TYPE backpressure_events_total counter" in text
        runner.stop()


async def test_pipeline_keeps_flowing_after_the_server_restarts(nats_server):
    runner = xypipe.Runner(passthrough_config(nats_server.url))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        async with connect(nats_server.url) as client, client.subscribe("xy.md.raw.>") as sub:
            with trio.fail_after(10):
                await runner.pipelines[0].stages[0].ctx.wait_ready()
            await client.publish("xy.src.tick.A.B", b"before")
            await client.flush()
            assert [m.data for m in await receive_n(sub, 1)] == [b"before"]

            watches = [runner.nats.events(), client.events()]
            await nats_server.restart()
            # Both clients reconnect on their own; wait until each says so.
            with trio.fail_after(15):
                for events in watches:
                    async for event in events:
                        if event.kind == "reconnected":
                            break
            # Core NATS drops what is published while a subscription is re-established, so keep
            # publishing until one comes through, then check the stream flows again.
            with trio.fail_after(15):
                while True:
                    await client.publish("xy.src.tick.A.B", b"after")
                    await client.flush()
                    with trio.move_on_after(0.2):
                        batch = await sub.receive()
                        if any(m.data == b"after" for m in batch):
                            break
        status, _ = await http_get(runner.http.port, "/healthz")
        assert status == 200
        runner.stop()


async def test_health_is_answered_on_nats_for_every_instance(nats_server):
    from xypipe.contracts import HealthReport

    runner = xypipe.Runner(passthrough_config(nats_server.url))
    async with trio.open_nursery() as nursery, connect(nats_server.url) as client:
        await nursery.start(runner.run)
        with trio.fail_after(10):
            await runner.pipelines[0].stages[0].ctx.wait_ready()
        reply = await client.request("xy.exec.health", b"", timeout=2.0)
        report = HealthReport.FromString(reply.data)
        assert report.service == "main" and report.live and report.ready
        assert report.checks["nats"] == "connected"
        assert report.checks["pipeline.passthrough"] == "running"
        runner.stop()
