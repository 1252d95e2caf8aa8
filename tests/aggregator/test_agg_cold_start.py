"""Cold start in any order, against a real nats-server: the publisher first, the aggregator
first, both at once. The publisher sends its contracts once (no repeats), so a contract lost
because no stream kept it would show as symbols in the default group.

Every delta and snapshot on ``xy.md.>`` is checked: each symbol only ever in its contract's
group, never in the default group; and each group's first snapshot is in the first round of
snapshots after its first delta, holding only its own symbols (by order on the wire: a round is
a run of consecutive snapshots, which the publish stage sends back to back on one connection).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _agg_nats import Runner, publisher_config, start_aggregator

from xypipe._errors import NatsNotFound
from xypipe._md.client import MarketView
from xypipe._nats import connect
from xypipe._publisher import DEFAULT_GROUPS, contract_for
from xypipe.contracts import Contract, Delta, Snapshot

pytestmark = pytest.mark.nats

GROUPS = {g for g, _ in DEFAULT_GROUPS}
SYMBOLS = 15
PUBLISHER = {"symbols": SYMBOLS, "rate": 3000.0, "contracts_every_s": 0.0, "seed": 3}
# dedupe's default hold: the test helpers' 1 s hold would keep back, for a whole second, the
# first ticks of symbols joined mid-stream (their earlier sequences never come).
AGGREGATOR: dict[str, Any] = {"shard": {"default_group": "misc"}, "dedupe": {"hold_ms": 20},
                              "snapshot": {"interval_ms": 300, "max_replay_msgs": 0}}


class Wire:
    """Everything on ``xy.md.>`` in arrival order: ("delta" | "snapshot", message)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.changed = trio.Event()

    async def run(self, nc: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with nc.subscribe("xy.md.>", max_batch=1024) as sub:
            task_status.started()
            async for batch in sub:
                for m in batch:
                    if m.subject.startswith("xy.md.snapshot."):
                        self.seen.append(("snapshot", Snapshot.FromString(m.data)))
                    elif m.subject.startswith("xy.md.tick."):
                        self.seen.append(("delta", Delta.FromString(m.data)))
                self.changed.set()
                self.changed = trio.Event()

    def rounds_after_first_delta(self) -> int:
        first = next((i for i, (k, _) in enumerate(self.seen) if k == "delta"), None)
        if first is None:
            return 0
        return len(_rounds(self.seen[first:]))


def _rounds(seen: list[tuple[str, Any]]) -> list[list[Snapshot]]:
    rounds: list[list[Snapshot]] = []
    prev = ""
    for kind, msg in seen:
        if kind == "snapshot":
            if prev != "snapshot":
                rounds.append([])
            rounds[-1].append(msg)
        prev = kind
    return rounds


def group_of(venue: str, symbol: str) -> str:
    return contract_for(venue, symbol).group


def check_wire(seen: list[tuple[str, Any]]) -> None:
    wrong = []
    for kind, msg in seen:
        for s in msg.symbols:
            want = group_of(s.venue, s.symbol)
            if msg.group != want:
                wrong.append(f"{kind} of {msg.group!r}: {s.venue}.{s.symbol} belongs to {want!r}")
    assert wrong == [], wrong[:10]
    groups = {msg.group for _, msg in seen}
    assert "misc" not in groups
    assert groups == GROUPS
    # Each group's first snapshot: in the first round after its first delta, only its own.
    first_delta: dict[str, int] = {}
    for i, (kind, msg) in enumerate(seen):
        if kind == "delta":
            first_delta.setdefault(msg.group, i)
    start = min(first_delta.values())
    rounds_at: list[tuple[int, list[Snapshot]]] = []
    prev = ""
    for i, (kind, msg) in enumerate(seen):
        if kind == "snapshot":
            if prev != "snapshot":
                rounds_at.append((i, []))
            rounds_at[-1][1].append(msg)
        prev = kind
    for group, at in first_delta.items():
        following = [r for i, r in rounds_at if i > at]
        assert following, f"no snapshot round after the first delta of {group!r}"
        firsts = [s for s in following[0] if s.group == group]
        assert firsts, (f"{group!r}: not in the first snapshot round after its first delta "
                        f"(that round has {sorted(s.group for s in following[0])})")
        assert firsts[0].version >= 1 and firsts[0].symbols
    # Every group is in the first or the second round after the very first delta: one
    # snapshot interval, whatever the phase of the snapshot clock when the first tick came.
    after = [r for i, r in rounds_at if i > start][:2]
    assert GROUPS <= {s.group for r in after for s in r}, [sorted(s.group for s in r)
                                                           for r in after]


async def _wait_rounds(wire: Wire, n: int) -> None:
    with trio.fail_after(30):
        while wire.rounds_after_first_delta() < n:
            await wire.changed.wait()


async def _publisher(url: str, cancel: trio.CancelScope,
                     task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
    runner = Runner(publisher_config(url, **PUBLISHER))
    task_status.started(runner)
    with cancel:
        await runner.run()


async def _stream_has_ticks(nc: Any) -> None:
    js = nc.jetstream()
    with trio.fail_after(20):
        while True:
            try:
                state = await js.stream_state("XY_SRC")
            except NatsNotFound:  # not created yet
                state = None
            if state is not None and state.messages > SYMBOLS + 50:
                return
            await trio.sleep(0.02)  # polled under the fail_after hang guard


async def test_publisher_first_then_aggregator(nats_url: str) -> None:
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        wire = Wire()
        await nursery.start(wire.run, nc)
        pub_scope = trio.CancelScope()
        await nursery.start(_publisher, nats_url, pub_scope)
        # The publisher made the stream and sent its (only) contracts long before ingest starts.
        await _stream_has_ticks(nc)
        agg, agg_scope = await start_aggregator(nursery, nats_url, **AGGREGATOR)
        await _wait_rounds(wire, 3)
        assert agg.metrics.sample("src_contracts_total") == SYMBOLS  # preloaded from the stream
        assert agg.metrics.sample("symbols_routed_without_contract_total") == 0
        assert agg.metrics.sample("symbols_moved_total") == 0
        pub_scope.cancel()
        agg_scope.cancel()
        nursery.cancel_scope.cancel()
    check_wire(wire.seen)


async def test_aggregator_first_then_publisher(nats_url: str) -> None:
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        wire = Wire()
        await nursery.start(wire.run, nc)
        agg, agg_scope = await start_aggregator(nursery, nats_url, **AGGREGATOR)
        pub_scope = trio.CancelScope()
        await nursery.start(_publisher, nats_url, pub_scope)
        await _wait_rounds(wire, 3)
        assert agg.metrics.sample("symbols_routed_without_contract_total") == 0
        assert agg.metrics.sample("symbols_moved_total") == 0
        # Every group it published is listed for the gateways, before its first delta.
        kv = await nc.jetstream().kv("xy_md_groups", create=False)
        assert set(await kv.keys()) == GROUPS
        assert agg.metrics.sample("known_groups") == len(GROUPS)
        pub_scope.cancel()
        agg_scope.cancel()
        nursery.cancel_scope.cancel()
    check_wire(wire.seen)


async def test_a_symbol_moved_by_its_contract_leaves_the_old_group_at_once(
    nats_url: str,
) -> None:
    """Live: a new contract names another group. The old group's next delta removes the
    symbol, its next snapshot and Top-K do not list it, a live view drops it at once."""
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        wire = Wire()
        await nursery.start(wire.run, nc)
        agg, agg_scope = await start_aggregator(nursery, nats_url, **AGGREGATOR)
        pub_scope = trio.CancelScope()
        await nursery.start(_publisher, nats_url, pub_scope)
        await _wait_rounds(wire, 2)
        view = MarketView()
        for kind, msg in wire.seen:
            (view.apply_snapshot if kind == "snapshot" else view.apply_delta)(msg)
        c = contract_for("XNAS", "S00000")  # the busiest symbol
        old = c.group
        new = next(g for g in sorted(GROUPS) if g != old)
        key = ("XNAS", "S00000")
        assert key in view.groups[old].symbols
        moved = Contract()
        moved.CopyFrom(c)
        moved.group, moved.version = new, 2
        mark = len(wire.seen)
        await nc.publish("xy.ref.contract.XNAS.S00000", moved.SerializeToString())
        def removal_then_snapshot() -> bool:
            removed = False
            for kind, msg in wire.seen[mark:]:
                if kind == "delta" and "XNAS.S00000" in msg.removed:
                    removed = True
                elif removed and kind == "snapshot" and msg.group == old:
                    return True
            return False

        with trio.fail_after(20):
            while not removal_then_snapshot():
                await wire.changed.wait()
        pub_scope.cancel()
        agg_scope.cancel()
        nursery.cancel_scope.cancel()
    after = wire.seen[mark:]
    removal = next(i for i, (kind, msg) in enumerate(after)
                   if kind == "delta" and "XNAS.S00000" in msg.removed)
    assert after[removal][1].group == old
    for kind, msg in after[removal:]:
        if msg.group == old:
            assert "S00000" not in {s.symbol for s in msg.symbols}, (kind, msg.group)
            if kind == "snapshot":
                assert "S00000" not in {t.symbol for t in msg.top}
    for kind, msg in after:
        (view.apply_snapshot if kind == "snapshot" else view.apply_delta)(msg)
    assert key not in view.groups[old].symbols
    assert key in view.groups[new].symbols
    assert view.stats.gaps == 0 and view.stats.checksum_mismatches == 0
    assert agg.metrics.sample("symbols_moved_total") == 1


async def test_both_at_once(nats_url: str) -> None:
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        wire = Wire()
        await nursery.start(wire.run, nc)
        box: dict[str, Any] = {}
        pub_scope = trio.CancelScope()

        async def aggregator() -> None:
            box["agg"] = await start_aggregator(nursery, nats_url, **AGGREGATOR)

        # Both race to create the stream; whichever wins, the other finds it as it wants it.
        async with trio.open_nursery() as both:
            both.start_soon(aggregator)
            both.start_soon(nursery.start, _publisher, nats_url, pub_scope)
        await _wait_rounds(wire, 3)
        agg, agg_scope = box["agg"]
        assert agg.metrics.sample("symbols_routed_without_contract_total") == 0
        pub_scope.cancel()
        agg_scope.cancel()
        nursery.cancel_scope.cancel()
    check_wire(wire.seen)


async def test_a_stream_with_other_subjects_is_a_clear_error_not_an_overwrite(
    nats_url: str,
) -> None:
    from xypipe._errors import SourceStreamMismatch
    from xypipe._log import get_logger
    from xypipe._stages._srcstream import SourceStream

    async with connect(nats_url) as nc:
        js = nc.jetstream()
        await js.ensure_stream("XY_SRC", ["xy.src.>"], max_age_s=60.0)
        for owner in (True, False):
            with pytest.raises(SourceStreamMismatch, match=r"with subjects \['xy.src.>'\]"):
                await SourceStream().ensure(js, owner=owner, log=get_logger("test"))
        assert (await js.stream_state("XY_SRC")).subjects == ("xy.src.>",)  # untouched
        # Retention differs only: a publisher leaves it, the aggregator sets its own.
        await js.delete_stream("XY_SRC")
        await js.ensure_stream("XY_SRC", ["xy.src.>", "xy.ref.>"], max_age_s=60.0)
        await SourceStream().ensure(js, owner=False, log=get_logger("test"))
        _, have = await js.create_stream("XY_SRC", ["xy.src.>", "xy.ref.>"],
                                             max_age_s=60.0)
        assert have is None  # still 60 s
        await SourceStream(max_age_s=3600).ensure(js, owner=True, log=get_logger("test"))
        _, have = await js.create_stream("XY_SRC", ["xy.src.>", "xy.ref.>"], max_age_s=60.0)
        assert have is not None and have["max_age_s"] == 3600.0
