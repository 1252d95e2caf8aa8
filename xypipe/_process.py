"""Child processes owned by Trio code that die with us.

``trio.lowlevel.open_process`` forks in a worker thread, and Linux delivers a child's "parent
died" signal (``PR_SET_PDEATHSIG``) when the *thread* that forked it exits — which a Trio worker
does after a few idle seconds. :class:`Child` forks from the Trio thread itself (it lives as long
as the process), so the kernel SIGTERMs the child if we are killed without cleanup (SIGKILL, an
OOM kill): a dead ``xypipe run`` never leaves a nats-server or a worker process holding its
ports. Exit is awaited through a pidfd, which becomes readable when the child exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping

import trio

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask for SIGTERM when the parent goes away.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class Child:
    """A subprocess with the small part of ``trio.Process``'s API we use."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stderr: trio.lowlevel.FdStream | None = None
        if popen.stderr is not None:
            self.stderr = trio.lowlevel.FdStream(os.dup(popen.stderr.fileno()))
            popen.stderr.close()
        self._pidfd = os.pidfd_open(popen.pid)
        # Trio lets one task wait on an fd at a time; other waiters wait for its turn to end.
        self._watching = False
        self._turn_over = trio.Event()

    @classmethod
    def spawn(
        cls,
        argv: list[str],
        *,
        stdout: int | None = None,
        stderr: int | None = None,
        env: Mapping[str, str] | None = None,
        start_new_session: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> Child:
        # Deliberately blocking (a fork and an exec, about a millisecond) on the Trio thread.
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            env=dict(env) if env is not None else None,
            start_new_session=start_new_session, pass_fds=pass_fds,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        return cls(popen)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def send_signal(self, sig: int) -> None:
        if self._popen.poll() is None:
            self._popen.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        while self._popen.poll() is None:
            if self._watching:
                await self._turn_over.wait()
                continue
            self._watching = True
            try:
                await trio.lowlevel.wait_readable(self._pidfd)
            finally:
                self._watching = False
                done, self._turn_over = self._turn_over, trio.Event()
                done.set()
        code = self._popen.wait()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        return code
