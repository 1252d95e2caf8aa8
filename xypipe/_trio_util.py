"""Small Trio helpers shared by the adapters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

import trio

from xypipe._errors import XyError, leaves_of

__all__ = ["Result", "both", "single_error_unwrapped"]

T = TypeVar("T")
U = TypeVar("U")


@contextmanager
def single_error_unwrapped() -> Iterator[None]:
    """Re-raise a (nested) exception group holding exactly one exception as that exception.

    For context managers that keep a nursery of helper tasks open around the caller's block: the
    caller's own exception (``KeyError``, ``Cancelled``, our ``XyError``) must come out as itself,
    not wrapped in the nursery's group. Groups of two or more real failures are left alone.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = leaves_of(group)
        if len(leaves) == 1:
            raise leaves[0] from leaves[0].__cause__
        raise


class Result(Generic[T]):
    """The value of a task run in a nursery (``nursery.start_soon(result.run, fn)``), for
    another task of that nursery to wait for (``await result.get()``). A failure of ``fn``
    propagates through the nursery, which cancels the waiter."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: T | None = None

    async def run(self, fn: Callable[[], Awaitable[T]]) -> None:
        self._value = await fn()
        self._done.set()

    async def get(self) -> T:
        await self._done.wait()
        return self._value  # type: ignore[return-value]  # set by run() before _done


async def both(first: Callable[[], Awaitable[T]],
               second: Callable[[], Awaitable[U]]) -> tuple[T, U]:
    """Run two independent calls at once (e.g. two round trips); their results in order. A
    failure of either cancels the other and comes out as itself; when both fail together (two
    reads timing out on one outage) the first comes out, the other chained as its context —
    unless only one of them is ours (an ``XyError``): the other, a bug, is never hidden."""
    a, b = Result[T](), Result[U]()
    try:
        with single_error_unwrapped():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.run, first)
                nursery.start_soon(b.run, second)
    except BaseExceptionGroup as group:
        leaves = leaves_of(group)
        bugs = [e for e in leaves if not isinstance(e, XyError)]
        raise (bugs or leaves)[0] from group
    return await a.get(), await b.get()
