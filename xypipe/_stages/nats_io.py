"""Generic NATS source and sink stages (the pass-through pipeline is made of these)."""

from __future__ import annotations

from typing import Never, Protocol

import attrs
import trio
from prometheus_client import Counter

from xypipe._messages import Publish
from xypipe._stage import Stage
from xypipe._stages._cadence import CadenceWatch, CadenceWatches
from xypipe._validate import Invalid, in_range, subject_pattern, subject_patterns
from xypipe.abc import Msg, NatsClient


class Publishable(Protocol):
    """What ``nats_sink`` publishes: a received :class:`~xypipe.abc.Msg` or a ``Publish``
    (their ``headers`` too, when they have some)."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...


@attrs.frozen
class NatsSourceConfig:
    subjects: list[str] = attrs.field(validator=subject_patterns())
    #: Queue group: several instances share the work instead of each getting every message.
    queue: str | None = None
    #: Most messages handed downstream as one batch (one item on the edge).
    max_batch: int = attrs.field(default=256, validator=in_range(1, 65536))
    #: Subjects promised at a cadence, watched for /healthz readiness (see
    #: :mod:`xypipe._stages._cadence`), e.g. ``[{ subject = "xy.md.snapshot.*" }]``.
    watch: list[CadenceWatch] = attrs.field(factory=list)


class NatsSource(Stage[Never, list[Msg], NatsSourceConfig]):
    """Subscribe to NATS subjects; emit batches (lists) of messages with ``.subject``/``.data``."""

    requires = frozenset({"nats"})
    ready_on_start = False

    async def run(self) -> None:
        nc = self.ctx.require_nats()
        received = self.ctx.metrics.counter(
            "nats_source_msgs", "Messages received by nats_source stages", ["stage"]
        ).labels(self.ctx.name)
        self._watches = CadenceWatches(self.ctx, self.config.watch)
        async with trio.open_nursery() as nursery:
            for subject in self.config.subjects:
                await nursery.start(self._pump, nc, subject, received)
            if self._watches:
                nursery.start_soon(self._watches.run_forgetting)
            self.ctx.set_ready()

    async def _pump(
        self, nc: NatsClient, subject: str, received: Counter,
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with nc.subscribe(
            subject, queue=self.config.queue, max_batch=self.config.max_batch
        ) as sub:
            task_status.started()
            watches = self._watches
            async for batch in sub:
                received.inc(len(batch))
                if watches:
                    watches.seen([m.subject for m in batch])
                await self.outbox.send(batch)


@attrs.frozen
class NatsSinkConfig:
    #: Rewrite a subject prefix before publishing (e.g. "xy.src.tick" -> "xy.md.raw").
    prefix_from: str | None = attrs.field(default=None, validator=subject_pattern())
    prefix_to: str | None = attrs.field(default=None, validator=subject_pattern())

    def __attrs_post_init__(self) -> None:
        if (self.prefix_from is None) != (self.prefix_to is None):
            raise Invalid("prefix_to", "expected prefix_from and prefix_to together",
                          self.prefix_to)


class NatsSink(Stage[Publishable | list[Publishable], Never, NatsSinkConfig]):
    """Publish what arrives: ``Publish`` values, received messages, or lists of either."""

    requires = frozenset({"nats"})

    async def run(self) -> None:
        nc = self.ctx.require_nats()
        sent = self.ctx.metrics.counter(
            "nats_sink_msgs", "Messages published by nats_sink stages", ["stage"]
        ).labels(self.ctx.name)
        src, dst = self.config.prefix_from, self.config.prefix_to
        async for item in self.inbox:
            batch = item if isinstance(item, list) else [item]
            for msg in batch:
                subject = msg.subject
                if src is not None and dst is not None and subject.startswith(src):
                    subject = dst + subject[len(src):]
                await nc.publish(subject, msg.data, headers=getattr(msg, "headers", None))
            sent.inc(len(batch))
        if nc.is_connected:
            await nc.flush()


__all__ = ["NatsSink", "NatsSource", "Publish"]
