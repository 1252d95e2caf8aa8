"""When a supervised process exits: restart it (after how long), let it be, or give up.

A sans-I/O core: :class:`RestartTracker` is fed "started at t" and "exited at t with status s"
and answers with a decision value. It has no clock of its own (the shell passes
``trio.current_time()``), so its budget and backoff rules are tested with plain numbers.

- Budget: at most ``max_restarts`` restarts in any ``window_s`` seconds; a failure that would
  need one more gives up (the tree stops).
- Backoff: the first restart waits ``backoff_ms``, each further one twice as long, up to
  ``max_backoff_ms``; a run that lasted ``stable_s`` starts the doubling over.
- Replacement: an exit with ``replace_status`` (a worker that drained gracefully,
  :data:`~xypipe._drain_request.DRAINED_EXIT`) is planned: started again at once, whatever the
  policy, neither counted against the budget nor lengthening the backoff.
- Policy: ``on-failure`` restarts after a non-zero status or a signal (negative status) or a
  failed start; ``always`` also after status 0; ``never`` gives up on any exit.
"""

from __future__ import annotations

import collections

import attrs

from xypipe._config import ProcessRestartPolicy

__all__ = ["Done", "GiveUp", "Replace", "Restart", "RestartStatistics", "RestartTracker"]


@attrs.frozen
class Restart:
    """Start the process again after ``delay_s``; ``restarts`` in the window, this one included."""

    delay_s: float
    restarts: int


@attrs.frozen
class Replace:
    """The process exited as planned (it drained): start a fresh copy now; not a failure."""


@attrs.frozen
class Done:
    """The process finished cleanly and its policy (``on-failure``) does not restart it."""


@attrs.frozen
class GiveUp:
    """Stop the tree. ``reason`` completes "process X exited with status S; ..."."""

    reason: str
    budget_spent: bool


Decision = Restart | Replace | Done | GiveUp


@attrs.frozen
class RestartStatistics:
    restarts_total: int
    restarts_in_window: int
    next_backoff_s: float
    running_since: float | None


class RestartTracker:
    """The restart policy of one supervised process, fed events with explicit times."""

    def __init__(self, policy: ProcessRestartPolicy, *, replace_status: int | None = None) -> None:
        self.policy = policy
        self.replace_status = replace_status
        self._restarts: collections.deque[float] = collections.deque()
        self._restarts_total = 0
        self._backoff = policy.backoff_ms / 1000
        self._running_since: float | None = None

    def started(self, now: float) -> None:
        """The process is (again) running from ``now``."""
        self._running_since = now

    def exited(self, now: float, status: int | None) -> Decision:
        """The process exited at ``now`` with ``status`` (negative: killed by that signal;
        ``None``: it could not be started)."""
        policy = self.policy
        ran_for = now - self._running_since if self._running_since is not None else 0.0
        self._running_since = None
        if status is not None and status == self.replace_status:
            return Replace()
        if policy.policy == "never":
            return GiveUp('restart policy "never"', budget_spent=False)
        if status == 0 and policy.policy == "on-failure":
            return Done()
        if ran_for >= policy.stable_s:
            self._backoff = policy.backoff_ms / 1000
        self._forget_before(now - policy.window_s)
        if len(self._restarts) >= policy.max_restarts:
            return GiveUp(
                f"restart budget spent ({len(self._restarts)} of {policy.max_restarts} "
                f"restarts in {policy.window_s:g} s)",
                budget_spent=True,
            )
        self._restarts.append(now)
        self._restarts_total += 1
        delay = self._backoff
        self._backoff = min(self._backoff * 2, policy.max_backoff_ms / 1000)
        return Restart(delay_s=delay, restarts=len(self._restarts))

    def statistics(self, now: float) -> RestartStatistics:
        self._forget_before(now - self.policy.window_s)
        return RestartStatistics(
            restarts_total=self._restarts_total,
            restarts_in_window=len(self._restarts),
            next_backoff_s=self._backoff,
            running_since=self._running_since,
        )

    def _forget_before(self, cutoff: float) -> None:
        while self._restarts and self._restarts[0] <= cutoff:
            self._restarts.popleft()
