"""The degradation controller: a sans-I/O core driven with plain numbers."""

import pytest

from xypipe import DegradationController, DegradePolicy, Invalid, Level, Pressure

POLICY = DegradePolicy(enter=(0.5, 0.75, 0.9), leave=(0.25, 0.5, 0.7), dwell_ms=1000)


def test_pressure_raises_the_level_at_once_to_the_highest_threshold_crossed():
    c = DegradationController(POLICY)
    t = c.update(0.0, Pressure(0.8, "edge a->b items 820/1024"))
    assert t is not None
    assert (t.old, t.new) == (Level.L0, Level.L2)
    assert "edge a->b items 820/1024" in t.reason
    assert "pressure < 0.5 for 1000 ms" in t.recovery


def test_level_stays_between_leave_and_enter_thresholds():
    c = DegradationController(POLICY)
    c.update(0.0, 0.6)
    assert c.level == Level.L1
    for now in range(1, 20):
        assert c.update(float(now), 0.3) is None  # above leave L1 (0.25): hysteresis holds
    assert c.level == Level.L1


def test_level_comes_down_only_after_the_dwell_time():
    c = DegradationController(POLICY)
    c.update(0.0, 0.95)
    assert c.level == Level.L3
    assert c.update(1.0, 0.0) is None  # calm starts
    assert c.update(1.9, 0.0) is None  # not long enough
    t = c.update(2.0, 0.0)
    assert t is not None and t.new == Level.L0 and t.direction == "down"


def test_pressure_spike_during_dwell_restarts_the_dwell():
    c = DegradationController(POLICY)
    c.update(0.0, 0.6)
    c.update(0.5, 0.1)
    c.update(1.0, 0.3)  # back above leave: calm interrupted
    assert c.update(1.6, 0.1) is None
    assert c.update(2.5, 0.1) is None
    assert c.update(2.6, 0.1).new == Level.L0


def test_recovery_can_stop_at_an_intermediate_level():
    c = DegradationController(POLICY)
    c.update(0.0, 0.95)
    c.update(1.0, 0.6)  # below leave L3 (0.7), above leave L1 (0.25) and L2 (0.5)
    t = c.update(2.0, 0.6)
    assert t is not None and t.new == Level.L2


def test_forced_level_overrides_pressure_until_cleared():
    c = DegradationController(POLICY)
    t = c.force(0.0, Level.L3)
    assert t.new == Level.L3 and "operator" in t.reason
    assert c.update(10.0, 0.0) is None
    assert c.level == Level.L3
    c.force(10.0, None)
    c.update(11.0, 0.0)
    assert c.update(12.0, 0.0).new == Level.L0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"enter": (0.5, 0.4, 0.9)}, "enter: expected 3 strictly increasing positive numbers"),
        ({"leave": (0.6, 0.7, 0.8)}, "leave: expected leave[0] < enter[0] (0.5)"),
        ({"enter": (0.5, 0.75)}, "enter: expected 3 numbers for L1, L2, L3"),
    ],
)
def test_bad_policies_are_refused_with_the_field_named(kwargs, message):
    with pytest.raises(Invalid, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        DegradePolicy(**kwargs)
