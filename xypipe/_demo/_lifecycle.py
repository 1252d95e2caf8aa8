"""``xypipe demo up`` and ``xypipe demo down``: the demo tree in the background, and gone again.

``up`` starts ``xypipe run CONFIG`` in its own session from the current directory (relative
paths in the config — ``var/nats``, ``ui-static`` — mean what they mean for ``make demo``),
records it (:mod:`xypipe._demo._state`), waits until every process's ``/healthz`` is ready and
prints where to look. ``down`` stops what ``up`` (and ``demo publisher`` / ``demo observe``)
started — helpers first, then the tree, whose supervisor stops its pipelines before NATS — and
checks that none of those processes is left; ``--wipe`` then removes the data.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from xypipe._datadir_lock import LOCK_NAME, DataDirLock, holder
from xypipe._demo._layout import Layout, layout_of
from xypipe._demo._probe import Health, health, listening
from xypipe._demo._procs import StopReport, launch, running, stop
from xypipe._demo._state import HelperState, StateDir, TreeState
from xypipe._errors import (
    DEMO_ALREADY_UP,
    DEMO_EXITED_AT_START,
    DEMO_KILLED_AFTER_GRACE,
    DEMO_PORT_TAKEN,
    DEMO_PROCESS_LEFT,
    DEMO_START_TIMEOUT,
    DEMO_WIPE_REFUSED,
    DemoError,
)
from xypipe._log import get_logger
from xypipe._overrides import load_effective

__all__ = ["down", "last_words", "up"]

Say = Callable[[str], None]

_log = get_logger("demo")

#: How often readiness is asked while waiting; progress is printed when it changes, or at
#: least this often.
POLL_S = 0.25
PROGRESS_EVERY_S = 5.0
#: Grace for a helper (the extra publisher, Prometheus) to stop before it is killed.
HELPER_GRACE_S = 10.0
HELPER_NAMES = {StateDir.PUBLISHER: "the extra publisher", StateDir.PROMETHEUS: "Prometheus"}


def last_words(log: Path, limit: int = 65536) -> str:
    """The line of ``log`` that best says why its process ended: the CLI's own one-line
    ``xypipe...:`` message if there is one, else the last error line, else the last line."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()
                     if ln.strip()]
    except OSError:
        return f"(no log at {log})"
    for pick in (lambda ln: ln.startswith("xypipe"),
                 lambda ln: '"level": "error"' in ln or '"level":"error"' in ln):
        chosen = [ln for ln in lines if pick(ln)]
        if chosen:
            return chosen[-1]
    return lines[-1] if lines else "(the log is empty)"


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def _clear_stale(state: StateDir, say: Say) -> None:
    """Helpers of a demo that is gone (it died, or was stopped by hand) are stopped; stale
    records are removed."""
    for name in (StateDir.PUBLISHER, StateDir.PROMETHEUS):
        await stop_helper(state, name, say)
    if state.tree() is not None:
        say("xypipe demo: an earlier demo ended without `xypipe demo down`; its record is "
            "cleared")
        state.forget(StateDir.TREE)


def _refuse_busy(layout: Layout, cwd: Path) -> None:
    """Fail now, in one line, where the tree would fail in its log: its data directory or a
    port already in use (a foreground `make demo`, another checkout's demo)."""
    if layout.data_dir is not None:
        DataDirLock.acquire(cwd / layout.data_dir).release()
    for port, who in sorted(layout.ports().items()):
        if listening("127.0.0.1", port):
            raise DemoError(f"port {port} ({who}) is already in use: is another demo running "
                            "(`make demo` in a terminal, or another checkout's `demo up`)?",
                            code=DEMO_PORT_TAKEN)


async def up(config: str, state: StateDir, *, timeout_s: float, say: Say) -> None:
    """Start the demo of ``config`` in the background and return once it is ready."""
    live = state.live_tree()
    if live is not None:
        raise DemoError(
            f"the demo is already up (pid {live.process.pid}, since {live.since}, config "
            f"{_rel(Path(live.config))}): `xypipe demo down` first", code=DEMO_ALREADY_UP)
    await _clear_stale(state, say)
    cfg = load_effective(config).config
    layout = layout_of(cfg)
    cwd = Path.cwd()
    _refuse_busy(layout, cwd)
    log = state.log(StateDir.TREE)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")  # one run per log: what a failed start printed is all there is
    config_path = str(cwd / config)  # an absolute config stays as it is
    argv = [sys.executable, "-m", "xypipe", "run", config_path]
    launched, popen = launch(argv, log=log, cwd=cwd,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tree = TreeState(launched, config_path, str(cwd), layout,
                     datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    state.write(StateDir.TREE, tree)
    say(f"xypipe demo: starting {config} in the background (pid {launched.pid}, log "
        f"{_rel(log)})")
    try:
        await _wait_ready(tree, popen.poll, timeout_s=timeout_s, say=say)
    except DemoError:
        proc = running(launched)
        if proc is not None:
            await stop(proc, grace_s=HELPER_GRACE_S)
        state.forget(StateDir.TREE)
        raise
    for url in layout.pages:
        say(f"xypipe demo: up — open {url} in a browser")
    for e in layout.endpoints:
        say(f"  {e.process:<12} {e.base}/healthz  {e.base}/metrics")
    if layout.nats_url is not None:
        where = f" (data in {layout.data_dir})" if layout.data_dir else ""
        say(f"  {'nats':<12} {layout.nats_url}{where}")
    say(f"  {'log':<12} {_rel(log)}")
    say("  next: xypipe demo smoke | xypipe demo observe | xypipe demo publisher start | "
        "xypipe demo down")


async def _wait_ready(tree: TreeState, exited: Callable[[], int | None], *,
                      timeout_s: float, say: Say) -> None:
    endpoints = tree.layout.endpoints
    start = trio.current_time()
    shown: list[str] = []
    shown_at = start
    last = "every process"
    with trio.move_on_after(timeout_s):
        while True:
            status = exited()
            if status is not None:
                raise DemoError(
                    f"the demo exited with status {status} while starting: "
                    f"{last_words(Path(tree.process.log))} (full log: "
                    f"{_rel(Path(tree.process.log))})", code=DEMO_EXITED_AT_START)
            seen: dict[str, Health] = {}
            for e in endpoints:
                seen[e.process] = await health(e)
            waiting = {name: h.detail for name, h in seen.items() if not h.ready}
            if not waiting:
                return
            now = trio.current_time()
            last = "; ".join(f"{name}: {detail}" for name, detail in waiting.items())
            # A line when who is waiting changes, else one every few seconds.
            if sorted(waiting) != shown or now - shown_at >= PROGRESS_EVERY_S:
                say(f"  {now - start:4.0f} s  waiting for {last}")
                shown, shown_at = sorted(waiting), now
            await trio.sleep(POLL_S)
    raise DemoError(
        f"not every part was ready within {timeout_s:g} s (still waiting for {last}); the "
        f"demo was stopped — its log: {_rel(Path(tree.process.log))}",
        code=DEMO_START_TIMEOUT)


def _report(what: str, report: StopReport, say: Say) -> None:
    if report.stopped:
        say(f"xypipe demo: stopped {what}: {', '.join(report.stopped)}")
    if report.killed:
        _log.warning("processes did not stop within the grace period and were killed",
                     code=DEMO_KILLED_AFTER_GRACE, what=what, killed=report.killed)
        say(f"xypipe demo: killed {what} after the grace period: {', '.join(report.killed)}")


async def stop_helper(state: StateDir, name: str, say: Say) -> list[str]:
    """Stop one helper if it runs; the names of processes left (none, normally)."""
    helper: HelperState | None = state.helper(name)
    proc = running(helper.process) if helper is not None else None
    if proc is None:
        state.forget(name)
        return []
    report = await stop(proc, grace_s=HELPER_GRACE_S)
    _report(HELPER_NAMES.get(name, name), report, say)
    if not report.left:
        state.forget(name)
    return report.left


async def down(state: StateDir, *, grace_s: float, wipe: bool, config: str | None,
               say: Say) -> None:
    """Stop everything the demo commands started; with ``wipe``, remove its data too."""
    left: list[str] = []
    for name in (StateDir.PUBLISHER, StateDir.PROMETHEUS):
        left += await stop_helper(state, name, say)
    tree = state.tree()
    proc = running(tree.process) if tree is not None else None
    if proc is None:
        say("xypipe demo: the demo is not up; nothing to stop")
        state.forget(StateDir.TREE)
    else:
        assert tree is not None
        report = await stop(proc, grace_s=grace_s)
        _report("the demo", report, say)
        left += report.left
        if not report.left:
            state.forget(StateDir.TREE)
    if left:
        raise DemoError(f"still running after SIGKILL: {', '.join(left)}",
                        code=DEMO_PROCESS_LEFT)
    if wipe:
        _wipe(state, tree, config, say)


def _wipe(state: StateDir, tree: TreeState | None, config: str | None, say: Say) -> None:
    if tree is not None and config is None:
        layout, cwd = tree.layout, Path(tree.cwd)
    else:
        layout, cwd = layout_of(load_effective(config or "configs/demo.toml").config), Path.cwd()
    if layout.data_dir is not None:
        data = cwd / layout.data_dir
        if data.exists():
            busy = holder(data)
            if busy is not None:
                raise DemoError(f"not wiping {data}: it is in use (pid {busy.pid}); stop that "
                                "run first", code=DEMO_WIPE_REFUSED)
            if not (data / LOCK_NAME).exists():
                raise DemoError(f"not wiping {data}: it has no {LOCK_NAME}, so it is not an "
                                "embedded NATS data directory xypipe made; remove it by hand "
                                "if you mean to", code=DEMO_WIPE_REFUSED)
            shutil.rmtree(data)
            say(f"xypipe demo: wiped {_rel(data)} (streams, role keys)")
    if state.root.exists():
        shutil.rmtree(state.root)
        say(f"xypipe demo: wiped {_rel(state.root)} (logs, Prometheus data)")
