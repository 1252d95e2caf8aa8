"""Python side of the resume scenario vectors (``proto/scenarios/resume.json``; Node:
``tests/node/xy-scenarios.test.mjs``): what the client SDK asks for when it reconnects and what
it makes of the answer, and what the gateway's hub answers to a resume (public methods only)."""

from __future__ import annotations

from typing import Any

import pytest
from _scenarios import (
    ClientSide,
    GatewaySide,
    delta,
    frame_summary,
    ids,
    load,
    ranges,
    snapshot,
)

from xypipe.contracts import Delta

VECTORS = load("resume")
RECONNECT = VECTORS["reconnect"]
GATEWAY = VECTORS["gateway"]


@pytest.mark.parametrize("v", RECONNECT, ids=ids(RECONNECT))
def test_what_the_client_sdk_asks_for_after_a_reconnect(v: dict[str, Any]) -> None:
    client = ClientSide(v["groups"])
    for i, step in enumerate(v["steps"]):
        client.step(step, f"{v['name']}, step {i}")
    sent = client.connect()
    points = [[p.group, p.shard, p.epoch, p.seq] for f in sent if f.HasField("resume")
              for p in f.resume.points]
    fresh = [g.group for f in sent if f.HasField("subscribe") for g in f.subscribe.groups]
    assert points == v["resume"]
    assert fresh == v["subscribe"]
    assert len(sent) == bool(points) + bool(fresh), "one resume frame, one subscribe frame"
    for i, step in enumerate(v["then"]):
        client.step(step, f"{v['name']}, then {i}")


@pytest.mark.parametrize("v", GATEWAY, ids=ids(GATEWAY))
def test_what_the_gateway_answers_to_a_resume(v: dict[str, Any]) -> None:
    gw = GatewaySide(history=v["history"])
    assert gw.feed_snapshot(snapshot("g", v["snapshot"])) == "apply"
    for epoch, shard, first, last in v["deltas"]:
        for seq in range(first, last + 1):
            assert gw.feed_delta(delta("g", {"epoch": epoch, "shard": shard, "first_seq": 0,
                                             "seq": seq})) == "apply"
    assert gw.resume("g", v["points"]) == v["outcome"]
    sent = frame_summary(gw.next_frame())
    if sent is not None:
        sent["deltas"] = ranges(sent["deltas"])
    assert sent == v["sends"]


def test_a_resumed_stream_continues_with_the_next_live_delta() -> None:
    v = GATEWAY[0]
    gw = GatewaySide(history=v["history"])
    gw.feed_snapshot(snapshot("g", v["snapshot"]))
    for seq in range(5, 21):
        gw.feed_delta(Delta(group="g", shard=0, epoch=7, seq=seq))
    assert gw.resume("g", [[0, 7, 20]]) == "bridged"
    gw.feed_delta(Delta(group="g", shard=0, epoch=7, seq=21))
    assert frame_summary(gw.next_frame()) == {"snapshot": None, "deltas": [[7, 0, 21]]}
