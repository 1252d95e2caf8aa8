"""Python side of the checksum scenario vectors (``proto/scenarios/checksum.json``; Node:
``tests/node/xy-scenarios.test.mjs``): the canonical text and CRC the aggregator stamps, what a
consumer concludes of an entry, and what applying a delta's entries leaves it holding — through
the shared functions and through the client SDK's core fed real frames."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from _scenarios import ClientSide, canonical_fields, ids, load, state

from xypipe._md.book import canonical_string, state_checksum
from xypipe._md.client import Check, apply_entries, verify_checksum
from xypipe.client import DeltaApplied
from xypipe.contracts import Delta, ServerFrame, Snapshot, SymbolState

VECTORS = load("checksum")


def canonical(s: SymbolState) -> str:
    return canonical_string(s.venue, s.symbol, s.seq, s.last, s.last_size, s.vol, s.oi, s.flags,
                            s.total_trades, s.bids, s.asks)


@pytest.mark.parametrize("v", VECTORS["canonical"], ids=ids(VECTORS["canonical"]))
def test_canonical_text_and_checksum(v: dict[str, Any]) -> None:
    s = state(v["state"])
    assert canonical(s) == v["text"]
    assert state_checksum(s) == v["checksum"] == zlib.crc32(v["text"].encode("utf-8"))


@pytest.mark.parametrize("v", VECTORS["verify"], ids=ids(VECTORS["verify"]))
def test_verify(v: dict[str, Any]) -> None:
    assert verify_checksum(state(v["state"])) is Check(v["check"])


def _full_check(s: SymbolState) -> str:
    return "ok" if state_checksum(s) == s.checksum else "mismatch"


def _check_book(held: dict[tuple[str, str], SymbolState], v: dict[str, Any]) -> None:
    want = [state(s) for s in v["book"]]
    assert sorted(held) == sorted((s.venue, s.symbol) for s in want)
    for s, full in zip(want, v["full_checks"], strict=True):
        got = held[(s.venue, s.symbol)]
        assert canonical_fields(got) == canonical_fields(s), f"{s.venue}.{s.symbol}"
        assert _full_check(got) == full, f"full-book check of {s.venue}.{s.symbol}"


def _delta(v: dict[str, Any]) -> Delta:
    return Delta(group="g", epoch=7, seq=2, removed=v["delta"]["removed"],
                 symbols=[state(s) for s in v["delta"]["symbols"]])


@pytest.mark.parametrize("v", VECTORS["apply"], ids=ids(VECTORS["apply"]))
def test_apply_entries(v: dict[str, Any]) -> None:
    held = {(s.venue, s.symbol): s for s in map(state, v["held"])}
    applied = apply_entries(held, _delta(v))
    checks = [verify_checksum(s).value for s in _delta(v).symbols]
    assert checks == v["checks"]
    assert [s.symbol for s in applied.mismatched] == [
        e["symbol"] for e, c in zip(v["delta"]["symbols"], v["checks"], strict=True)
        if c == "mismatch"]
    assert list(applied.removed) == v["removed"]
    _check_book(held, v)


@pytest.mark.parametrize("v", VECTORS["apply"], ids=ids(VECTORS["apply"]))
def test_apply_through_the_client_sdk(v: dict[str, Any]) -> None:
    client = ClientSide(["g"])
    client.receive(ServerFrame(snapshots=[Snapshot(
        group="g", epoch=7, version=1, shard_seq={0: 1}, shards=1,
        symbols=[state(s) for s in v["held"]])]))
    updates = client.receive(ServerFrame(deltas=[_delta(v)]))
    applied = [u for u in updates if isinstance(u, DeltaApplied)]
    assert len(applied) == 1
    assert applied[0].checksum_mismatches == v["checks"].count("mismatch")
    assert list(applied[0].removed) == v["removed"]
    book = client.core.book("g")
    assert book is not None
    _check_book(dict(book.symbols), v)
    # A mismatch resynchronises the group (the SDK asks for a snapshot).
    assert client.resyncing("g") == ("mismatch" in v["checks"])
