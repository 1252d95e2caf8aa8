"""Python side of the epoch scenario vectors (``proto/scenarios/epoch.json``; Node:
``tests/node/xy-scenarios.test.mjs``): the gateway's hub (through its public methods) and the
client SDK's core each take the same messages and must conclude what the vectors say."""

from __future__ import annotations

from typing import Any

import pytest
from _scenarios import ClientSide, GatewaySide, delta, frame_summary, ids, load, snapshot

from xypipe._md.seqrules import DEFAULT_MAX_GAP

VECTORS = load("epoch")
SCENARIOS = VECTORS["scenarios"]


def test_the_bound_is_the_one_the_vectors_are_written_for() -> None:
    assert DEFAULT_MAX_GAP == VECTORS["max_gap"]


@pytest.mark.parametrize("s", SCENARIOS, ids=ids(SCENARIOS))
def test_the_gateway(s: dict[str, Any]) -> None:
    gw = GatewaySide(max_gap=VECTORS["max_gap"])
    gw.subscribe()
    for i, step in enumerate(s["steps"]):
        where = f"{s['name']}, step {i}"
        expect = step["gateway"]
        if "snapshot" in step:
            verdict = gw.feed_snapshot(snapshot("g", step["snapshot"]))
        else:
            verdict = gw.feed_delta(delta("g", step["delta"]))
        assert verdict == expect["verdict"], where
        assert frame_summary(gw.next_frame()) == expect["sends"], f"{where}: sends"
        assert gw.next_frame() is None, f"{where}: one frame carries everything due"


@pytest.mark.parametrize("s", SCENARIOS, ids=ids(SCENARIOS))
def test_the_client_sdk(s: dict[str, Any]) -> None:
    client = ClientSide(["g"], max_gap=VECTORS["max_gap"])
    for i, step in enumerate(s["steps"]):
        client.step(step, f"{s['name']}, step {i}")
