"""The session core's group rules: groups the aggregator does not publish are refused with
UNKNOWN_GROUP (from the shared known-groups list), and snapshot look-ups per connection are
rate-limited. Plain events and time values: no socket, no clock."""

from __future__ import annotations

from gw_support import Keys

from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._session import (
    KnownGroups,
    LookupLimited,
    ProtocolViolation,
    RequestSnapshot,
    ResumeGroup,
    Send,
    Session,
    SessionPolicy,
    SubscribeGroup,
)
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER
from xypipe.contracts import (
    ClientFrame,
    ErrorCode,
    GroupRef,
    Hello,
    Resume,
    ResumePoint,
    SnapshotRequest,
    Subscribe,
)

WALL = 1_900_000_000.0


def opened(keys: Keys, known: KnownGroups, **policy: object) -> Session:
    v = TokenVerifier(keys.public_path.read_bytes(), issuer=DEV_ISSUER, audience=DEV_AUDIENCE,
                      leeway_s=0.0)
    s = Session("s1", v, SessionPolicy(**policy), now=0.0, known=known)  # type: ignore[arg-type]
    s.receive(0.1, WALL, ClientFrame(hello=Hello(token=keys.token("ann", ("xy.md.>",), now=WALL,
                                                                  ttl_s=600))).SerializeToString())
    s.take_effects()
    return s


def subscribe(s: Session, now: float, *groups: str, ref: int = 1) -> list[object]:
    s.receive(now, WALL, ClientFrame(id=ref, subscribe=Subscribe(
        groups=[GroupRef(group=g) for g in groups])).SerializeToString())
    return s.take_effects()  # type: ignore[return-value]


def errors(effects: list[object]) -> list[tuple[int, str, str]]:
    return [(e.frame.error.code, e.frame.error.group, e.frame.error.message)
            for e in effects if isinstance(e, Send) and e.frame.HasField("error")]


def test_a_case_variant_of_a_published_group_is_unknown_with_a_hint(keys: Keys) -> None:
    known = KnownGroups(frozenset({"equities", "fx"}))
    s = opened(keys, known)
    effects = subscribe(s, 1.0, "Equities", "fx")
    [(code, group, message)] = errors(effects)
    assert (code, group) == (ErrorCode.ERROR_CODE_UNKNOWN_GROUP, "Equities")
    assert "not published by the aggregator" in message and "'equities'" in message
    assert [e.group for e in effects if isinstance(e, SubscribeGroup)] == ["fx"]
    assert set(s.groups) == {"fx"}
    [violation] = [e for e in effects if isinstance(e, ProtocolViolation)]
    assert violation.error.code == "XY-GW-030" and not violation.error.fatal
    # Subscribed lists only what was accepted.
    [ok] = [e.frame.subscribed for e in effects if isinstance(e, Send)
            and e.frame.HasField("subscribed")]
    assert [g.group for g in ok.groups] == ["fx"]


def test_resume_of_an_unknown_group_is_refused_too(keys: Keys) -> None:
    s = opened(keys, KnownGroups(frozenset({"fx"})))
    s.receive(1.0, WALL, ClientFrame(id=2, resume=Resume(points=[
        ResumePoint(group="crypto", shard=0, epoch=1, seq=5),
        ResumePoint(group="fx", shard=0, epoch=1, seq=5)])).SerializeToString())
    effects = s.take_effects()
    assert [c for c, _, _ in errors(effects)] == [ErrorCode.ERROR_CODE_UNKNOWN_GROUP]
    assert [e.group for e in effects if isinstance(e, ResumeGroup)] == ["fx"]


def test_before_the_list_is_read_or_while_empty_any_good_name_is_accepted(keys: Keys) -> None:
    known = KnownGroups()  # not read yet
    s = opened(keys, known)
    assert errors(subscribe(s, 1.0, "anything")) == []
    known.groups = frozenset()  # read, but no aggregator has listed a group yet
    assert errors(subscribe(s, 1.5, "something")) == []
    # Once loaded (the same shared object), the rule applies to new subscriptions.
    known.groups = frozenset({"fx"})
    assert [c for c, _, _ in errors(subscribe(s, 2.0, "other"))] == [
        ErrorCode.ERROR_CODE_UNKNOWN_GROUP]
    assert errors(subscribe(s, 3.0, "fx")) == []


def test_snapshot_lookups_are_a_token_bucket_per_connection(keys: Keys) -> None:
    groups = [f"g{i}" for i in range(10)]
    s = opened(keys, KnownGroups(frozenset(groups)), snapshot_lookup_burst=4,
               snapshot_lookups_per_s=2.0)
    effects = subscribe(s, 1.0, *groups[:6])
    assert [e.group for e in effects if isinstance(e, SubscribeGroup)] == groups[:4]
    refused = errors(effects)
    assert [(c, g) for c, g, _ in refused] == [(ErrorCode.ERROR_CODE_RATE_LIMITED, "g4"),
                                               (ErrorCode.ERROR_CODE_RATE_LIMITED, "g5")]
    assert "snapshot look-ups/s" in refused[0][2]
    limited = [e for e in effects if isinstance(e, LookupLimited)]
    assert [(e.group, e.action, e.first) for e in limited] == [("g4", "subscribe", True),
                                                              ("g5", "subscribe", False)]
    # Snapshot requests draw from the same bucket; half a second refills one.
    s.receive(1.2, WALL, ClientFrame(id=3, snapshot_request=SnapshotRequest(group="g0"))
              .SerializeToString())
    assert [c for c, _, _ in errors(s.take_effects())] == [ErrorCode.ERROR_CODE_RATE_LIMITED]
    s.receive(1.7, WALL, ClientFrame(id=4, snapshot_request=SnapshotRequest(group="g0"))
              .SerializeToString())
    effects = s.take_effects()
    assert [e.group for e in effects if isinstance(e, RequestSnapshot)] == ["g0"]
    assert errors(effects) == []
    # A refused subscription is not half-made: the group can be subscribed later.
    effects = subscribe(s, 3.0, "g4")
    assert [e.group for e in effects if isinstance(e, SubscribeGroup)] == ["g4"]
    # Refusals of a new run are logged again (first=True).
    effects = subscribe(s, 3.0, "g6", "g7", "g8", "g9")
    assert [e.first for e in effects if isinstance(e, LookupLimited)][:1] == [True]


def test_the_connection_stays_open_whatever_is_refused(keys: Keys) -> None:
    s = opened(keys, KnownGroups(frozenset({"fx"})), snapshot_lookup_burst=1,
               snapshot_lookups_per_s=0.01)
    for i in range(5):
        subscribe(s, 1.0 + i * 0.01, "nope", "fx", ref=i)
    assert s.is_open
