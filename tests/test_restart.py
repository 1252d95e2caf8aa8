"""The restart policy core: budget, backoff and policy, fed plain numbers (no clock, no I/O);
and the policy as a config table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xypipe._config import ProcessRestartPolicy, parse_config
from xypipe._errors import ConfigError
from xypipe._restart import Done, GiveUp, Restart, RestartTracker


def tracker(**kw: object) -> RestartTracker:
    return RestartTracker(ProcessRestartPolicy(**kw))  # type: ignore[arg-type]


def test_a_failure_restarts_after_the_base_backoff_and_each_next_one_waits_twice_as_long():
    t = tracker(backoff_ms=100, max_backoff_ms=1000, max_restarts=10, stable_s=60)
    t.started(0.0)
    delays = []
    now = 0.0
    for _ in range(6):
        now += 1.0
        decision = t.exited(now, 1)
        assert isinstance(decision, Restart)
        delays.append(decision.delay_s)
        t.started(now + decision.delay_s)
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_stable_run_starts_the_backoff_over():
    t = tracker(backoff_ms=100, max_backoff_ms=5000, stable_s=10)
    t.started(0.0)
    assert t.exited(1.0, 1) == Restart(delay_s=0.1, restarts=1)
    t.started(1.1)
    assert t.exited(2.0, 1) == Restart(delay_s=0.2, restarts=2)
    t.started(2.2)
    # Ran 10 s: the process was fine, this failure is a new story.
    assert t.exited(12.2, 1) == Restart(delay_s=0.1, restarts=3)


def test_the_budget_gives_up_on_the_failure_after_max_restarts_within_the_window():
    t = tracker(max_restarts=3, window_s=60, backoff_ms=0, max_backoff_ms=0)
    for now in (1.0, 2.0, 3.0):
        t.started(now - 0.5)
        assert isinstance(t.exited(now, -9), Restart)
    t.started(3.5)
    decision = t.exited(4.0, -9)
    assert decision == GiveUp("restart budget spent (3 of 3 restarts in 60 s)", budget_spent=True)


def test_restarts_older_than_the_window_no_longer_count():
    t = tracker(max_restarts=2, window_s=10, backoff_ms=0, max_backoff_ms=0)
    t.started(0.0)
    assert t.exited(1.0, 1) == Restart(delay_s=0.0, restarts=1)
    t.started(1.0)
    assert t.exited(5.0, 1) == Restart(delay_s=0.0, restarts=2)
    t.started(5.0)
    # The restart at t=1 left the window at t=11; the one at t=5 is still in it.
    assert t.exited(11.5, 1) == Restart(delay_s=0.0, restarts=2)
    assert t.statistics(11.5).restarts_in_window == 2
    assert t.statistics(11.5).restarts_total == 3


def test_on_failure_lets_a_clean_exit_be_and_restarts_signals_and_failed_starts():
    t = tracker(policy="on-failure")
    t.started(0.0)
    assert t.exited(1.0, 0) == Done()
    assert isinstance(t.exited(2.0, -9), Restart)  # SIGKILL
    assert isinstance(t.exited(3.0, None), Restart)  # could not start


def test_always_restarts_a_clean_exit_too():
    t = tracker(policy="always")
    t.started(0.0)
    assert t.exited(1.0, 0) == Restart(delay_s=0.1, restarts=1)


def test_never_gives_up_on_any_exit_without_spending_a_budget():
    t = tracker(policy="never")
    t.started(0.0)
    assert t.exited(1.0, 0) == GiveUp('restart policy "never"', budget_spent=False)
    assert t.exited(1.0, 1) == GiveUp('restart policy "never"', budget_spent=False)


def test_a_budget_of_zero_gives_up_at_the_first_failure():
    t = tracker(max_restarts=0)
    t.started(0.0)
    decision = t.exited(1.0, 1)
    assert isinstance(decision, GiveUp) and decision.budget_spent


@given(
    max_restarts=st.integers(0, 6),
    window_s=st.floats(0.5, 30),
    backoff_ms=st.integers(0, 500),
    extra_ms=st.integers(0, 5000),
    gaps=st.lists(st.floats(0.0, 20.0), min_size=1, max_size=40),
)
def test_no_window_ever_holds_more_restarts_than_the_budget_and_delays_stay_in_bounds(
    max_restarts, window_s, backoff_ms, extra_ms, gaps
):
    policy = ProcessRestartPolicy(
        max_restarts=max_restarts, window_s=window_s, backoff_ms=backoff_ms,
        max_backoff_ms=backoff_ms + extra_ms,
    )
    t = RestartTracker(policy)
    now = 0.0
    t.started(now)
    restarts: list[float] = []
    for gap in gaps:
        now += gap
        decision = t.exited(now, 1)
        if isinstance(decision, GiveUp):
            # Gave up only because the window really was full.
            assert len([r for r in restarts if r > now - window_s]) == max_restarts
            return
        assert isinstance(decision, Restart)
        restarts.append(now)
        assert len([r for r in restarts if r > now - window_s]) <= max_restarts
        assert backoff_ms / 1000 <= decision.delay_s <= policy.max_backoff_ms / 1000
        now += decision.delay_s
        t.started(now)


# --------------------------------------------------------------------------- as config

_PIPES = {"pipelines": {"p": {"process": "w", "stages": [
    {"use": "runner_stages:Endless"}, {"use": "xypipe.testing:ListSink"}]}}}


def _load(processes: dict, nats: dict | None = None) -> object:
    doc: dict = {**_PIPES, "processes": processes}
    if nats is not None:
        doc["nats"] = nats
    return parse_config(doc, "t.toml")


def test_processes_and_the_embedded_server_get_self_healing_defaults():
    cfg = _load({"w": {}}, {"url": "embedded"})
    assert cfg.processes["w"].restart == ProcessRestartPolicy(
        policy="on-failure", max_restarts=5, window_s=60.0, backoff_ms=100,
        max_backoff_ms=5000, stable_s=10.0,
    )
    # Nothing works without NATS: it comes back even from a clean exit.
    assert cfg.nats.embedded.restart.policy == "always"


def test_a_policy_name_alone_is_short_for_a_table_with_only_the_policy():
    cfg = _load({"w": {"restart": "never"}})
    assert cfg.processes["w"].restart == ProcessRestartPolicy(policy="never")
    cfg = _load({"w": {"restart": {"policy": "always", "max_restarts": 2, "window_s": 5}}})
    assert cfg.processes["w"].restart.max_restarts == 2


@pytest.mark.parametrize(("restart", "message"), [
    ({"policy": "sometimes"},
     't.toml: processes.w.restart.policy: expected one of "always", "on-failure", "never", '
     'got "sometimes"'),
    ("nope",
     't.toml: processes.w.restart.policy: expected one of "always", "on-failure", "never", '
     'got "nope"'),
    ({"max_restarts": "5"},
     't.toml: processes.w.restart.max_restarts: expected an integer 0..1000000, got "5"'),
    ({"window_s": 0},
     "t.toml: processes.w.restart.window_s: expected a number 0.001..86400, got 0.0"),
    ({"backoff_ms": 500, "max_backoff_ms": 100},
     "t.toml: processes.w.restart.max_backoff_ms: expected at least backoff_ms (500), got 100"),
    ({"bakoff_ms": 5},
     "t.toml: processes.w.restart.bakoff_ms: unknown key; did you mean 'backoff_ms'?"),
    (3, "t.toml: processes.w.restart: expected a table, got 3"),
])
def test_a_bad_restart_policy_names_the_process_key_and_what_was_expected(restart, message):
    with pytest.raises(ConfigError) as info:
        _load({"w": {"restart": restart}})
    assert info.value.problems == [message]


def test_a_bad_embedded_restart_policy_names_its_key():
    with pytest.raises(ConfigError) as info:
        _load({"w": {}}, {"url": "embedded", "embedded": {"restart": {"max_restarts": -1}}})
    assert info.value.problems == [
        "t.toml: nats.embedded.restart.max_restarts: expected an integer 0..1000000, got -1"
    ]
