"""The bridge's KV watch survives a SIGKILL and restart of the nats-server: changes made after
the restart arrive, nothing already delivered arrives again."""

from __future__ import annotations

import signal

import pytest
import trio

from xypipe._embedded import EmbeddedNats
from xypipe._nats import connect

pytestmark = pytest.mark.nats


async def test_kv_watch_follows_changes_after_the_server_is_killed_and_restarted(
    nats_server: EmbeddedNats,
) -> None:
    async with connect(nats_server.url, name="watcher") as nc:
        kv = await nc.jetstream().kv("restart_test", history=4)
        await kv.put("a", b"1")
        events = nc.events()
        async with kv.watch(">") as watch:
            with trio.fail_after(10):
                first = await watch.__anext__()
            assert (first.key, first.value) == ("a", b"1")
            await nats_server.kill(signal.SIGKILL)
            await nats_server.start()
            with trio.fail_after(20):
                async for ev in events:
                    if ev.kind == "reconnected":
                        break
            async with connect(nats_server.url, name="writer") as other:
                okv = await other.jetstream().kv("restart_test", create=False)
                await okv.put("b", b"2")
                await okv.put("a", b"3")
            got = []
            # The guard is below nats-py's own recovery (its ordered consumer resets after two
            # missed 5 s heartbeats, and gives up for good if that reset meets the server
            # still down): only the bridge's restart on reconnect passes it.
            with trio.fail_after(8):
                while len(got) < 2:
                    got.append(await watch.__anext__())
            assert [(e.key, e.value) for e in got] == [("b", b"2"), ("a", b"3")]
            # Nothing else (no replay of "a"=1): the next entry is a fresh change.
            await kv.put("c", b"4")
            with trio.fail_after(10):
                nxt = await watch.__anext__()
            assert (nxt.key, nxt.value) == ("c", b"4")
