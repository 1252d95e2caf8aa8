"""One browser connection's degradation (sans-I/O): when its level moves and what it pauses.

The connection's send-queue pressure drives the same hysteresis controller as the pipelines
(:class:`~xypipe._degrade.DegradationController`: *when*); what a level does comes from the
gateway's :class:`~xypipe._levels.LevelPolicy` (*what*): the groups whose priority is paused at
that level stop (``priority_groups`` are high, every other group low), and at a level that may
close, a queue still over ``close_pressure`` after ``close_after_ms`` ends the connection. An
operator can pin the level (``gateway.force_level``) or pause groups
(``gateway.disabled_groups``).

The :class:`~xypipe._gateway._session.Session` owns the state machine; this part tells it what
changed and adds the effects that follow (``PauseGroups``, ``LevelChanged``, ``DegradeChange``
frames).
"""

from __future__ import annotations

from collections.abc import Iterable

from xypipe._degrade import DegradationController, Level, Pressure, Transition
from xypipe._gateway._session_effects import Effects, LevelChanged, PauseGroups
from xypipe._gateway._session_policy import SessionPolicy
from xypipe._md.projection import split_stream
from xypipe.contracts import DegradeChange, ServerFrame


class ConnectionLevel:
    """The level of one connection, the groups it pauses, and how long it has been overloaded."""

    def __init__(self, policy: SessionPolicy, out: Effects) -> None:
        self.policy = policy
        self.out = out
        self.controller = DegradationController(policy.degrade)
        #: Groups paused by an operator flag, whatever the level.
        self.disabled: frozenset[str] = frozenset()
        #: This connection's groups that must not flow now (level or operator).
        self.paused: frozenset[str] = frozenset()
        self._overload_since: float | None = None

    @property
    def level(self) -> Level:
        return self.controller.level

    def sample(self, now: float, pressure: Pressure) -> tuple[Transition | None, str | None]:
        """A send-queue pressure sample: the level change it causes, if any, and why the
        connection must close, if it must (still overloaded at a level that may close)."""
        t = self.controller.update(now, pressure)
        p = self.policy
        if not (p.levels.at(self.level).may_close and pressure.value >= p.close_pressure):
            self._overload_since = None
            return t, None
        if self._overload_since is None:
            self._overload_since = now
            return t, None
        if now - self._overload_since < p.close_after_ms / 1000:
            return t, None
        return t, (f"slow consumer: send queue still at {pressure.value:.2f} of its budget "
                   f"after {p.close_after_ms} ms at L{int(self.level)} ({pressure.source})")

    def force(self, now: float, level: Level | None) -> Transition | None:
        """Operator override; ``None`` returns control to the pressure. Cleared, the level
        comes down by the usual rule (pressure below the leave threshold for the dwell time),
        so a still-slow connection does not bounce to L0 and back."""
        if level is None and self.controller.forced is None:
            return None
        if level is not None and self.controller.forced == level:
            return None
        return self.controller.force(now, level)

    def is_disabled(self, group: str) -> bool:
        """Disabled by the operator: the group, or the group a projection belongs to."""
        return group in self.disabled or split_stream(group)[0] in self.disabled

    def repause(self, groups: Iterable[str]) -> bool:
        """Recompute which of ``groups`` pause (a ``PauseGroups`` effect when that changed);
        True when it changed."""
        reaction = self.policy.levels.at(self.level)
        priority_of = self.policy.priority_of
        # A projection (``group/name``) pauses with its group: same flag, same priority.
        new = frozenset(g for g in groups if self.is_disabled(g) or (
            reaction.paused_priorities and reaction.pauses(priority_of(split_stream(g)[0]))))
        if new == self.paused:
            return False
        self.paused = new
        self.out.add(PauseGroups(new))
        return True

    def changed(self, t: Transition, groups: Iterable[str]) -> None:
        """The level moved: say so (``LevelChanged``), re-pause, tell the client."""
        self.out.add(LevelChanged(t))
        self.repause(groups)
        self.out.send(ServerFrame(degrade=DegradeChange(
            level=int(t.new), reason=t.reason, recovery=t.recovery,
            paused_groups=sorted(self.paused),
        )))

    def announce_paused(self, groups: Iterable[str]) -> None:
        """Tell the client which of its groups are paused now (the level did not change)."""
        disabled = sorted(g for g in set(groups) if self.is_disabled(g))
        if disabled:
            reason = "groups disabled by operator: " + ", ".join(disabled)
        elif self.paused:
            reason = f"L{int(self.level)}: low-priority groups paused"
        else:
            reason = "no group paused"
        self.out.send(ServerFrame(degrade=DegradeChange(
            level=int(self.level), reason=reason,
            recovery=self.controller.recovery_condition(), paused_groups=sorted(self.paused),
        )))
