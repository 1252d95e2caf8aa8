"""``publish``: deltas on core NATS (lowest latency), snapshots on ``xy.md.snapshot.{group}``
(kept by a JetStream stream that holds the last message per subject, so any reader gets the
newest by direct get).

Before each delta it publishes the delta's header (no symbols) on
``{checkpoint_prefix}.{group}.{shard}``, kept the same way: a restarted aggregator reads the
last sequence it emitted per shard and continues after it. Both go out on the same connection
in that order, so a delta a client saw always has its checkpoint stored (see
``docs/architecture.md``, "Aggregator restart").

Metrics: ``ticks_out_total`` (deltas published), ``snapshots_out_total``,
``aggregator_latency_seconds`` (oldest tick of a delta: ingest to publish).
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from xypipe._errors import PUBLISH_DROPPED, BridgeError, NatsBackpressure
from xypipe._md.conflation import DeltaOut
from xypipe._md.records import Watermark
from xypipe._md.snapshots import SnapshotOut
from xypipe._retry import retrying
from xypipe._stage import Stage
from xypipe._stages._md_common import StateStreams
from xypipe.contracts import Delta


@attrs.frozen
class PublishConfig:
    #: Store the last delta sequence per shard (needed to continue it after a restart).
    checkpoint: bool = True
    state: StateStreams = attrs.field(factory=StateStreams)


class Publish(Stage):
    """Publish deltas and snapshots; checkpoint each shard's delta sequence."""

    Config = PublishConfig
    nats_role = "aggregator"
    produces = False
    ready_on_start = False

    async def run(self) -> None:
        nc = self.ctx.nats
        if nc is None:
            raise RuntimeError("publish needs a [nats] section in the config")
        cfg: PublishConfig = self.config
        m = self.ctx.metrics
        retries = m.counter(
            "js_retries", "JetStream calls that failed transiently and were retried", ["op"])
        dropped = m.counter(
            "publish_dropped_reports",
            "Times the bridge reported messages dropped while the server was away")
        js = nc.jetstream()
        await retrying("ensure the state streams", lambda: cfg.state.ensure(js),
                       log=self.ctx.log, on_failure=lambda exc: retries.labels("state").inc(),
                       gave_up=lambda: nc.closed)
        ticks_out = m.counter("ticks_out", "Deltas published on xy.md.tick.*")
        symbols_out = m.counter("ticks_out_symbols", "Symbol entries in published deltas")
        snaps_out = m.counter("snapshots_out", "Snapshots published on xy.md.snapshot.*")
        latency = m.histogram("aggregator_latency_seconds",
                              "Ingest of the oldest tick in a delta to its publish")
        state = cfg.state
        checkpoint = cfg.checkpoint
        log = self.ctx.log

        async def publish(subject: str, payload: bytes) -> None:
            # A long outage fills nats-py's reconnect buffer: what did not fit is lost (the
            # bridge says so once, on the next call) and this message is queued again. Deltas
            # lost this way are a gap clients resync over; snapshots and checkpoints are
            # superseded by the next ones. The stage keeps running either way.
            try:
                await nc.publish(subject, payload)
            except NatsBackpressure as exc:
                dropped.inc()
                log.warning("messages lost while the NATS server was away", code=PUBLISH_DROPPED,
                            error=str(exc))
                await nc.publish(subject, payload)

        self.ctx.set_ready()
        try:
            async for item in self.inbox:
                now = trio.current_time()
                for x in item:
                    if type(x) is DeltaOut:
                        if checkpoint:
                            await publish(
                                state.checkpoint_subject(x.group, x.shard),
                                Delta(group=x.group, shard=x.shard, seq=x.seq, epoch=x.epoch,
                                      ts_emit_us=x.ts_emit_us).SerializeToString(),
                            )
                        # No checkpoint between the two: a cancellation cannot separate a
                        # delta from its checkpoint (a stored sequence never published would
                        # be a hole after a restart).
                        try:
                            nc.publish_nowait(x.subject, x.payload)
                        except NatsBackpressure:
                            with trio.CancelScope(shield=True):
                                await publish(x.subject, x.payload)
                        ticks_out.inc()
                        symbols_out.inc(len(x.entries))
                        latency.observe(max(now - x.t_oldest, 0.0))
                    elif type(x) is SnapshotOut:
                        await publish(x.subject, x.payload)
                        snaps_out.inc()
                    elif type(x) is Watermark:
                        pass  # for a snapshot stage; nothing to publish without one
                    else:
                        self._unexpected(x)
        finally:
            if nc.is_connected:
                with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                    try:
                        await nc.flush()
                    except BridgeError as exc:
                        self.ctx.log.warning("final flush failed", code=exc.code,
                                             error=str(exc))

    def _unexpected(self, x: Any) -> None:
        self.ctx.log.warning("publish got something that is neither a delta nor a snapshot",
                             code="XY-STG-002", type=type(x).__name__)
