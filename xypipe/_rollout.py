"""A rolling restart as a sans-I/O state machine: which copy is replaced next, and what to do.

A rollout replaces the supervised copies of a running tree one at a time (*surge*: the new copy
runs beside the old one before the old one goes). For each step: start the new copy, wait until
it is ready (``ready_timeout_s``), watch its health gate for ``gate_s`` (``canary_s`` for the
first step when set: a canary is the same mechanism with a longer first step), then drain and
stop the old copy and go on. A new copy that never gets ready, exits, or fails its gate ends the
rollout: that copy is drained, the old copies not yet replaced keep serving.

:class:`Rollout` is fed events with the time they happened (it has no clock of its own) and
answers with :data:`Action` values; :mod:`xypipe._rollout_shell` does the I/O. The gate's
judgement of one reading is :mod:`xypipe._rollout_gate`.
"""

from __future__ import annotations

import enum

import attrs

from xypipe._validate import in_range

__all__ = [
    "Action",
    "Finish",
    "Outcome",
    "Phase",
    "Rollout",
    "RolloutConfig",
    "StartNew",
    "StopNew",
    "StopOld",
]


@attrs.frozen
class RolloutConfig:
    """``[rollout]``: how a rolling restart judges each new copy (docs/architecture.md,
    "Rolling restarts")."""

    #: How long each new copy is watched, once ready, before an old one is stopped.
    gate_s: float = attrs.field(default=10.0, validator=in_range(0.0, 3600.0))
    #: The first step's window (the canary); 0 = ``gate_s``.
    canary_s: float = attrs.field(default=0.0, validator=in_range(0.0, 86400.0))
    #: A new copy not ready (its /healthz) within this long fails the rollout.
    ready_timeout_s: float = attrs.field(default=30.0, validator=in_range(0.1, 3600.0))
    #: Times a new copy may turn not-ready during its window and be ready again within
    #: ``ready_timeout_s`` — an aggregator on ownership leases takes over groups from the copy
    #: it replaces and replays them — its window then starting over; once more fails it.
    max_unready: int = attrs.field(default=2, validator=in_range(0, 1000))
    #: How often the gate reads the copies' /healthz and /metrics.
    poll_ms: int = attrs.field(default=500, validator=in_range(10, 60_000))
    #: Errors (error counters, see ``_rollout_gate.ERROR_COUNTERS``) the new copy may count
    #: during its window beyond ``error_ratio`` x an old copy's.
    max_new_errors: int = attrs.field(default=0, validator=in_range(0, 1_000_000))
    error_ratio: float = attrs.field(default=2.0, validator=in_range(0.0, 1000.0))
    #: The new copy's delivery p99 (``e2e_latency_seconds{point="gateway_send"}``) may be at
    #: most ``p99_ratio`` x the old copies', and always up to ``p99_floor_ms``.
    p99_ratio: float = attrs.field(default=2.0, validator=in_range(1.0, 1000.0))
    p99_floor_ms: float = attrs.field(default=250.0, validator=in_range(0.0, 600_000.0))
    #: Client disconnects (``ws_closes_total`` other than a client's normal close) the new copy
    #: may count beyond ``disconnect_ratio`` x an old copy's.
    max_new_disconnects: int = attrs.field(default=5, validator=in_range(0, 1_000_000))
    disconnect_ratio: float = attrs.field(default=2.0, validator=in_range(0.0, 1000.0))

    def window(self, step: int) -> float:
        return self.canary_s if step == 0 and self.canary_s > 0 else self.gate_s


class Phase(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"  # the new copy is being started
    WAITING_READY = "waiting_ready"
    GATING = "gating"
    STOPPING_OLD = "stopping_old"
    ROLLING_BACK = "rolling_back"
    DONE = "done"
    ROLLED_BACK = "rolled_back"


@attrs.frozen
class StartNew:
    """Start the successor of copy ``unit`` (the config file read again)."""

    unit: str


@attrs.frozen
class StopOld:
    """The successor passed: drain and stop the old copy ``unit``."""

    unit: str


@attrs.frozen
class StopNew:
    """Roll back: drain and stop the successor of ``unit``; the old copy keeps serving."""

    unit: str


@attrs.frozen
class Finish:
    outcome: Outcome


Action = StartNew | StopOld | StopNew | Finish


@attrs.frozen
class Outcome:
    ok: bool
    #: One line: what was replaced, or why the rollout stopped.
    reason: str
    replaced: tuple[str, ...]
    #: The copy whose successor failed (None when ok).
    failed_unit: str | None = None


class Rollout:
    """One rollout over ``units`` (the supervised copies' names, in the order to replace)."""

    def __init__(self, units: list[str], config: RolloutConfig) -> None:
        if not units:
            raise ValueError("a rollout needs at least one copy to replace")
        self.units = list(units)
        self.config = config
        self.phase = Phase.IDLE
        self.step = 0
        self.replaced: list[str] = []
        self.outcome: Outcome | None = None
        self._deadline = 0.0
        self._gate_ends = 0.0
        self._why = ""
        #: This step's copy turned not-ready during its window this often (``max_unready``).
        self._unready = 0
        self._unready_why = ""

    @property
    def unit(self) -> str:
        """The copy being replaced (the last one once done)."""
        return self.units[min(self.step, len(self.units) - 1)]

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.ROLLED_BACK)

    def start(self, now: float) -> list[Action]:
        assert self.phase is Phase.IDLE
        return self._begin_step()

    def new_started(self, now: float) -> list[Action]:
        """The successor runs (its process exists); readiness is awaited next."""
        if self.phase is not Phase.STARTING:
            return []
        self.phase = Phase.WAITING_READY
        self._deadline = now + self.config.ready_timeout_s
        return []

    def new_start_failed(self, now: float, error: str) -> list[Action]:
        if self.phase is not Phase.STARTING:
            return []
        return self._fail(f"the new {self.unit} could not be started: {error}")

    def new_ready(self, now: float) -> list[Action]:
        if self.phase is not Phase.WAITING_READY:
            return []
        self.phase = Phase.GATING
        self._gate_ends = now + self.config.window(self.step)
        return []

    def new_exited(self, now: float, status: str) -> list[Action]:
        """The successor's process ended (or was restarted by its policy) before it passed."""
        if self.phase not in (Phase.STARTING, Phase.WAITING_READY, Phase.GATING):
            return []
        return self._fail(f"the new {self.unit} {status}")

    def gate_failed(self, now: float, why: str) -> list[Action]:
        """A gate reading (``_rollout_gate.judge``) found the successor worse than allowed."""
        if self.phase is not Phase.GATING:
            return []
        return self._fail(f"the new {self.unit} failed its health gate: {why}")

    def new_unready(self, now: float, why: str) -> list[Action]:
        """The successor turned not-ready during its window: it has ``ready_timeout_s`` to be
        ready again (a new window then), ``max_unready`` times per step."""
        if self.phase is not Phase.GATING:
            return []
        self._unready += 1
        if self._unready > self.config.max_unready:
            return self._fail(f"the new {self.unit} turned not-ready during its gate "
                              f"{self._unready} times: {why}")
        self.phase = Phase.WAITING_READY
        self._deadline = now + self.config.ready_timeout_s
        self._unready_why = why
        return []

    def tick(self, now: float) -> list[Action]:
        """Time passed (the shell calls this at every gate poll)."""
        if self.phase is Phase.WAITING_READY and now >= self._deadline:
            if self._unready:
                return self._fail(f"the new {self.unit} turned not-ready during its gate and "
                                  f"was not ready again within "
                                  f"{self.config.ready_timeout_s:g} s: {self._unready_why}")
            return self._fail(f"the new {self.unit} was not ready within "
                              f"{self.config.ready_timeout_s:g} s")
        if self.phase is Phase.GATING and now >= self._gate_ends:
            self.phase = Phase.STOPPING_OLD
            return [StopOld(self.unit)]
        return []

    def old_stopped(self, now: float) -> list[Action]:
        if self.phase is not Phase.STOPPING_OLD:
            return []
        self.replaced.append(self.unit)
        self.step += 1
        if self.step == len(self.units):
            self.phase = Phase.DONE
            self.outcome = Outcome(True, f"rollout done: {len(self.replaced)} copies replaced "
                                   f"({', '.join(self.replaced)})", tuple(self.replaced))
            return [Finish(self.outcome)]
        return self._begin_step()

    def new_stopped(self, now: float) -> list[Action]:
        if self.phase is not Phase.ROLLING_BACK:
            return []
        self.phase = Phase.ROLLED_BACK
        kept = self.units[self.step:]
        self.outcome = Outcome(
            False, f"rolled back: {self._why}; still serving the old {', '.join(kept)}"
            + (f" (already replaced: {', '.join(self.replaced)})" if self.replaced else ""),
            tuple(self.replaced), failed_unit=self.unit)
        return [Finish(self.outcome)]

    def gate_ends_in(self, now: float) -> float:
        return max(0.0, self._gate_ends - now) if self.phase is Phase.GATING else 0.0

    def _begin_step(self) -> list[Action]:
        self.phase = Phase.STARTING
        self._unready = 0
        return [StartNew(self.unit)]

    def _fail(self, why: str) -> list[Action]:
        self._why = why
        self.phase = Phase.ROLLING_BACK
        return [StopNew(self.unit)]
