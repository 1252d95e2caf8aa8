"""Retrying through an outage when the failures come in a group (calls run at once)."""

from __future__ import annotations

import pytest
import trio

from xypipe._errors import BridgeError, NatsTimeout
from xypipe._retry import Backoff, retrying
from xypipe._trio_util import both


async def test_two_concurrent_reads_timing_out_together_are_one_retried_outage():
    """``both`` reads of a restore point time out on the same election: one retry, no crash."""
    calls = 0

    async def read() -> int:
        raise NatsTimeout("last message per subject of 'XY_SNAP': 0 of 5 read, then nothing")

    async def restore_point() -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return await raw_both(read, read)
        return 1, 2

    failures: list[BridgeError] = []
    assert await retrying("restore point", restore_point, backoff=Backoff(0.0, 0.0),
                          on_failure=failures.append) == (1, 2)
    assert calls == 2 and len(failures) == 1


async def test_a_group_holding_a_bug_is_not_retried():
    async def fn() -> None:
        raise ExceptionGroup("two", [NatsTimeout("t"), KeyError("crypto")])

    with pytest.raises(ExceptionGroup):
        await retrying("x", fn, backoff=Backoff(0.0, 0.0))


async def test_both_failing_together_come_out_as_one_error_a_bug_first():
    async def timeout() -> int:
        raise NatsTimeout("slow")

    async def bug() -> int:
        raise KeyError("crypto")

    with pytest.raises(NatsTimeout):
        await both(timeout, timeout)
    with pytest.raises(KeyError):
        await both(timeout, bug)
    with pytest.raises(KeyError):
        await both(bug, timeout)


async def raw_both(first, second):
    """Two calls at once with a bare nursery: a group when both fail."""
    async with trio.open_nursery() as n:
        n.start_soon(first)
        n.start_soon(second)
    return 0, 0
