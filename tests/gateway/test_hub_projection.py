"""A projection (``group/projection``) is a stream of its own in the gateway: its own subjects,
its own subscribers, the same frame bytes for each of them."""

from __future__ import annotations

import pytest
from gw_support import Keys
from test_hub_core import decode

from xypipe._gateway._auth import TokenVerifier
from xypipe._gateway._hub import BadMessage, Hub, Outbox
from xypipe._gateway._session import Send, Session, SessionPolicy
from xypipe._gateway._tokens import DEV_AUDIENCE, DEV_ISSUER
from xypipe.contracts import (
    ClientFrame,
    Delta,
    GroupRef,
    Hello,
    Snapshot,
    Subscribe,
    SymbolState,
)

WALL = 1_900_000_000.0

TOP = "fx/top"


def pdelta(seq: int, *symbols: str, group: str = TOP, epoch: int = 5) -> bytes:
    return Delta(group=group, shard=0, seq=seq, epoch=epoch,
                 symbols=[SymbolState(venue="V", symbol=s, seq=seq) for s in symbols]
                 ).SerializeToString()


def psnap(seq: int, *symbols: str) -> bytes:
    return Snapshot(group=TOP, version=1, epoch=5, shard_seq={0: seq}, shards=1,
                    symbols=[SymbolState(venue="V", symbol=s) for s in symbols]
                    ).SerializeToString()


def test_projection_subscribers_share_its_frames_and_nobody_else_gets_them() -> None:
    hub = Hub()
    hub.on_snapshot("xy.md.snapshot.fx.p.top", psnap(1, "A"), 0.0)
    hub.on_delta("xy.md.tick.fx.p.top", pdelta(1, "A"), 0.0)  # already in the snapshot
    a, b, whole = Outbox(1), Outbox(2), Outbox(3)
    for ob in (a, b):
        hub.subscribe(ob, TOP, frozenset())
    hub.subscribe(whole, "fx", frozenset())
    first = decode(hub.build(a, 1))
    assert [s.group for s in first.snapshots] == [TOP] and not first.deltas
    hub.build(b, 1)
    hub.on_delta("xy.md.tick.fx.p.top", pdelta(2, "A", "B"), 0.0)
    fa, fb = hub.build(a, 2), hub.build(b, 2)
    assert fa is fb  # identical bytes for every subscriber of the stream
    assert [(d.group, d.seq) for d in decode(fa).deltas] == [(TOP, 2)]
    built = hub.build(whole, 2)  # the whole group's subscriber: no projection data
    assert built is None or not any(d.group == TOP for d in decode(built).deltas)


@pytest.mark.parametrize(("subject", "raw"), [
    ("xy.md.tick.fx", pdelta(1, "A")),  # a projection's delta on its group's subject
    ("xy.md.tick.fx.p.other", pdelta(1, "A")),  # on another projection's
    ("xy.md.tick.fx.p.top", pdelta(1, "A", group="fx")),  # a group's delta on a projection's
])
def test_a_delta_may_only_speak_for_the_stream_it_is_on(subject: str, raw: bytes) -> None:
    with pytest.raises(BadMessage):
        Hub().on_delta(subject, raw, 0.0)


def test_a_projection_snapshot_on_its_groups_subject_is_refused() -> None:
    with pytest.raises(BadMessage, match=r"expected xy\.md\.snapshot\.fx\.p\.top"):
        Hub().on_snapshot("xy.md.snapshot.fx", psnap(1, "A"), 0.0)


# --------------------------------------------------------------------------- subscribing


def _subscribe(keys: Keys, ref: GroupRef, allow: tuple[str, ...] = ("xy.md.>",)
               ) -> tuple[list[str], list[tuple[int, str]]]:
    """(groups subscribed, (code, message) of each refusal) of one Subscribe."""
    v = TokenVerifier(keys.public_path.read_bytes(), issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    s = Session("s1", v, SessionPolicy(), now=0.0)
    s.receive(0.1, WALL, ClientFrame(hello=Hello(token=keys.token("ann", allow=allow, now=WALL))
                                     ).SerializeToString())
    s.take_effects()
    s.receive(0.2, WALL, ClientFrame(subscribe=Subscribe(groups=[ref])).SerializeToString())
    frames = [e.frame for e in s.take_effects() if isinstance(e, Send)]
    done = [g for f in frames if f.HasField("subscribed") for g in f.subscribed.groups]
    errors = [(f.error.code, f.error.message) for f in frames if f.HasField("error")]
    return done, errors


@pytest.mark.parametrize(("ref", "allow", "subscribed", "refusal"), [
    (GroupRef(group="fx/top"), ("xy.md.>",), True, ""),
    (GroupRef(group="fx/top"), ("xy.md.*.fx.p.top",), True, ""),
    (GroupRef(group="fx/top"), ("xy.md.*.fx", "xy.md.*.fx.>"), True, ""),
    (GroupRef(group="fx"), ("xy.md.*.fx.p.top",), False, "do not cover"),
    (GroupRef(group="fx/other"), ("xy.md.*.fx.p.top",), False, "do not cover"),
    (GroupRef(group="fx/top", shards=[1]), ("xy.md.>",), False, "without shards"),
    (GroupRef(group="fx/"), ("xy.md.>",), False, "projection name ''"),
    (GroupRef(group="fx/a/b"), ("xy.md.>",), False, "projection name 'a/b'"),
], ids=["all", "this-projection", "whole-group", "group-denied", "other-denied", "shards",
        "empty-name", "two-slashes"])
def test_clients_subscribe_to_group_slash_projection_under_the_acl(
    keys: Keys, ref: GroupRef, allow: tuple[str, ...], subscribed: bool, refusal: str,
) -> None:
    done, errors = _subscribe(keys, ref, allow)
    if subscribed:
        assert done and done[0].group == ref.group and not errors
    else:
        assert not done and len(errors) == 1 and refusal in errors[0][1], errors


def test_a_projection_pauses_with_its_group(keys: Keys) -> None:
    """Operator-disabled ``fx`` pauses ``fx/top`` too, and at L3 a projection follows its
    group's priority."""
    from test_session_core import opened

    from xypipe._degrade import DegradePolicy, Pressure

    s = opened(keys, degrade=DegradePolicy(dwell_ms=500), priority_groups=("fx",))
    s.receive(1.0, WALL, ClientFrame(subscribe=Subscribe(groups=[
        GroupRef(group="fx/top"), GroupRef(group="news/top"), GroupRef(group="rates")]))
        .SerializeToString())
    s.take_effects()
    s.set_disabled_groups(frozenset({"fx"}))
    assert s.paused == frozenset({"fx/top"})
    s.set_disabled_groups(frozenset())
    for t, p in [(2.0, 0.6), (2.1, 0.8), (2.2, 0.95)]:
        s.pressure(t, Pressure(p, "test"))
    assert s.paused == frozenset({"news/top", "rates"})  # fx is a priority group
