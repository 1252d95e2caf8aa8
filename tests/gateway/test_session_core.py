"""The session core, driven by events and plain time values: no socket, no clock."""

from __future__ import annotations

import pytest
from gw_support import Keys

from xypipe._degrade import DegradePolicy, Level, Pressure
from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._session import (
    TRANSITIONS,
    Audit,
    Close,
    LocalProtocolError,
    PauseGroups,
    ResumeGroup,
    Send,
    Session,
    SessionPolicy,
    State,
    SubscribeGroup,
    UnsubscribeGroup,
)
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER
from xypipe.contracts import (
    ClientFrame,
    ErrorCode,
    GroupRef,
    Hello,
    Ping,
    RefreshToken,
    Resume,
    ResumePoint,
    Subscribe,
)

WALL = 1_900_000_000.0  # wall-clock seconds the tests pretend it is


def make(keys: Keys, **policy) -> Session:  # type: ignore[no-untyped-def]
    v = TokenVerifier(keys.public_path.read_bytes(), issuer=DEV_ISSUER, audience=DEV_AUDIENCE,
                      leeway_s=0.0)
    return Session("s1", v, SessionPolicy(**policy), now=0.0)


def frame(**kw) -> bytes:  # type: ignore[no-untyped-def]
    return ClientFrame(**kw).SerializeToString()


def sent(effects) -> list:  # type: ignore[no-untyped-def]
    return [e.frame for e in effects if isinstance(e, Send)]


def closes(effects) -> list[int]:  # type: ignore[no-untyped-def]
    return [e.code for e in effects if isinstance(e, Close)]


def opened(keys: Keys, allow=("xy.md.>",), ttl_s: float = 60, **policy) -> Session:  # type: ignore[no-untyped-def]
    s = make(keys, **policy)
    s.receive(0.1, WALL, frame(hello=Hello(token=keys.token("ann", allow, now=WALL,
                                                            ttl_s=ttl_s))))
    effects = s.take_effects()
    assert sent(effects)[0].HasField("welcome")
    return s


def test_every_transition_in_the_table_and_nothing_else(keys: Keys) -> None:
    assert (State.AUTH, "hello_ok") in {(k[0], k[1].value) for k in TRANSITIONS}
    s = opened(keys)
    s.close(1001, "bye")
    assert s.state == State.CLOSING
    s.closed()
    assert s.state == State.CLOSED
    with pytest.raises(LocalProtocolError, match="not allowed in state 'closed'") as info:
        s._go(next(iter(TRANSITIONS))[1])
    assert info.value.remote is False


def test_hello_opens_the_session_and_is_audited(keys: Keys) -> None:
    s = make(keys)
    s.receive(0.1, WALL, frame(id=3, hello=Hello(token=keys.token("ann", now=WALL))))
    effects = s.take_effects()
    assert s.state == State.SUBSCRIBED
    w = sent(effects)[0].welcome
    assert w.principal == "ann" and w.session_id == "s1" and list(w.allowed) == ["xy.md.>"]
    assert any(isinstance(e, Audit) and e.outcome == "allowed" for e in effects)


def test_no_hello_before_the_deadline_closes_with_4001(keys: Keys) -> None:
    s = make(keys, hello_timeout_s=2.0)
    assert s.next_deadline() == 2.0
    s.tick(1.9)
    assert not s.take_effects()
    s.tick(2.0)
    effects = s.take_effects()
    assert sent(effects)[0].error.code == ErrorCode.ERROR_CODE_AUTH_REQUIRED
    assert closes(effects) == [4001] and s.state == State.CLOSING


def test_heartbeat_timeout_counts_from_the_last_frame(keys: Keys) -> None:
    s = opened(keys, heartbeat_ms=1000, heartbeat_timeout_ms=3000)
    s.receive(2.0, WALL + 2, frame(ping=Ping(nonce=1)))
    assert sent(s.take_effects())[0].pong.nonce == 1
    s.tick(4.9)
    assert not closes(s.take_effects())
    s.tick(5.0)
    effects = s.take_effects()
    assert closes(effects) == [4014]
    assert "heartbeat timeout 3000 ms" in sent(effects)[0].error.message


def test_token_expiry_ends_the_session_unless_refreshed(keys: Keys) -> None:
    s = opened(keys, ttl_s=10, heartbeat_timeout_ms=60_000)
    assert s.next_deadline() == pytest.approx(10.1)
    s.receive(5.0, WALL + 5, frame(refresh=RefreshToken(
        token=keys.token("ann", now=WALL + 5, ttl_s=100))))
    effects = s.take_effects()
    assert sent(effects)[-1].HasField("welcome")
    s.tick(10.5)
    assert not closes(s.take_effects())
    s.tick(105.0)
    effects = s.take_effects()
    assert closes(effects) == [4003]
    assert sent(effects)[0].error.code == ErrorCode.ERROR_CODE_AUTH_EXPIRED


def test_removing_the_sessions_key_ends_it_and_no_other(keys: Keys) -> None:
    s = opened(keys, heartbeat_timeout_ms=60_000)
    assert s.principal is not None and s.principal.kid == "default"
    assert not s.key_removed(frozenset({"another"}))
    assert not s.take_effects()
    assert s.key_removed(frozenset({"default"}))
    effects = s.take_effects()
    assert closes(effects) == [4003]
    assert "key 'default'" in sent(effects)[0].error.message
    assert any(isinstance(e, Audit) and e.outcome == "key_removed" for e in effects)
    assert not s.key_removed(frozenset({"default"}))  # closing already: nothing more


def test_refresh_for_another_subject_is_refused_and_closes(keys: Keys) -> None:
    s = opened(keys)
    s.receive(1.0, WALL + 1, frame(refresh=RefreshToken(token=keys.token("eve", now=WALL))))
    effects = s.take_effects()
    assert closes(effects) == [4002]
    assert "this session belongs to 'ann'" in sent(effects)[0].error.message


def test_subscribe_checks_the_acl_per_group(keys: Keys) -> None:
    s = opened(keys, allow=["xy.md.*.fx", "xy.md.*.fx.>"])
    s.receive(1.0, WALL, frame(id=9, subscribe=Subscribe(groups=[
        GroupRef(group="fx"), GroupRef(group="rates"), GroupRef(group="bad group")])))
    effects = s.take_effects()
    subs = [e for e in effects if isinstance(e, SubscribeGroup)]
    assert [e.group for e in subs] == ["fx"]
    errors = [f.error for f in sent(effects) if f.HasField("error")]
    assert [(e.code, e.group, e.ref_id) for e in errors] == [
        (ErrorCode.ERROR_CODE_ACL_DENIED, "rates", 9),
        (ErrorCode.ERROR_CODE_UNKNOWN_GROUP, "bad group", 9),
    ]
    assert [a.fields["group"] for a in effects if isinstance(a, Audit) and a.outcome == "denied"] \
        == ["rates"]
    assert s.is_open


def test_refresh_with_narrower_patterns_drops_uncovered_groups(keys: Keys) -> None:
    s = opened(keys)
    s.receive(1.0, WALL, frame(subscribe=Subscribe(groups=[GroupRef(group="fx"),
                                                           GroupRef(group="rates")])))
    s.take_effects()
    s.receive(2.0, WALL, frame(refresh=RefreshToken(token=keys.token(
        "ann", ["xy.md.*.fx", "xy.md.*.fx.>"], now=WALL))))
    effects = s.take_effects()
    assert [e.group for e in effects if isinstance(e, UnsubscribeGroup)] == ["rates"]
    assert set(s.groups) == {"fx"}


def test_resume_subscribes_with_the_clients_points(keys: Keys) -> None:
    s = opened(keys)
    pts = [ResumePoint(group="fx", shard=0, epoch=7, seq=41)]
    s.receive(1.0, WALL, frame(resume=Resume(points=pts)))
    effects = s.take_effects()
    r = [e for e in effects if isinstance(e, ResumeGroup)]
    assert r and r[0].group == "fx" and r[0].points[0].seq == 41


def test_rate_limit_drops_frames_then_closes_a_client_that_ignores_it(keys: Keys) -> None:
    s = opened(keys, rate_per_s=1.0, burst=3)
    for _ in range(2):  # the hello used one token of the burst
        s.receive(0.2, WALL, frame(ping=Ping()))
    s.take_effects()
    s.receive(0.2, WALL, frame(ping=Ping()))
    effects = s.take_effects()
    assert sent(effects)[0].error.code == ErrorCode.ERROR_CODE_RATE_LIMITED
    for _ in range(3):
        s.receive(0.2, WALL, frame(ping=Ping()))
    assert closes(s.take_effects()) == [4007]


def test_pressure_walks_up_the_levels_pauses_low_priority_and_closes_if_l3_does_not_help(
    keys: Keys,
) -> None:
    s = opened(keys, degrade=DegradePolicy(dwell_ms=500), priority_groups=("fx",),
               close_pressure=1.0, close_after_ms=2000)
    s.receive(1.0, WALL, frame(subscribe=Subscribe(groups=[GroupRef(group="fx"),
                                                           GroupRef(group="news")])))
    s.take_effects()
    levels = []
    for t, p in [(2.0, 0.6), (2.1, 0.8), (2.2, 0.95)]:
        s.pressure(t, Pressure(p, "test"))
        effects = s.take_effects()
        levels += [f.degrade.level for f in sent(effects) if f.HasField("degrade")]
    assert levels == [1, 2, 3] and s.state == State.DEGRADED
    pause = [e for e in effects if isinstance(e, PauseGroups)]
    assert pause and pause[-1].groups == {"news"}
    # Down after the pressure stays low for the dwell time.
    s.pressure(3.0, Pressure(0.1))
    s.pressure(3.6, Pressure(0.1))
    effects = s.take_effects()
    assert [f.degrade.level for f in sent(effects) if f.HasField("degrade")] == [0]
    assert s.state == State.SUBSCRIBED and s.paused == frozenset()
    # Back at L3 with the queue still full: closed after close_after_ms.
    s.pressure(4.0, Pressure(1.2))
    s.pressure(5.0, Pressure(1.2))
    assert not closes(s.take_effects())
    s.pressure(6.0, Pressure(1.2))
    assert closes(s.take_effects()) == [4010]


def test_operator_force_pins_the_level_until_cleared(keys: Keys) -> None:
    s = opened(keys, degrade=DegradePolicy(dwell_ms=500))
    s.force_level(1.0, Level.L2)
    assert s.level == Level.L2
    s.pressure(1.1, Pressure(0.0))
    s.pressure(5.0, Pressure(0.0))
    assert s.level == Level.L2
    s.force_level(6.0, None)
    s.pressure(6.1, Pressure(0.0))
    s.pressure(6.7, Pressure(0.0))
    assert s.level == Level.L0


def test_bad_frames_are_answered_then_close_after_the_limit(keys: Keys) -> None:
    s = opened(keys, max_bad_frames=2, max_frame_bytes=500)
    s.receive(1.0, WALL, b"\xff\xff")
    s.receive(1.0, WALL, b"\x00" * 600)
    effects = s.take_effects()
    codes = [f.error.code for f in sent(effects)]
    assert codes == [ErrorCode.ERROR_CODE_BAD_FRAME, ErrorCode.ERROR_CODE_FRAME_TOO_LARGE]
    assert not closes(effects)
    s.receive(1.0, WALL, frame())
    effects = s.take_effects()
    assert "no known field" in sent(effects)[0].error.message
    assert closes(effects) == [4005]


def test_a_newer_clients_unknown_fields_are_tolerated_and_counted(keys: Keys) -> None:
    from prometheus_client import CollectorRegistry

    from xypipe._contracts import ContractDecoder

    registry = CollectorRegistry()
    s = make(keys)
    s.decoder = ContractDecoder(registry)
    hello = frame(hello=Hello(token=keys.token("ann", ("xy.md.>",), now=WALL, ttl_s=60)))
    # A v1+ client adds field 99 (varint 7) and field 100 (bytes "x") to its hello frame.
    newer = hello + bytes([0x98, 0x06, 0x07]) + bytes([0xA2, 0x06, 0x01]) + b"x"
    s.receive(0.1, WALL, newer)
    assert sent(s.take_effects())[0].HasField("welcome")
    assert registry.get_sample_value(
        "contract_unknown_fields_total", {"message": "xy.md.v1.ClientFrame"}) == 2
