"""Reference plugin stages for xypipe: a template for writing your own.

Each stage says what it takes, gives and is configured with (``xypipe.Stage[Takes, Gives,
Config]``): mypy checks the stage's code against it, and the config loader checks that its
neighbours fit (``xypipe check``). Both stages here pass items through, so they are generic:
they give whatever their upstream gives.
"""

from __future__ import annotations

import re
from typing import Protocol, TypeVar, cast

import attrs
import trio

import xypipe

T = TypeVar("T")


@attrs.frozen
class ThrottleConfig:
    #: Most items per second passed downstream; the rest wait (backpressure, nothing dropped).
    per_second: int = attrs.field(default=1000, validator=xypipe.in_range(1, 10_000_000))
    #: Items allowed in a burst above the steady rate.
    burst: int = attrs.field(default=100, validator=xypipe.in_range(1, 10_000_000))


class Throttle(xypipe.Stage[T, T, ThrottleConfig]):
    """Pass items at most ``per_second`` (token bucket); slows the producer instead of dropping."""

    async def run(self) -> None:
        rate, burst = self.config.per_second, self.config.burst
        tokens, last = float(burst), trio.current_time()
        async for item in self.inbox:
            now = trio.current_time()
            tokens = min(burst, tokens + (now - last) * rate)
            last = now
            if tokens < 1:
                wait = (1 - tokens) / rate
                await trio.sleep(wait)
                tokens, last = 1.0, trio.current_time()
            tokens -= 1
            await self.outbox.send(item)


def _subject_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in pattern.split("."):
        parts.append(".+" if token == ">" else "[^.]+" if token == "*" else re.escape(token))
    return re.compile(r"\.".join(parts) + r"\Z")


class Subjected(Protocol):
    """Anything with a NATS subject: a received message, a ``Publish``..."""

    @property
    def subject(self) -> str: ...


#: A message, or a batch of them (what ``nats_source`` gives).
M = TypeVar("M", bound=Subjected | list[Subjected])


@attrs.frozen
class SubjectFilterConfig:
    #: NATS-style patterns; an item whose ``.subject`` matches none is dropped (and counted).
    subjects: list[str] = attrs.field(validator=xypipe.subject_patterns())


class SubjectFilter(xypipe.Stage[M, M, SubjectFilterConfig]):
    """Keep messages (or batches of them) whose subject matches one of ``subjects``."""

    async def run(self) -> None:
        patterns = [_subject_regex(p) for p in self.config.subjects]
        dropped = self.ctx.metrics.counter(
            "subject_filter_dropped", "Messages dropped by subject_filter", ["stage"]
        ).labels(self.ctx.name)
        async for item in self.inbox:
            batch: list[Subjected] = item if isinstance(item, list) else [item]
            kept = [m for m in batch if any(p.match(m.subject) for p in patterns)]
            dropped.inc(len(batch) - len(kept))
            if kept:
                # The same shape as it came: a batch stays a batch, a message a message.
                await self.outbox.send(cast(M, kept if isinstance(item, list) else kept[0]))


__all__ = ["SubjectFilter", "Throttle"]
