"""``publish``: deltas on core NATS (lowest latency), snapshots on ``xy.md.snapshot.{group}``
(kept by a JetStream stream that holds the last message per subject, so any reader gets the
newest by direct get).

Before each delta it publishes the delta's header (no symbols) on
``{checkpoint_prefix}.{group}.{shard}``, kept the same way: a restarted aggregator reads the
last sequence it emitted per shard and continues after it. Both go out on the same connection
in that order, so a delta a client saw always has its checkpoint stored (see
``docs/architecture.md``, "Aggregator restart").

Every group it publishes is listed, before its first delta, in the known-groups KV bucket
(``groups_bucket``, key = group): gateways answer a subscription to any other group with
``UNKNOWN_GROUP``.

With group ownership (see :mod:`xypipe._stages._pubgate`) a delta or snapshot of a group this
aggregator may not publish is dropped and counted, and every one published carries its lease's
fence (``Delta.fence`` / ``Snapshot.fence``, checkpoints too); what an older restore generation
emitted is dropped. The last sequence published per stream is shared with ingest (a restore
after an ownership change continues after it), and a released group's last checkpoint is stored
with an acknowledged publish before its lease goes (:meth:`Publish._store_checkpoint`).

Metrics: ``ticks_out_total`` (deltas published), ``snapshots_out_total``,
``aggregator_latency_seconds`` (oldest tick of a delta: ingest to publish).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Never

import attrs
import trio

from xypipe._errors import (
    AGG_CHECKPOINT_STORE_FAILED,
    KNOWN_GROUPS_WRITE_FAILED,
    PUBLISH_DROPPED,
    STG_UNEXPECTED_ITEM,
    BridgeError,
    NatsBackpressure,
)
from xypipe._md.conflation import DeltaOut
from xypipe._md.projection import split_stream
from xypipe._md.records import Watermark
from xypipe._md.snapshots import SnapshotOut
from xypipe._retry import retrying
from xypipe._stage import Stage, StageContext
from xypipe._stages._aggshare import share_of
from xypipe._stages._md_common import StateStreams, wall_us
from xypipe._stages._pubgate import DELTA_FENCE_TAG, SNAPSHOT_FENCE_TAG, PublishGate, fenced
from xypipe._tracing import active as active_tracer
from xypipe.abc import JetStream, KeyValue
from xypipe.contracts import Delta

if TYPE_CHECKING:
    from xypipe._tracing import Tracer


@attrs.frozen
class PublishConfig:
    #: Store the last delta sequence per shard (needed to continue it after a restart).
    checkpoint: bool = True
    state: StateStreams = attrs.field(factory=StateStreams)
    #: JetStream KV bucket listing every group this aggregator publishes (key = group), written
    #: before a group's first delta or snapshot; gateways refuse other groups with
    #: UNKNOWN_GROUP. "" = no list (gateways then accept every well-formed group).
    groups_bucket: str = "xy_md_groups"


class Publish(Stage[list[DeltaOut] | list[SnapshotOut] | list[Watermark], Never,
                    PublishConfig]):
    """Publish deltas and snapshots; checkpoint each shard's delta sequence."""

    requires = frozenset({"nats"})
    nats_role = "aggregator"
    ready_on_start = False

    async def run(self) -> None:
        nc = self.ctx.require_nats()
        cfg = self.config
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
        projected = m.counter("projection_deltas_out",
                              "Deltas of projections published on xy.md.tick.{group}.p.*")
        latency = m.histogram("aggregator_latency_seconds",
                              "Ingest of the oldest tick in a delta to its publish")
        state = cfg.state
        checkpoint = cfg.checkpoint
        log = self.ctx.log
        tracer = active_tracer()  # the otel extra, decided once: None = off

        async def publish(subject: str, payload: bytes,
                          headers: dict[str, str] | None = None) -> None:
            # A long outage fills nats-py's reconnect buffer: what did not fit is lost (the
            # bridge says so once, on the next call) and this message is queued again. Deltas
            # lost this way are a gap clients resync over; snapshots and checkpoints are
            # superseded by the next ones. The stage keeps running either way.
            try:
                await nc.publish(subject, payload, headers)
            except NatsBackpressure as exc:
                dropped.inc()
                log.warning("messages lost while the NATS server was away", code=PUBLISH_DROPPED,
                            error=str(exc))
                await nc.publish(subject, payload, headers)

        known = KnownGroupsWriter(self.ctx, js, cfg.groups_bucket) if cfg.groups_bucket else None
        if known is not None:
            await retrying(f"open the known-groups bucket {cfg.groups_bucket!r}", known.open,
                           log=self.ctx.log, on_failure=lambda exc: retries.labels("kv").inc(),
                           gave_up=lambda: nc.closed)
        share = share_of(self.ctx)
        gate = PublishGate(self.ctx, share)
        published = share.published
        share.store_checkpoint = lambda group: self._store_checkpoint(js, group)
        self.ctx.set_ready()
        try:
            async for item in self.inbox:
                now = trio.current_time()
                for x in item:
                    if type(x) is DeltaOut:
                        group, projection = split_stream(x.group)
                        fence = gate.admit("delta", group, x.generation)
                        if fence is None:
                            continue
                        if known is not None and x.group not in known.written:
                            await known.write(x.group, now)
                        if projection:
                            # A projection's sequence restarts with a new epoch at every
                            # restore: nothing to checkpoint (docs/architecture.md).
                            await publish(x.subject, fenced(DELTA_FENCE_TAG, fence, x.payload))
                            projected.inc()
                            continue
                        # Recorded before it goes out: a restore after an ownership change
                        # continues after it (a delta cancelled here would be a hole clients
                        # resync over, never a sequence number used twice).
                        published[(x.group, x.shard)] = (x.epoch, x.seq)
                        payload = fenced(DELTA_FENCE_TAG, fence, x.payload)
                        took = max(now - x.t_oldest, 0.0)
                        headers = (None if tracer is None
                                   else _traced(tracer, x, took, fence))
                        # The checkpoint, then the delta, queued without a checkpoint of Trio's
                        # in between: a cancellation cannot separate them (a stored sequence
                        # never published would be a hole after a restart), and a batch of
                        # deltas goes out without yielding once per delta (other stages'
                        # long turns in between made a snapshot round wait behind them).
                        cp, cp_subject = None, ""
                        if checkpoint:
                            cp = Delta(group=x.group, shard=x.shard, seq=x.seq, epoch=x.epoch,
                                       ts_emit_us=x.ts_emit_us, fence=fence).SerializeToString()
                            cp_subject = state.checkpoint_subject(x.group, x.shard)
                        try:
                            if cp is not None:
                                nc.publish_nowait(cp_subject, cp)
                                cp = None
                            nc.publish_nowait(x.subject, payload, headers)
                        except NatsBackpressure:
                            with trio.CancelScope(shield=True):
                                if cp is not None:
                                    await publish(cp_subject, cp)
                                await publish(x.subject, payload, headers)
                        ticks_out.inc()
                        symbols_out.inc(len(x.entries))
                        latency.observe(took)
                    elif type(x) is SnapshotOut:
                        fence = gate.admit("snapshot", split_stream(x.group)[0], x.generation)
                        if fence is None:
                            continue
                        if known is not None and x.group not in known.written:
                            await known.write(x.group, now)
                        await publish(x.subject, fenced(SNAPSHOT_FENCE_TAG, fence, x.payload))
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

    async def _store_checkpoint(self, js: JetStream, group: str) -> None:
        """Make sure the last checkpoint of every shard of ``group`` this process published is
        stored: each is published again, acknowledged (a stream stores one connection's
        messages in order, so the acknowledgement also covers every earlier one). What a
        released lease waits for before it is deleted: the next owner restores from it."""
        state = self.config.state
        share = share_of(self.ctx)
        if not self.config.checkpoint:
            return
        for (g, shard), (epoch, seq) in sorted(share.published.items()):
            if g != group:
                continue
            lease = share.ownership.lease(g) if share.ownership is not None else None
            try:
                await js.publish(state.checkpoint_subject(g, shard), Delta(
                    group=g, shard=shard, seq=seq, epoch=epoch, ts_emit_us=wall_us(),
                    fence=lease.fence if lease is not None else 0).SerializeToString())
            except BridgeError as exc:
                self.ctx.log.warning("could not store a released group's last checkpoint",
                                     code=AGG_CHECKPOINT_STORE_FAILED, group=g, shard=shard,
                                     seq=seq, error=str(exc))
                raise

    def _unexpected(self, x: object) -> None:
        self.ctx.log.warning("publish got something that is neither a delta nor a snapshot",
                             code=STG_UNEXPECTED_ITEM, type=type(x).__name__)


def _traced(tracer: Tracer, d: DeltaOut, took: float, fence: int) -> dict[str, str] | None:
    """The ``publish`` span of a delta whose conflation was traced, and the headers carrying it
    to the gateway. Its duration is the ``aggregator_latency_seconds`` observation: ingest of
    the delta's oldest tick to its publish."""
    parent = d.trace
    if parent is None:
        return None
    end_ns = time.time_ns()
    sc = tracer.span("publish", parent, end_ns - round(took * 1e9), end_ns,
                     {"xy.level": int(d.level), "xy.subject": d.subject, "xy.seq": d.seq,
                      "xy.fence": fence})
    return tracer.headers_of(sc)


class KnownGroupsWriter:
    """Puts each group this aggregator publishes into the known-groups KV bucket, once, before
    its first delta goes out (so a gateway that sees the delta already knows the group).

    A failed put (the server away) does not hold the market data back: it is logged
    (``XY-AGG-014``), counted and retried with a later item, at most every ``retry_s``."""

    def __init__(self, ctx: StageContext, js: JetStream, bucket: str,
                 retry_s: float = 1.0) -> None:
        self.ctx = ctx
        self.js = js
        self.bucket = bucket
        self.retry_s = retry_s
        self.kv: KeyValue | None = None
        self.written: set[str] = set()
        self._failed_at: dict[str, float] = {}
        self._failures = ctx.metrics.counter(
            "known_groups_write_failures", "Failed writes to the known-groups KV bucket")
        self._groups = ctx.metrics.gauge(
            "known_groups", "Groups this aggregator has listed in the known-groups bucket")

    async def open(self) -> None:
        self.kv = await self.js.kv(self.bucket, history=1)
        # After a restart the list is already there: no rewrite per group.
        self.written = set(await self.kv.keys())
        self._groups.set(len(self.written))

    async def write(self, group: str, now: float) -> None:
        failed = self._failed_at.get(group)
        if failed is not None and now - failed < self.retry_s:
            return
        assert self.kv is not None, "open() first"
        value = json.dumps({"group": group, "first_seen_us": wall_us()}).encode()
        try:
            with trio.fail_after(self.retry_s):
                await self.kv.put(group, value)
        except (BridgeError, trio.TooSlowError) as exc:
            self._failed_at[group] = now
            self._failures.inc()
            self.ctx.log.warning("could not list a group in the known-groups bucket; retried "
                                 "with a later delta", code=KNOWN_GROUPS_WRITE_FAILED,
                                 group=group, bucket=self.bucket, error=str(exc))
            return
        self._failed_at.pop(group, None)
        self.written.add(group)
        self._groups.set(len(self.written))
