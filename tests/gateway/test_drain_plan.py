"""The drain's stagger plan (sans-I/O, plain numbers): who is told to move when, who is closed
for not moving, and when the shell must look again."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from xypipe._gateway._drain import DrainPlan, DrainPolicy

POLICY = DrainPolicy(drain_s=10.0, close_in_s=2.0)


def test_moves_are_spread_evenly_over_drain_s_minus_close_in_oldest_first():
    plan = DrainPlan([4, 1, 3, 2], 100.0, POLICY)
    told = {}
    now = 100.0
    while now <= plan.end:
        for c in plan.moves_due(now):
            told[c] = now
        now = round(now + 0.5, 6)
    assert told == {1: 100.0, 2: 102.0, 3: 104.0, 4: 106.0}
    # The last one told still has close_in_s before the drain ends.
    assert max(told.values()) + POLICY.close_in_s <= plan.end


def test_each_connection_is_told_once_and_one_that_left_is_not_told():
    plan = DrainPlan([1, 2, 3], 0.0, POLICY)
    assert plan.moves_due(0.0) == [1]
    assert plan.moves_due(0.0) == []
    plan.left(2)
    assert plan.moves_due(8.0) == [3]
    assert plan.statistics().waiting == 0


def test_a_told_client_that_stays_is_closed_after_close_in_and_one_that_leaves_counts_as_left():
    plan = DrainPlan([1, 2], 0.0, POLICY)
    assert plan.moves_due(0.0) == [1]
    assert plan.next_at() == 2.0  # close_in of 1 and the move of 2 fall together here
    assert plan.overdue(1.9) == []
    assert plan.overdue(2.0) == [1]
    assert plan.moves_due(4.0) == [2]
    plan.left(2)
    plan.left(2)  # reported twice: counted once
    stats = plan.statistics()
    assert (stats.waiting, stats.told, stats.left, stats.closed) == (0, 0, 1, 1)
    assert plan.done


def test_at_the_end_everyone_left_is_overdue_told_or_not():
    plan = DrainPlan([1, 2, 3], 0.0, DrainPolicy(drain_s=1.0, close_in_s=5.0))
    assert plan.moves_due(0.0) == [1, 2, 3]  # spread window is 0: everyone at once
    assert plan.overdue(0.5) == []
    assert sorted(plan.overdue(1.0)) == [1, 2, 3]
    assert plan.done


def test_a_connection_arriving_while_draining_is_told_at_once():
    plan = DrainPlan([1, 2], 0.0, POLICY)
    assert plan.moves_due(0.0) == [1]
    plan.arrived(9, 1.0)
    assert plan.next_at() == 1.0
    assert plan.moves_due(1.0) == [9]
    assert plan.moves_due(4.0) == [2]


def test_no_connections_means_nothing_to_do_until_the_end():
    plan = DrainPlan([], 5.0, POLICY)
    assert plan.done and plan.next_at() == 15.0 and plan.moves_due(15.0) == []


@given(n=st.integers(1, 300), drain_s=st.floats(0.0, 60.0), close_in_s=st.floats(0.001, 10.0))
def test_every_connection_is_told_exactly_once_within_the_spread_window(
        n: int, drain_s: float, close_in_s: float) -> None:
    policy = DrainPolicy(drain_s=drain_s, close_in_s=close_in_s)
    plan = DrainPlan(range(n), 0.0, policy)
    told: list[int] = []
    now = 0.0
    while not plan.done and now <= plan.end:
        told += plan.moves_due(now)
        for c in plan.overdue(now):
            plan.left(c)
        nxt = plan.next_at()
        now = max(nxt, now + 1e-9)
    assert sorted(told) == list(range(n))
    # Told in order, none before the start, the last no later than the spread window.
    assert told == sorted(told)
