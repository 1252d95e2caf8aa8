"""The client SDK against a real gateway and a real nats-server: snapshot, then every delta in
sequence with its checksum verified; a bad checksum detected and repaired from a snapshot."""

from __future__ import annotations

import pytest
from gw_support import (
    FakeAggregator,
    Keys,
    book_matches,
    http_port,
    running_gateway,
    updates_until,
)

import xypipe.client
from xypipe.client import (
    Connected,
    DeltaApplied,
    DeltaSkipped,
    ErrorReceived,
    SnapshotApplied,
    SnapshotRequested,
    Subscribed,
)
from xypipe.contracts import Delta

pytestmark = pytest.mark.nats


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


async def test_subscribe_gets_a_snapshot_then_every_delta_in_sequence_verified(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_deltas(3)
    await aggregator.publish_snapshots()
    async with running_gateway(nats_server.url, keys) as runner, \
            xypipe.client.connect(ws_url(http_port(runner)), token=keys.token("alice")) as c:
        assert c.principal == "alice" and c.session_id
        first = await updates_until(c, lambda u: isinstance(u, Connected))
        assert first[-1] == Connected(c.session_id, "alice", first[-1].heartbeat_ms,  # type: ignore[union-attr]
                                      first[-1].token_expires_us, 0, (), ())  # type: ignore[union-attr]
        await c.subscribe("fx")
        seen = await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
        assert Subscribed(("fx",)) in seen
        snap = seen[-1]
        assert isinstance(snap, SnapshotApplied)
        assert (snap.group, snap.epoch, snap.shard_seq, snap.resync) == ("fx", 7, ((0, 3),),
                                                                          False)
        assert book_matches(c, "fx", aggregator.state["fx"])
        await aggregator.publish_deltas(5, ["fx", "rates"])
        seen = await updates_until(c, lambda u: isinstance(u, DeltaApplied) and u.seq == 8)
        applied = [u for u in seen if isinstance(u, DeltaApplied)]
        assert [u.seq for u in applied] == [4, 5, 6, 7, 8]
        assert all(u.group == "fx" and u.checksum_mismatches == 0 for u in applied)
        assert not [u for u in seen if isinstance(u, DeltaSkipped | ErrorReceived)]
        book = c.book("fx")
        assert book is not None and book.synced and dict(book.seqs) == {0: 8}
        assert book_matches(c, "fx", aggregator.state["fx"])
        stats = c.statistics()
        assert (stats.snapshots, stats.applied, stats.checksum_mismatches) == (1, 5, 0)
        assert stats.checksums_verified == 3 + sum(len(u.symbols) for u in applied)
        assert c.book("rates") is None  # never subscribed: its deltas are not ours
        await c.unsubscribe("fx")
        assert c.book("fx") is None


async def test_a_bad_checksum_is_detected_and_the_group_repaired_from_a_snapshot(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner, \
            xypipe.client.connect(ws_url(http_port(runner)), token=keys.token()) as c:
        await c.subscribe("fx")
        await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
        # A delta whose first entry says one thing and carries another: applied, caught.
        bad = Delta.FromString(aggregator.delta_bytes("fx"))
        bad.symbols[0].checksum ^= 1
        aggregator.nc.publish_nowait("xy.md.tick.fx", bad.SerializeToString())
        await aggregator.nc.flush()
        seen = await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
        kinds = [type(u).__name__ for u in seen]
        assert kinds == ["DeltaApplied", "SnapshotRequested", "SnapshotApplied"], kinds
        delta, asked, resync = seen
        assert isinstance(delta, DeltaApplied) and delta.checksum_mismatches == 1
        assert asked == SnapshotRequested("fx", "checksum")
        # The gateway resent the group from its cached snapshot, followed by the deltas after
        # it (the corrupted one again, mismatching again: what the aggregator really sent).
        assert isinstance(resync, SnapshotApplied) and resync.resync
        # The aggregator moves on; the client asks again (once per snapshot_timeout_s, not in
        # a loop with the gateway) until a snapshot without the bad entry repairs the group.
        await aggregator.publish_deltas(2, ["fx"])
        await aggregator.publish_snapshots(["fx"])
        await updates_until(c, lambda u: isinstance(u, SnapshotApplied)
                            and u.shard_seq == ((0, 3),))
        assert book_matches(c, "fx", aggregator.state["fx"])
        await aggregator.publish_deltas(1, ["fx"])
        last = await updates_until(c, lambda u: isinstance(u, DeltaApplied) and u.seq == 4)
        assert last[-1].checksum_mismatches == 0  # type: ignore[union-attr]
        book = c.book("fx")
        assert book is not None and book.synced
        stats = c.statistics()
        assert stats.checksum_mismatches >= 2 and 2 <= stats.snapshot_requests <= 3


async def test_a_group_the_token_does_not_cover_is_refused_and_the_others_served(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots()
    token = keys.token("bob", ["xy.md.*.fx", "xy.md.*.fx.>"])
    async with running_gateway(nats_server.url, keys) as runner, \
            xypipe.client.connect(ws_url(http_port(runner)), token=token) as c:
        await c.subscribe("fx", "rates")
        seen = await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
        denied = [u for u in seen if isinstance(u, ErrorReceived)]
        assert [(e.name, e.group, e.fatal) for e in denied] == [
            ("ERROR_CODE_ACL_DENIED", "rates", False)]
        assert isinstance(seen[-1], SnapshotApplied) and seen[-1].group == "fx"
        assert c.connected


async def test_a_program_can_ask_for_a_fresh_snapshot_at_most_once_per_timeout(
    nats_server, keys: Keys, aggregator: FakeAggregator
):
    await aggregator.publish_snapshots(["fx"])
    async with running_gateway(nats_server.url, keys) as runner, \
            xypipe.client.connect(ws_url(http_port(runner)), token=keys.token()) as c:
        await c.subscribe("fx")
        await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
        assert await c.request_snapshot("fx")
        assert not await c.request_snapshot("fx")  # one is on its way
        assert not await c.request_snapshot("rates")  # not subscribed
        again = await updates_until(c, lambda u: isinstance(u, SnapshotApplied))
        assert isinstance(again[-1], SnapshotApplied) and again[-1].resync
        book = c.book("fx")
        assert book is not None and book.synced
        assert c.statistics().snapshot_requests == 1
