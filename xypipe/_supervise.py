"""Keep one process running under a restart policy: the Trio shell around :mod:`xypipe._restart`.

:func:`supervise` is the only restart loop for processes: worker children of ``xypipe run`` and
the embedded nats-server both go through it. It starts the process, waits for it to exit or for
``stopping``, asks the :class:`~xypipe._restart.RestartTracker` what to do, counts and logs it,
and sleeps the backoff (cancellable: ``stopping`` ends the sleep). It returns once the process is
gone and will not come back: stopped on request, finished cleanly, or failed for good — the
caller decides what that means for the rest of the tree.

Whatever way the loop ends — cancelled by a second Ctrl-C included — the process is gone
afterwards: a graceful stop asks it to stop (SIGTERM and a grace), a cancelled loop kills it.
"""

from __future__ import annotations

import signal
from typing import Protocol, TypeVar

import attrs
import trio

from xypipe import _errors as err
from xypipe._config import ProcessRestartPolicy
from xypipe._drain_request import DRAINED_EXIT
from xypipe._errors import ChildFailed, XyError
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._restart import Done, GiveUp, Replace, Restart, RestartTracker

__all__ = [
    "NATS_CODES",
    "WORKER_CODES",
    "Failed",
    "Finished",
    "Outcome",
    "Stopped",
    "Supervised",
    "SupervisionCodes",
    "SupervisionMetrics",
    "describe_status",
    "supervise",
]

_log = get_logger("supervisor")


class Supervised(Protocol):
    """A process the loop can start, await, stop and kill (one running instance at a time)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def returncode(self) -> int | None:
        """The last run's exit status; None while it runs (or before it first started)."""

    async def start(self) -> None:
        """Start it; return once it is up. Raises XyError or OSError when it cannot start."""

    async def wait(self) -> int:
        """Wait until it exits; its status (negative: killed by that signal)."""

    async def stop(self) -> None:
        """Ask it to stop and wait, bounded by a grace period (no-op when not running)."""

    async def kill(self) -> None:
        """Kill it now and reap it (no-op when not running)."""


U = TypeVar("U", bound=Supervised)


@attrs.frozen
class SupervisionCodes:
    """The log codes of one kind of supervised process (see :mod:`xypipe._errors`)."""

    restarting: str
    start_failed: str
    finished: str
    not_restarted: str
    budget_spent: str
    #: Logged when a unit that exited drained (:data:`DRAINED_EXIT`) is replaced; None: that
    #: status means nothing special for this kind of process.
    replaced: str | None = None


WORKER_CODES = SupervisionCodes(
    restarting=err.SUP_RESTARTING, start_failed=err.SUP_START_FAILED,
    finished=err.SUP_FINISHED, not_restarted=err.SUP_NOT_RESTARTED,
    budget_spent=err.SUP_BUDGET_SPENT, replaced=err.GW_DRAINED_REPLACED,
)
NATS_CODES = SupervisionCodes(
    restarting=err.EMB_RESTARTING, start_failed=err.EMB_START_FAILED,
    finished=err.EMB_NOT_RESTARTED, not_restarted=err.EMB_NOT_RESTARTED,
    budget_spent=err.EMB_BUDGET_SPENT,
)


class SupervisionMetrics:
    """``process_restarts_total{process}`` and ``process_up{process}`` in the supervisor's
    registry (served on the supervising process's /metrics)."""

    def __init__(self, metrics: Metrics) -> None:
        self.restarts = metrics.counter(
            "process_restarts_total", "Supervised processes restarted by their policy", ["process"]
        )
        self.up = metrics.gauge("process_up", "1 while a supervised process runs", ["process"])
        self.replaced = metrics.counter(
            "process_drained_replaced_total",
            "Supervised processes that exited drained and were replaced at once", ["process"])


@attrs.frozen
class Stopped:
    """Stopped because ``stopping`` was set."""


@attrs.frozen
class Finished:
    """Exited cleanly and its policy does not restart it."""

    status: int


@attrs.frozen
class Failed:
    """Exited and will not be restarted (policy ``never`` or budget spent): stop the tree."""

    error: ChildFailed


Outcome = Stopped | Finished | Failed


def describe_status(status: int | None) -> str:
    if status is None:
        return "could not be started"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


async def supervise(
    name: str,
    unit: U,
    policy: ProcessRestartPolicy,
    *,
    stopping: trio.Event,
    metrics: SupervisionMetrics,
    codes: SupervisionCodes,
    task_status: trio.TaskStatus[U] = trio.TASK_STATUS_IGNORED,
) -> Outcome:
    """Run ``unit`` under ``policy`` until ``stopping`` is set or it is not restarted.

    The first start is the caller's: it is reported through ``task_status`` and its error is
    raised. Later starts that fail count as failures against the budget.
    """
    tracker = RestartTracker(
        policy, replace_status=DRAINED_EXIT if codes.replaced is not None else None)
    loop = _Loop(name, unit, tracker, stopping, metrics, codes)
    try:
        await unit.start()
        loop.running()
        task_status.started(unit)
        while True:
            status = await loop.exit_or_stop()
            if status is None:
                await unit.stop()
                loop.log.info("process stopped", pid=unit.pid, status=unit.returncode)
                return Stopped()
            outcome = await loop.after_exit(status)
            if outcome is not None:
                return outcome
    finally:
        loop.up.set(0)
        # Cancelled (a second Ctrl-C, a failure elsewhere) or done: nothing outlives the loop.
        if unit.pid is not None and unit.returncode is None:
            with trio.CancelScope(shield=True):
                await unit.kill()
            loop.log.info("process killed (stopping now)", pid=unit.pid, status=unit.returncode)


class _Loop:
    def __init__(
        self, name: str, unit: Supervised, tracker: RestartTracker, stopping: trio.Event,
        metrics: SupervisionMetrics, codes: SupervisionCodes,
    ) -> None:
        self.name = name
        self.unit = unit
        self.tracker = tracker
        self.stopping = stopping
        self.metrics = metrics
        self.codes = codes
        self.log = _log.bind(process=name)
        self.up = metrics.up.labels(name)
        metrics.restarts.labels(name)  # reads 0 before the first restart (alerts use increase())
        metrics.replaced.labels(name)

    def running(self, restarts: int = 0) -> None:
        self.tracker.started(trio.current_time())
        self.up.set(1)
        if restarts:
            self.log.info("process restarted", pid=self.unit.pid, restarts=restarts)
        else:
            self.log.info("process started", pid=self.unit.pid)

    async def exit_or_stop(self) -> int | None:
        """The unit's exit status, or None once ``stopping`` is set (exited or not)."""
        statuses: list[int] = []
        async with trio.open_nursery() as nursery:

            async def exited() -> None:
                statuses.append(await self.unit.wait())
                nursery.cancel_scope.cancel()

            async def stop_requested() -> None:
                await self.stopping.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(exited)
            nursery.start_soon(stop_requested)
        self.up.set(0)
        if self.stopping.is_set() or not statuses:
            return None
        return statuses[0]

    async def after_exit(self, status: int | None) -> Outcome | None:
        """Restart the unit (None once it runs again), or say why it stays down."""
        policy = self.tracker.policy
        while True:
            decision = self.tracker.exited(trio.current_time(), status)
            what = describe_status(status)
            if isinstance(decision, Done):
                self.log.warning("process finished on its own; not restarted (policy on-failure)",
                                 code=self.codes.finished, status=status)
                return Finished(status or 0)
            if isinstance(decision, Replace):
                self.metrics.replaced.labels(self.name).inc()
                self.log.info("process drained; starting a fresh copy", code=self.codes.replaced,
                              status=status)
                try:
                    await self.unit.start()
                except (XyError, OSError) as exc:
                    self.log.error("process could not be restarted",
                                   code=self.codes.start_failed, error=str(exc))
                    status = None
                    continue
                self.running()
                return None
            if isinstance(decision, GiveUp):
                codes = self.codes
                code = codes.budget_spent if decision.budget_spent else codes.not_restarted
                self.log.error("process not restarted; stopping everything", code=code,
                               status=status, reason=decision.reason)
                return Failed(ChildFailed(f"process {self.name!r} {what}; {decision.reason}",
                                          code=code))
            assert isinstance(decision, Restart)
            self.metrics.restarts.labels(self.name).inc()
            self.log.error(
                f"process {what}; restarting", code=self.codes.restarting, status=status,
                restarts=decision.restarts, max_restarts=policy.max_restarts,
                window_s=policy.window_s, backoff_ms=round(decision.delay_s * 1000),
            )
            with trio.move_on_after(decision.delay_s):
                await self.stopping.wait()
            if self.stopping.is_set():
                self.log.info("process stopped", status=status)
                return Stopped()
            try:
                await self.unit.start()
            except (XyError, OSError) as exc:
                self.log.error("process could not be restarted", code=self.codes.start_failed,
                               error=str(exc))
                status = None
                continue
            self.running(decision.restarts)
            return None
