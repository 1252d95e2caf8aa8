"""``xypipe rollout CONFIG``: ask the running ``xypipe run CONFIG`` for a rolling restart.

The running tree keeps a run file (:func:`xypipe._rollout_shell.run_file_for`: its pid and its
last rollout's state, 0600 in a per-user directory). This command reads the pid, sends it
SIGHUP — the same request an operator's ``kill -HUP`` makes — and follows the run file until the
rollout it asked for ends: exit 0 when every copy was replaced, 1 with the one-line reason when it
was refused or rolled back. Who may ask is who may signal the process: its own user (or root).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

from xypipe._errors import RolloutError
from xypipe._rollout_shell import run_file_for

__all__ = ["register", "request_rollout"]

_POLL_S = 0.2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rollout", help="replace the running processes of a config one at a time, behind a "
                        "health gate (rolled back on failure)")
    p.add_argument("config", help="the TOML config the running `xypipe run` was started with "
                                  "(read again: its new version is what the new copies run)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="give up waiting for the outcome after this many seconds (default 3600; "
                        "the rollout itself goes on)")
    p.add_argument("--no-wait", action="store_true",
                   help="only send the request; do not wait for the outcome")
    p.set_defaults(func=_cmd_rollout)


def _cmd_rollout(args: argparse.Namespace) -> int:
    reason = request_rollout(args.config, wait=not args.no_wait, timeout_s=args.timeout)
    print(reason, flush=True)
    return 0


def _read(path: str) -> dict[str, object] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _is_xypipe(pid: int) -> bool:
    """Whether ``pid`` still runs xypipe (a stale run file's pid may belong to anything now);
    where /proc is missing, whether it exists at all."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"xypipe" in f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc") and _exists(pid)
    except OSError:
        return _exists(pid)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_rollout(config: str, *, wait: bool = True, timeout_s: float = 3600.0) -> str:
    """Signal the running tree of ``config`` and (with ``wait``) return its outcome's line;
    raises :class:`~xypipe._errors.RolloutError` when nothing runs it or the rollout failed."""
    path = str(run_file_for(config))
    doc = _read(path)
    pid = doc.get("pid") if doc else None
    if not isinstance(pid, int):
        raise RolloutError(f"no running `xypipe run {config}` on this machine (no run file at "
                           f"{path}; a tree started without signal handling cannot be rolled)")
    if not _is_xypipe(pid):
        raise RolloutError(f"`xypipe run {config}` (pid {pid}) is gone; its run file {path} "
                           "is stale")
    before = int(str(doc.get("rollout", 0))) if doc else 0
    if doc and doc.get("state") == "running":
        raise RolloutError(f"a rollout of `xypipe run {config}` (pid {pid}) is already running")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise RolloutError(f"`xypipe run {config}` (pid {pid}) is gone; its run file {path} "
                           "is stale") from None
    except PermissionError:
        raise RolloutError(f"not allowed to signal `xypipe run {config}` (pid {pid}): run "
                           "this as the user that runs it") from None
    if not wait:
        return f"rollout requested from pid {pid}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _read(path)
        if now is None:
            raise RolloutError(f"`xypipe run {config}` (pid {pid}) stopped during the rollout")
        number = int(str(now.get("rollout", 0)))
        state = now.get("state")
        if number > before and state in ("done", "rolled_back", "refused"):
            reason = str(now.get("reason", state))
            if state != "done":
                raise RolloutError(reason)
            return reason
        time.sleep(_POLL_S)
    raise RolloutError(f"no outcome within {timeout_s:g} s (the rollout goes on; see the "
                       f"log of pid {pid})")
