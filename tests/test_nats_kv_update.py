"""KeyValue.update: a conditional write that is never buffered past its failure.

The first test shows the cause of "a change answered as failed took effect later": a plain put made
while the server is away waits in nats-py's reconnect buffer, the call times out, and the buffered
message is stored once the server is back. ``update`` refuses instead, and a write taken back out
of the buffer (what ``update`` does when it fails) never reaches the server.
"""

from __future__ import annotations

import pytest
import trio

from xypipe._embedded import EmbeddedNats
from xypipe._errors import BridgeError, KvRevisionConflict, NatsConnectionError, NatsTimeout
from xypipe._nats import NatsClient, connect
from xypipe._nats._kv import _withdraw


async def _wait_connected(nc: NatsClient, want: bool) -> None:
    """Until the client's state is ``want`` (its own events say when it changes)."""
    events = nc.events()
    with trio.fail_after(15):
        while nc.is_connected != want:
            await events.receive()


async def test_buffered_put_lands_late_but_update_is_refused_and_never_lands(
    nats_server: EmbeddedNats,
) -> None:
    async with connect(nats_server.url, name="kv-update", reconnect_wait=0.05) as nc:
        kv = await nc.jetstream(timeout=0.5).kv("flags_test", history=4)
        await nats_server.stop()
        await _wait_connected(nc, False)

        # The cause: the put fails for its caller ...
        try:
            await kv.put("plain", b"late")
        except NatsTimeout:
            pass
        else:
            raise AssertionError("a put while the server is away cannot succeed")
        # ... the conditional write is refused at once, before anything is queued.
        try:
            await kv.update("guarded", b"never", last=0)
        except NatsConnectionError as exc:
            assert "refused instead of buffered" in str(exc)
        else:
            raise AssertionError("update while disconnected must be refused")

        await nats_server.start()
        await _wait_connected(nc, True)
        await nc.flush()
        # ... and the failed put was stored anyway once the buffer flushed.
        with trio.fail_after(10):
            while (entry := await kv.get("plain")) is None:  # noqa: ASYNC110 (store polled)
                await trio.sleep(0.05)
        assert entry.value == b"late"
        assert await kv.get("guarded") is None


async def test_a_withdrawn_buffered_write_never_reaches_the_server(
    nats_server: EmbeddedNats,
) -> None:
    async with connect(nats_server.url, name="kv-withdraw", reconnect_wait=0.05) as nc:
        kv = await nc.jetstream(timeout=0.5).kv("flags_test", history=4)
        await nats_server.stop()
        await _wait_connected(nc, False)
        try:
            await kv.put("k", b"withdraw-me-7f3a")
        except NatsTimeout:
            pass

        async def withdraw() -> int:
            return _withdraw(nc._bridge.aio, b"withdraw-me-7f3a")

        assert await nc._bridge.call("withdraw", withdraw) == 1
        await nats_server.start()
        await _wait_connected(nc, True)
        await nc.flush()
        marker = await kv.put("after", b"x")  # ordered after anything still buffered
        assert marker >= 1
        assert await kv.get("k") is None


async def test_update_expects_the_revision_and_refuses_a_stale_one(
    nats_server: EmbeddedNats,
) -> None:
    async with connect(nats_server.url, name="kv-occ") as nc:
        kv = await nc.jetstream(timeout=2).kv("flags_test", history=4)
        r1 = await kv.update("k", b"one", last=0, headers={"Xy-Principal": "root"})
        r2 = await kv.update("k", b"two", last=r1)
        assert r2 > r1
        try:
            await kv.update("k", b"stale", last=r1)
        except KvRevisionConflict as exc:
            assert exc.code == "XY-ADM-012" and "moved on" in str(exc)
        else:
            raise AssertionError("a stale expected revision must be refused")
        entry = await kv.get("k")
        assert entry is not None and entry.value == b"two" and entry.revision == r2


@pytest.mark.parametrize("key", ["flag\n", " flag", "flag ", "", ".flag", "fl\u0430g", "a b"])
async def test_kv_keys_are_checked_whole_before_anything_is_sent(
    nats_client: NatsClient, key: str
) -> None:
    kv = await nats_client.jetstream(timeout=2).kv("flags_test")
    for call in (kv.get(key), kv.put(key, b"x"), kv.update(key, b"x", last=0), kv.delete(key)):
        with pytest.raises(BridgeError, match="expected letters, digits"):
            await call
    assert await kv.keys() == []
