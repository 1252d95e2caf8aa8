"""Freshness of a JetStream source: the feed's deliveries against the stream's own growth.

The stream's last sequence is polled (stream info, every ``poll_ms``) and fed to a source-gated
watch (:mod:`xypipe._watchdog`); the stage reports each batch it hands on. So the watch goes
stale when the stream keeps growing while the feed delivers nothing for ``stale_after_ms`` — a
consumer lost in a NATS restart, a stuck feed — and never merely because the market is quiet.
A replay after a restart counts as "catching up" (not ready) until it reaches the stream's last
sequence at start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from xypipe._errors import HEALTH_SOURCE_POLL_FAILED, BridgeError
from xypipe._health import Watch
from xypipe._stage import StageContext
from xypipe._validate import in_range
from xypipe.abc import Deliver, JetStream


@attrs.frozen
class SourceWatchConfig:
    """``[...stages] watch = { poll_ms = 1000, stale_after_ms = 5000 }`` of ``ingest``."""

    #: How often the source stream's last sequence is read (one stream-info request).
    poll_ms: int = attrs.field(default=1000, validator=in_range(100, 60_000))
    #: Stale when the stream has grown past what was delivered and nothing arrived for this
    #: long (5 polls by default: a few missed polls never flip health).
    stale_after_ms: int = attrs.field(default=5000, validator=in_range(200, 3_600_000))


def delivered_before(deliver: Deliver) -> int | None:
    """The last stream sequence already "delivered" when a feed starts at ``deliver``."""
    if deliver == "all":
        return 0
    if isinstance(deliver, tuple) and deliver[0] == "seq":
        return max(deliver[1] - 1, 0)
    return None  # by time: unknown until the first delivery


@asynccontextmanager
async def watch_source(ctx: StageContext, js: JetStream, stream: str, cfg: SourceWatchConfig, *,
                       deliver: Deliver, target: int) -> AsyncIterator[Watch]:
    """Watch ``stream`` while the body consumes it; call ``watch.data(seq)`` per batch."""
    position = delivered_before(deliver)
    watch = ctx.watch(stream, stale_after=cfg.stale_after_ms / 1000, gated=True,
                      position=position)
    if position is None or position < target:
        watch.catch_up(target)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_poll, ctx, js, stream, cfg.poll_ms / 1000, watch)
        try:
            yield watch
        finally:
            nursery.cancel_scope.cancel()


async def _poll(ctx: StageContext, js: JetStream, stream: str, every: float, watch: Watch) -> None:
    failing = False
    while True:
        try:
            state = await js.stream_state(stream)
        except BridgeError as exc:
            # NATS being away already makes the process not ready; one line per outage.
            if not failing:
                ctx.log.warning("cannot read the source stream's position",
                                code=HEALTH_SOURCE_POLL_FAILED, stream=stream, error=str(exc))
            failing = True
        else:
            failing = False
            watch.source(state.last_seq)
        await trio.sleep(every)


__all__ = ["SourceWatchConfig", "delivered_before", "watch_source"]
