"""The reference plugins, tested the way a plugin author tests theirs: public imports only
(``xypipe``, ``xypipe.abc``, ``xypipe.testing``), Trio's mock clock for time."""

import pytest
import trio

import xypipe
from xypipe.abc import Msg
from xypipe.testing import make_config, stage_harness
from xypipe_examples import SubjectFilter, Throttle


async def test_throttle_spaces_items_to_the_configured_rate(autojump_clock):
    async with stage_harness(Throttle, {"per_second": 10, "burst": 1}) as h:
        start = trio.current_time()
        for i in range(11):
            await h.send(i)
        got = [await h.receive() for _ in range(11)]
        assert got == list(range(11))
        assert trio.current_time() - start == pytest.approx(1.0, abs=0.01)


async def test_subject_filter_keeps_matching_messages_and_counts_the_rest():
    async with stage_harness(SubjectFilter, {"subjects": ["xy.md.tick.*", "xy.ref.>"]}) as h:
        await h.send([Msg("xy.md.tick.fx", b"1"), Msg("xy.md.snapshot.fx", b"2"),
                      Msg("xy.ref.contract.A.B", b"3")])
        kept = await h.receive()
        assert [m.subject for m in kept] == ["xy.md.tick.fx", "xy.ref.contract.A.B"]
        assert h.counter("subject_filter_dropped_total", stage="subjectfilter") == 1


def test_bad_patterns_are_refused_with_the_key_named():
    with pytest.raises(xypipe.ConfigError, match=r"SubjectFilter.subjects: expected a non-empty"):
        make_config(SubjectFilter, {"subjects": ["xy..bad"]})


def test_a_pipeline_config_wires_the_stages_by_module_and_class():
    # What `xypipe check` does with a config naming them ("module:Class" works before the
    # distribution is installed; installed, its entry-point names do too).
    module = Throttle.__module__
    cfg = xypipe.parse_config({"pipelines": {"p": {"stages": [
        {"use": "xypipe.testing:CountingSource"},
        {"use": f"{module}:Throttle", "per_second": 100},
        {"use": "xypipe.testing:ListSink"}]}}}, "plugin.toml")
    assert [s.stage_cls for s in cfg.pipelines["p"].stages][1] is Throttle
    with pytest.raises(xypipe.WiringError, match=r"expected a sink last in the pipeline"):
        xypipe.parse_config({"pipelines": {"p": {"stages": [
            {"use": "xypipe.testing:CountingSource"},
            {"use": f"{module}:Throttle"}]}}}, "plugin.toml")
