"""Stopping what the demo started: real processes in their own sessions, with a child in a
session of its own (as ``xypipe run`` starts its children and nats-server), one pair that
ignores SIGTERM, and a record whose pid now belongs to another process."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest
import trio

from xypipe._demo._procs import Launched, launch, running, stop

GUARD_S = 30

# A supervisor in miniature: starts a child in a new session; on SIGTERM it stops the child
# and exits, as `xypipe run` does. With "ignore", both ignore SIGTERM instead.
TREE = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", (
    "import signal, sys, time\\n"
    "if sys.argv[1] == 'ignore': signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "print('child ready', flush=True)\\n"
    "time.sleep(600)"), sys.argv[1]], start_new_session=True)
def stop(*_):
    child.terminate()
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == "ignore" else stop)
time.sleep(600)
"""


async def started(tmp_path: pathlib.Path, mode: str) -> tuple[Launched, psutil.Process, int]:
    log = tmp_path / f"{mode}.log"
    launched, popen = launch([sys.executable, "-c", TREE, mode], log=log)
    REAP.append(popen)  # this test process is its parent: it reaps it once it is stopped
    proc = running(launched)
    assert proc is not None
    with trio.fail_after(GUARD_S):
        # Another process's start-up: a state to poll, not an event.
        while "child ready" not in log.read_text():  # noqa: ASYNC110
            await trio.sleep(0.05)
    (child,) = proc.children()
    # Sessions of their own: a signal to the parent's process group would miss the child.
    assert os.getsid(child.pid) != os.getsid(proc.pid) == proc.pid
    return launched, proc, child.pid


REAP: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def reaped() -> Iterator[None]:
    yield
    while REAP:
        popen = REAP.pop()
        if popen.poll() is None:
            popen.kill()
        popen.wait(GUARD_S)


def pids(names: list[str]) -> set[int]:
    return {int(m.group(1)) for n in names if (m := re.search(r"\(pid (\d+)\)$", n))}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_a_polite_stop_waits_for_the_parent_to_stop_its_child(tmp_path):
    launched, proc, child = await started(tmp_path, "polite")
    with trio.fail_after(GUARD_S):
        report = await stop(proc, grace_s=GUARD_S)
    assert pids(report.stopped) == {proc.pid, child}
    assert report.killed == [] and report.left == []
    assert running(launched) is None and gone(child)


async def test_what_ignores_sigterm_is_killed_after_the_grace_children_included(tmp_path):
    launched, proc, child = await started(tmp_path, "ignore")
    with trio.fail_after(GUARD_S):
        report = await stop(proc, grace_s=0.5)
    assert report.stopped == [] and report.left == []
    assert pids(report.killed) == {proc.pid, child}
    assert running(launched) is None and gone(child)


def test_a_record_whose_pid_was_reused_is_not_running():
    me = psutil.Process()
    assert running(Launched(me.pid, me.create_time(), [], "")) is not None
    # Same pid, another start time: another process has that pid now; never signal it.
    assert running(Launched(me.pid, me.create_time() - 3600, [], "")) is None
    assert running(Launched(2**22 + 1, 0.0, [], "")) is None
