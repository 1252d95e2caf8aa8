"""Edges: bounded channels that know their items, bytes and the age of their oldest item."""

import pytest
import trio

from xypipe import Budget, Edge


async def test_statistics_count_items_bytes_and_oldest_age(autojump_clock):
    edge = Edge("a->b", Budget(max_items=4, max_bytes=100, max_age_ms=500))
    await edge.send_channel.send(b"x" * 10)
    await trio.sleep(0.2)
    await edge.send_channel.send(b"y" * 30)
    st = edge.statistics()
    assert (st.items, st.bytes) == (2, 40)
    assert st.oldest_age == pytest.approx(0.2)
    assert await edge.receive_channel.receive() == b"x" * 10
    st = edge.statistics()
    assert (st.items, st.bytes, st.oldest_age) == (1, 30, 0.0)


async def test_pressure_is_the_worst_limit_and_names_it(autojump_clock):
    edge = Edge("a->b", Budget(max_items=10, max_bytes=100, max_age_ms=1000))
    await edge.send_channel.send(b"z" * 90)
    p = edge.statistics().pressure()
    assert p.value == pytest.approx(0.9)
    assert p.source == "edge a->b bytes 90/100"
    await trio.sleep(2.0)
    p = edge.statistics().pressure()
    assert p.value == pytest.approx(2.0)
    assert p.source == "edge a->b oldest item 2000 ms/1000 ms"


async def test_a_full_edge_blocks_the_producer():
    edge = Edge("a->b", Budget(max_items=2))
    edge.send_channel.send_nowait(1)
    edge.send_channel.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        edge.send_channel.send_nowait(3)
    assert edge.statistics().items == 2


async def test_a_cancelled_send_is_not_counted_as_queued():
    edge = Edge("a->b", Budget(max_items=1))
    await edge.send_channel.send(b"first")
    with trio.move_on_after(0.01):
        await edge.send_channel.send(b"never-delivered")
    st = edge.statistics()
    assert (st.items, st.bytes) == (1, 5)
    assert await edge.receive_channel.receive() == b"first"
    assert edge.statistics().items == 0


async def test_blocked_senders_are_accounted_in_delivery_order(autojump_clock):
    edge = Edge("a->b", Budget(max_items=1))
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(edge.send_channel.send, b"%d" % i * (i + 1))
            await trio.sleep(0.1)
        got = []
        for _ in range(3):
            got.append(await edge.receive_channel.receive())
            st = edge.statistics()
            assert st.bytes == sum(len(x) for x in [b"0", b"11", b"222"][len(got):])
    assert got == [b"0", b"11", b"222"]


async def test_closing_the_sender_ends_the_receivers_iteration():
    edge = Edge("a->b", Budget(max_items=8))
    for i in range(3):
        await edge.send_channel.send(i)
    edge.send_channel.close()
    assert [x async for x in edge.receive_channel] == [0, 1, 2]
