"""The conflate stage under Trio's mock clock: cadence, quiet windows, sequences, degradation."""

from __future__ import annotations

import pytest
import trio
from _agg_helpers import Routed, tick

from xypipe import Level
from xypipe._md.book import state_checksum
from xypipe._md.records import Restore
from xypipe._stages.conflate import Conflate
from xypipe.contracts import Delta, SymbolState
from xypipe.testing import stage_harness

RULES = {"rules": [{"group": "rates", "symbols": ["R*"]}, {"group": "eq", "symbols": ["*"]}]}


def decoded(deltas: list) -> list[Delta]:
    return [Delta.FromString(d.payload) for d in deltas]


async def test_deltas_close_every_33_ms_exactly(autojump_clock: trio.abc.Clock) -> None:
    feed = Routed()
    async with stage_harness(Conflate, {"epoch": 5}) as h:
        t0 = trio.current_time()
        times = []
        for i in range(1, 6):
            await h.send(feed.batch([tick(seq=i)]))
            await h.receive()
            times.append(trio.current_time() - t0)
    assert times == pytest.approx([0.033 * k for k in range(1, 6)], abs=1e-9)


async def test_quiet_window_emits_nothing(autojump_clock: trio.abc.Clock) -> None:
    feed = Routed()
    async with stage_harness(Conflate, {"epoch": 5}) as h:
        t0 = trio.current_time()
        await h.send(feed.batch([tick(seq=1)]))
        first = decoded(await h.receive())
        await trio.sleep(0.2)  # six quiet windows
        assert h.available() == []
        await h.send(feed.batch([tick(seq=2)]))
        second = decoded(await h.receive())
        # Sent at 233 ms: its window is the one closing at 8 x 33 ms.
        assert trio.current_time() - t0 == pytest.approx(0.033 * 8, abs=1e-9)
    assert [d.seq for d in first + second] == [1, 2]


async def test_one_delta_per_shard_with_the_latest_state_of_each_changed_symbol(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed(shards=4)
    ticks = [tick(symbol=f"S{i}", seq=s, last=100 + s) for s in (1, 2, 3) for i in range(20)]
    async with stage_harness(Conflate, {"epoch": 5}) as h:
        await h.send(feed.batch(ticks))
        deltas = await h.receive()
    assert len({(d.group, d.shard) for d in deltas}) == len(deltas) > 1
    entries = [s for d in decoded(deltas) for s in d.symbols]
    assert sorted(s.symbol for s in entries) == sorted(f"S{i}" for i in range(20))
    assert all((s.seq, s.last, s.window_ticks) == (3, 103, 3) for s in entries)
    assert all(s.checksum == state_checksum(s) and not s.trimmed for s in entries)
    assert {d.subject for d in deltas} <= {f"xy.md.tick.default.{n}" for n in range(4)}


async def test_sequence_increases_by_one_per_delta_per_shard(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed(shards=2)
    seen: dict[int, list[int]] = {}
    async with stage_harness(Conflate, {"epoch": 9}) as h:
        for s in range(1, 30):
            await h.send(feed.batch([tick(symbol=f"S{s % 7}", seq=s // 7 + 1)]))
            for d in decoded(await h.receive()):
                assert d.epoch == 9
                seen.setdefault(d.shard, []).append(d.seq)
    for seqs in seen.values():
        assert seqs == list(range(1, len(seqs) + 1))


async def test_restore_sets_the_epoch_and_continues_each_shard_sequence(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed()
    restore = Restore(epoch=77, checkpoints={("default", 0): 41}, continued=True)
    async with stage_harness(Conflate, {}) as h:
        await h.send(restore)
        assert await h.receive() is restore
        await h.send(feed.batch([tick(seq=1)]))
        (d,) = decoded(await h.receive())
    assert (d.epoch, d.seq) == (77, 42)


async def test_l1_stretches_the_window_and_recovery_restores_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed()
    async with stage_harness(Conflate, {"epoch": 1, "l1_factor": 3}) as h:
        await h.send(feed.batch([tick(seq=1)]))
        await h.receive()  # t = 33 ms
        h.set_level(Level.L1)
        t = trio.current_time()
        await h.send(feed.batch([tick(seq=2)]))
        (d,) = decoded(await h.receive())
        assert trio.current_time() - t == pytest.approx(0.099, abs=1e-9)
        assert (d.level, d.window_ms) == (1, 99)
        h.set_level(Level.L0)
        t = trio.current_time()
        await h.send(feed.batch([tick(seq=3)]))
        (d,) = decoded(await h.receive())
        assert trio.current_time() - t == pytest.approx(0.033, abs=1e-9)
        assert (d.level, d.window_ms) == (0, 33)


async def test_l1_longer_windows_keep_every_trade(autojump_clock: trio.abc.Clock) -> None:
    feed = Routed()
    sizes = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9]
    entries = []
    async with stage_harness(Conflate, {"epoch": 1}, level=Level.L1) as h:
        vol = 0
        for i, size in enumerate(sizes, start=1):
            vol += size
            await h.send(feed.batch([tick(seq=i, last=100 + i % 4, size=size, vol=vol,
                                          trade=True)]))
            await trio.sleep(0.011)
        await trio.sleep(0.3)
        while (got := h.available()):
            entries += [s for batch in got for d in decoded(batch) for s in d.symbols]
    assert len(entries) < len(sizes)  # conflated...
    assert sum(s.window_volume for s in entries) == sum(sizes)  # ...but no trade lost
    assert sum(s.window_trades for s in entries) == len(sizes)
    assert (entries[-1].total_trades, entries[-1].vol) == (len(sizes), sum(sizes))
    assert max(s.window_high for s in entries) == 103
    assert min(s.window_low for s in entries) == 100


async def test_l2_trims_depth_but_the_checksum_covers_the_full_book(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed()
    t = tick(seq=1, depth=5)
    async with stage_harness(Conflate, {"epoch": 1}, level=Level.L2) as h:
        await h.send(feed.batch([t]))
        deltas = await h.receive()
    (s,) = decoded(deltas)[0].symbols
    assert s.trimmed and len(s.bids) == 1 and len(s.asks) == 1
    assert s.checksum != state_checksum(s)
    full_state = SymbolState.FromString(deltas[0].entries[0][3])
    assert len(full_state.bids) == 5 and s.checksum == state_checksum(full_state)


async def test_a_symbol_sent_trimmed_goes_out_again_in_full_once_the_level_comes_down(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A quiet symbol must not keep its trimmed book after recovery (until its next tick)."""
    feed = Routed()
    async with stage_harness(Conflate, {"epoch": 1}, level=Level.L2) as h:
        await h.send(feed.batch([tick(seq=1, depth=5)]))
        (trimmed,) = decoded(await h.receive())[0].symbols
        assert trimmed.trimmed
        await trio.sleep(0.2)
        assert h.available() == []  # nothing new at L2: nothing sent
        h.set_level(Level.L0)
        (d,) = decoded(await h.receive())
        await trio.sleep(0.2)
        assert h.available() == []  # once, not every window
    (s,) = d.symbols
    assert not s.trimmed and len(s.bids) == 5 and s.checksum == state_checksum(s)
    assert (s.seq, s.window_ticks) == (1, 0) and d.seq == 2


async def test_l3_pauses_low_priority_groups_and_recovery_sends_what_they_missed(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed(**RULES)
    opts = {"epoch": 1, "priorities": {"rates": "low", "eq": "high"}}
    async with stage_harness(Conflate, opts, level=Level.L3) as h:
        await h.send(feed.batch([tick(symbol="R1", seq=1, size=2, vol=2, trade=True),
                                 tick(symbol="E1", seq=1)]))
        assert [d.group for d in await h.receive()] == ["eq"]
        await h.send(feed.batch([tick(symbol="R1", seq=2, size=3, vol=5, trade=True)]))
        await trio.sleep(0.1)
        assert h.available() == []
        h.set_level(Level.L0)
        got = {d.group: d for d in decoded(await h.receive())}
    # eq's E1 went out trimmed at L3: it goes out again in full with the paused group's news.
    assert not got["eq"].symbols[0].trimmed and got["eq"].seq == 2
    d = got["rates"]
    assert d.seq == 1
    (s,) = d.symbols
    assert (s.seq, s.window_trades, s.window_volume, s.vol, s.total_trades) == (2, 2, 5, 5, 2)


async def test_final_flush_sends_pending_changes_even_of_paused_groups(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = Routed(**RULES)
    async with stage_harness(Conflate, {"epoch": 1, "priorities": {"rates": "low"}},
                             level=Level.L3) as h:
        await h.send(feed.batch([tick(symbol="R1", seq=1)]))
        await trio.testing.wait_all_tasks_blocked()
    assert [d.group for batch in h.collected for d in batch] == ["rates"]


async def test_contract_priority_decides_when_config_is_silent(
    autojump_clock: trio.abc.Clock,
) -> None:
    from xypipe._md.records import Batch, ContractRec
    from xypipe.contracts import Contract, Priority

    feed = Routed(**RULES)
    c = ContractRec("V.R1", Contract(venue="V", symbol="R1", group="rates",
                                     priority=Priority.PRIORITY_LOW), 0, 0.0)
    c.route = feed.router.route("V.R1")
    async with stage_harness(Conflate, {"epoch": 1}, level=Level.L3) as h:
        await h.send(Batch([c], 0))
        await h.send(feed.batch([tick(symbol="R1", seq=1), tick(symbol="E1", seq=1)]))
        assert [d.group for d in await h.receive()] == ["eq"]
