"""How an exception reads in a log line: a crashed stage's line must name the real fault."""

from __future__ import annotations

import logging

import pytest

from xypipe._errors import BridgeError, StageError, describe_exception
from xypipe._log_render import LogEvent


def _raise_key() -> None:
    raise KeyError("crypto")


def _caught(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def test_an_unexpected_exception_says_where_it_was_raised():
    text = describe_exception(_caught(_raise_key))
    assert text.startswith("KeyError: 'crypto' (at test_errors_describe.py:")
    assert text.endswith("in _raise_key)")


def test_our_own_errors_read_as_their_message():
    assert describe_exception(BridgeError("KV get xy/a: timed out")) == \
        "BridgeError: KV get xy/a: timed out"


def test_a_nursery_group_reads_as_its_leaves():
    def boom() -> None:
        raise ExceptionGroup("Exceptions from Trio nursery (2 sub-exceptions)", [
            ExceptionGroup("inner", [_caught(_raise_key)]), ValueError("bad fence")])
    text = describe_exception(_caught(boom))
    assert "Trio nursery" not in text
    assert text.startswith("KeyError: 'crypto' (at ")
    assert "; ValueError: bad fence" in text


def test_many_leaves_are_counted_not_listed():
    group = ExceptionGroup("g", [ValueError(str(i)) for i in range(5)])
    assert describe_exception(group).endswith("; and 2 more")


@pytest.mark.parametrize("wrap", [1, 3])
def test_a_stage_error_names_the_leaf_of_any_depth(wrap: int):
    exc: BaseException = _caught(_raise_key)
    for _ in range(wrap):
        exc = ExceptionGroup("Exceptions from Trio nursery (1 sub-exception)", [exc])
    err = StageError("aggregator", "ingest", exc)
    assert "pipeline 'aggregator', stage 'ingest' failed: KeyError: 'crypto' (at " in str(err)


def test_the_log_line_of_a_crash_carries_the_leaf():
    exc = ExceptionGroup("Exceptions from Trio nursery (1 sub-exception)", [_caught(_raise_key)])
    record = logging.LogRecord("xypipe.stage.ingest", logging.ERROR, "", 0, "stage failed",
                               None, (type(exc), exc, exc.__traceback__))
    assert LogEvent.of(record).fields["error"].startswith("KeyError: 'crypto' (at ")
