"""The runner: wiring, budgets and degradation, failure, restart, shutdown (mock clock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from runner_stages import Endless, SlowSink

import xypipe
from xypipe import Level, parse_config
from xypipe.testing import ListSink


def config(*stages: dict, degrade: dict | None = None, grace_ms: int = 3000) -> xypipe.AppConfig:
    pipe: dict = {"stages": list(stages), "shutdown_grace_ms": grace_ms}
    if degrade:
        pipe["degrade"] = degrade
    return parse_config({"http": {"enabled": False}, "pipelines": {"p": pipe}}, "test.toml")


async def run(cfg: xypipe.AppConfig) -> xypipe.Runner:
    runner = xypipe.Runner(cfg)
    await runner.run()
    return runner


async def test_stages_are_wired_in_order_through_bounded_edges(autojump_clock):
    cfg = config(
        {"use": "xypipe.testing:CountingSource", "count": 50},
        {"use": "runner_stages:Double", "factor": 3, "budget": {"max_items": 4}},
        {"use": "xypipe.testing:ListSink"},
    )
    runner = await run(cfg)
    assert runner.stage("p", "listsink", ListSink).items == [3 * i for i in range(50)]
    (pipe,) = runner.pipelines
    assert [e.name for e in pipe.edges] == ["p:countingsource->double", "p:double->listsink"]
    assert pipe.edges[1].statistics().max_items == 4
    assert pipe.state == "stopped"


async def test_budget_overflow_raises_the_level_and_hysteresis_brings_it_back(autojump_clock):
    cfg = config(
        {"use": "xypipe.testing:CountingSource", "count": 40, "budget": {"max_items": 10}},
        {"use": "runner_stages:SlowSink", "per_item_ms": 100},
        degrade={"enter": [0.5, 0.75, 0.9], "leave": [0.25, 0.5, 0.7], "dwell_ms": 500,
                 "sample_ms": 50},
    )
    runner = xypipe.Runner(cfg)
    levels: list[Level] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        (pipe,) = runner.pipelines

        async def watch() -> None:
            seen = Level.L0
            while True:
                seen = await pipe.watch.wait_change(seen)
                levels.append(seen)

        nursery.start_soon(watch)
        # The source fills the 10-slot edge at once: the first sample sees it full.
        await pipe.finished.wait()
        nursery.cancel_scope.cancel()
    ups = [t for t in pipe.transitions if t.direction == "up"]
    downs = [t for t in pipe.transitions if t.direction == "down"]
    assert ups and ups[0].new == Level.L3
    assert "edge p:countingsource->slowsink items" in ups[0].reason
    # As the sink drains the edge, the level steps down, each step after the dwell time.
    assert downs and downs[-1].new == Level.L0
    for t in downs:
        assert "stayed below leave" in t.reason
    assert levels == [t.new for t in pipe.transitions]
    m = runner.metrics
    assert m.sample("backpressure_events_total",
                    {"scope": "pipeline:p", "direction": "up", "level": "L3"}) == 1
    assert m.sample("degradation_level", {"scope": "pipeline:p"}) == 0


async def test_sustained_pressure_holds_the_level_without_flapping(autojump_clock):
    cfg = config(
        {"use": "xypipe.testing:CountingSource", "count": 200, "budget": {"max_items": 10}},
        {"use": "runner_stages:SlowSink", "per_item_ms": 20},
        degrade={"dwell_ms": 200, "sample_ms": 10},
    )
    runner = await run(cfg)
    (pipe,) = runner.pipelines
    # The edge stays full until the source is done: one rise, then only the final recovery.
    assert [t.direction for t in pipe.transitions][:1] == ["up"]
    assert sum(1 for t in pipe.transitions if t.direction == "up") == 1


async def test_a_failing_stage_stops_the_pipeline_with_its_name_and_error(autojump_clock):
    cfg = config(
        {"use": "runner_stages:Endless", "interval_ms": 1},
        {"use": "runner_stages:Boom", "after": 5},
        {"use": "xypipe.testing:ListSink"},
    )
    runner = xypipe.Runner(cfg)
    with trio.fail_after(60), pytest.raises(xypipe.StageError) as info:
        await runner.run()
    err = info.value
    assert (err.pipeline, err.stage) == ("p", "boom")
    assert str(err).startswith(
        "pipeline 'p', stage 'boom' failed: ValueError: cannot handle item 5 (at ")
    assert err.code == "XY-STG-001"
    assert runner.stage("p", "listsink", ListSink).items == [0, 1, 2, 3, 4]
    assert runner.metrics.sample(
        "stage_failures_total", {"pipeline": "p", "stage": "boom", "error": "ValueError"}
    ) == 1


async def test_restart_policy_restarts_with_backoff_and_counts(autojump_clock):
    cfg = config(
        {"use": "xypipe.testing:CountingSource", "count": 5},
        {"use": "runner_stages:Flaky", "failures": 2,
         "restart": {"policy": "on-failure", "max_restarts": 3, "backoff_ms": 100}},
        {"use": "xypipe.testing:ListSink"},
    )
    start = trio.current_time()
    runner = await run(cfg)
    # Items 0 and 1 were taken by the failed runs; the third run passes the rest through.
    assert runner.stage("p", "listsink", ListSink).items == [2, 3, 4]
    assert runner.metrics.sample("stage_restarts_total", {"pipeline": "p", "stage": "flaky"}) == 2
    # Exponential backoff: 100 ms then 200 ms.
    assert trio.current_time() - start == pytest.approx(0.3, abs=0.01)


async def test_restarts_beyond_the_limit_stop_the_pipeline(autojump_clock):
    cfg = config(
        {"use": "xypipe.testing:CountingSource", "count": 5},
        {"use": "runner_stages:Flaky", "failures": 10,
         "restart": {"policy": "on-failure", "max_restarts": 2, "backoff_ms": 10}},
        {"use": "xypipe.testing:ListSink"},
    )
    with pytest.raises(xypipe.StageError, match="stage 'flaky' failed: ConnectionError: run 3"):
        await run(cfg)


async def test_stop_drains_in_flight_items_and_runs_final_flushes(autojump_clock):
    cfg = config(
        {"use": "runner_stages:Endless", "interval_ms": 10, "budget": {"max_items": 1000}},
        {"use": "runner_stages:SlowSink", "per_item_ms": 1, "name": "drained",
         "budget": {"max_items": 1000}},
    )
    runner = xypipe.Runner(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(1.0)
        runner.stop()
    sent = runner.stage("p", "endless", Endless).sent
    assert sent > 50
    assert runner.stage("p", "drained", SlowSink).items == list(range(sent))


async def test_final_flush_of_a_stage_reaches_the_sink_on_stop(autojump_clock):
    cfg = config(
        {"use": "runner_stages:Endless", "interval_ms": 10},
        {"use": "runner_stages:Batcher"},
        {"use": "xypipe.testing:ListSink"},
    )
    runner = xypipe.Runner(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(0.5)
        runner.stop()
    (batch,) = runner.stage("p", "listsink", ListSink).items
    assert batch == list(range(runner.stage("p", "endless", Endless).sent))


async def test_stop_is_bounded_by_the_grace_period_when_a_stage_will_not_drain(autojump_clock):
    cfg = config(
        {"use": "runner_stages:Endless", "interval_ms": 1, "budget": {"max_items": 5}},
        {"use": "runner_stages:SlowSink", "per_item_ms": 10_000},
        grace_ms=2000,
    )
    runner = xypipe.Runner(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(1.0)
        stopped_at = trio.current_time()
        runner.stop()
    assert trio.current_time() - stopped_at == pytest.approx(2.0, abs=0.1)


async def test_several_pipelines_run_in_one_process(autojump_clock):
    doc = {
        "http": {"enabled": False},
        "pipelines": {
            name: {"stages": [{"use": "xypipe.testing:CountingSource", "count": n},
                              {"use": "xypipe.testing:ListSink"}]}
            for name, n in (("a", 3), ("b", 4))
        },
    }
    runner = await run(parse_config(doc))
    assert {name: runner.stage(name, "listsink", ListSink).items for name in "ab"} == {
        "a": [0, 1, 2], "b": [0, 1, 2, 3]}


async def test_forced_level_reaches_stages_and_is_counted(autojump_clock):
    cfg = config({"use": "runner_stages:Endless"}, {"use": "xypipe.testing:ListSink"})
    runner = xypipe.Runner(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        (pipe,) = runner.pipelines
        pipe.force_level(Level.L2)
        assert pipe.stages[1].ctx.level == Level.L2
        runner.stop()
    assert runner.metrics.sample(
        "backpressure_events_total", {"scope": "pipeline:p", "direction": "up", "level": "L2"}
    ) == 1


class Lagging(xypipe.Stage):
    """A source that reports a backlog outside the pipeline (as ingest does for its stream)."""

    consumes = False

    async def run(self) -> None:
        self.ctx.report_pressure(0.95, "stream SRC backlog 19000/20000 messages")
        await trio.sleep(1.0)
        self.ctx.report_pressure(0.0, "stream SRC backlog 0/20000 messages")
        await trio.sleep(3.0)


async def test_a_backlog_reported_by_a_stage_drives_the_level_like_an_edge(autojump_clock):
    cfg = config({"use": "test_runner:Lagging"}, {"use": "xypipe.testing:ListSink"},
                 degrade={"dwell_ms": 500, "sample_ms": 50})
    runner = await run(cfg)
    (pipe,) = runner.pipelines
    up, down = pipe.transitions
    assert (up.new, down.new) == (Level.L3, Level.L0)
    assert "stream SRC backlog 19000/20000 messages at 0.95" in up.reason
