"""The fan-out core: history, snapshot bridging, shared frame bytes, per-connection levels."""

from __future__ import annotations

import pytest
from gw_support import FakeAggregator
from prometheus_client import CollectorRegistry

from xypipe._contracts import ContractDecoder
from xypipe._degrade import Level
from xypipe._errors import XyError
from xypipe._gateway._hub import BadMessage, Hub, Outbox, SubState
from xypipe._md.seqrules import ResumeOutcome
from xypipe._md.wire import varint_field, varint_tag
from xypipe.contracts import ResumePoint, ServerFrame

BRIDGED, TOO_OLD, OTHER_EPOCH = (ResumeOutcome.BRIDGED, ResumeOutcome.TOO_OLD,
                                 ResumeOutcome.OTHER_EPOCH)


def decode(built) -> ServerFrame:  # type: ignore[no-untyped-def]
    # Strip the WebSocket header (2 bytes below 126, 4 below 64 KiB) the hub puts in front.
    data = built.data
    n = data[1] & 0x7F
    f = ServerFrame()
    f.ParseFromString(data[2:] if n < 126 else data[4:] if n == 126 else data[10:])
    return f


@pytest.fixture
def agg() -> FakeAggregator:
    return FakeAggregator(None, ["fx", "news"])


def feed(hub: Hub, agg: FakeAggregator, group: str, n: int, now: float = 0.0) -> None:
    for _ in range(n):
        hub.on_delta(f"xy.md.tick.{group}", agg.delta_bytes(group), now)


def snap(hub: Hub, agg: FakeAggregator, group: str, now: float = 0.0) -> None:
    hub.on_snapshot(f"xy.md.snapshot.{group}", agg.snapshot(group).SerializeToString(), now)


def test_snapshot_then_deltas_bridged_from_history_without_gap_or_duplicate(agg) -> None:
    hub = Hub(history=16)
    feed(hub, agg, "fx", 3)
    snap(hub, agg, "fx")          # consistent with seq 3
    feed(hub, agg, "fx", 2)       # 4, 5
    ob = Outbox(1)
    hub.subscribe(ob, "fx", frozenset())
    f = decode(hub.build(ob, 1))
    assert [s.group for s in f.snapshots] == ["fx"]
    assert [d.seq for d in f.deltas] == [4, 5] and f.ts_send_us == 1
    feed(hub, agg, "fx", 1)
    assert [d.seq for d in decode(hub.build(ob, 2)).deltas] == [6]
    assert hub.build(ob, 3) is None


def test_connections_due_the_same_deltas_share_the_same_frame_bytes(agg) -> None:
    hub = Hub()
    snap(hub, agg, "fx")
    a, b = Outbox(1), Outbox(2)
    for ob in (a, b):
        hub.subscribe(ob, "fx", frozenset())
        hub.build(ob, 1)
    feed(hub, agg, "fx", 2)
    fa, fb = hub.build(a, 5), hub.build(b, 5)
    assert fa is fb and fa.deltas == 2
    assert hub.stats.cache_hits >= 1


def test_gap_sends_subscribers_back_to_a_snapshot_the_history_can_bridge(agg) -> None:
    hub = Hub()
    snap(hub, agg, "fx")
    ob = Outbox(1)
    hub.subscribe(ob, "fx", frozenset())
    hub.build(ob, 1)
    feed(hub, agg, "fx", 1)
    agg.seq["fx"] += 5  # five deltas the gateway never saw
    feed(hub, agg, "fx", 1)
    assert hub.build(ob, 2) is None  # nothing half-consistent goes out
    assert ob.subs["fx"].state == SubState.SYNC and hub.stats.gaps == 1
    snap(hub, agg, "fx")
    feed(hub, agg, "fx", 1)
    f = decode(hub.build(ob, 3))
    assert len(f.snapshots) == 1 and [d.seq for d in f.deltas] == [agg.seq["fx"]]


def test_a_subscriber_the_cache_cannot_serve_asks_for_a_fresh_snapshot_until_one_comes(
    agg,
) -> None:
    hub = Hub(snapshot_request_interval=0.25)
    snap(hub, agg, "fx")
    ob = Outbox(1)
    hub.subscribe(ob, "fx", frozenset())
    hub.build(ob, 1)
    assert hub.take_snapshot_requests(0.0) == []  # served from the cache: nothing to ask
    feed(hub, agg, "fx", 1)
    agg.seq["fx"] += 5  # a gap: the cached snapshot cannot be bridged any more
    feed(hub, agg, "fx", 1)
    assert hub.build(ob, 2) is None
    assert hub.take_snapshot_requests(1.0) == ["fx"]
    assert hub.take_snapshot_requests(1.1) == []  # not sooner than the interval ...
    assert hub.take_snapshot_requests(1.3) == ["fx"]  # ... but again while it still waits
    snap(hub, agg, "fx")  # the aggregator's answer
    feed(hub, agg, "fx", 1)
    f = decode(hub.build(ob, 3))
    assert len(f.snapshots) == 1 and [d.seq for d in f.deltas] == [agg.seq["fx"]]
    assert hub.take_snapshot_requests(5.0) == []


def test_snapshots_are_asked_only_for_groups_the_aggregator_is_seen_publishing(agg) -> None:
    hub = Hub()
    ob = Outbox(1)
    hub.subscribe(ob, "nobody", frozenset())
    assert hub.take_snapshot_requests(0.0) == []
    hub.subscribe(ob, "fx", frozenset())
    feed(hub, agg, "fx", 1)  # the group exists, but no snapshot is cached yet
    assert hub.take_snapshot_requests(1.0) == ["fx"]
    hub.unsubscribe(ob, "fx")
    assert hub.take_snapshot_requests(2.0) == []


def test_resume_from_history_or_not(agg) -> None:
    hub = Hub(history=4)
    snap(hub, agg, "fx")
    feed(hub, agg, "fx", 6)
    ob = Outbox(1)
    assert hub.resume(ob, "fx", [ResumePoint(group="fx", shard=0, epoch=7, seq=3)]) == BRIDGED
    assert [d.seq for d in decode(hub.build(ob, 1)).deltas] == [4, 5, 6]
    ob2 = Outbox(2)
    assert hub.resume(ob2, "fx", [ResumePoint(group="fx", shard=0, epoch=7, seq=1)]) == TOO_OLD
    assert hub.resume(Outbox(3), "fx",
                      [ResumePoint(group="fx", shard=0, epoch=8, seq=5)]) == OTHER_EPOCH


def test_l1_merges_and_l2_trims_per_connection(agg) -> None:
    hub = Hub()
    snap(hub, agg, "fx")
    slow, fast = Outbox(1), Outbox(2)
    for ob in (slow, fast):
        hub.subscribe(ob, "fx", frozenset())
        hub.build(ob, 1)
    feed(hub, agg, "fx", 4)
    slow.level = Level.L1
    merged = decode(hub.build(slow, 2)).deltas
    assert len(merged) == 1 and (merged[0].first_seq, merged[0].seq) == (1, 4)
    assert all(len(s.bids) == 5 for s in merged[0].symbols)
    assert [d.seq for d in decode(hub.build(fast, 2)).deltas] == [1, 2, 3, 4]
    feed(hub, agg, "fx", 2)
    slow.level = Level.L2
    trimmed = decode(hub.build(slow, 3)).deltas[0]
    assert all(s.trimmed and len(s.bids) == 1 and len(s.asks) == 1 for s in trimmed.symbols)


def test_paused_group_stops_and_resumes_from_a_snapshot(agg) -> None:
    hub = Hub()
    snap(hub, agg, "fx")
    snap(hub, agg, "news")
    ob = Outbox(1)
    hub.subscribe(ob, "fx", frozenset())
    hub.subscribe(ob, "news", frozenset())
    hub.build(ob, 1)
    hub.set_paused(ob, frozenset({"news"}))
    feed(hub, agg, "fx", 1)
    feed(hub, agg, "news", 1)
    assert {d.group for d in decode(hub.build(ob, 2)).deltas} == {"fx"}
    hub.set_paused(ob, frozenset())
    snap(hub, agg, "news")
    f = decode(hub.build(ob, 3))
    assert [s.group for s in f.snapshots] == ["news"]


def test_queue_pressure_reads_bytes_and_age_off_the_history(agg) -> None:
    hub = Hub()
    snap(hub, agg, "fx")
    ob = Outbox(1)
    hub.subscribe(ob, "fx", frozenset())
    hub.build(ob, 1)
    feed(hub, agg, "fx", 3, now=10.0)
    p = hub.pressure(ob, 10.5, max_bytes=10**9, max_age=1.0)
    assert p.value == pytest.approx(0.5) and "oldest 500" in p.source
    hub.build(ob, 2)
    assert hub.pressure(ob, 11.0, max_bytes=10**9, max_age=1.0).value == 0.0


def test_unusable_aggregator_messages_raise_a_named_error() -> None:
    hub = Hub()
    with pytest.raises(BadMessage, match=r"xy\.md\.tick\.fx: not a Delta"):
        hub.on_delta("xy.md.tick.fx", b"\xff\xff", 0.0)
    with pytest.raises(BadMessage, match="without group or seq"):
        hub.on_delta("xy.md.tick.fx", b"", 0.0)


def test_an_unusable_message_is_an_xy_error_with_the_gateway_code() -> None:
    registry = CollectorRegistry()
    hub = Hub(decoder=ContractDecoder(registry))
    with pytest.raises(BadMessage) as info:
        hub.on_delta("xy.md.tick.fx", b"\xff\xff", 0.0)
    assert isinstance(info.value, XyError) and isinstance(info.value, ValueError)
    assert info.value.code == "XY-GW-001" and info.value.subject == "xy.md.tick.fx"
    assert registry.get_sample_value("contract_decode_errors_total",
                                     {"message": "xy.md.v1.Delta"}) == 1


def test_a_newer_aggregator_s_unknown_fields_are_counted_and_forwarded(agg) -> None:
    registry = CollectorRegistry()
    hub = Hub(decoder=ContractDecoder(registry))
    snap(hub, agg, "fx")
    ob = Outbox(1)
    hub.subscribe(ob, "fx", frozenset())
    hub.build(ob, 1)
    newer = agg.delta_bytes("fx") + varint_field(varint_tag(99), 1)  # a field it has not heard of
    hub.on_delta("xy.md.tick.fx", newer, 0.0)
    assert registry.get_sample_value("contract_unknown_fields_total",
                                     {"message": "xy.md.v1.Delta"}) == 1
    built = hub.build(ob, 2)
    assert built is not None and newer in built.data  # the bytes go on as they came
