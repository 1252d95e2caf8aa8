"""Ingest decoding, the dedupe stage and the shard stage, alone."""

from __future__ import annotations

import attrs
import pytest
import trio
from _agg_helpers import rec, tick

from xypipe import ConfigError
from xypipe._md.records import Batch, ContractRec, Restore, TickRec
from xypipe._stages.dedupe import Dedupe
from xypipe._stages.ingest import BadSourceCounter, decode_messages
from xypipe._stages.shard import Shard
from xypipe.contracts import Contract, Snapshot, SymbolState
from xypipe.testing import make_config, stage_harness


@attrs.frozen
class M:
    subject: str
    data: bytes
    seq: int = 0


def test_ingest_decodes_ticks_and_contracts_and_counts_bad_ones_by_reason() -> None:
    from xypipe._degrade import LevelWatch
    from xypipe._log import get_logger
    from xypipe._metrics import Metrics
    from xypipe._stage import StageContext

    ctx = StageContext("p", "ingest", None, None, LevelWatch(), Metrics(), get_logger("t"))
    bad = BadSourceCounter(ctx, per_s=100)
    good = tick("V", "AAA", 3)
    msgs = [
        M("xy.src.tick.V.AAA", good.SerializeToString(), 10),
        M("xy.src.tick.V.AAA", b"\xff\xff\xff", 11),
        M("xy.src.tick.V.BBB", good.SerializeToString(), 12),
        M("xy.src.tick.V.AAA", tick("V", "AAA", 0).SerializeToString(), 13),
        M("xy.ref.contract.V.AAA", Contract(venue="V", symbol="AAA", group="eq")
          .SerializeToString(), 14),
        M("xy.ref.contract.V.AAA", Contract(venue="V", symbol="AAA", group="a b")
          .SerializeToString(), 15),
        M("xy.src.other", b"", 16),
    ]
    recs = decode_messages(msgs, 1.5, bad)
    assert [type(r) for r in recs] == [TickRec, ContractRec]
    assert (recs[0].key, recs[0].seq, recs[0].sseq, recs[0].t_in) == ("V.AAA", 3, 10, 1.5)
    count = {r: ctx.metrics.sample("src_bad_total", {"reason": r})
             for r in ("decode", "subject_mismatch", "seq_range", "bad_group", "unknown_subject")}
    assert count == dict.fromkeys(count, 1.0)


def test_ingest_decodes_through_the_contract_decoder_counting_a_newer_producers_fields() -> None:
    from xypipe._contracts import decoder_for
    from xypipe._degrade import LevelWatch
    from xypipe._log import get_logger
    from xypipe._metrics import Metrics
    from xypipe._stage import StageContext

    ctx = StageContext("p", "ingest", None, None, LevelWatch(), Metrics(), get_logger("t"))
    bad = BadSourceCounter(ctx, per_s=100)
    decoder = decoder_for(ctx.metrics.registry)
    # Field 999 (varint 7) is not in xy.md.v1.Tick: what a newer publisher would add.
    newer = tick("V", "AAA", 3).SerializeToString() + b"\xb8\x3e\x07"
    msgs = [M("xy.src.tick.V.AAA", newer, 10), M("xy.src.tick.V.AAA", b"\xff\xff\xff", 11)]
    recs = decode_messages(msgs, 1.5, bad, decoder=decoder)
    assert [(type(r), r.seq) for r in recs] == [(TickRec, 3)]
    unknown = ctx.metrics.sample("contract_unknown_fields_total", {"message": "xy.md.v1.Tick"})
    errors = ctx.metrics.sample("contract_decode_errors_total", {"message": "xy.md.v1.Tick"})
    assert (unknown, errors) == (1.0, 1.0)
    assert ctx.metrics.sample("src_bad_total", {"reason": "decode"}) == 1.0


async def test_dedupe_stage_orders_drops_and_counts(autojump_clock: trio.abc.Clock) -> None:
    ticks = [tick(seq=s) for s in (1, 2, 4, 3, 3, 5, 8)]
    recs = [rec(t, sseq=i + 1) for i, t in enumerate(ticks)]
    async with stage_harness(Dedupe, {"hold_ms": 20}) as h:
        await h.send(Batch(recs, 7))
        first = await h.receive()
        assert [r.seq for r in first.recs] == [1, 2, 3, 4, 5]
        assert first.watermark == 6  # seq 8 (stream seq 7) is still held
        t = trio.current_time()
        later = await h.receive()
        assert trio.current_time() - t == pytest.approx(0.02, abs=1e-9)
        assert [r.seq for r in later.recs] == [8]
        assert later.watermark == 7
        assert h.counter("src_duplicates_total") == 1
        assert h.counter("reorder_count_total") == 1
        assert h.counter("src_gap_total") == 1
        assert h.counter("src_gap_ticks_total") == 2


async def test_dedupe_stage_starts_from_restored_sequences(autojump_clock: trio.abc.Clock) -> None:
    snap = Snapshot(group="g", symbols=[SymbolState(venue="V", symbol="AAA", seq=5)])
    restore = Restore(epoch=1, snapshots=(snap,), replay_from=10)
    async with stage_harness(Dedupe, {}) as h:
        await h.send(restore)
        assert await h.receive() is restore
        await h.send(Batch([rec(tick(seq=s)) for s in (4, 5, 6)], 12))
        out = await h.receive()
    assert [r.seq for r in out.recs] == [6]


async def test_shard_routes_by_contract_then_rules_then_default() -> None:
    opts = {"shards": 4, "group_shards": {"fx": 1},
            "rules": [{"group": "fx", "symbols": ["EUR*"], "venues": ["V"]}]}
    c = ContractRec("V.AAA", Contract(venue="V", symbol="AAA", group="eq"), 0, 0.0)
    recs = [c, rec(tick("V", "AAA")), rec(tick("V", "EURUSD")), rec(tick("W", "EURUSD")),
            rec(tick("V", "ZZZ"))]
    async with stage_harness(Shard, opts) as h:
        await h.send(Batch(recs, 5))
        out = await h.receive()
    routes = [r.route for r in out.recs]
    assert routes[0] is routes[1]
    assert routes[1].group == "eq" and routes[1].shards == 4
    assert routes[2].subject == "xy.md.tick.fx"
    assert routes[3].group == "default" and routes[4].group == "default"
    assert routes[3].subject.startswith("xy.md.tick.default.")


def test_shard_is_a_stable_hash_of_the_symbol_key() -> None:
    import zlib

    from xypipe._stages.shard import Router

    router = Router(make_config(Shard, {"shards": 8}))
    assert router.route("V.AAA").shard == zlib.crc32(b"V.AAA") % 8
    assert Router(make_config(Shard, {"shards": 8})).route("V.AAA").shard == \
        router.route("V.AAA").shard


def test_bad_stage_options_name_the_key_and_what_was_expected() -> None:
    from xypipe._stages.conflate import Conflate

    with pytest.raises(ConfigError) as err:
        make_config(Conflate, {"interval_ms": 5, "priorities": {"fx": "urgent"}})
    text = str(err.value)
    assert "interval_ms: expected an integer 16..100, got 5" in text
    with pytest.raises(ConfigError, match=r"group name"):
        make_config(Shard, {"rules": [{"group": "a.b"}]})
    with pytest.raises(ConfigError, match=r'priorities.fx: expected one of "low", "normal", '
                                          r'"high", got "urgent"'):
        make_config(Conflate, {"priorities": {"fx": "urgent"}})


def test_stream_sequence_is_read_from_both_reply_subject_formats() -> None:
    from xypipe._errors import BridgeError
    from xypipe._stages._jsfeed import stream_seq_of

    assert stream_seq_of("$JS.ACK.XY_SRC.c1.1.4242.17.1795600000000000000.3") == 4242
    assert stream_seq_of("$JS.ACK.dom.acchash.XY_SRC.c1.1.4242.17.1795600000000000000.3.tok"
                         ) == 4242
    with pytest.raises(BridgeError, match="not a JetStream delivery"):
        stream_seq_of("_INBOX.abc")


def test_consumer_lag_is_read_from_both_reply_subject_formats() -> None:
    from xypipe._errors import BridgeError
    from xypipe._stages._jsfeed import pending_of

    assert pending_of("$JS.ACK.XY_SRC.c1.1.4242.17.1795600000000000000.3") == 3
    assert pending_of("$JS.ACK.dom.acchash.XY_SRC.c1.1.4242.17.1795600000000000000.9000.tok"
                      ) == 9000
    with pytest.raises(BridgeError, match="not a JetStream delivery"):
        pending_of("_INBOX.abc")
