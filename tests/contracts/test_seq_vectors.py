"""Python side of the sequence-rule scenario vectors (Node: tests/node/xy-seq.test.mjs).

The same JSON drives :mod:`xypipe._md.seqrules` (what the gateway's hub applies), the NATS
subscriber's :class:`~xypipe._md.client.MarketView` and the client SDK (:mod:`xypipe.client`,
through its protocol core); the browser worker's core reads it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _scenarios import ClientSide

from xypipe._md.client import MarketView
from xypipe._md.seqrules import DEFAULT_MAX_GAP, ResumeOutcome, Verdict, judge, judge_resume
from xypipe.contracts import Delta, Snapshot

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "proto" / "scenarios" / "sequence.json").read_text())


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in items]


def test_the_bound_is_the_one_the_vectors_are_written_for() -> None:
    assert DEFAULT_MAX_GAP == VECTORS["max_gap"]


@pytest.mark.parametrize("v", VECTORS["judge"], ids=_ids(VECTORS["judge"]))
def test_judge(v: dict[str, Any]) -> None:
    d = v["delta"]
    base = tuple(v["baseline"]) if v["baseline"] is not None else None
    got = judge(base, d["epoch"], d["first_seq"], d["seq"], VECTORS["max_gap"])  # type: ignore[arg-type]
    assert got == Verdict(v["verdict"])


@pytest.mark.parametrize("v", VECTORS["resume"], ids=_ids(VECTORS["resume"]))
def test_resume(v: dict[str, Any]) -> None:
    stream = tuple(v["stream"]) if v["stream"] is not None else None
    point = tuple(v["point"]) if v["point"] is not None else None
    assert judge_resume(stream, point) == ResumeOutcome(v["outcome"])  # type: ignore[arg-type]


@pytest.mark.parametrize("s", VECTORS["streams"], ids=_ids(VECTORS["streams"]))
def test_stream_through_the_python_client(s: dict[str, Any]) -> None:
    view = MarketView(max_gap=VECTORS["max_gap"])
    for i, step in enumerate(s["steps"]):
        where = f"{s['name']}, step {i}"
        if "snapshot" in step:
            snap = step["snapshot"]
            view.apply_snapshot(Snapshot(group="g", epoch=snap["epoch"], shard_seq={
                int(k): q for k, q in snap["shard_seq"].items()}))
        else:
            d = step["delta"]
            delta = Delta(group="g", shard=d["shard"], epoch=d["epoch"],
                          first_seq=d["first_seq"], seq=d["seq"])
            assert view.judge_delta(delta) == step["expect"], where
            assert view.apply_delta(delta) == (step["expect"] == "apply"), where
        assert (not view.groups["g"].synced) == step["resyncing"], f"{where}: resyncing"


@pytest.mark.parametrize("s", VECTORS["streams"], ids=_ids(VECTORS["streams"]))
def test_stream_through_the_client_sdk(s: dict[str, Any]) -> None:
    client = ClientSide(["g"], max_gap=VECTORS["max_gap"])
    for i, step in enumerate(s["steps"]):
        client_step = {k: v for k, v in step.items() if k in ("snapshot", "delta")}
        client_step["client"] = {"resyncing": step["resyncing"], "replayed": [],
                                 "verdict": step.get("expect")}
        client.step(client_step, f"{s['name']}, step {i}")


def test_rejected_deltas_are_counted_by_verdict_and_never_move_the_baseline() -> None:
    view = MarketView()
    view.apply_snapshot(Snapshot(group="g", epoch=7, shard_seq={0: 10}))
    view.apply_delta(Delta(group="g", shard=0, epoch=6, seq=11))
    view.apply_delta(Delta(group="g", shard=0, epoch=7, seq=10 + DEFAULT_MAX_GAP + 2))
    assert view.stats.rejected == {"stale_epoch": 1, "far_future": 1}
    assert view.groups["g"].seqs == {0: 10} and view.groups["g"].epoch == 7
