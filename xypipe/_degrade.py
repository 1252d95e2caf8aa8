"""Degradation levels and the controller that moves between them.

The controller is a sans-I/O core: it is fed ``(now, pressure)`` samples and answers with a
:class:`Transition` when the level changes. It owns no clock and no task, so the runner (for a
pipeline) and the gateway (for one browser connection) drive the same rules, and tests drive it
with plain numbers.

Pressure is a number in ``[0, ∞)``: 1.0 means "a budget is exactly full". Rules:

* **Up** at once: the level becomes the highest ``n`` with ``pressure >= enter[n-1]``.
* **Down** only after the pressure has stayed below ``leave[level-1]`` for ``dwell`` seconds; the
  level then drops to what the pressure allows under the leave thresholds (one step or several),
  so recovery from any level takes one dwell time once the pressure is gone.
* A forced level (an admin flag) overrides everything until it is cleared.
"""

from __future__ import annotations

import enum
import itertools
import math

import attrs
import trio

from xypipe._validate import Invalid


class Level(enum.IntEnum):
    """Degradation level. Each level includes the reactions of the ones below it."""

    L0 = 0  #: normal
    L1 = 1  #: lower the sampling rate (longer windows, every Nth delta)
    L2 = 2  #: trim fields (depth beyond level 1, optional fields)
    L3 = 3  #: pause low-priority groups; high-value panels keep flowing

    def describe(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Level.L0: "normal",
    Level.L1: "lower sampling rate",
    Level.L2: "trim fields",
    Level.L3: "pause low-priority groups",
}


def _check_thresholds(_inst: object, attribute: attrs.Attribute[tuple[float, ...]],
                      value: object) -> None:
    seq = list(value) if isinstance(value, list | tuple | str) else [value]
    numbers = [v for v in seq if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(seq) != 3 or len(numbers) != 3:
        raise Invalid(attribute.name, "expected 3 numbers for L1, L2, L3", value)
    if not all(0 < v for v in numbers) or any(b <= a for a, b in itertools.pairwise(numbers)):
        raise Invalid(attribute.name, "expected 3 strictly increasing positive numbers", value)


def _as_tuple(value: object) -> object:
    # Lists (TOML arrays) become tuples; anything else reaches the validator as it came.
    return tuple(value) if isinstance(value, list | tuple) else value


@attrs.frozen
class DegradePolicy:
    """When a level is entered and left.

    ``enter[i]``/``leave[i]`` are the pressures for level ``i+1``; each ``leave`` must be below its
    ``enter`` (that gap is the hysteresis). ``dwell_ms`` is how long the pressure must stay low
    before the level comes down. ``sample_ms`` is how often the runner samples the budgets.
    """

    enter: tuple[float, ...] = attrs.field(
        default=(0.5, 0.75, 0.9), converter=_as_tuple, validator=_check_thresholds
    )
    leave: tuple[float, ...] = attrs.field(
        default=(0.25, 0.5, 0.7), converter=_as_tuple, validator=_check_thresholds
    )
    dwell_ms: int = 1000
    sample_ms: int = 50

    def __attrs_post_init__(self) -> None:
        for i, (lo, hi) in enumerate(zip(self.leave, self.enter, strict=True)):
            if lo >= hi:
                raise Invalid(
                    "leave",
                    f"expected leave[{i}] < enter[{i}] ({hi}) so the level cannot flap",
                    list(self.leave),
                )
        if not 1 <= self.dwell_ms <= 60_000:
            raise Invalid("dwell_ms", "expected an integer 1..60000", self.dwell_ms)
        if not 1 <= self.sample_ms <= 10_000:
            raise Invalid("sample_ms", "expected an integer 1..10000", self.sample_ms)


@attrs.frozen
class Pressure:
    """A pressure reading and what caused it (e.g. ``edge ingest→conflate items 900/1024``)."""

    value: float
    source: str = ""

    @classmethod
    def worst(cls, readings: list[Pressure]) -> Pressure:
        if not readings:
            return cls(0.0, "no budgets")
        return max(readings, key=lambda p: p.value)


@attrs.frozen
class Transition:
    """One level change, with the reason and the condition for coming back down."""

    at: float
    old: Level
    new: Level
    pressure: float
    reason: str
    recovery: str

    @property
    def direction(self) -> str:
        return "up" if self.new > self.old else "down"


class DegradationController:
    """Sans-I/O hysteresis controller; see the module docstring for the rules."""

    def __init__(self, policy: DegradePolicy | None = None) -> None:
        self.policy = policy or DegradePolicy()
        self.level = Level.L0
        self.forced: Level | None = None
        self._calm_since: float | None = None
        self._last_change = -math.inf

    def _level_for_enter(self, p: float) -> Level:
        lvl = Level.L0
        for i, threshold in enumerate(self.policy.enter):
            if p >= threshold:
                lvl = Level(i + 1)
        return lvl

    def _level_for_leave(self, p: float) -> Level:
        # The lowest level whose leave threshold the pressure is not below.
        lvl = Level.L0
        for i, threshold in enumerate(self.policy.leave):
            if p >= threshold:
                lvl = Level(i + 1)
        return lvl

    def recovery_condition(self, level: Level | None = None) -> str:
        lvl = self.level if level is None else level
        if self.forced is not None:
            return "forced by operator; clear the flag to recover"
        if lvl == Level.L0:
            return "none (normal)"
        return (
            f"pressure < {self.policy.leave[lvl - 1]:g} for {self.policy.dwell_ms} ms "
            f"returns to L{lvl - 1} or lower"
        )

    def force(self, now: float, level: Level | None) -> Transition | None:
        """Pin the level (operator override); ``None`` hands control back to the pressure."""
        self.forced = level
        if level is None:
            self._calm_since = None
            return None
        return self._move(now, level, 0.0, f"forced to L{int(level)} by operator")

    def update(self, now: float, pressure: Pressure | float) -> Transition | None:
        if not isinstance(pressure, Pressure):
            pressure = Pressure(float(pressure))
        if self.forced is not None:
            return None
        p = pressure.value
        target_up = self._level_for_enter(p)
        if target_up > self.level:
            self._calm_since = None
            reason = (
                f"{pressure.source or 'pressure'} at {p:.2f} >= enter L{int(target_up)} "
                f"threshold {self.policy.enter[target_up - 1]:g}"
            )
            return self._move(now, target_up, p, reason)
        if self.level == Level.L0:
            return None
        if p >= self.policy.leave[self.level - 1]:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
            return None
        if now - self._calm_since < self.policy.dwell_ms / 1000:
            return None
        target_down = self._level_for_leave(p)
        self._calm_since = None if target_down == Level.L0 else now
        reason = (
            f"pressure {p:.2f} stayed below leave L{int(self.level)} threshold "
            f"{self.policy.leave[self.level - 1]:g} for {self.policy.dwell_ms} ms"
        )
        return self._move(now, target_down, p, reason)

    def _move(self, now: float, new: Level, p: float, reason: str) -> Transition | None:
        if new == self.level:
            return None
        old, self.level = self.level, new
        self._last_change = now
        return Transition(
            at=now, old=old, new=new, pressure=p, reason=reason,
            recovery=self.recovery_condition(new),
        )


class LevelWatch:
    """The current level of a pipeline as stages see it: read it, or wait for it to change."""

    def __init__(self, level: Level = Level.L0) -> None:
        self._level = level
        self._changed = trio.Event()
        self.last_transition: Transition | None = None

    @property
    def level(self) -> Level:
        return self._level

    def set(self, level: Level, transition: Transition | None = None) -> None:
        if level == self._level:
            return
        self._level = level
        self.last_transition = transition
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self, seen: Level | None = None) -> Level:
        """Return as soon as the level differs from ``seen`` (default: the current level)."""
        seen = self._level if seen is None else seen
        while self._level == seen:
            await self._changed.wait()
        return self._level
