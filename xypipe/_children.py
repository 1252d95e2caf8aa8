"""Child processes that must not outlive us.

A parent killed with SIGKILL (an OOM kill, a test harness, ``kill -9``) runs no cleanup, so its
nats-server and worker processes would keep ports and data dirs busy. On Linux the kernel can
deliver a signal to a child when its parent dies (``PR_SET_PDEATHSIG``); we ask for SIGTERM, so
the child still shuts down cleanly.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``open_process`` on Linux; ``None`` elsewhere."""
    return _set_pdeathsig if sys.platform.startswith("linux") else None
