"""Riding out a JetStream outage: which bridge errors are worth a retry, and the backoff.

A nats-server restart, a lame-duck move or a cluster node loss makes JetStream calls fail for a
while (timeouts, no responders, "JetStream not available", connection lost) and then work
again. Callers that depend on JetStream retry such calls with :func:`retrying` instead of dying
or hanging; anything else (a stream that does not exist, a refused permission, a bad request) is
not transient and is raised at once.

:class:`Backoff` is plain arithmetic (no clock), so its schedule is unit-tested with numbers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from xypipe._errors import (
    JS_RETRYING,
    BridgeError,
    NatsConnectionError,
    NatsJsUnavailable,
    NatsNoResponders,
    NatsTimeout,
    leaves_of,
)
from xypipe._log import Logger, get_logger

T = TypeVar("T")
_log = get_logger("retry")

_TRANSIENT = (NatsTimeout, NatsConnectionError, NatsNoResponders, NatsJsUnavailable)


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure that goes away when the server or JetStream is back."""
    return isinstance(exc, _TRANSIENT)


def _transient_leaves(exc: BaseException) -> BridgeError | None:
    """The first of a group's failures when every one of them is transient (two reads run at
    once that time out together, as they do when JetStream is electing), else ``None``."""
    leaves = leaves_of(exc)
    passing = [e for e in leaves if isinstance(e, BridgeError) and transient(e)]
    return passing[0] if len(passing) == len(leaves) else None


@attrs.frozen
class Backoff:
    """Exponential backoff: ``initial_s``, times ``factor`` per attempt, capped at ``max_s``.

    Kept short at the start (a restarted server answers within tens of ms) and capped low so a
    component notices within ``max_s`` that the server is back."""

    initial_s: float = 0.05
    max_s: float = 1.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1 for the first failure)."""
        if attempt < 1:
            return 0.0
        return float(min(self.max_s, self.initial_s * self.factor ** min(attempt - 1, 60)))


DEFAULT_BACKOFF = Backoff()


async def retrying(
    what: str,
    fn: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
    log: Logger | None = None,
    on_failure: Callable[[BridgeError], None] | None = None,
    gave_up: Callable[[], bool] = lambda: False,
) -> T:
    """``await fn()`` until it succeeds; transient bridge errors (or a group of nothing but
    them, from calls ``fn`` runs at once) are counted (``on_failure``),
    logged with ``XY-NATS-011`` and retried after :meth:`Backoff.delay`. Other errors, and a
    transient one once ``gave_up()`` says so (e.g. the client is closed for good), are raised.
    Cancellable at every wait."""
    logger = log if log is not None else _log
    attempt = 0
    while True:
        try:
            try:
                result = await fn()
            except BaseExceptionGroup as group:
                # Concurrent calls inside ``fn`` that all failed transiently: one outage, one
                # retry. A group holding anything else (a bug, a refusal) is raised as it is.
                leaf = _transient_leaves(group)
                if leaf is None:
                    raise
                raise leaf from group
        except BridgeError as exc:
            if not transient(exc) or gave_up():
                raise
            attempt += 1
            if on_failure is not None:
                on_failure(exc)
            delay = backoff.delay(attempt)
            logger.warning(f"{what} failed; retrying", code=JS_RETRYING, attempt=attempt,
                           retry_in_ms=round(delay * 1000), error=str(exc),
                           error_code=exc.code)
            await trio.sleep(delay)
            continue
        if attempt:
            logger.info(f"{what} succeeded after {attempt} failed attempt(s)", attempts=attempt)
        return result


__all__ = ["DEFAULT_BACKOFF", "Backoff", "retrying", "transient"]
