"""A feed re-created while its old consumer cannot be deleted (its NATS node just died; here:
a JetStream API whose deletes never answer, on a real nats-server) goes on within a bound
instead of waiting on the deletion; the old consumer — still alive, still pushing — pushes into
an inbox nobody reads any more (each consumer has its own), so the caller sees no repeat and no
hole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from xypipe._embedded import embedded_nats
from xypipe._nats import connect
from xypipe._stages._jsfeed import JsFeed, js_feed, stream_seq_of

pytestmark = pytest.mark.nats

STREAM = "XY_ZOMBIE"
MAX_PENDING = 16


class DeletesNeverAnswer:
    """The feed's JetStream module, except that a consumer deletion never completes."""

    def __init__(self, js: Any) -> None:
        self._js = js
        self.deletes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def delete_consumer(self, stream: str, name: str) -> bool:
        self.deletes.append(name)
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def _read(feed: JsFeed, through: int, seqs: list[int]) -> None:
    async for batch in feed:
        seqs.extend(stream_seq_of(m.reply) for m in batch)
        feed.ack(batch)
        if seqs[-1] >= through:
            return


async def test_a_consumer_that_cannot_be_deleted_is_left_behind_in_an_inbox_nobody_reads(
        tmp_path: Path) -> None:
    async with embedded_nats(port=0, data_dir=tmp_path / "js") as server, \
            connect(server.url, name="test-zombie") as nc:
        js = nc.jetstream()
        await js.ensure_stream(STREAM, ["zt.>"], storage="memory")
        await js.publish_many((f"zt.{i % 5}", b"x") for i in range(40))
        seqs: list[int] = []
        with trio.fail_after(30):  # hang guard: the old code waited on the deletion forever
            async with js_feed(nc, STREAM, deliver="all", max_pending=MAX_PENDING,
                               max_batch=8) as feed:
                await _read(feed, 40, seqs)
                old = feed.name
                hanging = DeletesNeverAnswer(feed.js)
                feed.js = hanging
                # What a reconnect to another node raises: re-create the consumer. The old one
                # is alive (its deletion never answers) and keeps pushing into the inbox.
                feed.watch.reconnected()
                await js.publish_many((f"zt.{i % 5}", b"y") for i in range(40))
                await _read(feed, 80, seqs)
                assert feed.recreated == 1 and feed.name != old
                assert hanging.deletes == [old] and feed.left_behind == 1
                old_state = await js.consumer_state(STREAM, old)
                assert old_state is not None, "the old consumer lives on"
                await js.publish_many([("zt.0", b"z")])
                await _read(feed, 81, seqs)
                feed.js = hanging._js  # the closing delete of the current consumer answers
    assert seqs == list(range(1, 82)), seqs
