"""The per-level policy: what each degradation level does, one table for aggregator and gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import xypipe
from xypipe._degrade import DegradePolicy, Level, Pressure
from xypipe._errors import ConfigError
from xypipe._gateway._connlevel import ConnectionLevel
from xypipe._gateway._hub import Hub, Outbox
from xypipe._gateway._options import GatewayOptions
from xypipe._gateway._session_effects import Effects, PauseGroups
from xypipe._gateway._session_policy import SessionPolicy
from xypipe._levels import LevelPolicy, Reaction, policy_table
from xypipe._md.conflation import Conflator
from xypipe._md.records import Batch, Route, TickRec
from xypipe._stages.conflate import ConflateConfig
from xypipe._validate import Invalid
from xypipe.contracts import Delta, PriceLevel, Priority, ServerFrame, Snapshot, Tick

LOW, NORMAL, HIGH = Priority.PRIORITY_LOW, Priority.PRIORITY_NORMAL, Priority.PRIORITY_HIGH
DOCS = Path(__file__).resolve().parents[1] / "docs"


def reaction(level: Level, window: int, merge: bool, trim: int | None, paused: set[int],
             interval: int, close: bool) -> Reaction:
    return Reaction(level, window, merge, trim, frozenset(paused), interval, close)


def test_each_level_keeps_the_reactions_of_the_levels_below_it() -> None:
    assert LevelPolicy().table() == (
        reaction(Level.L0, 1, False, None, set(), 0, False),
        reaction(Level.L1, 3, True, None, set(), 100, False),
        reaction(Level.L2, 3, True, 1, set(), 250, False),
        reaction(Level.L3, 3, True, 1, {LOW}, 500, True),
    )


def test_configured_values_show_at_the_levels_they_belong_to() -> None:
    p = LevelPolicy(window_factor=5, trim_depth=3, paused_priorities=[LOW, NORMAL],
                    frame_interval_ms=[0, 10, 20, 30])
    assert [p.at(lvl).window_factor for lvl in Level] == [1, 5, 5, 5]
    assert [p.at(lvl).trim_depth for lvl in Level] == [None, None, 3, 3]
    assert [p.at(lvl).frame_interval_s for lvl in Level] == [0.0, 0.01, 0.02, 0.03]
    assert not p.at(Level.L2).pauses(LOW)
    assert p.at(Level.L3).pauses(LOW) and p.at(Level.L3).pauses(NORMAL)
    assert not p.at(Level.L3).pauses(HIGH)


def test_the_last_window_goes_out_at_the_highest_level_that_pauses_nothing() -> None:
    p = LevelPolicy()
    assert [p.unpaused(lvl) for lvl in Level] == [Level.L0, Level.L1, Level.L2, Level.L2]
    assert LevelPolicy(paused_priorities=[]).unpaused(Level.L3) == Level.L3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"trim_depth": 0}, "trim_depth: expected an integer 1..10, got 0"),
    ({"window_factor": 11}, "window_factor: expected an integer 1..10, got 11"),
    ({"frame_interval_ms": [0, 1, 2]},
     r"frame_interval_ms: expected 4 integers 0..60000 \(L0..L3\), got \[0, 1, 2\]"),
])
def test_an_impossible_policy_is_refused_with_what_was_expected(kwargs: dict[str, Any],
                                                                message: str) -> None:
    with pytest.raises(Invalid, match=message):
        LevelPolicy(**kwargs)


# --------------------------------------------------------------------------- both sides


def gateway_options(**kw: Any) -> GatewayOptions:
    return GatewayOptions(public_key="unused.pem", allowed_origins=["*"], **kw)


def test_each_side_builds_its_policy_from_its_own_config_keys() -> None:
    agg = ConflateConfig(l1_factor=4, trim_depth=2, pause_priorities=["low", "normal"]).levels
    assert (agg.window_factor, agg.trim_depth, agg.paused_priorities) == (4, 2, {LOW, NORMAL})
    gw = gateway_options(trim_depth=2, level_interval_ms=[0, 5, 6, 7]).levels
    assert (gw.trim_depth, gw.frame_interval_ms) == (2, (0, 5, 6, 7))
    # Left alone, both sides trim to the same depth.
    assert ConflateConfig().levels.at(Level.L2).trim_depth == 1
    assert gateway_options().levels.at(Level.L2).trim_depth == 1


def _tick_rec(depth: int) -> TickRec:
    t = Tick(venue="V", symbol="AAA", seq=1, last=100, ts_arrival_us=1_000,
             bids=[PriceLevel(price=99 - i, size=10 + i) for i in range(depth)],
             asks=[PriceLevel(price=101 + i, size=20 + i) for i in range(depth)])
    r = TickRec("V.AAA", t, 1, 0.0)
    r.route = Route("fx", 0, 1, "xy.md.tick.fx")
    return r


def _frame(data: bytes) -> ServerFrame:
    n = data[1] & 0x7F
    return ServerFrame.FromString(data[2:] if n < 126 else data[4:] if n == 126 else data[10:])


@pytest.mark.parametrize("depth", [1, 3])
def test_aggregator_and_gateway_trim_to_the_same_configured_depth(depth: int) -> None:
    levels = LevelPolicy(trim_depth=depth)
    # The aggregator at L2 trims what it emits...
    agg = Conflator(1, levels=levels)
    agg.apply(Batch([_tick_rec(5)], 1))
    (trimmed_here,) = agg.emit(1, Level.L2, 33)
    (agg_state,) = Delta.FromString(trimmed_here.payload).symbols
    # ...and a gateway connection at L2 trims a full delta the same way.
    full = Conflator(1)
    full.apply(Batch([_tick_rec(5)], 1))
    (d,) = full.emit(1, Level.L0, 33)
    hub = Hub(levels=levels)
    hub.on_snapshot("xy.md.snapshot.fx",
                    Snapshot(group="fx", epoch=1, version=1, shards=1).SerializeToString(), 0.0)
    ob = Outbox(1)
    hub.subscribe(ob, "fx", frozenset())
    hub.build(ob, 1)
    hub.on_delta("xy.md.tick.fx", d.payload, 0.0)
    ob.level = Level.L2
    built = hub.build(ob, 2)
    assert built is not None
    (gw_state,) = _frame(built.data).deltas[0].symbols
    assert len(agg_state.bids) == len(agg_state.asks) == depth and agg_state.trimmed
    assert list(gw_state.bids) == list(agg_state.bids) and gw_state.trimmed
    assert list(gw_state.asks) == list(agg_state.asks)
    assert gw_state.checksum == agg_state.checksum  # of the full book, on both sides


def test_a_connection_pauses_what_its_level_pauses_by_the_same_table() -> None:
    out = Effects()
    conn = ConnectionLevel(SessionPolicy(priority_groups=("fx",)), out)
    conn.force(0.0, Level.L2)
    assert not conn.repause(["fx", "news"]) and conn.paused == frozenset()
    conn.force(1.0, Level.L3)
    assert conn.repause(["fx", "news"]) and conn.paused == {"news"}  # fx: priority (high)
    assert PauseGroups(frozenset({"news"})) in out.take()
    pauses_nothing = SessionPolicy(levels=LevelPolicy(paused_priorities=[]))
    quiet = ConnectionLevel(pauses_nothing, Effects())
    quiet.force(0.0, Level.L3)
    assert not quiet.repause(["news"]) and quiet.paused == frozenset()


def test_only_a_level_that_may_close_closes_an_overloaded_connection() -> None:
    conn = ConnectionLevel(SessionPolicy(close_after_ms=100), Effects())
    conn.force(0.0, Level.L2)
    assert [conn.sample(t, Pressure(2.0, "full"))[1] for t in (0.0, 0.2, 0.4)] == [None] * 3
    conn.force(0.5, Level.L3)
    assert conn.sample(0.6, Pressure(2.0, "full"))[1] is None  # the overload clock starts
    assert conn.sample(0.65, Pressure(0.5, "drained"))[1] is None  # ...and stops
    assert conn.sample(0.7, Pressure(2.0, "full"))[1] is None
    why = conn.sample(0.8, Pressure(2.0, "full"))[1]
    assert why == "slow consumer: send queue still at 2.00 of its budget after 100 ms at L3 (full)"


def _config(gateway: dict[str, Any]) -> xypipe.AppConfig:
    stage = {"use": "gateway", "public_key": "gw.pem", "allowed_origins": ["*"], **gateway}
    return xypipe.parse_config({
        "nats": {"url": "nats://127.0.0.1:4222"},
        "pipelines": {"gateway": {"stages": [
            {"use": "nats_source", "subjects": ["xy.md.tick.>"]}, stage]}},
    }, "levels.toml")


def test_gateway_trim_depth_is_a_checked_config_key() -> None:
    cfg = _config({"trim_depth": 2})
    options = cfg.pipelines["gateway"].stages[1].config
    assert isinstance(options, GatewayOptions)
    assert options.levels.at(Level.L3).trim_depth == 2
    with pytest.raises(ConfigError) as info:
        _config({"trim_depth": 0})
    assert info.value.problems == [
        "levels.toml: pipelines.gateway.stages[1] (gateway).trim_depth: expected an integer "
        "1..10, got 0"]
    with pytest.raises(ConfigError, match="did you mean 'trim_depth'"):
        _config({"trim_dept": 2})


def test_the_architecture_document_shows_the_policy_table_the_code_has() -> None:
    text = (DOCS / "architecture.md").read_text()
    table = policy_table(LevelPolicy(), DegradePolicy())
    assert table in text, "docs/architecture.md: regenerate with xypipe._levels.policy_table()"
