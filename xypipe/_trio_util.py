"""Small Trio helpers shared by the adapters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["single_error_unwrapped"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


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
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from leaves[0].__cause__
        raise
