"""The process's drain request, and the restart core's answer to a drained exit."""

from __future__ import annotations

import trio
import trio.testing

from xypipe._config import ProcessRestartPolicy
from xypipe._drain_request import DRAINED_EXIT, DrainRequest
from xypipe._restart import GiveUp, Replace, Restart, RestartTracker


async def test_the_drain_waits_for_every_stage_that_joined_and_keeps_the_first_reason():
    drain = DrainRequest()
    a, b = drain.join(), drain.join()
    assert drain.request("SIGTERM") and not drain.request("admin ops")
    assert drain.reason == "SIGTERM"
    done = trio.Event()

    async def waiter() -> None:
        await drain.wait_finished()
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        a.finish()
        a.finish()  # idempotent: it does not count for b
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        b.finish()
        await done.wait()


async def test_a_drain_nobody_joined_is_finished_at_once():
    drain = DrainRequest()
    drain.request("SIGTERM")
    with trio.fail_after(1):
        await drain.wait_finished()


def test_a_drained_exit_is_replaced_at_once_whatever_the_policy_and_spends_no_budget():
    for policy in ("never", "on-failure", "always"):
        t = RestartTracker(ProcessRestartPolicy(policy=policy, max_restarts=1),
                           replace_status=DRAINED_EXIT)
        for i in range(5):
            t.started(float(i))
            assert t.exited(i + 0.5, DRAINED_EXIT) == Replace()
        assert t.statistics(10.0).restarts_total == 0


def test_without_a_replace_status_a_drained_exit_is_an_ordinary_failure():
    t = RestartTracker(ProcessRestartPolicy(policy="on-failure", max_restarts=1))
    t.started(0.0)
    assert isinstance(t.exited(1.0, DRAINED_EXIT), Restart)
    t = RestartTracker(ProcessRestartPolicy(policy="never"))
    t.started(0.0)
    assert isinstance(t.exited(1.0, DRAINED_EXIT), GiveUp)
