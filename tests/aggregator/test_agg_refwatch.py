"""The publisher republishes its reference data whenever its stream is (re)created, so any
start order converges (xypipe/_stages/_refwatch.py): the rule as a pure function, and against a
real nats-server — a publisher whose first contracts no stream kept, the stream deleted under a
running publisher."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _agg_nats import Runner, publisher_config, start_aggregator
from test_agg_cold_start import AGGREGATOR, GROUPS, Wire, group_of

from xypipe._errors import NatsNotFound
from xypipe._md.client import MarketView
from xypipe._nats import connect
from xypipe._stages._refwatch import Action, action_for, advisory_subjects, event_of

SYMBOLS = 15
PUBLISHER = {"symbols": SYMBOLS, "rate": 2000.0, "contracts_every_s": 0.0, "seed": 3}


def test_the_rule() -> None:
    assert action_for("created", ensures_stream=True) == Action(ensure=False, republish=True)
    assert action_for("created", ensures_stream=False) == Action(ensure=False, republish=True)
    # Deleted: made again by a publisher that ensures it; its creation then republishes.
    assert action_for("deleted", ensures_stream=True) == Action(ensure=True, republish=False)
    assert action_for("deleted", ensures_stream=False) == Action(ensure=False, republish=False)
    assert action_for("reconnected", ensures_stream=True) == Action(ensure=True, republish=True)
    assert action_for("reconnected", ensures_stream=False) == Action(ensure=False,
                                                                     republish=True)


def test_advisory_subjects_name_the_stream_only() -> None:
    created, deleted = advisory_subjects("XY_SRC")
    assert event_of(created, "XY_SRC") == "created"
    assert event_of(deleted, "XY_SRC") == "deleted"
    assert event_of("$JS.EVENT.ADVISORY.STREAM.CREATED.XY_SRC2", "XY_SRC") is None
    assert event_of("$JS.EVENT.ADVISORY.STREAM.UPDATED.XY_SRC", "XY_SRC") is None


async def _publisher(url: str, cancel: trio.CancelScope, options: dict[str, Any],
                     task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
    runner = Runner(publisher_config(url, **options))
    task_status.started(runner)
    with cancel:
        await runner.run()


async def _first_tick(nc: Any) -> None:
    with trio.fail_after(20):
        async with nc.subscribe("xy.src.tick.>") as sub:
            await sub.receive()


def _converged(wire: Wire) -> bool:
    """Every symbol is in its contract's group, and no group holds a symbol of another."""
    view = MarketView()
    for kind, msg in wire.seen:
        (view.apply_snapshot if kind == "snapshot" else view.apply_delta)(msg)
    placed: dict[tuple[str, str], str] = {}
    for name, group in view.groups.items():
        for venue, symbol in group.symbols:
            if group_of(venue, symbol) != name:
                return False
            placed[(venue, symbol)] = name
    return len(placed) == SYMBOLS and set(placed.values()) == GROUPS


@pytest.mark.nats
async def test_contracts_no_stream_kept_are_republished_when_the_aggregator_makes_it(
    nats_url: str,
) -> None:
    """Publisher first on core NATS only: its one round of contracts goes nowhere. The
    aggregator comes later and creates the stream; the publisher hears of it and republishes,
    so every symbol ends in its own group (the timed republish is off)."""
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        wire = Wire()
        await nursery.start(wire.run, nc)
        pub_scope = trio.CancelScope()
        pub = await nursery.start(_publisher, nats_url, pub_scope,
                                  {**PUBLISHER, "ensure_stream": False})
        await _first_tick(nc)
        with pytest.raises(NatsNotFound):
            await nc.jetstream().stream_state("XY_SRC")
        agg, agg_scope = await start_aggregator(nursery, nats_url, **AGGREGATOR)
        with trio.fail_after(30):
            while not _converged(wire):
                await wire.changed.wait()
        assert pub.metrics.sample("publisher_contracts_republished_total",
                                  {"reason": "created"}) == 1
        assert agg.metrics.sample("src_contracts_total") == SYMBOLS
        pub_scope.cancel()
        agg_scope.cancel()
        nursery.cancel_scope.cancel()


async def _stored_contracts(js: Any) -> int:
    try:
        async with js.pull("XY_SRC", "xy.ref.contract.>", deliver="last_per_subject",
                           batch=1) as consumer:
            return int(await consumer.num_pending())
    except NatsNotFound:  # not made again yet
        return 0


@pytest.mark.nats
async def test_a_deleted_stream_is_made_again_with_every_contract(nats_url: str) -> None:
    async with connect(nats_url) as nc, trio.open_nursery() as nursery:
        js = nc.jetstream()
        pub_scope = trio.CancelScope()
        pub = await nursery.start(_publisher, nats_url, pub_scope, PUBLISHER)
        await _first_tick(nc)
        assert await _stored_contracts(js) == SYMBOLS
        await js.delete_stream("XY_SRC")
        with trio.fail_after(20):
            while True:
                if await _stored_contracts(js) >= SYMBOLS:
                    break
                await trio.sleep(0.02)  # polled under the fail_after hang guard
        assert await _stored_contracts(js) == SYMBOLS
        assert pub.metrics.sample("publisher_contracts_republished_total",
                                  {"reason": "created"}) >= 1
        pub_scope.cancel()
        nursery.cancel_scope.cancel()
