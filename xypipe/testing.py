"""Test a stage alone, the way xypipe's own stages are tested.

::

    from xypipe.testing import stage_harness

    async def test_double(autojump_clock):
        async with stage_harness(Double, {"factor": 3}) as h:
            await h.send(2)
            assert await h.receive() == 6

The harness wires the stage to memory channels (the same budgeted edges the runner uses), gives
it a context with a fresh metrics registry and a degradation level the test controls, and on exit
closes the input and waits for the stage to finish (its final flush is in ``h.collected``).
Time-driven stages take their time from Trio, so the mock clock drives them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, Never, TypeVar

import attrs
import trio

from xypipe._config import _structure
from xypipe._degrade import Level, LevelWatch, Transition
from xypipe._edge import Budget, Edge
from xypipe._errors import ConfigError
from xypipe._log import get_logger
from xypipe._metrics import Metrics
from xypipe._stage import SharedValues, Stage, StageBase, StageContext, TrioClock
from xypipe._validate import in_range
from xypipe.abc import Clock, HttpRoutes, NatsClient

__all__ = [
    "CountingSource",
    "Harness",
    "ListSink",
    "make_config",
    "stage_harness",
]

S = TypeVar("S", bound=StageBase)
T = TypeVar("T")


def make_config(stage_cls: type[StageBase], options: object = None) -> object:
    """Build a stage's config from a dict exactly as the TOML loader would (same errors); any
    other value is taken as the config itself."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        return options
    problems: list[str] = []
    cfg = _structure(options, stage_cls.Config, stage_cls.__name__, problems)
    if problems or cfg is None:
        raise ConfigError(problems)
    return cfg


class Harness(Generic[S]):
    """A stage wired to test edges: ``stage`` is the instance under test."""

    def __init__(self, stage: S, inp: Edge[object] | None, out: Edge[object] | None) -> None:
        self.stage = stage
        self.ctx = stage.ctx
        self.input_edge = inp
        self.output_edge = out
        #: What the stage emitted after the input was closed (its final flush).
        self.collected: list[object] = []
        self.error: BaseException | None = None
        self.finished = trio.Event()

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    async def send(self, item: object) -> None:
        assert self.input_edge is not None, "this stage takes no input"
        await self.input_edge.send_channel.send(item)

    async def send_all(self, items: list[object]) -> None:
        for item in items:
            await self.send(item)

    def close_input(self) -> None:
        if self.input_edge is not None:
            self.input_edge.send_channel.close()

    async def receive(self) -> object:
        assert self.output_edge is not None, "this stage produces nothing"
        return await self.output_edge.receive_channel.receive()

    def available(self) -> list[object]:
        """Everything the stage has output so far, without waiting."""
        assert self.output_edge is not None
        out = []
        while True:
            try:
                out.append(self.output_edge.receive_channel.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return out

    def set_level(self, level: Level) -> None:
        old = self.ctx.degradation.level
        self.ctx.degradation.set(
            level, Transition(trio.current_time(), old, level, 0.0, "set by test", "test")
        )

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.sample(name, labels) or 0.0


@asynccontextmanager
async def stage_harness(
    stage_cls: type[S],
    options: object = None,
    *,
    budget: Budget | None = None,
    level: Level = Level.L0,
    nats: NatsClient | None = None,
    http: HttpRoutes | None = None,
    shared: SharedValues | None = None,
    clock: Clock | None = None,
    name: str | None = None,
) -> AsyncIterator[Harness[S]]:
    """Run ``stage_cls`` (configured from ``options`` like a TOML table) on test edges for the
    duration of the block; on exit close its input and wait for it to finish (what it emits
    meanwhile lands in ``h.collected``). ``nats``/``http`` are what its process would give it
    (none by default: a stage that requires one fails with ``MissingRequirement``)."""
    config = make_config(stage_cls, options)
    budget = budget or Budget(max_items=1024)
    stage_name = name or stage_cls.__name__.lower()
    inp = Edge[object](f"test->{stage_name}", budget) if stage_cls.consumes else None
    out = Edge[object](f"{stage_name}->test", budget) if stage_cls.produces else None
    ctx = StageContext(
        pipeline="test", name=stage_name,
        inbox=inp.receive_channel if inp else None,
        outbox=out.send_channel if out else None,
        degradation=LevelWatch(level), metrics=Metrics(),
        log=get_logger(f"stage.{stage_name}", pipeline="test", stage=stage_name),
        nats=nats, http=http, shared=shared if shared is not None else SharedValues(),
        clock=clock if clock is not None else TrioClock(),
    )
    harness = Harness(stage_cls(config, ctx), inp, out)

    async def _run() -> None:
        try:
            await harness.stage.run()
        finally:
            if ctx.outbox is not None:
                ctx.outbox.close()
            harness.finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run)
        yield harness
        harness.close_input()
        if stage_cls.consumes:
            # Drain whatever the stage still emits while it flushes, so a full output edge
            # cannot deadlock the shutdown.
            if out is not None:
                async for item in out.receive_channel:
                    harness.collected.append(item)
            await harness.finished.wait()
        else:
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- test stages
# Not registered as entry points (a production install lists only real stages): use them as
# "xypipe.testing:CountingSource" / "xypipe.testing:ListSink" in a test's config.


@attrs.frozen
class CountingSourceConfig:
    count: int = attrs.field(default=10, validator=in_range(0, 10_000_000))
    interval_ms: int = attrs.field(default=0, validator=in_range(0, 60_000))


class CountingSource(Stage[Never, int, CountingSourceConfig]):
    """Emit the integers ``0..count-1`` (one every ``interval_ms``), then end."""

    async def run(self) -> None:
        for i in range(self.config.count):
            if self.config.interval_ms:
                await trio.sleep(self.config.interval_ms / 1000)
            await self.outbox.send(i)


@attrs.frozen
class ListSinkConfig:
    """No options: what arrived is the stage's ``items``."""


class ListSink(Stage[T, Never, ListSinkConfig]):
    """Keep everything received in ``items`` (read it through the run:
    ``runner.stage("p", "listsink", ListSink).items``)."""

    def __init__(self, config: ListSinkConfig, ctx: StageContext) -> None:
        super().__init__(config, ctx)
        self.items: list[T] = []

    async def run(self) -> None:
        async for item in self.inbox:
            self.items.append(item)
