"""Push consumers through the bridge's JetStream module: created under a name of ours, looked
up, deleted — on the closed bus, as the aggregator role (the permissions its feed lives with)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from xypipe._embedded import EmbeddedNats, embedded_nats
from xypipe._errors import BridgeError, NatsNotFound
from xypipe._nats import NatsClient, PushConsumerConfig, connect
from xypipe._nats_keys import BusKeys, seed_file_of
from xypipe._nats_roles import BusLayout, inbox_prefix

pytestmark = pytest.mark.nats


@pytest.fixture
async def role_bus(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedNats, Path]]:
    keys = BusKeys.load_or_create(tmp_path)
    conf = keys.write_server_config(BusLayout())
    async with embedded_nats(port=0, data_dir=tmp_path / "js", config_file=conf) as server:
        yield server, tmp_path


def _as(bus: tuple[EmbeddedNats, Path], role: str):  # type: ignore[no-untyped-def]
    server, keys_dir = bus
    return connect(server.url, name=f"test-{role}", nkeys_seed=str(seed_file_of(keys_dir, role)),
                   inbox_prefix=inbox_prefix(role))


async def _source_stream(admin: NatsClient) -> None:
    js = admin.jetstream()
    await js.ensure_stream("XY_SRC", ["xy.src.>", "xy.ref.>"], storage="memory")
    await js.publish_many([("xy.ref.contract.XNAS.AAA", b"c1"), ("xy.src.tick.XNAS.AAA", b"t1"),
                           ("xy.ref.contract.XNAS.BBB", b"c2")])


async def test_a_filtered_push_consumer_delivers_is_found_and_is_deleted_once(
    role_bus: tuple[EmbeddedNats, Path],
) -> None:
    async with _as(role_bus, "superuser") as admin:
        await _source_stream(admin)
    async with _as(role_bus, "aggregator") as nc:
        js = nc.jetstream()
        deliver_to = f"{nc.inbox_prefix}.test.{id(nc)}"
        config = PushConsumerConfig(deliver_subject=deliver_to, filter_subject="xy.ref.contract.>",
                                    max_ack_pending=16)
        async with nc.subscribe(deliver_to) as sub:
            state = await js.create_push_consumer("XY_SRC", "xyfeed_test1", config,
                                                  deliver="all")
            assert (state.stream, state.name, state.delivered_seq) == ("XY_SRC", "xyfeed_test1", 0)
            got: list[tuple[str, bytes]] = []
            with trio.fail_after(10):
                while len(got) < 2:
                    got += [(m.subject, m.data) for m in await sub.receive() if m.reply]
            assert got == [("xy.ref.contract.XNAS.AAA", b"c1"), ("xy.ref.contract.XNAS.BBB", b"c2")]
            seen = await js.consumer_state("XY_SRC", "xyfeed_test1")
            assert seen is not None and seen.delivered_seq == 3 and seen.num_pending == 0
            assert await js.delete_consumer("XY_SRC", "xyfeed_test1") is True
        assert await js.consumer_state("XY_SRC", "xyfeed_test1") is None
        assert await js.delete_consumer("XY_SRC", "xyfeed_test1") is False


async def test_a_push_consumer_from_a_sequence_reports_where_it_starts(
    role_bus: tuple[EmbeddedNats, Path],
) -> None:
    async with _as(role_bus, "superuser") as admin:
        await _source_stream(admin)
        js = admin.jetstream()
        config = PushConsumerConfig(deliver_subject=f"_INBOX.superuser.test.{id(admin)}")
        state = await js.create_push_consumer("XY_SRC", "xyfeed_from3", config,
                                              deliver=("seq", 3))
        assert state.delivered_seq == 2  # the start sequence - 1: resume bookkeeping reads it
        assert await js.delete_consumer("XY_SRC", "xyfeed_from3")


async def test_bad_consumer_names_and_missing_streams_are_named_errors(
    role_bus: tuple[EmbeddedNats, Path],
) -> None:
    async with _as(role_bus, "superuser") as admin:
        await _source_stream(admin)
        js = admin.jetstream()
        config = PushConsumerConfig(deliver_subject="_INBOX.superuser.nowhere")
        for bad in ("", "xy.feed", "feed>", "two words"):
            with pytest.raises(BridgeError, match=r"invalid consumer name"):
                await js.create_push_consumer("XY_SRC", bad, config, deliver="new")
            with pytest.raises(BridgeError, match=r"invalid consumer name"):
                await js.consumer_state("XY_SRC", bad)
        with pytest.raises(NatsNotFound, match=r"info of consumer 'c1' on 'NO_SUCH_STREAM'"):
            await js.consumer_state("NO_SUCH_STREAM", "c1")
