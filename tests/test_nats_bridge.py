"""The NATS bridge against a real nats-server (started by the ``nats_server`` fixture)."""

from __future__ import annotations

import asyncio
import datetime

import nats.errors
import pytest
import trio

from xypipe._embedded import EmbeddedNats
from xypipe._errors import (
    BridgeError,
    NatsBackpressure,
    NatsConnectionError,
    NatsNoResponders,
    NatsNotFound,
    NatsTimeout,
)
from xypipe._nats import BridgeEvent, Msg, NatsClient, connect

pytestmark = pytest.mark.nats

HANG_GUARD_S = 10


async def _collect(sub: object, n: int) -> list[list[Msg]]:
    batches: list[list[Msg]] = []
    got = 0
    with trio.fail_after(HANG_GUARD_S):
        async for batch in sub:  # type: ignore[attr-defined]
            batches.append(batch)
            got += len(batch)
            if got >= n:
                break
    return batches


async def _next_event(events: trio.MemoryReceiveChannel[BridgeEvent], kind: str) -> BridgeEvent:
    with trio.fail_after(HANG_GUARD_S):
        async for event in events:
            if event.kind == kind:
                return event
    raise AssertionError(f"event channel closed before a {kind!r} event")


# -- core publish / subscribe ---------------------------------------------------------------------


async def test_published_messages_arrive_in_order_in_bounded_batches(
    nats_url: str, nats_bridge: str
) -> None:
    async with connect(nats_url, bridge=nats_bridge) as nc:  # type: ignore[arg-type]
        assert nc.bridge == nats_bridge
        async with nc.subscribe("t.>", max_batch=100) as sub:
            for i in range(3000):
                nc.publish_nowait(f"t.{i % 7}", i.to_bytes(4, "big") + b"x" * 196)
            batches = await _collect(sub, 3000)
    msgs = [m for b in batches for m in b]
    assert [int.from_bytes(m.data[:4], "big") for m in msgs] == list(range(3000))
    assert msgs[5].subject == "t.5" and msgs[5].seq is None
    assert all(1 <= len(b) <= 100 for b in batches)
    # Batched crossings: far fewer batches than messages.
    assert len(batches) < 3000 // 4


async def test_headers_and_queue_groups_reach_trio(nats_client: NatsClient) -> None:
    async with (
        nats_client.subscribe("q.job", queue="workers") as a,
        nats_client.subscribe("q.job", queue="workers") as b,
    ):
        for i in range(50):
            nats_client.publish_nowait("q.job", str(i).encode(), headers={"X-Origin": "test"})
        await nats_client.flush()
        got: list[Msg] = []
        with trio.fail_after(HANG_GUARD_S):
            while len(got) < 50:
                for sub in (a, b):
                    with trio.move_on_after(0.05):
                        got.extend(await sub.receive())
    assert sorted(int(m.data) for m in got) == list(range(50))  # each exactly once
    assert all(m.headers == {"X-Origin": "test"} for m in got)


async def test_full_publish_queue_raises_backpressure_and_publish_waits(nats_url: str) -> None:
    async with connect(nats_url, publish_queue=8) as nc, nc.subscribe("bp") as sub:
        for i in range(8):
            nc.publish_nowait("bp", bytes([i]))
        with pytest.raises(NatsBackpressure, match="8 messages already queued"):
            nc.publish_nowait("bp", b"overflow")
        # publish() waits for the pump to drain instead of raising.
        await nc.publish("bp", bytes([8]))
        batches = await _collect(sub, 9)
    assert [m.data for b in batches for m in b] == [bytes([i]) for i in range(9)]


@pytest.mark.parametrize("subject", ["", "has space", "crlf\r\nPUB x 1"])
async def test_invalid_subject_is_rejected_naming_the_subject(
    nats_client: NatsClient, subject: str
) -> None:
    with pytest.raises(BridgeError, match="invalid subject"):
        nats_client.publish_nowait(subject, b"x")


async def test_oversized_payload_is_rejected_with_sizes(nats_client: NatsClient) -> None:
    with pytest.raises(BridgeError, match="exceeds the server's max_payload"):
        nats_client.publish_nowait("big", b"x" * (2 * 1024 * 1024))


async def test_slow_subscriber_holds_at_most_max_pending_in_the_bridge(
    nats_client: NatsClient,
) -> None:
    async with nats_client.subscribe("slow", max_pending=64, max_batch=16) as sub:
        for i in range(500):
            nats_client.publish_nowait("slow", str(i).encode())
        await nats_client.flush()
        await trio.testing.wait_all_tasks_blocked()
        stats = nats_client.statistics()
        # Nothing consumed yet: the bridge holds at most max_pending; nats-py queues the rest.
        assert stats.delivered_msgs == 0
        assert sub._inbox._sent <= 64
        batches = await _collect(sub, 500)
    assert [int(m.data) for b in batches for m in b] == list(range(500))


# -- request / reply ------------------------------------------------------------------------------


async def test_request_gets_the_reply_of_a_trio_responder(nats_url: str, nats_bridge: str) -> None:
    async with connect(nats_url, bridge=nats_bridge) as nc:  # type: ignore[arg-type]
        async with nc.subscribe("svc.echo") as sub, trio.open_nursery() as nursery:

            async def responder() -> None:
                async for batch in sub:
                    for m in batch:
                        nc.publish_nowait(m.reply, b"echo:" + m.data)

            nursery.start_soon(responder)
            reply = await nc.request("svc.echo", b"hi", timeout=2.0)
            nursery.cancel_scope.cancel()
    assert reply.data == b"echo:hi"


async def test_a_request_cancelled_from_trio_is_abandoned_and_the_client_goes_on(
    nats_url: str, nats_bridge: str
) -> None:
    async with connect(nats_url, bridge=nats_bridge) as nc:  # type: ignore[arg-type]
        async with nc.subscribe("svc.slow") as slow, nc.subscribe("svc.echo") as echo, \
                trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def ask_slow() -> None:
                with scope:
                    await nc.request("svc.slow", b"?", timeout=60.0)

            nursery.start_soon(ask_slow)
            with trio.fail_after(HANG_GUARD_S):
                asked = await slow.receive()  # the request is out: cancel it in flight
            scope.cancel()

            async def responder() -> None:
                async for batch in echo:
                    for m in batch:
                        nc.publish_nowait(m.reply, b"echo:" + m.data)

            nursery.start_soon(responder)
            with trio.fail_after(HANG_GUARD_S):
                reply = await nc.request("svc.echo", b"after", timeout=5.0)
            nursery.cancel_scope.cancel()
    assert scope.cancelled_caught and [m.data for m in asked] == [b"?"]
    assert reply.data == b"echo:after"


async def test_request_without_responders_raises_no_responders(nats_client: NatsClient) -> None:
    with pytest.raises(NatsNoResponders, match=r"request to 'nobody\.home': no responders") as info:
        await nats_client.request("nobody.home", b"", timeout=1.0)
    assert isinstance(info.value.__cause__, nats.errors.NoRespondersError)


async def test_request_to_a_silent_responder_raises_nats_timeout(nats_client: NatsClient) -> None:
    async with nats_client.subscribe("svc.silent"):
        with pytest.raises(NatsTimeout, match=r"request to 'svc\.silent': timed out") as info:
            await nats_client.request("svc.silent", b"", timeout=0.2)
    assert info.value.code == "XY-NATS-002"


# -- JetStream -------------------------------------------------------------------------------------


async def test_stream_publish_then_pull_from_sequence_and_from_time(
    nats_client: NatsClient,
) -> None:
    js = nats_client.jetstream()
    await js.ensure_stream("TICKS", ["js.tick.>"], max_msgs_per_subject=1000)
    seqs = await js.publish_many([(f"js.tick.v.{i % 3}", str(i).encode()) for i in range(10)])
    assert seqs == list(range(1, 11))
    last = await js.publish("js.tick.v.0", b"10")
    assert last == 11
    async with js.pull("TICKS", "js.tick.>", deliver=("seq", 5)) as consumer:
        msgs = await consumer.fetch(100, timeout=1.0)
    assert [m.seq for m in msgs] == list(range(5, 12))
    assert [m.data for m in msgs] == [str(i).encode() for i in range(4, 11)]
    assert all(m.time is not None for m in msgs)

    cutoff = msgs[-1].time
    assert cutoff is not None
    later = await js.publish("js.tick.v.1", b"11")
    async with js.pull(
        "TICKS", "js.tick.v.1", deliver=("time", cutoff + datetime.timedelta(microseconds=1))
    ) as consumer:
        msgs = await consumer.fetch(10, timeout=1.0)
        assert [m.seq for m in msgs] == [later]
        assert await consumer.fetch(10, timeout=0.1) == []


async def test_durable_ack_all_consumer_resumes_after_the_acked_batch(
    nats_client: NatsClient,
) -> None:
    js = nats_client.jetstream()
    await js.ensure_stream("DUR", ["dur.>"])
    await js.publish_many([("dur.a", bytes([i])) for i in range(6)])
    async with js.pull("DUR", "dur.>", durable="reader", ack="all") as consumer:
        first = await consumer.fetch(3, timeout=1.0)
        consumer.ack(first)
        await nats_client.flush()
    async with js.pull("DUR", "dur.>", durable="reader", ack="all") as consumer:
        rest = await consumer.fetch(10, timeout=1.0)
    assert [m.seq for m in first] == [1, 2, 3]
    assert [m.seq for m in rest] == [4, 5, 6]


async def test_ack_on_an_ack_none_consumer_is_an_error(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    await js.ensure_stream("NOACK", ["noack.>"])
    async with js.pull("NOACK", "noack.>") as consumer:
        with pytest.raises(BridgeError, match="ack\\(\\) needs ack='all'"):
            consumer.ack([])


async def test_direct_get_last_returns_the_latest_per_subject_or_none(
    nats_client: NatsClient,
) -> None:
    js = nats_client.jetstream()
    await js.ensure_stream("SNAP", ["snap.>"], max_msgs_per_subject=1)
    await js.publish("snap.g1", b"v1")
    seq = await js.publish("snap.g1", b"v2")
    await js.publish("snap.g2", b"other")
    got = await js.direct_get_last("SNAP", "snap.g1")
    assert got is not None and got.data == b"v2" and got.seq == seq
    assert await js.direct_get_last("SNAP", "snap.unknown") is None


async def test_ensure_stream_is_idempotent_and_updates_limits(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    await js.ensure_stream("IDEM", ["idem.>"])
    await js.publish("idem.x", b"1")
    state = await js.ensure_stream("IDEM", ["idem.>"], max_msgs_per_subject=5)
    assert state.messages == 1 and state.last_seq == 1


async def test_jetstream_errors_are_mapped_to_not_found(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    with pytest.raises(NatsNotFound, match="no stream captures this subject"):
        await js.publish("no.stream.here", b"x")
    with pytest.raises(NatsNotFound, match="stream info 'MISSING': not found") as info:
        await js.stream_state("MISSING")
    assert info.value.code == "XY-NATS-003"
    assert not isinstance(info.value, nats.errors.Error)
    with pytest.raises(NatsNotFound):
        await js.kv("nobucket", create=False)


# -- key/value ------------------------------------------------------------------------------------


async def test_kv_put_get_delete_keys(nats_client: NatsClient) -> None:
    kv = await nats_client.jetstream().kv("flags", history=3)
    assert await kv.keys() == []
    r1 = await kv.put("ui.depth", b"5")
    r2 = await kv.put("ui.depth", b"10")
    assert r2 > r1
    entry = await kv.get("ui.depth")
    assert entry is not None and entry.value == b"10" and entry.revision == r2
    await kv.put("ui.theme", b"dark")
    assert sorted(await kv.keys()) == ["ui.depth", "ui.theme"]
    await kv.delete("ui.theme")
    assert await kv.get("ui.theme") is None
    assert await kv.get("never.set") is None


async def test_kv_watch_sees_current_values_then_changes(nats_client: NatsClient) -> None:
    kv = await nats_client.jetstream().kv("watched")
    await kv.put("a", b"1")
    async with kv.watch() as changes:
        with trio.fail_after(HANG_GUARD_S):
            initial = await changes.__anext__()
            await kv.put("b", b"2")
            await kv.delete("a")
            put_b = await changes.__anext__()
            del_a = await changes.__anext__()
    assert (initial.key, initial.value, initial.op) == ("a", b"1", "PUT")
    assert (put_b.key, put_b.value, put_b.op) == ("b", b"2", "PUT")
    assert (del_a.key, del_a.op) == ("a", "DEL")


# -- connection life ------------------------------------------------------------------------------


async def test_subscription_keeps_receiving_after_server_restart_and_outage_publishes_are_buffered(
    nats_server: EmbeddedNats, nats_bridge: str
) -> None:
    async with connect(
        nats_server.url,
        bridge=nats_bridge,
        reconnect_wait=0.05,  # type: ignore[arg-type]
    ) as nc:
        events = nc.events()
        async with nc.subscribe("life.>") as sub:
            nc.publish_nowait("life.before", b"0")
            assert [m.data for b in await _collect(sub, 1) for m in b] == [b"0"]

            await nats_server.stop()
            await _next_event(events, "disconnected")
            assert not nc.is_connected
            # During the outage publishes are buffered by nats-py and sent after the reconnect.
            nc.publish_nowait("life.during", b"1")
            await nats_server.start()
            await _next_event(events, "reconnected")
            assert nc.is_connected
            nc.publish_nowait("life.after", b"2")
            got = [m.data for b in await _collect(sub, 2) for m in b]
    assert got == [b"1", b"2"]
    assert nc.statistics().reconnects == 1


async def test_outage_publishes_beyond_the_reconnect_buffer_raise_backpressure(
    nats_server: EmbeddedNats,
) -> None:
    async with connect(nats_server.url, reconnect_buffer_bytes=2000) as nc:
        events = nc.events()
        await nats_server.stop()
        await _next_event(events, "disconnected")
        for _ in range(50):
            nc.publish_nowait("lost", b"x" * 200)
        with pytest.raises(NatsBackpressure, match=r"reconnect buffer full.*dropped\)"):
            await nc.flush(timeout=0.5)
        assert nc.statistics().publish_dropped > 0


async def test_connect_to_a_closed_port_raises_connection_error(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    await nats_server.stop()
    with pytest.raises(
        NatsConnectionError, match=r"connect to nats://127\.0\.0\.1:\d+: no server reachable"
    ):
        async with connect(url, connect_timeout=0.5):
            pass  # pragma: no cover - not reached


async def test_a_closed_client_refuses_publishes(nats_url: str) -> None:
    async with connect(nats_url) as nc:
        events = nc.events()
    with pytest.raises(NatsConnectionError, match="the client is closed"):
        nc.publish_nowait("x", b"")
    assert [e.kind async for e in events][-1] == "closed"


async def test_a_pong_for_a_cancelled_flush_leaves_the_connection_working(
    nats_url: str, nats_bridge: str
) -> None:
    # What a flush cancelled in flight (a Trio cancellation crossing the bridge, a flush
    # timeout) leaves behind: a PING on the wire whose waiter is cancelled. Its PONG must not
    # stop nats-py's read loop (it raised InvalidStateError there and the connection went deaf).
    async with connect(nats_url, bridge=nats_bridge) as nc:  # type: ignore[arg-type]
        bridge = nc._bridge

        async def abandoned_ping() -> None:
            waiter = asyncio.get_running_loop().create_future()
            waiter.cancel()
            await bridge.aio._send_ping(waiter)

        await bridge.call("an abandoned ping", abandoned_ping)
        with trio.fail_after(HANG_GUARD_S):
            await nc.flush()
            async with nc.subscribe("after.pong") as sub:
                await nc.publish("after.pong", b"still here")
                (msg,) = await sub.receive()
    assert msg.data == b"still here"
