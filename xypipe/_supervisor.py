"""One ``xypipe run`` for a whole deployment: processes, embedded NATS, signals.

A Python process uses one core, so pipelines that name a ``[processes.X]`` table run in a child
``xypipe run CONFIG --process X``. The parent owns the embedded nats-server (children get its URL),
runs the ``main`` process's pipelines itself, and stops everything together: on SIGINT/SIGTERM it
asks every child to stop (SIGTERM: they drain), waits a bounded time, then kills what is left. A
child that dies on its own stops the whole tree, so a half-running deployment never hides.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import trio

from xypipe._config import AppConfig
from xypipe._errors import XyError
from xypipe._log import get_logger
from xypipe._process import Child
from xypipe._runner import Runner

_log = get_logger("supervisor")

#: Children get this long after SIGTERM before they are killed.
CHILD_GRACE = 4.0


class ChildFailed(XyError):
    code = "XY-SUP-001"


async def run_process_tree(
    cfg: AppConfig,
    *,
    process: str | None = None,
    nats_url: str | None = None,
    signals: tuple[int, ...] = (),
) -> None:
    """Run ``process`` (a child), or — with ``process=None`` — the whole tree."""
    if process is not None:
        await _run_single(cfg, process, nats_url, signals)
        return
    children = [p for p in cfg.process_names() if p != "main"]
    if not children:
        await _run_single(cfg, "main", nats_url, signals)
        return
    await _run_tree(cfg, children, nats_url, signals)


async def _run_single(
    cfg: AppConfig, process: str, nats_url: str | None, signals: tuple[int, ...]
) -> None:
    runner = Runner(cfg, process=process, nats_url=nats_url)
    async with trio.open_nursery() as nursery:
        if signals:
            nursery.start_soon(_stop_on_signals, runner.stop, nursery.cancel_scope, signals)
        await runner.run()
        nursery.cancel_scope.cancel()


async def _stop_on_signals(stop: Any, scope: trio.CancelScope, signals: tuple[int, ...]) -> None:
    with trio.open_signal_receiver(*signals) as received:
        count = 0
        async for signum in received:
            count += 1
            if count == 1:
                _log.info("stopping (signal)", signal=signal.Signals(signum).name)
                stop()
            else:
                _log.warning("second signal: stopping now", code="XY-SUP-002")
                scope.cancel()


async def _run_tree(
    cfg: AppConfig, children: list[str], nats_url: str | None, signals: tuple[int, ...]
) -> None:
    main_pipelines = [p for p in cfg.pipelines.values() if p.process == "main"]
    async with trio.open_nursery() as base:
        url = nats_url
        if url is None and cfg.nats is not None:
            url = await _own_nats(cfg, base)
        stop_all = trio.Event()
        failures: list[str] = []
        async with trio.open_nursery() as nursery:
            if signals:
                nursery.start_soon(_stop_on_signals, stop_all.set, nursery.cancel_scope, signals)
            # Ends when every child has exited and the main runner has returned.
            async with trio.open_nursery() as work:
                for name in children:
                    await work.start(_child, cfg, name, url, stop_all, failures)
                runner = Runner(cfg, process="main", nats_url=url) if main_pipelines else None
                if runner is not None:
                    work.start_soon(_main_runner, runner, stop_all)
                await stop_all.wait()
                if runner is not None:
                    runner.stop()
            nursery.cancel_scope.cancel()
        base.cancel_scope.cancel()
    if failures:
        raise ChildFailed("; ".join(failures))


async def _main_runner(runner: Runner, stop_all: trio.Event) -> None:
    try:
        await runner.run()
    finally:
        stop_all.set()


async def _own_nats(cfg: AppConfig, nursery: trio.Nursery) -> str | None:
    assert cfg.nats is not None
    if cfg.nats.url != "embedded":
        return None
    from xypipe._embedded import embedded_nats
    from xypipe._runner import _hold_embedded

    emb = cfg.nats.embedded
    server = await nursery.start(
        _hold_embedded, embedded_nats,
        {"port": emb.port, "host": emb.host, "data_dir": emb.data_dir, "binary": emb.binary,
         "jetstream": emb.jetstream},
    )
    url: str = server.url
    return url


async def _child(
    cfg: AppConfig, name: str, nats_url: str | None, stop_all: trio.Event, failures: list[str],
    *, task_status: trio.TaskStatus[Child] = trio.TASK_STATUS_IGNORED,
) -> None:
    cmd = [sys.executable, "-m", "xypipe", "run", cfg.path, "--process", name]
    if nats_url:
        cmd += ["--nats-url", nats_url]
    # Own process group: a Ctrl-C in the terminal reaches the parent only, which then stops the
    # children in order (pipelines drain before NATS goes away).
    proc = Child.spawn(cmd, start_new_session=True, env=os.environ)
    _log.info("child started", process=name, pid=proc.pid)
    task_status.started(proc)
    try:
        async with trio.open_nursery() as watch:
            watch.start_soon(_stop_child_when, stop_all, proc, name)
            code = await proc.wait()
            watch.cancel_scope.cancel()
        if not stop_all.is_set():
            _log.error("child exited; stopping everything", code=ChildFailed.code,
                       process=name, returncode=code)
            failures.append(f"process {name!r} exited on its own with status {code}")
            stop_all.set()
    finally:
        with trio.CancelScope(shield=True):
            await _terminate(proc, name)


async def _stop_child_when(stop_all: trio.Event, proc: Child, name: str) -> None:
    await stop_all.wait()
    await _terminate(proc, name)


async def _terminate(proc: Child, name: str) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(CHILD_GRACE):
        await proc.wait()
        return
    _log.warning("child did not stop in time; killing", code="XY-SUP-003", process=name)
    proc.kill()
    await proc.wait()

