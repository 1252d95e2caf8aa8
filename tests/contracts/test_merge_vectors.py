"""Python side of the merge vectors (``proto/scenarios/merge.json``; Node:
``tests/node/xy-merge.test.mjs``): consecutive deltas of one stream merged into one by
``merge_deltas`` (the gateway's merge for slow consumers), trade-safely, every merged state still
agreeing with its checksum."""

from __future__ import annotations

from typing import Any

import pytest
from _scenarios import canonical_fields, ids, load, state

from xypipe._md.book import state_checksum
from xypipe._md.conflation import merge_deltas
from xypipe.contracts import Delta, SymbolState

VECTORS = load("merge")["merge"]
#: What each refusal's message says.
ERRORS = {"empty": "expected at least one delta", "stream": "expected deltas of one stream",
          "gap": "a gap cannot be merged"}
WINDOW = ("ts_arrival_us", "window_high", "window_low", "window_trades", "window_volume",
          "window_ticks")


def full_state(v: dict[str, Any]) -> SymbolState:
    s = state(v)
    for name in WINDOW:
        setattr(s, name, v[name])
    return s


def fields(s: SymbolState) -> dict[str, Any]:
    return {**canonical_fields(s), **{name: getattr(s, name) for name in WINDOW}}


def delta(v: dict[str, Any]) -> Delta:
    return Delta(group=v["group"], shard=v["shard"], epoch=v["epoch"], seq=v["seq"],
                 first_seq=v["first_seq"], window_ms=v["window_ms"], level=v["level"],
                 ts_emit_us=v["ts_emit_us"], removed=v["removed"],
                 symbols=[full_state(s) for s in v["symbols"]])


@pytest.mark.parametrize("v", VECTORS, ids=ids(VECTORS))
def test_merge_deltas(v: dict[str, Any]) -> None:
    deltas = [delta(d) for d in v["deltas"]]
    if "error" in v:
        with pytest.raises(ValueError, match=ERRORS[v["error"]]):
            merge_deltas(deltas)
        return
    want = v["merged"]
    got = merge_deltas(deltas)
    assert (got.group, got.shard, got.epoch) == (deltas[0].group, deltas[0].shard,
                                                 deltas[0].epoch)
    assert [got.seq, got.first_seq, got.window_ms, got.level, got.ts_emit_us] == [
        want["seq"], want["first_seq"], want["window_ms"], want["level"], want["ts_emit_us"]]
    assert list(got.removed) == want["removed"]
    assert [fields(s) for s in got.symbols] == [fields(full_state(s)) for s in want["symbols"]]
    for s in got.symbols:
        if not s.trimmed:
            assert state_checksum(s) == s.checksum, f"{s.symbol}: checksum no longer valid"


def test_the_vectors_carry_valid_checksums() -> None:
    """Every full (untrimmed) state in the vectors agrees with its checksum, so a merge that
    kept them valid is what the checks above see."""
    states = [s for v in VECTORS for d in v["deltas"] for s in d["symbols"]]
    states += [s for v in VECTORS if "merged" in v for s in v["merged"]["symbols"]]
    full = [full_state(s) for s in states if not s.get("trimmed")]
    assert full and all(state_checksum(s) == s.checksum for s in full)
