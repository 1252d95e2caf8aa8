"""Processes the demo commands start in the background, and stopping them without a trace.

A background process is started in its own session (a terminal's Ctrl-C or hang-up never
reaches it) with its output in a log file, and recorded as a :class:`Launched`: its pid **and**
its start time, so a later command never signals a stranger that reused the pid.

:func:`stop` asks politely (SIGTERM to the recorded process: ``xypipe run`` then stops its
children itself, NATS last), collects every descendant while it waits — the children run in
sessions of their own, so a process group would miss them — and after the grace period kills
what is left, the recorded process first (its children follow through ``PR_SET_PDEATHSIG``),
then any descendant still there. It returns which processes stopped, which had to be killed and
which survived even that, so ``demo down`` can prove that nothing is left.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
import psutil
import trio

__all__ = ["Launched", "StopReport", "describe", "launch", "running", "stop"]

#: How often a stop looks again (a poll of the process table, with its own hang guard).
POLL_S = 0.05
#: After SIGKILL, how long the kernel gets to take the processes away.
KILL_WAIT_S = 5.0


@attrs.frozen
class Launched:
    """A process started in the background, as recorded in the demo's state."""

    pid: int
    #: psutil's start time of the process (seconds since the epoch): with the pid, its identity.
    started: float
    argv: list[str]
    log: str


def launch(argv: Sequence[str], *, log: Path, cwd: Path | None = None,
           env: Mapping[str, str] | None = None) -> tuple[Launched, subprocess.Popen[bytes]]:
    """Start ``argv`` in its own session, stdout and stderr appended to ``log``.

    Returns the record and the ``Popen`` (for the caller to notice an early exit while it
    waits for readiness; the process outlives the caller)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=cwd, env=dict(env) if env is not None else None, start_new_session=True)
    try:
        started = psutil.Process(popen.pid).create_time()
    except psutil.NoSuchProcess:
        started = 0.0  # gone already: the caller sees the exit through popen
    return Launched(popen.pid, started, list(argv), str(log)), popen


def _same(proc: psutil.Process, started: float) -> bool:
    try:
        # psutil derives the start time from boot time and clock ticks: exact for one process.
        return (abs(proc.create_time() - started) < 0.05
                and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def running(launched: Launched) -> psutil.Process | None:
    """The recorded process if it still runs (same pid, same start time, not a zombie)."""
    try:
        proc = psutil.Process(launched.pid)
    except psutil.NoSuchProcess:
        return None
    return proc if _same(proc, launched.started) else None


def describe(proc: psutil.Process) -> str:
    """``name (pid N)``: ``xypipe run`` children by their process, nats-server by name."""
    try:
        argv = proc.cmdline()
        name = proc.name()
    except psutil.NoSuchProcess:
        return f"pid {proc.pid}"
    if "--process" in argv[:-1]:
        name = f"{argv[argv.index('--process') + 1]} process"
    elif len(argv) > 3 and argv[1:3] == ["-m", "xypipe"]:
        name = f"xypipe {argv[3]}"
    return f"{name} (pid {proc.pid})"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


@attrs.frozen
class StopReport:
    """What :func:`stop` did: each process as ``name (pid N)``."""

    stopped: list[str]
    killed: list[str]
    left: list[str]


async def stop(root: psutil.Process, *, grace_s: float,
               sig: int = signal.SIGTERM) -> StopReport:
    """Stop ``root`` and everything it started (see the module doc)."""
    seen: dict[int, tuple[psutil.Process, str]] = {root.pid: (root, describe(root))}

    def collect() -> None:
        for p in _descendants(root):
            if p.pid not in seen:
                seen[p.pid] = (p, describe(p))

    collect()
    _signal(root, sig)
    with trio.move_on_after(grace_s):
        while any(_alive(p) for p, _ in seen.values()):
            collect()  # children restarted or started while stopping count too
            await trio.sleep(POLL_S)
    killed: list[str] = []
    survivors = [(p, name) for p, name in seen.values() if _alive(p)]
    if survivors:
        for p, name in sorted(survivors, key=lambda s: s[0].pid != root.pid):
            _signal(p, signal.SIGKILL)
            killed.append(name)
        await trio.to_thread.run_sync(
            lambda: psutil.wait_procs([p for p, _ in survivors], timeout=KILL_WAIT_S),
            abandon_on_cancel=True)
    left = [name for p, name in seen.values() if _alive(p)]
    stopped = [name for _, name in seen.values() if name not in killed and name not in left]
    return StopReport(stopped, killed, left)

