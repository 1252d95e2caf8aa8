"""Small stages used by the runner tests (loaded by "module:Class" references).

Typed like built-in stages (``Stage[Takes, Gives, Config]``), except where a test needs a
stage that declares nothing. Tests read what they did through the run object:
``runner.stage("p", "slowsink", SlowSink).items``.
"""

from __future__ import annotations

from typing import Never, TypeVar

import attrs
import trio

import xypipe
from xypipe import Shared, StageContext

T = TypeVar("T")


@attrs.frozen
class DoubleConfig:
    factor: int = attrs.field(default=2, validator=xypipe.in_range(1, 1000))


class Double(xypipe.Stage[int, int, DoubleConfig]):
    """Multiply every item by ``factor``."""

    async def run(self) -> None:
        async for x in self.inbox:
            await self.outbox.send(x * self.config.factor)


@attrs.frozen
class SlowSinkConfig:
    per_item_ms: int = attrs.field(default=10, validator=xypipe.in_range(0, 60_000))


class SlowSink(xypipe.Stage[T, Never, SlowSinkConfig]):
    """Take ``per_item_ms`` per item (a consumer that cannot keep up); keep them in ``items``."""

    def __init__(self, config: SlowSinkConfig, ctx: StageContext) -> None:
        super().__init__(config, ctx)
        self.items: list[T] = []

    async def run(self) -> None:
        async for x in self.inbox:
            await trio.sleep(self.config.per_item_ms / 1000)
            self.items.append(x)


@attrs.frozen
class BoomConfig:
    after: int = attrs.field(default=3, validator=xypipe.in_range(0, 1_000_000))


class Boom(xypipe.Stage[T, T, BoomConfig]):
    """Pass items through, then raise after ``after`` items."""

    async def run(self) -> None:
        seen = 0
        async for x in self.inbox:
            if seen == self.config.after:
                raise ValueError(f"cannot handle item {x!r}")
            seen += 1
            await self.outbox.send(x)


@attrs.frozen
class FlakyConfig:
    failures: int = attrs.field(default=2, validator=xypipe.in_range(0, 100))


#: How many times Flaky has been started in this process (a restart makes a new instance).
FLAKY_RUNS: Shared[list[int]] = Shared("flaky.runs", lambda: [0])


class Flaky(xypipe.Stage[T, T, FlakyConfig]):
    """Fail on the first item of each of its first ``failures`` runs, then pass through."""

    async def run(self) -> None:
        runs = self.ctx.shared.get(FLAKY_RUNS)
        runs[0] += 1
        async for x in self.inbox:
            if runs[0] <= self.config.failures:
                raise ConnectionError(f"run {runs[0]} lost its connection")
            await self.outbox.send(x)


@attrs.frozen
class EndlessConfig:
    interval_ms: int = attrs.field(default=10, validator=xypipe.in_range(1, 60_000))


class Endless(xypipe.Stage[Never, int, EndlessConfig]):
    """Emit 0, 1, 2, ... forever, counting in ``sent`` how many it sent."""

    sent = 0

    async def run(self) -> None:
        i = 0
        while True:
            await trio.sleep(self.config.interval_ms / 1000)
            await self.outbox.send(i)
            self.sent = i + 1
            i += 1


class Batcher(xypipe.Stage[T, list[T], xypipe.NoConfig]):
    """Hold everything until the input ends, then emit one list (a final flush)."""

    async def run(self) -> None:
        held = [x async for x in self.inbox]
        await self.outbox.send(held)


class NotAStage:
    """Has no Config and no run: must be refused by the loader."""


@attrs.define
class MutableConfig:
    x: int = 1


class MutableConfigStage(xypipe.Stage):
    Config = MutableConfig


@attrs.frozen
class BurstyConfig:
    #: Items to send, then a pause, then items again; the stream "feed" is watched with a
    #: cadence of ``stale_after_ms``.
    first: int = attrs.field(default=5, validator=xypipe.in_range(0, 1_000_000))
    pause_ms: int = attrs.field(default=5000, validator=xypipe.in_range(0, 3_600_000))
    interval_ms: int = attrs.field(default=100, validator=xypipe.in_range(1, 60_000))
    stale_after_ms: int = attrs.field(default=1000, validator=xypipe.in_range(1, 60_000))


class Bursty(xypipe.Stage[Never, int, BurstyConfig]):
    """A source that feeds a watched stream, falls silent for ``pause_ms``, then resumes."""

    async def run(self) -> None:
        cfg = self.config
        watch = self.ctx.watch("feed", stale_after=cfg.stale_after_ms / 1000, gated=False)
        i = 0
        while True:
            if i == cfg.first:
                await trio.sleep(cfg.pause_ms / 1000)
            await trio.sleep(cfg.interval_ms / 1000)
            await self.outbox.send(i)
            watch.data()
            i += 1
