"""The Trio shell of a rolling restart: drives :class:`~xypipe._rollout.Rollout` over a running
tree, reads each copy's /healthz and /metrics on its control port, logs and audits the outcome,
and keeps the run file ``xypipe rollout`` reads.

The tree (``xypipe._supervisor``) is reached through :class:`Fleet`: start a copy's successor,
retire the old copy (drain and stop, the successor takes its place), retire the successor
(rollback). Every wait here is bounded by the rollout's own timeouts and cancellable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

import attrs
import trio

from xypipe._audit import AuditLog
from xypipe._demo._probe import get
from xypipe._errors import (
    SUP_ROLLOUT_DONE,
    SUP_ROLLOUT_PROBE_FAILED,
    SUP_ROLLOUT_ROLLED_BACK,
    SUP_ROLLOUT_STARTED,
    SUP_ROLLOUT_STEP_DONE,
)
from xypipe._log import get_logger
from xypipe._rollout import (
    Action,
    Finish,
    Outcome,
    Phase,
    Rollout,
    RolloutConfig,
    StartNew,
    StopNew,
    StopOld,
)
from xypipe._rollout_gate import Reading, judge, reading_of

__all__ = [
    "ROLLOUT_SUB", "Copy", "Fleet", "HttpProbe", "Probe", "RunFile", "drive_rollout",
    "rollout_audit", "run_file_for",
]

_log = get_logger("supervisor")
rollout_audit = AuditLog(get_logger("audit", component="supervisor"))
#: Who a rollout's audit line names: it is asked for by a signal (or ``xypipe rollout``, which
#: sends one), so the principal is whoever may signal this process — its own user.
ROLLOUT_SUB = "supervisor"
_PROBE_S = 2.0


@attrs.frozen
class Copy:
    """One running copy as a rollout sees it."""

    name: str
    control_port: int | None
    #: Set when the copy's process exited on its own (its policy may restart it).
    exited: trio.Event


class Fleet(Protocol):
    """What a rollout asks of the tree."""

    def current(self, unit: str) -> Copy:
        """The copy serving as ``unit`` now."""

    def peers(self, unit: str) -> list[Copy]:
        """The old copies of ``unit``'s process (``unit`` itself included) the gate compares
        the successor with."""

    async def start_successor(self, unit: str) -> Copy:
        """Start the next generation of ``unit`` beside it; raises XyError/OSError."""

    async def retire_old(self, unit: str) -> None:
        """Drain and stop the current copy of ``unit``; its successor takes its place."""

    async def retire_new(self, unit: str) -> None:
        """Drain and stop ``unit``'s successor; the current copy keeps serving."""


class Probe(Protocol):
    """How a rollout reads a copy (HTTP on its control port; a test gives its own)."""

    async def health(self, copy: Copy) -> tuple[bool, str]:
        """Whether it is ready, and if not why (one line)."""

    async def metrics(self, copy: Copy) -> Reading:
        """Its counters now."""


class HttpProbe:
    """``/healthz`` and ``/metrics`` on the copy's loopback control port."""

    async def health(self, copy: Copy) -> tuple[bool, str]:
        return await _health(copy)

    async def metrics(self, copy: Copy) -> Reading:
        return await _metrics(copy)


async def drive_rollout(fleet: Fleet, units: list[str], cfg: RolloutConfig, *,
                        trigger: str, run_file: RunFile | None = None,
                        probe: Probe | None = None) -> Outcome:
    """Replace ``units`` one at a time behind the gate; the outcome (also logged, audited and
    written to ``run_file``)."""
    machine = Rollout(units, cfg)
    _log.info("rollout started", code=SUP_ROLLOUT_STARTED, units=units, trigger=trigger,
              gate_s=cfg.gate_s, canary_s=cfg.canary_s)
    rollout_audit.record("rollout started", action="rollout", outcome="started", sub=ROLLOUT_SUB,
                  trigger=trigger, units=units)
    driver = _Driver(fleet, machine, run_file, probe or HttpProbe())
    driver.status()
    actions = machine.start(trio.current_time())
    while True:
        for action in actions:
            if isinstance(action, Finish):
                _report(action.outcome, trigger)
                if run_file is not None:
                    run_file.update(state="done" if action.outcome.ok else "rolled_back",
                                    reason=action.outcome.reason)
                return action.outcome
        actions = await driver.perform(actions)


class _Driver:
    def __init__(self, fleet: Fleet, machine: Rollout, run_file: RunFile | None,
                 probe: Probe) -> None:
        self.probe = probe
        self.fleet = fleet
        self.machine = machine
        self.run_file = run_file
        self.successor: Copy | None = None

    def status(self) -> None:
        if self.run_file is not None:
            self.run_file.update(state="running", phase=self.machine.phase.value,
                                 unit=self.machine.unit, replaced=self.machine.replaced)

    async def perform(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for action in actions:
            now = trio.current_time
            if isinstance(action, StartNew):
                self.successor = None
                try:
                    self.successor = await self.fleet.start_successor(action.unit)
                except OSError as exc:
                    out += self.machine.new_start_failed(now(), str(exc))
                else:
                    out += self.machine.new_started(now())
                    self.status()
                    out += await self._watch()
            elif isinstance(action, StopOld):
                await self.fleet.retire_old(action.unit)
                _log.info("copy replaced", code=SUP_ROLLOUT_STEP_DONE, unit=action.unit,
                          by=self.successor.name if self.successor else None)
                out += self.machine.old_stopped(now())
                self.status()
            elif isinstance(action, StopNew):
                if self.successor is not None:
                    await self.fleet.retire_new(action.unit)
                out += self.machine.new_stopped(now())
            else:
                out.append(action)
        return out

    async def _watch(self) -> list[Action]:
        """Wait for the successor's readiness, then watch its gate; the machine's next actions."""
        machine, copy = self.machine, self.successor
        assert copy is not None
        cfg = machine.config
        baseline: tuple[Reading, list[Reading]] | None = None
        while True:
            now = trio.current_time()
            if copy.exited.is_set():
                return machine.new_exited(now, "exited")
            ready, why = await self.probe.health(copy)
            now = trio.current_time()
            if machine.phase is Phase.WAITING_READY and ready:
                machine.new_ready(now)
                baseline = await self._readings(copy)
                self.status()
            elif machine.phase is Phase.GATING:
                if not ready:
                    return machine.new_unready(now, why)
                if baseline is not None:
                    later = await self._readings(copy)
                    verdict = _verdict(baseline, later, cfg)
                    if verdict is not None:
                        return machine.gate_failed(trio.current_time(), verdict)
            actions = machine.tick(trio.current_time())
            if actions:
                return actions
            with trio.move_on_after(cfg.poll_ms / 1000):
                await copy.exited.wait()

    async def _readings(self, copy: Copy) -> tuple[Reading, list[Reading]]:
        new = await self.probe.metrics(copy)
        olds = [await self.probe.metrics(c) for c in self.fleet.peers(self.machine.unit)]
        return new, olds


def _verdict(start: tuple[Reading, list[Reading]], end: tuple[Reading, list[Reading]],
             cfg: RolloutConfig) -> str | None:
    new = end[0].since(start[0])
    olds = [b.since(a) for a, b in zip(start[1], end[1], strict=False)]
    return judge(new, olds, cfg)


async def _health(copy: Copy) -> tuple[bool, str]:
    if copy.control_port is None:
        return False, "no control port"
    status, body = await get(f"http://127.0.0.1:{copy.control_port}/healthz", limit_s=_PROBE_S)
    if status == 200:
        return True, "ready"
    if status == 0:
        return False, "no answer"
    try:
        doc = json.loads(body)
        reasons = doc.get("reasons") if isinstance(doc, dict) else None
        return False, str(reasons[0]) if reasons else f"/healthz {status}"
    except (ValueError, TypeError, IndexError, KeyError):
        return False, f"/healthz {status}"


async def _metrics(copy: Copy) -> Reading:
    if copy.control_port is None:
        return Reading()
    status, body = await get(f"http://127.0.0.1:{copy.control_port}/metrics", limit_s=_PROBE_S)
    try:
        if status != 200:
            raise ValueError(f"/metrics answered {status}")
        return reading_of(body.decode("utf-8", "replace"))
    except ValueError as exc:
        _log.warning("a copy's /metrics could not be read", code=SUP_ROLLOUT_PROBE_FAILED,
                     copy=copy.name, error=str(exc))
        return Reading()


def _report(outcome: Outcome, trigger: str) -> None:
    if outcome.ok:
        _log.info(outcome.reason, code=SUP_ROLLOUT_DONE, replaced=list(outcome.replaced))
        rollout_audit.record("rollout done", action="rollout", outcome="applied", sub=ROLLOUT_SUB,
                      trigger=trigger, replaced=list(outcome.replaced))
    else:
        _log.error(outcome.reason, code=SUP_ROLLOUT_ROLLED_BACK, unit=outcome.failed_unit,
                   replaced=list(outcome.replaced))
        rollout_audit.record(outcome.reason, action="rollout", outcome="reverted", sub=ROLLOUT_SUB,
                      code=SUP_ROLLOUT_ROLLED_BACK, trigger=trigger, unit=outcome.failed_unit)


# --------------------------------------------------------------------------- the run file


def run_file_for(config_path: str) -> Path:
    """Where a running ``xypipe run CONFIG`` keeps its pid and its last rollout's state: a
    per-user directory (``$XDG_RUNTIME_DIR``, else the temp directory), one file per config."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    digest = hashlib.sha256(os.path.abspath(config_path).encode()).hexdigest()[:16]
    return Path(base) / f"xypipe-{os.getuid()}" / f"run-{digest}.json"


class RunFile:
    """The run file of this ``xypipe run``: rewritten atomically, 0600 in a 0700 directory."""

    def __init__(self, path: Path, config_path: str) -> None:
        self.path = path
        self.doc: dict[str, object] = {"pid": os.getpid(), "config": os.path.abspath(config_path),
                                       "rollout": 0, "state": "idle"}

    def begin(self) -> int:
        """A new rollout: its number (``xypipe rollout`` waits for the one it asked for)."""
        number = int(str(self.doc["rollout"])) + 1
        self.doc = {"pid": self.doc["pid"], "config": self.doc["config"], "rollout": number,
                    "state": "running"}
        self._write()
        return number

    def update(self, **fields: object) -> None:
        self.doc.update(fields)
        self._write()

    def write(self) -> None:
        self._write()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self.doc, f)
            os.replace(tmp, self.path)
        except OSError as exc:
            _log.warning("the run file could not be written", code=SUP_ROLLOUT_PROBE_FAILED,
                         path=str(self.path), error=str(exc))
