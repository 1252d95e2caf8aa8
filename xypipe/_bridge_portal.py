"""The ways Trio and asyncio share a process, behind one small interface.

nats-py is asyncio-only; everything else in xypipe is Trio. A :class:`Portal` gives the NATS
client three primitives and nothing more:

- ``await portal.run(fn, *args)`` (Trio side): run the coroutine function in asyncio, return its
  result or raise its exception, cancellable from Trio;
- ``portal.to_aio(fn, *args)`` (Trio side, sync): schedule a plain callback in the asyncio loop;
- ``portal.to_trio(fn, *args)`` (asyncio side, sync): schedule a plain callback in Trio.

Batching lives in the caller (:mod:`xypipe._nats`): each ``to_aio``/``to_trio`` carries a whole
batch, never one message. Three implementations, measured by ``bench/bridge.py``:

- ``"trio-asyncio"``: the asyncio loop runs *inside* Trio (trio-asyncio). Both sides share one
  thread, so ``to_trio`` is a direct call and ``to_aio`` an in-thread ``call_soon``.
- ``"thread"``: a plain asyncio loop in its own thread; ``to_aio`` is ``call_soon_threadsafe``,
  ``to_trio`` is ``TrioToken.run_sync_soon`` and ``run`` is ``run_coroutine_threadsafe`` (the
  mechanism under anyio's blocking portal, without its per-call task-group overhead).
- ``"anyio"``: anyio's :class:`~anyio.from_thread.BlockingPortal` runs the asyncio loop in its
  own thread; ``run`` and ``to_aio`` are ``start_task_soon`` (a task in the portal's task group
  per call, cancelled through its cancel scope), ``to_trio`` is ``TrioToken.run_sync_soon``
  (anyio's way back, ``from_thread.run_sync``, would block the asyncio thread until Trio ran).

Only this module and :mod:`xypipe._nats` import asyncio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar, TypeVarTuple, get_args

import outcome
import trio

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

from xypipe._trio_util import single_error_unwrapped

__all__ = ["BRIDGE_KINDS", "BridgeKind", "Portal", "open_portal"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
BridgeKind = Literal["trio-asyncio", "thread", "anyio"]
BRIDGE_KINDS: tuple[BridgeKind, ...] = get_args(BridgeKind)


class Portal(Protocol):
    kind: BridgeKind
    loop: asyncio.AbstractEventLoop

    async def run(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T: ...

    def to_aio(self, fn: Callable[[*Ts], object], *args: *Ts) -> None: ...

    def to_trio(self, fn: Callable[[*Ts], object], *args: *Ts) -> None: ...


class _TrioAsyncioPortal:
    kind: BridgeKind = "trio-asyncio"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def run(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        import trio_asyncio  # type: ignore[import-untyped]

        result: T = await trio_asyncio.aio_as_trio(fn, loop=self.loop)(*args)
        return result

    def to_aio(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        self.loop.call_soon(fn, *args)

    def to_trio(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        # asyncio callbacks run inside a Trio task here: Trio's sync APIs can be called directly.
        fn(*args)


class _ThreadPortal:
    kind: BridgeKind = "thread"

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self.loop = loop
        self._token = token

    async def run(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        async def _call() -> T:
            return await fn(*args)

        return await _await_future(
            asyncio.run_coroutine_threadsafe(_call(), self.loop), self._token)

    def to_aio(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def to_trio(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        _to_trio(self._token, fn, *args)


def _to_trio(token: trio.lowlevel.TrioToken, fn: Callable[[*Ts], object], *args: *Ts) -> None:
    try:
        token.run_sync_soon(fn, *args)
    except trio.RunFinishedError:
        pass  # Trio has exited: deliveries after that have no receiver.


async def _await_future(fut: concurrent.futures.Future[T], token: trio.lowlevel.TrioToken) -> T:
    """The result of work running in the asyncio thread; a Trio cancellation cancels it."""
    done = trio.Event()

    def _wake(_: concurrent.futures.Future[T]) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass  # Trio is gone; nobody is waiting any more.

    fut.add_done_callback(_wake)
    try:
        await done.wait()
    except trio.Cancelled:
        # The asyncio task is cancelled too; its outcome is of no interest to anyone now.
        fut.cancel()
        raise
    try:
        return fut.result()
    except concurrent.futures.CancelledError:
        # Cancelled on the asyncio side (the loop is closing): reported as the trio-asyncio
        # bridge reports it, an asyncio cancellation.
        raise asyncio.CancelledError from None


class _AnyioPortal:
    kind: BridgeKind = "anyio"

    def __init__(self, portal: BlockingPortal, loop: asyncio.AbstractEventLoop,
                 token: trio.lowlevel.TrioToken) -> None:
        self._portal = portal
        self.loop = loop
        self._token = token

    async def run(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        return await _await_future(self._portal.start_task_soon(fn, *args), self._token)

    def to_aio(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        self._portal.start_task_soon(fn, *args)

    def to_trio(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        _to_trio(self._token, fn, *args)


async def _cancel_all_tasks() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def _open_thread_portal() -> AsyncIterator[_ThreadPortal]:
    # Built directly, not through the policy: trio-asyncio (if imported) replaces the policy and
    # refuses to build a loop while Trio runs in this thread.
    loop = asyncio.SelectorEventLoop()
    stopped = trio.Event()
    token = trio.lowlevel.current_trio_token()
    result: list[outcome.Outcome[None]] = []

    def _deliver(o: outcome.Outcome[None]) -> None:
        result.append(o)
        try:
            token.run_sync_soon(stopped.set)
        except trio.RunFinishedError:
            pass

    trio.lowlevel.start_thread_soon(loop.run_forever, _deliver, name="xypipe-nats-asyncio")
    portal = _ThreadPortal(loop, token)
    try:
        yield portal
    finally:
        with trio.CancelScope(shield=True):
            try:
                await portal.run(_cancel_all_tasks)
                await portal.run(loop.shutdown_asyncgens)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                await stopped.wait()
                loop.close()
        if result:
            result[0].unwrap()


@asynccontextmanager
async def _open_anyio_portal() -> AsyncIterator[_AnyioPortal]:
    from anyio.from_thread import start_blocking_portal

    # An explicit loop factory, for the reason given above; the loop's runner cancels
    # whatever nats-py still runs when the portal stops.
    cm = start_blocking_portal("asyncio", {"loop_factory": asyncio.SelectorEventLoop},
                               name="xypipe-nats-anyio")
    # Starting and joining the portal's thread block: done in a worker thread, not in Trio's.
    portal = await trio.to_thread.run_sync(cm.__enter__)
    error: BaseException | None = None
    try:
        loop = await trio.to_thread.run_sync(portal.call, asyncio.get_running_loop)
        yield _AnyioPortal(portal, loop, trio.lowlevel.current_trio_token())
    except BaseException as exc:
        error = exc
        raise
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(
                cm.__exit__, type(error) if error else None, error, None)


@asynccontextmanager
async def open_portal(kind: BridgeKind = "trio-asyncio") -> AsyncIterator[Portal]:
    """Open an asyncio loop bridged to the current Trio run; closed (tasks cancelled) on exit."""
    if kind == "trio-asyncio":
        # Imported here: trio-asyncio patches asyncio's loop policy process-wide, which the
        # thread bridge neither needs nor should pay for.
        import trio_asyncio

        with single_error_unwrapped():
            async with trio_asyncio.open_loop() as loop:
                yield _TrioAsyncioPortal(loop)
    elif kind == "thread":
        async with _open_thread_portal() as portal:
            yield portal
    elif kind == "anyio":
        async with _open_anyio_portal() as anyio_portal:
            yield anyio_portal
    else:
        raise ValueError(f"bridge must be one of {', '.join(BRIDGE_KINDS)}, got {kind!r}")
