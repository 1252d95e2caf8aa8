"""The reference plugins, tested the way a plugin author would test theirs."""

import pytest
import trio

from xypipe import ConfigError
from xypipe._messages import Publish
from xypipe.testing import stage_harness
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
        await h.send([Publish("xy.md.tick.fx", b"1"), Publish("xy.md.snapshot.fx", b"2"),
                      Publish("xy.ref.contract.A.B", b"3")])
        kept = await h.receive()
        assert [m.subject for m in kept] == ["xy.md.tick.fx", "xy.ref.contract.A.B"]
        assert h.counter("subject_filter_dropped_total", stage="subjectfilter") == 1


def test_bad_patterns_are_refused_with_the_key_named():
    with pytest.raises(ConfigError, match=r"SubjectFilter.subjects: expected a non-empty list"):
        from xypipe.testing import make_config

        make_config(SubjectFilter, {"subjects": ["xy..bad"]})
