"""Projections end to end: the real aggregator under the demo market, the real gateway, two SDK
clients — one subscribed to a projection, one to its whole group.

The projection's client receives only its symbols, and once the market stops its state equals
the whole group's state filtered to the projection's members (the same states, so the same
checksums, which each client verifies on every entry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from gw_support import Keys, running_gateway, sdk

import xypipe
from xypipe._client._updates import DeltaApplied, DeltaSkipped, SnapshotApplied
from xypipe._publisher import DEFAULT_VENUES
from xypipe._stages.publisher import Publisher
from xypipe._stages.snapshot import SnapshotStage

GROUP = "fx"
TOP = "fx/top"  # Top-K by session volume, with hysteresis
VENUE = "fx/venue"  # a predicate: one venue, some volume
ONE_VENUE = DEFAULT_VENUES[0]
TOP_K, MARGIN = 5, 2
TICKS = 12_000


def aggregator_config(url: str) -> Any:
    projections = [
        {"name": "top", "group": GROUP, "top_k": TOP_K, "margin": MARGIN, "top_by": "vol"},
        {"name": "venue", "group": GROUP, "venues": [ONE_VENUE], "min_vol": 1},
    ]
    stages = [
        {"use": "ingest"},
        {"use": "dedupe", "hold_ms": 1000, "max_held": 256},
        {"use": "shard", "shards": 2},
        {"use": "conflate"},
        {"use": "snapshot", "interval_ms": 500, "projections": projections},
        {"use": "publish"},
    ]
    return xypipe.parse_config({"nats": {"url": url}, "http": {"enabled": False},
                                "pipelines": {"aggregator": {"stages": stages}}})


def publisher_config(url: str) -> Any:
    # The demo market (configs/demo.toml's publisher), smaller and finite.
    return xypipe.parse_config({"nats": {"url": url}, "http": {"enabled": False},
                                "pipelines": {"publisher": {"stages": [{
                                    "use": "publisher", "symbols": 150, "rate": 3000.0,
                                    "seed": 1, "duplicate": 0.001, "reorder": 0.001,
                                    "max_ticks": TICKS, "contracts_every_s": 1.0}]}}})


class Board:
    """Every update of each client, read as they come; ``until`` re-checks a condition after
    any client's update (the books are the clients' own)."""

    def __init__(self) -> None:
        self.updates: dict[str, list[Any]] = {}
        self.changed = trio.Event()

    async def drain(self, name: str, client: Any) -> None:
        seen = self.updates.setdefault(name, [])
        async for u in client:
            seen.append(u)
            self.changed.set()

    async def until(self, condition: Callable[[], bool], limit_s: float = 60) -> None:
        with trio.fail_after(limit_s):  # a hang guard, not a timed assertion
            while not condition():
                self.changed = trio.Event()
                await self.changed.wait()


def keys_of(book: Any) -> set[str]:
    return {f"{v}.{s}" for v, s in book.symbols}


async def test_a_projection_client_gets_only_its_symbols_and_the_group_filtered(
    nats_server: Any, keys: Keys,
) -> None:
    url = nats_server.url
    agg = xypipe.Runner(aggregator_config(url))
    pub = xypipe.Runner(publisher_config(url))
    async with trio.open_nursery() as nursery:
        await nursery.start(agg.run)
        await agg.pipelines[0].stages[0].ctx.wait_ready()
        projections = agg.stage("aggregator", "snapshot", SnapshotStage).projections
        async with running_gateway(url, keys, admin=False) as gw:
            port = gw.http.port if gw.http is not None else 0
            token = keys.token("ann", allow=("xy.md.*.fx", "xy.md.*.fx.>"))
            async with sdk(port, token) as whole, sdk(port, token) as top, \
                    sdk(port, token) as venue:
                board = Board()
                for name, client in ((GROUP, whole), (TOP, top), (VENUE, venue)):
                    nursery.start_soon(board.drain, name, client)
                    await client.subscribe(name)
                await nursery.start(pub.run)
                truth = pub.stage("publisher", "publisher", Publisher).truth

                def settled(name: str, client: Any) -> Callable[[], bool]:
                    def check() -> bool:
                        if truth.ticks < TICKS:
                            return False
                        g, b = whole.book(GROUP), client.book(name)
                        if g is None or b is None or not g.synced or not b.synced:
                            return False
                        last = truth.last
                        if any(s.seq != last[f"{v}.{sym}"].seq for (v, sym), s in
                               g.symbols.items()):
                            return False
                        members = projections.by_stream[name].members
                        return dict(b.symbols) == {k: s for k, s in g.symbols.items()
                                                   if f"{k[0]}.{k[1]}" in members}
                    return check

                # The market ran to its end; both projections' books are the whole group's
                # book filtered to their members, state for state.
                await board.until(settled(TOP, top))
                await board.until(settled(VENUE, venue))
                group_book = whole.book(GROUP)
                assert group_book is not None and len(group_book.symbols) > 20
                # The group's state is what the publisher sent (its fx symbols).
                last = truth.last
                for (v, sym), s in group_book.symbols.items():
                    assert (s.seq, s.vol) == (last[f"{v}.{sym}"].seq, last[f"{v}.{sym}"].vol)

                # Top-K: every symbol ranked within K is a member, at most K + margin are.
                top_book = top.book(TOP)
                assert top_book is not None
                ranked = sorted(group_book.symbols.items(),
                                key=lambda kv: (kv[1].vol, f"{kv[0][0]}.{kv[0][1]}"),
                                reverse=True)
                within_k = {f"{v}.{s}" for (v, s), _ in ranked[:TOP_K]}
                assert within_k <= keys_of(top_book)
                assert TOP_K <= len(top_book.symbols) <= TOP_K + MARGIN

                # The predicate projection's client never received another venue's symbol.
                venue_book = venue.book(VENUE)
                assert venue_book is not None and venue_book.symbols
                received = [s for u in board.updates[VENUE] if isinstance(u, DeltaApplied)
                            for s in u.symbols]
                assert received and all(s.venue == ONE_VENUE for s in received)
                assert {k[0] for k in venue_book.symbols} == {ONE_VENUE}
                assert keys_of(venue_book) == {f"{v}.{sym}" for (v, sym), st
                                               in group_book.symbols.items()
                                               if v == ONE_VENUE and st.vol >= 1}
                # The Top-K client received entries of few symbols, never the whole group.
                top_received = {f"{s.venue}.{s.symbol}" for u in board.updates[TOP]
                                if isinstance(u, DeltaApplied) for s in u.symbols}
                assert len(top_received) < len(group_book.symbols)

                # A projection's snapshot (what a resync rebuilds from) holds its members only.
                def snapshot_sizes(name: str) -> list[int]:
                    return [u.symbols for u in board.updates[name]
                            if isinstance(u, SnapshotApplied) and u.group == name]

                assert max(snapshot_sizes(TOP)) <= TOP_K + MARGIN
                assert max(snapshot_sizes(TOP)) < len(group_book.symbols)

                for name in (GROUP, TOP, VENUE):
                    ups = board.updates[name]
                    assert not [u for u in ups if isinstance(u, DeltaSkipped)
                                and u.verdict != "held"], name
                    assert all(u.checksum_mismatches == 0 for u in ups
                               if isinstance(u, DeltaApplied | SnapshotApplied)), name
                    assert any(isinstance(u, SnapshotApplied) and u.group == name
                               for u in ups), name
            pub.stop()
        agg.stop()
