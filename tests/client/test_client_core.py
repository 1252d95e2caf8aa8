"""The client's protocol core fed frames and times, no socket, no clock: what it sends, what
it concludes, and how a close maps to the error the client raises."""

from __future__ import annotations

import pytest

from xypipe import Level
from xypipe._client._core import Backoff, ClientCore, CoreOptions, close_error
from xypipe._md.book import state_checksum
from xypipe.client import (
    BadFrame,
    Connected,
    Degraded,
    DeltaApplied,
    DeltaSkipped,
    ErrorReceived,
    FrameReceived,
    GatewayAuthError,
    GatewayClosed,
    SnapshotApplied,
    SnapshotRequested,
    Subscribed,
    TokenRefreshed,
)
from xypipe.contracts import (
    ClientFrame,
    DegradeChange,
    Delta,
    Error,
    ErrorCode,
    GroupRef,
    Pong,
    ServerFrame,
    Snapshot,
    SymbolState,
    Welcome,
)
from xypipe.contracts import (
    Subscribed as SubscribedFrame,
)

WALL = 1_000_000_000


def welcome(**kw: object) -> bytes:
    fields: dict[str, object] = {"session_id": "s1", "protocol_version": 1, "heartbeat_ms": 1000,
                                 "principal": "alice"}
    fields.update(kw)
    return ServerFrame(welcome=Welcome(**fields)).SerializeToString()  # type: ignore[arg-type]


def sent(core: ClientCore) -> list[ClientFrame]:
    return [ClientFrame.FromString(b) for b in core.take_outgoing()]


KINDS = ("hello", "subscribe", "unsubscribe", "resume", "ping", "refresh", "snapshot_request",
         "metrics")


def kinds(frames: list[ClientFrame]) -> list[str]:
    return [next(n for n in KINDS if f.HasField(n)) for f in frames]


def sym(name: str, seq: int, **kw: object) -> SymbolState:
    s = SymbolState(venue="X", symbol=name, seq=seq, last=100 + seq, **kw)  # type: ignore[arg-type]
    if "checksum" not in kw:
        s.checksum = state_checksum(s)
    return s


def connected(*groups: str, heartbeat_ms: int = 1000, **options: object) -> ClientCore:
    core = ClientCore(CoreOptions(**options))  # type: ignore[arg-type]
    core.subscribe(groups)
    hello = ClientFrame.FromString(core.open("jwt"))
    assert hello.hello.token == "jwt" and hello.hello.protocol_version == 1
    core.receive(welcome(heartbeat_ms=heartbeat_ms), 0.0, WALL)
    return core


def frame(**fields: object) -> bytes:
    return ServerFrame(**fields).SerializeToString()  # type: ignore[arg-type]


def test_hello_then_welcome_subscribes_the_wanted_groups() -> None:
    core = ClientCore()
    core.subscribe(["fx", "rates"])
    core.subscribe(["eq"], shards=[1, 3])
    assert core.take_outgoing() == []  # nothing before the session is open
    core.open("jwt")
    updates = core.receive(welcome(token_expires_us=WALL + 60_000_000), 0.0, WALL)
    assert updates == [Connected("s1", "alice", 1000, WALL + 60_000_000, 0, (),
                                 ("fx", "rates", "eq"))]
    (sub,) = sent(core)
    assert [(g.group, list(g.shards)) for g in sub.subscribe.groups] == [
        ("fx", []), ("rates", []), ("eq", [1, 3])]
    assert core.receive(frame(subscribed=SubscribedFrame(groups=[GroupRef(group="fx")])),
                        0.1, WALL) == [Subscribed(("fx",))]


def test_a_frame_applies_its_snapshots_before_its_deltas() -> None:
    core = connected("fx")
    snap = Snapshot(group="fx", epoch=7, version=1, shard_seq={0: 1}, symbols=[sym("A", 1)])
    d = Delta(group="fx", epoch=7, seq=2, symbols=[sym("A", 2)], level=1, ts_emit_us=5)
    updates = core.receive(frame(deltas=[d], snapshots=[snap]), 0.1, WALL)
    assert [type(u) for u in updates] == [SnapshotApplied, DeltaApplied]
    assert updates[1] == DeltaApplied("fx", 0, 7, 0, 2, (d.symbols[0],), (), 1, 5)
    book = core.book("fx")
    assert book is not None and book.synced and book.get("X", "A") == d.symbols[0]
    assert core.statistics().checksums_verified == 2


def test_deltas_of_groups_not_subscribed_are_ignored() -> None:
    core = connected("fx")
    assert core.receive(frame(deltas=[Delta(group="rates", epoch=7, seq=1)]), 0.1, WALL) == []
    assert core.book("rates") is None


def test_a_gap_asks_for_a_snapshot_once_and_again_when_overdue() -> None:
    core = connected("fx", heartbeat_ms=60_000, snapshot_timeout_s=2.0, metrics_interval_s=0)
    core.receive(frame(snapshots=[Snapshot(group="fx", epoch=7, shard_seq={0: 5})]), 0.0, WALL)
    sent(core)
    updates = core.receive(frame(deltas=[Delta(group="fx", epoch=7, seq=9)]), 0.1, WALL)
    assert updates == [DeltaSkipped("fx", 0, 7, 0, 9, "gap"), SnapshotRequested("fx", "gap")]
    assert [f.snapshot_request.group for f in sent(core)] == ["fx"]
    # Held while waiting; no second request before the timeout.
    updates = core.receive(frame(deltas=[Delta(group="fx", epoch=7, seq=10)]), 0.2, WALL)
    assert updates == [DeltaSkipped("fx", 0, 7, 0, 10, "held")]
    assert core.tick(1.0, WALL).updates == () and sent(core) == []
    assert core.next_deadline() == pytest.approx(2.1)
    due = core.tick(2.1, WALL)
    assert due.updates == (SnapshotRequested("fx", "overdue"),)
    assert kinds(sent(core)) == ["snapshot_request"]
    # The snapshot comes: the held deltas after it are replayed.
    updates = core.receive(frame(snapshots=[Snapshot(group="fx", epoch=7, shard_seq={0: 8})]),
                           2.2, WALL)
    assert [(type(u).__name__, getattr(u, "seq", None)) for u in updates] == [
        ("SnapshotApplied", None), ("DeltaApplied", 9), ("DeltaApplied", 10)]
    assert all(u.replayed for u in updates if isinstance(u, DeltaApplied))


def test_pings_follow_the_heartbeat_and_pongs_measure_the_round_trip() -> None:
    core = connected("fx")  # heartbeat 1000 ms: a ping every 500 ms
    sent(core)
    assert core.read_timeout() == 3.0
    assert core.next_deadline() == 0.5
    assert core.tick(0.4, WALL).updates == () and sent(core) == []
    core.tick(0.5, WALL + 500_000)
    (ping,) = sent(core)
    assert ping.ping.ts_us == WALL + 500_000 and ping.ping.nonce == 1
    core.receive(frame(pong=Pong(ts_us=WALL + 500_000, nonce=1)), 0.52, WALL + 520_000)
    assert core.statistics().best_rtt_ms == 20.0
    assert core.next_deadline() == 1.0


def test_a_welcome_on_an_open_session_is_a_refresh_not_a_reconnect() -> None:
    core = connected("fx")
    core.receive(frame(snapshots=[Snapshot(group="fx", epoch=7, shard_seq={0: 5})]), 0.0, WALL)
    sent(core)
    core.refresh("jwt-2")
    assert sent(core)[0].refresh.token == "jwt-2"
    updates = core.receive(welcome(token_expires_us=WALL + 10_000_000), 1.0, WALL)
    assert updates == [TokenRefreshed(WALL + 10_000_000)]
    assert sent(core) == [] and core.statistics().connects == 1


def test_a_token_is_refreshed_at_four_fifths_of_its_life() -> None:
    core = ClientCore()
    core.open("jwt")
    core.receive(welcome(token_expires_us=WALL + 10_000_000), 0.0, WALL)
    assert not core.tick(7.9, WALL).refresh
    assert core.tick(8.0, WALL).refresh
    core.refresh_failed(8.0)
    assert not core.tick(12.9, WALL).refresh and core.tick(13.0, WALL).refresh


def test_a_reconnect_resumes_live_groups_and_subscribes_the_rest() -> None:
    core = connected("fx", "rates")
    core.subscribe(["eq"], shards=[2])
    core.receive(frame(snapshots=[Snapshot(group="fx", epoch=7, shard_seq={0: 5, 1: 3}),
                                  Snapshot(group="eq", epoch=7, shard_seq={2: 1})]), 0.0, WALL)
    sent(core)
    core.closed()
    core.open("jwt")
    (update,) = core.receive(welcome(session_id="s2"), 5.0, WALL)
    assert isinstance(update, Connected)
    assert (update.reconnects, update.resumed, update.subscribed) == (1, ("fx",), ("rates", "eq"))
    resume, sub = sent(core)
    assert [(p.group, p.shard, p.epoch, p.seq) for p in resume.resume.points] == [
        ("fx", 0, 7, 5), ("fx", 1, 7, 3)]
    # A group narrowed to shards is subscribed again (a resume covers every shard).
    assert [(g.group, list(g.shards)) for g in sub.subscribe.groups] == [("rates", []),
                                                                       ("eq", [2])]


def test_the_hello_after_a_reconnect_names_the_previous_session() -> None:
    core = connected("fx")
    core.closed()
    assert ClientFrame.FromString(core.open("jwt")).hello.session_id == "s1"


def test_an_unsubscribed_group_is_forgotten() -> None:
    core = connected("fx")
    core.receive(frame(snapshots=[Snapshot(group="fx", epoch=7, shard_seq={0: 5})]), 0.0, WALL)
    sent(core)
    core.unsubscribe(["fx", "never"])
    (f,) = sent(core)
    assert [g.group for g in f.unsubscribe.groups] == ["fx"]
    assert core.book("fx") is None
    assert core.receive(frame(deltas=[Delta(group="fx", epoch=7, seq=6)]), 0.1, WALL) == []


def test_snapshot_unavailable_makes_the_next_data_the_baseline() -> None:
    core = connected("fx")
    err = Error(code=ErrorCode.ERROR_CODE_SNAPSHOT_UNAVAILABLE, group="fx", message="none yet")
    (u,) = core.receive(frame(error=err), 0.1, WALL)
    assert u == ErrorReceived(9, "ERROR_CODE_SNAPSHOT_UNAVAILABLE", "none yet", "fx", False, 0)
    (applied,) = core.receive(frame(deltas=[Delta(group="fx", epoch=7, seq=40)]), 0.2, WALL)
    assert isinstance(applied, DeltaApplied) and applied.seq == 40


def test_a_degradation_change_is_reported_with_its_level() -> None:
    core = connected("fx")
    change = DegradeChange(level=3, reason="queue", recovery="below 20 %", paused_groups=["fx"])
    assert core.receive(frame(degrade=change), 0.1, WALL) == [
        Degraded(Level.L3, "queue", "below 20 %", ("fx",))]
    (beyond,) = core.receive(frame(degrade=DegradeChange(level=7)), 0.2, WALL)
    assert isinstance(beyond, Degraded) and beyond.level is Level.L3


def test_undecodable_and_text_frames_are_counted_and_skipped() -> None:
    core = connected("fx")
    (bad,) = core.receive(b"\xff\xff\xff", 0.1, WALL)
    assert isinstance(bad, BadFrame) and "xy.md.v1.ServerFrame" in bad.reason
    (text,) = core.text_frame("hello")
    assert isinstance(text, BadFrame) and "text frame" in text.reason
    assert core.statistics().bad_frames == 2


def test_lean_mode_hands_data_frames_over_undecoded_and_never_resumes() -> None:
    core = connected("fx", lean=True)
    (sub,) = sent(core)
    assert [g.group for g in sub.subscribe.groups] == ["fx"]
    data = frame(deltas=[Delta(group="fx", epoch=7, seq=1)])
    assert core.receive(data, 0.1, WALL) == [FrameReceived(data)]
    assert core.book("fx") is None
    core.closed()
    core.open("jwt")
    (update,) = core.receive(welcome(), 1.0, WALL)
    assert isinstance(update, Connected) and update.subscribed == ("fx",)


def test_mismatches_and_reconnects_are_reported_to_the_gateway_as_increments() -> None:
    core = connected("fx", metrics_interval_s=2.0)
    core.receive(frame(snapshots=[Snapshot(group="fx", epoch=7, shard_seq={0: 1})]), 0.0, WALL)
    core.receive(frame(deltas=[Delta(group="fx", epoch=7, seq=2,
                                     symbols=[sym("A", 2, checksum=1)])]), 0.1, WALL)
    sent(core)
    core.tick(2.0, WALL)
    reports = [f.metrics for f in sent(core) if f.HasField("metrics")]
    assert [(m.checksum_mismatches, m.reconnects) for m in reports] == [(1, 0)]
    core.tick(4.0, WALL)
    assert not [f for f in sent(core) if f.HasField("metrics")]  # nothing new: no report


@pytest.mark.parametrize(("code", "kind", "final"), [
    (4001, GatewayAuthError, True), (4002, GatewayAuthError, True),
    (4003, GatewayAuthError, True), (4005, GatewayClosed, True), (4007, GatewayClosed, True),
    (4013, GatewayClosed, True), (1001, GatewayClosed, False), (1006, GatewayClosed, False),
    (1011, GatewayClosed, False), (4010, GatewayClosed, False), (4014, GatewayClosed, False),
    (None, GatewayClosed, False),
])
def test_close_codes_map_to_errors_and_say_whether_to_reconnect(
    code: int | None, kind: type[GatewayClosed], final: bool
) -> None:
    fatal = Error(code=ErrorCode.ERROR_CODE_AUTH_INVALID, message="bad signature", fatal=True)
    err, is_final = close_error(code, "going away", fatal if code == 4002 else None, "ws://gw")
    assert type(err) is kind and is_final is final and err.close_code == code
    if code == 4002:
        assert str(err) == ("ws://gw: the connection was closed by the gateway with 4002 "
                            "(AUTH_INVALID): bad signature") and err.error == "bad signature"
    elif code is None:
        assert "was lost" in str(err)


def test_backoff_is_immediate_first_then_grows_with_jitter_up_to_the_cap() -> None:
    b = Backoff(base_s=0.1, cap_s=0.4, stable_s=5.0, random_=lambda: 1.0)
    b.opened(0.0)
    assert [b.failed(1.0) for _ in range(5)] == [0.0, 0.1, 0.2, 0.4, 0.4]
    b.opened(10.0)
    assert b.failed(20.0) == 0.0  # stable for 10 s: the count starts over
    low = Backoff(base_s=0.1, cap_s=0.4, random_=lambda: 0.0)
    assert [low.failed(0.0) for _ in range(3)] == [0.0, 0.05, 0.1]  # half the ceiling at least
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=0.0)
