"""``xypipe demo publisher start|stop``: one more market publisher against the running demo.

It is ``xypipe publish`` in the background, signed in as the demo bus's ``publisher`` role, on
venues of its own (``XLON,XETR`` by default, where the demo's publisher uses XNAS, XNYS and
BATS), so its instruments never collide with the demo's sequences: more load, nothing wrong.
``start`` returns once its first tick has been seen on the bus.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from xypipe._demo._lifecycle import last_words, stop_helper
from xypipe._demo._procs import launch, running, stop
from xypipe._demo._state import HelperState, StateDir
from xypipe._errors import (
    DEMO_HELPER_FAILED,
    DEMO_HELPER_RUNNING,
    DEMO_NOT_UP,
    BridgeError,
    DemoError,
)
from xypipe._nats import connect
from xypipe._role_grants import inbox_prefix

__all__ = ["PublisherOptions", "start_publisher", "stop_publisher"]

Say = Callable[[str], None]


@attrs.frozen
class PublisherOptions:
    rate: float = 2000.0
    symbols: int = 200
    venues: str = "XLON,XETR"
    seed: int = 7


async def start_publisher(state: StateDir, options: PublisherOptions, *, timeout_s: float,
                          say: Say) -> None:
    tree = state.live_tree()
    if tree is None or tree.layout.nats_url is None:
        raise DemoError("the demo is not up (or has no NATS): `xypipe demo up` first",
                        code=DEMO_NOT_UP)
    live = state.live_helper(StateDir.PUBLISHER)
    if live is not None:
        raise DemoError(f"an extra publisher is already running (pid {live.process.pid}): "
                        "`xypipe demo publisher stop` first", code=DEMO_HELPER_RUNNING)
    cwd = Path(tree.cwd)
    url = tree.layout.nats_url
    argv = [sys.executable, "-m", "xypipe", "publish", "--url", url,
            "--rate", f"{options.rate:g}", "--symbols", str(options.symbols),
            "--venues", options.venues, "--seed", str(options.seed)]
    key = tree.layout.key_of("adapter", cwd)
    if key is not None:
        argv += ["--nkey", key]
    log = state.log(StateDir.PUBLISHER)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    launched, popen = launch(argv, log=log, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    state.write(StateDir.PUBLISHER, HelperState(launched))
    venue = options.venues.split(",")[0]
    say(f"xypipe demo: starting a publisher (pid {launched.pid}): {options.rate:g} ticks/s "
        f"over {options.symbols} symbols on {options.venues}")
    subject = f"xy.src.tick.{venue}.>"
    reader = tree.layout.key_of("reader", cwd)
    ticking = False
    try:
        with trio.move_on_after(timeout_s):
            async with connect(url, name="xypipe-demo-publisher-check", nkeys_seed=reader,
                               inbox_prefix=inbox_prefix("reader") if reader else "_INBOX"
                               ) as nc, nc.subscribe(subject, max_batch=1) as sub, \
                    trio.open_nursery() as nursery:

                async def exited() -> None:
                    await trio.to_thread.run_sync(popen.wait, abandon_on_cancel=True)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(exited)
                async for _batch in sub:
                    ticking = True
                    nursery.cancel_scope.cancel()
                    break
    except BridgeError as exc:
        raise DemoError(f"cannot watch the demo's bus at {url}: {exc}",
                        code=DEMO_HELPER_FAILED) from exc
    if ticking:
        say(f"xypipe demo: publisher running — its ticks arrive on {subject} (log {log}); "
            "`xypipe demo publisher stop` stops it")
        return
    status = popen.poll()
    proc = running(launched)
    if proc is not None:
        await stop(proc, grace_s=5.0)
    state.forget(StateDir.PUBLISHER)
    why = (f"exited with status {status}: {last_words(log)}" if status is not None
           else f"sent no tick within {timeout_s:g} s (stopped; log {log})")
    raise DemoError(f"the publisher {why}", code=DEMO_HELPER_FAILED)


async def stop_publisher(state: StateDir, *, say: Say) -> None:
    if state.live_helper(StateDir.PUBLISHER) is None:
        state.forget(StateDir.PUBLISHER)
        say("xypipe demo: no extra publisher is running")
        return
    left = await stop_helper(state, StateDir.PUBLISHER, say)
    if left:
        raise DemoError(f"still running after SIGKILL: {', '.join(left)}",
                        code=DEMO_HELPER_FAILED)
