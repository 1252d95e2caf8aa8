"""``ingest``: raw ticks and reference contracts from a JetStream stream, decoded once.

Input: nothing (a source). Output: first one :class:`~xypipe._md.records.Restore`, then
:class:`~xypipe._md.records.Batch` values of ``TickRec``/``ContractRec`` in stream order.

The source subjects live in a JetStream stream (retention by age/size) so the same stage can
consume live, replay from a sequence or a time (benchmarks), or — the default ``start =
"resume"`` — rebuild a restarted aggregator: read the last snapshot of every group and the last
emitted delta sequence of every (group, shard), then replay the stream from the oldest
snapshot's ``source_stream_seq + 1``. Messages arrive in batches of up to ``batch`` and the
server sends at most ``max_pending`` beyond what has been handed downstream (see
:mod:`xypipe._stages._jsfeed`), so a full edge downstream stops the stream: the budget sets the
pace.

Malformed payloads, and ticks outside the ``bounds`` table (:mod:`xypipe._md.validate`:
sequence jump, sizes, prices, timestamp skew against the server's arrival time — the JetStream
stored time, the same on a replay), are counted (``src_bad_total{reason}``), logged with code
``XY-SRC-001`` (at most ``log_bad_per_s`` lines a second) and skipped before they reach any
state. A symbol re-anchored after a consistent run out of bounds is counted as
``reason="reanchor"`` and logged with ``XY-SRC-003``. Every tick is stamped with the
aggregator's own wall clock (``TickRec.arrival_us``): that, never a publisher's field, is where
latency is measured from. With tracing on (:mod:`xypipe._tracing`), a tick whose NATS headers
carry a ``traceparent`` gets an ``ingest`` span under it; a malformed one is counted
(``trace_bad_parents_total{stage="ingest"}``, ``XY-TRACE-001``) and the tick goes on untraced.

With ``ownership = { enabled = true, ... }`` several aggregators split the groups (JetStream KV
leases, :mod:`xypipe._ownership`): ingest opens the ownership and shares it with the other
stages (:mod:`xypipe._stages._aggshare`), restores only the groups it owns
(:mod:`xypipe._md.restore_plan`), skips a tick of a group it does not own before decoding it,
and, whenever the groups owned change, stops its feed and starts over with a new ``Restore``
of the new set (a session per owned set). See ``docs/architecture.md``, "The pipeline over the
leases".
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from typing import Never, Protocol

import attrs
import trio

from xypipe._contracts import (
    HOT_PATH_CHECK_EVERY,
    ContractDecoder,
    decoder_for,
    default_decoder,
)
from xypipe._errors import (
    AGG_GROUP_NEW_EPOCH,
    AGG_OWNED_CHANGED,
    RESTORE_SNAPSHOT_IGNORED,
    SRC_REANCHOR,
    BridgeError,
    ContractError,
    NatsTimeout,
    RebuildError,
    SourceDataError,
)
from xypipe._md.book import flat_levels
from xypipe._md.records import Batch, ContractRec, Restore, TickRec
from xypipe._md.restore_plan import Known, plan_owned_restore
from xypipe._md.restore_point import GroupEpoch
from xypipe._md.validate import Reason, TickBounds, TickValidator
from xypipe._ownership import Ownership, OwnershipConfig, open_ownership
from xypipe._retry import Backoff, retrying
from xypipe._stage import Stage, StageContext
from xypipe._stages._aggshare import foreign_counter, share_of
from xypipe._stages._jsfeed import JsFeed, delivery_of, js_feed, pending_of, stream_seq_of
from xypipe._stages._md_common import StateStreams, is_token, wall_us
from xypipe._stages._srcstream import DEFAULT_SUBJECTS, SourceStream
from xypipe._stages._srcwatch import SourceWatchConfig, watch_source
from xypipe._tracing import ParentReader, parent_reader
from xypipe._trio_util import Result, both, single_error_unwrapped
from xypipe._validate import Invalid, in_range, non_empty, one_of, subject_patterns
from xypipe.abc import Deliver, JetStream, Msg, StreamState
from xypipe.contracts import Contract, Delta, Snapshot, Tick

TICK_PREFIX = "xy.src.tick."
#: After the groups owned change, further changes within this long join the same restore.
OWNED_SETTLE_S = 0.05
#: A graceful stop's handover may take the release timeout plus a lease's lifetime, and this.
HANDOVER_SLACK_S = 1.0
CONTRACT_PREFIX = "xy.ref.contract."


@attrs.frozen
class IngestConfig:
    stream: str = attrs.field(default="XY_SRC", validator=non_empty())
    subjects: list[str] = attrs.field(factory=lambda: list(DEFAULT_SUBJECTS),
                                      validator=subject_patterns())
    #: Retention of the source stream: by age (seconds) and by size (bytes); 0 = unlimited.
    max_age_s: int = attrs.field(default=3600, validator=in_range(0, 31_536_000))
    max_bytes: int = attrs.field(default=1 << 30, validator=in_range(0, 1 << 44))
    storage: str = attrs.field(default="file", validator=one_of(["file", "memory"]))
    #: "resume": rebuild from the last snapshots and replay since (fresh epoch if none);
    #: "new": only what arrives from now; "all": the whole stream; "seq"/"time": from
    #: ``start_seq`` / ``start_time`` (RFC 3339), for replay benchmarks.
    start: str = attrs.field(default="resume",
                             validator=one_of(["resume", "new", "all", "seq", "time"]))
    start_seq: int = attrs.field(default=0, validator=in_range(0, 1 << 62))
    start_time: str = ""
    #: Most messages per batch handed downstream.
    batch: int = attrs.field(default=1024, validator=in_range(1, 65_536))
    #: Most messages the server sends ahead of what has been handed downstream (its
    #: ``max_ack_pending``): the bound that carries backpressure back to the stream.
    max_pending: int = attrs.field(default=8192, validator=in_range(1, 1_000_000))
    #: Messages waiting in the stream (the consumer's lag) that count as a full budget: a
    #: backlog at the server raises the pipeline's degradation level like a full edge does.
    max_lag: int = attrs.field(default=20_000, validator=in_range(1, 100_000_000))
    log_bad_per_s: int = attrs.field(default=5, validator=in_range(0, 10_000))
    #: The source consumer's idle heartbeat: the server sends one this often when it has
    #: nothing to deliver; ``missed_heartbeats`` silent intervals make the feed ask whether the
    #: consumer still exists (and re-create it if not). A reconnect re-creates it at once.
    heartbeat_ms: int = attrs.field(default=500, validator=in_range(50, 60_000))
    missed_heartbeats: int = attrs.field(default=3, validator=in_range(1, 100))
    #: Backoff of JetStream calls retried while JetStream is unavailable (start-up, rebuild,
    #: consumer re-creation): from ``retry_initial_ms``, doubling, capped at ``retry_max_ms``.
    retry_initial_ms: int = attrs.field(default=50, validator=in_range(1, 60_000))
    retry_max_ms: int = attrs.field(default=1000, validator=in_range(1, 600_000))
    #: Bounds every source tick must respect before it may touch state (docs/protocol.md,
    #: "Source tick bounds").
    bounds: TickBounds = attrs.field(factory=TickBounds)
    state: StateStreams = attrs.field(factory=StateStreams)
    #: Freshness of the source stream for /healthz (see :mod:`xypipe._stages._srcwatch`).
    watch: SourceWatchConfig = attrs.field(factory=SourceWatchConfig)
    #: Split the groups with the other aggregators on the bus (JetStream KV leases; see
    #: ``docs/architecture.md``, "Aggregators that split the groups"). Disabled: this
    #: aggregator publishes every group, unfenced.
    ownership: OwnershipConfig = attrs.field(factory=OwnershipConfig)

    @property
    def source(self) -> SourceStream:
        """The source stream as this stage defines it (the one definition, shared with the
        publisher: :mod:`xypipe._stages._srcstream`)."""
        return SourceStream(self.stream, list(self.subjects), self.max_age_s, self.max_bytes,
                            self.storage)

    def __attrs_post_init__(self) -> None:
        if self.start == "seq" and self.start_seq < 1:
            raise Invalid("start_seq", 'expected a stream sequence >= 1 with start = "seq"',
                          self.start_seq)
        if self.start == "time":
            try:
                datetime.datetime.fromisoformat(self.start_time)
            except ValueError:
                raise Invalid("start_time", 'expected an RFC 3339 time with start = "time", '
                              'e.g. "2026-11-25T10:00:00+00:00"', self.start_time) from None


class BadSourceCounter:
    """``src_bad_total{reason}`` plus a rate-limited log line per bad message."""

    def __init__(self, ctx: StageContext, per_s: int) -> None:
        self._counter = ctx.metrics.counter(
            "src_bad", "Source messages skipped as malformed or out of bounds, per reason "
            "(reason=reanchor: symbols re-anchored after a consistent run out of bounds)",
            ["reason"])
        self._log = ctx.log
        self._per_s = per_s
        self._window = -1
        self._logged = 0
        self.suppressed = 0

    def __call__(self, reason: str, subject: str, detail: str, *,
                 code: str = SourceDataError.code,
                 what: str = "skipped a bad source message") -> None:
        self._counter.labels(reason).inc()
        second = int(time.monotonic())
        if second != self._window:
            if self.suppressed:
                self._log.warning("bad source messages not logged", code=SourceDataError.code,
                                  suppressed=self.suppressed)
            self._window, self._logged, self.suppressed = second, 0, 0
        if self._logged < self._per_s:
            self._logged += 1
            self._log.warning(f"{what}: {detail}", code=code, reason=reason, subject=subject)
        else:
            self.suppressed += 1


class SourceMessage(Protocol):
    """What ingest reads of a source message (a :class:`~xypipe._nats.Msg` has it)."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def reply(self) -> str: ...

    @property
    def seq(self) -> int | None: ...

    @property
    def headers(self) -> dict[str, str] | None: ...


@attrs.define(eq=False)
class ForeignFilter:
    """Skips a tick of a group this aggregator does not own before it is decoded: the group of
    its symbol comes from the routing table shard keeps (a symbol not routed yet is decoded,
    and shard drops it if it turns out foreign). A contract takes its symbol out of the table
    until shard routes it again: the group it names may be another."""

    routes: dict[str, str]
    owned: frozenset[str]
    #: Group -> stream sequence of the first tick shard routed to it: a group's ticks are
    #: skipped only once shard has seen one (so that first one is exact: a restore replays a
    #: group without a snapshot from there).
    first_tick: dict[str, int] = attrs.field(factory=dict)
    skipped: int = 0


def decode_messages(msgs: Sequence[SourceMessage], now: float, bad: BadSourceCounter,
                    door: TickValidator | None = None, now_us: int = 0,
                    decoder: ContractDecoder | None = None,
                    foreign: ForeignFilter | None = None,
                    traces: ParentReader | None = None) -> list[TickRec | ContractRec]:
    """Source messages to records; bad ones counted.

    ``now`` is the Trio time and ``now_us`` the wall clock (microseconds) at which the batch
    arrived. With a ``door``, every tick is checked against its bounds; the server's arrival
    time it is judged by is the message's JetStream stored time (from the delivery's reply
    subject), else ``now_us``. Payloads decode through ``decoder`` (the process's contract
    decoder by default), which counts a newer producer's unknown fields. ``traces`` (tracing
    on only) reads a tick's ``traceparent`` header and gives a sampled tick its ``ingest`` span.
    """
    decoder = decoder if decoder is not None else default_decoder()
    decode = decoder.decode
    decode_tick = decoder.hot(Tick, HOT_PATH_CHECK_EVERY)
    recs: list[TickRec | ContractRec] = []
    append = recs.append
    tlen, clen = len(TICK_PREFIX), len(CONTRACT_PREFIX)
    check = door.check if door is not None and door.enabled else None
    routes = foreign.routes if foreign is not None else None
    owned = foreign.owned if foreign is not None else frozenset()
    first_tick = foreign.first_tick if foreign is not None else frozenset()
    skipped = 0
    for m in msgs:
        subject = m.subject
        if subject.startswith(TICK_PREFIX):
            if routes is not None:
                group = routes.get(subject[tlen:])
                if group is not None and group not in owned and group in first_tick:
                    skipped += 1
                    continue
            if m.seq:
                sseq, stored_us = m.seq, now_us
            elif m.reply:
                sseq, stored_us = delivery_of(m.reply)
            else:
                sseq, stored_us = 0, now_us
            try:
                t = decode_tick(m.data, subject)
            except ContractError as exc:
                bad("decode", subject, str(exc))
                continue
            key = subject[tlen:]
            if key != f"{t.venue}.{t.symbol}":
                bad("subject_mismatch", subject,
                    f"expected a tick for {key!r}, got venue={t.venue!r} symbol={t.symbol!r}")
                continue
            raw = m.data if type(m.data) is bytes else b""
            if check is None:
                if t.seq < 1:
                    bad(Reason.SEQ_RANGE, subject, f"seq: expected >= 1, got {t.seq}")
                    continue
                levels = None
            else:
                # The levels are read once, here, for the door and later the checksum.
                levels = flat_levels(t.bids, t.asks)
                verdict = check(key, t, stored_us, levels)
                if verdict is not None:
                    assert door is not None
                    if verdict is not Reason.REANCHOR:
                        bad(verdict, subject, door.detail)
                        continue
                    bad(verdict, subject, door.detail, code=SRC_REANCHOR,
                        what="source symbol re-anchored")
                    rec = TickRec(key, t, sseq, now, now_us, raw, levels)
                    rec.reanchor = True
                    if traces is not None and m.headers:
                        _trace(traces, rec, m.headers, subject, stored_us, now_us)
                    append(rec)
                    continue
            if traces is not None and m.headers:
                rec = TickRec(key, t, sseq, now, now_us, raw, levels)
                _trace(traces, rec, m.headers, subject, stored_us, now_us)
                append(rec)
                continue
            append(TickRec(key, t, sseq, now, now_us, raw, levels))
        elif subject.startswith(CONTRACT_PREFIX):
            sseq = m.seq or (stream_seq_of(m.reply) if m.reply else 0)
            try:
                c = decode(Contract, m.data, where=subject)
            except ContractError as exc:
                bad("decode", subject, str(exc))
                continue
            key = subject[clen:]
            if key != f"{c.venue}.{c.symbol}":
                bad("subject_mismatch", subject,
                    f"expected a contract for {key!r}, got venue={c.venue!r} "
                    f"symbol={c.symbol!r}")
                continue
            if c.group and not is_token(c.group):
                bad("bad_group", subject,
                    f"expected a group made of letters, digits, '_' or '-', got {c.group!r}")
                continue
            if routes is not None:
                routes.pop(key, None)
            append(ContractRec(key, c, sseq, now))
        else:
            bad("unknown_subject", subject,
                f"expected a subject under {TICK_PREFIX}* or {CONTRACT_PREFIX}*")
    if foreign is not None:
        foreign.skipped += skipped
    return recs


def _trace(traces: ParentReader, rec: TickRec, headers: dict[str, str], subject: str,
           stored_us: int, now_us: int) -> None:
    """A sampled tick's ``ingest`` span: from the server's stored time to the batch's arrival
    here (what the door judges skew by), under the publisher's span."""
    parent = traces.read(headers, subject)
    if parent is not None:
        rec.trace = traces.tracer.span("ingest", parent, stored_us * 1000, now_us * 1000,
                                       {"xy.key": rec.key, "xy.seq": rec.seq})


class Ingest(Stage[Never, Restore | Batch, IngestConfig]):
    """Consume source ticks and contracts from JetStream at the budget's pace; rebuild state."""

    requires = frozenset({"nats"})
    nats_role = "aggregator"
    ready_on_start = False

    async def run(self) -> None:
        nc = self.ctx.require_nats()
        self._nc = nc
        cfg = self.config
        metrics = self.ctx.metrics
        self._rate = metrics.rate("src_ingest_rate", "Source ticks ingested per second",
                                  "src_ingest")
        self._contracts = metrics.counter("src_contracts", "Reference contracts ingested")
        self._bad = BadSourceCounter(self.ctx, cfg.log_bad_per_s)
        self._decoder = decoder_for(metrics.registry)
        self._recreated = metrics.counter(
            "js_consumer_recreated", "JetStream consumers re-created after they went missing",
            ["stream", "reason"])
        self._retries = metrics.counter(
            "js_retries", "JetStream calls that failed transiently and were retried", ["op"])
        self._restores = metrics.counter(
            "agg_restores", "Restores sent down the pipeline, by cause (start: the stage "
            "started; owned: the groups this aggregator owns changed)", ["cause"])
        self._owned_gauge = metrics.gauge(
            "agg_groups_owned", "Groups the pipeline's last restore covers (with ownership)")
        self._group_epochs = metrics.counter(
            "agg_group_restores", "Groups restored, by whether their delta sequence continued "
            "(false: a new epoch, clients resync by snapshot)", ["continued"])
        self._backoff = Backoff(cfg.retry_initial_ms / 1000, cfg.retry_max_ms / 1000)
        self._share = share_of(self.ctx)
        self._foreign_count = foreign_counter(self.ctx)
        self._foreign: ForeignFilter | None = None
        self._generation = 0
        t0 = trio.current_time()
        if not cfg.ownership.enabled:
            await self._session(t0, None)
            return
        await self._with_ownership(t0)

    async def _with_ownership(self, t0: float) -> None:
        """Sessions under the ownership. A graceful stop (the runner ends its sources by
        cancelling them) ends the sessions and then leaves the ownership normally, so every
        group is handed over at once (release handshake, lease deleted) instead of expiring
        after ``ttl_ms``; bounded. A failure leaves the leases to expire, like a crash."""
        cfg = self.config.ownership
        member = cfg.member or self.ctx.worker.member
        sessions = trio.CancelScope()
        leaving = trio.CancelScope(shield=True)

        async def on_stop(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                sessions.cancel()
                leaving.deadline = (trio.current_time() + cfg.release_timeout_ms / 1000
                                    + cfg.ttl + HANDOVER_SLACK_S)

        async with trio.open_nursery() as stop_watch:
            await stop_watch.start(on_stop)
            with leaving:
                async with open_ownership(self._nc, cfg, member=member, log=self.ctx.log,
                                          metrics=self.ctx.metrics) as own:
                    own.on_release = self._store_checkpoint
                    # Kept after the block: publish, still draining, then may publish nothing.
                    self._share.ownership = own
                    with sessions:
                        await self._owned_sessions(own, t0)
            stop_watch.cancel_scope.cancel()

    async def _store_checkpoint(self, group: str) -> None:
        """The release handshake: publish (the stage that published the group) stores its last
        checkpoint before the lease is deleted."""
        store = self._share.store_checkpoint
        if store is not None:
            await store(group)

    async def _owned_sessions(self, own: Ownership, t0: float) -> None:
        """One session (restore, contracts, feed) per owned set: a change of the groups owned
        cancels the feed and starts the next session from a restore of the new set."""
        own.offer(self._share.offered)
        owned = own.owned
        settle = OWNED_SETTLE_S
        while True:
            changed: frozenset[str] | None = None
            async with trio.open_nursery() as session:

                async def until_change(owned: frozenset[str] = owned) -> None:
                    nonlocal changed
                    seen = await own.wait_change(owned)
                    # Claims come in bursts (a start, a member gone): one restore for a burst.
                    with trio.move_on_after(settle):
                        while True:
                            seen = await own.wait_change(seen)
                    changed = seen
                    session.cancel_scope.cancel()

                session.start_soon(until_change)
                await self._session(t0, owned)
                session.cancel_scope.cancel()
            if changed is None:
                return  # the feed ended (shutdown)
            self.ctx.log.info("groups owned changed: restoring the new set",
                              code=AGG_OWNED_CHANGED, acquired=sorted(changed - owned),
                              lost=sorted(owned - changed), owned=len(changed))
            owned, t0 = changed, trio.current_time()

    async def _session(self, t0: float, owned: frozenset[str] | None) -> None:
        """Restore (``owned``: of those groups only; ``None``: every group), then the
        contracts, then the feed until it ends or the session is cancelled."""
        nc, cfg, share = self._nc, self.config, self._share
        js = nc.jetstream()
        recreated, retries, backoff = self._recreated, self._retries, self._backoff

        def retried(op: str) -> Callable[[BridgeError], None]:
            return lambda exc: retries.labels(op).inc()

        kept = (self._foreign.owned if self._foreign is not None else frozenset()) & (
            owned or frozenset())
        self._generation += 1
        # From now on publish drops what the previous restore's state emits (it is rebuilt
        # from this one), so the sequences it published are final: the restore continues
        # after them for the groups kept.
        share.generation = self._generation

        async def prepare() -> tuple[StreamState, Restore | None]:
            # Everything the restore point needs, retried as a whole while JetStream is
            # unavailable (a half-read restore point is worthless). The source stream is
            # created here or by a publisher that came first, never overwritten (see
            # _srcstream); the state streams do not depend on it: both at once.
            src, _ = await both(lambda: cfg.source.ensure(js, owner=True, log=self.ctx.log),
                                lambda: cfg.state.ensure(js))
            restore = (await self._restore(js, src, owned, kept) if cfg.start == "resume"
                       else None)
            return src, restore

        src, restore = await retrying(
            "ingest start-up (streams, restore point)", prepare, backoff=backoff,
            log=self.ctx.log, on_failure=retried("startup"), gave_up=lambda: nc.closed)
        deliver = self._deliver(cfg, src, restore)
        if not share.seen_from:
            # Where this process's reading begins ("time": somewhere unknown, taken as late).
            share.seen_from = (deliver[1] if isinstance(deliver, tuple) and deliver[0] == "seq"
                               else 1 if deliver == "all" else src.last_seq + 1)
        if restore is None:
            restore = Restore(epoch=wall_us())
        restore = attrs.evolve(restore, target_seq=src.last_seq, started_at=t0, owned=owned,
                               generation=self._generation)
        self._foreign = None if owned is None else ForeignFilter(share.routes, owned,
                                                                      share.first_tick)
        self._restores.labels("start" if self._generation == 1 else "owned").inc()
        if owned is not None:
            self._owned_gauge.set(len(owned))
            if share.ownership is not None:
                for group in owned:
                    share.ownership.set_epoch(group, restore.epoch_of(group))
        # Sent before the contracts are read and the feed's consumer exists: the stages
        # downstream rebuild their state from it while those round trips are under way.
        await self.outbox.send(restore)
        self._door = TickValidator(cfg.bounds)
        self._door.restore(s for snap in restore.snapshots for s in snap.symbols)

        async def contracts() -> list[Msg]:
            # Reference data before any tick is routed: the last contract of every symbol.
            # Read after ``src``: a contract stored since is read here and again by the feed
            # (which starts at or before src.last_seq + 1); applying it twice is harmless,
            # missing it is not. The stream itself orders a publisher's contracts before its
            # ticks, so from here on no tick overtakes its contract.
            return await retrying(
                "ingest start-up (reference contracts)",
                lambda: self._last_per_subject(js, cfg.stream, CONTRACT_PREFIX + ">",
                                               src.messages),
                backoff=backoff, log=self.ctx.log, on_failure=retried("startup"),
                gave_up=lambda: nc.closed)

        feed_cm = js_feed(nc, cfg.stream, deliver=deliver, max_pending=cfg.max_pending,
                          max_batch=cfg.batch, heartbeat_s=cfg.heartbeat_ms / 1000,
                          missed_heartbeats=cfg.missed_heartbeats, backoff=backoff,
                          on_recreate=lambda reason: recreated.labels(cfg.stream, reason).inc(),
                          on_retry=retried("consumer"), log=self.ctx.log)
        # The contracts are read while the feed's consumer is created (its deliveries wait in
        # the bridge's inbox, bounded by ``max_pending``, until the contracts are sent).
        refs = Result[list[Msg]]()
        with single_error_unwrapped():
            async with watch_source(self.ctx, js, cfg.stream, cfg.watch, deliver=deliver,
                                    target=src.last_seq) as self._watch, \
                    trio.open_nursery() as reading:
                reading.start_soon(refs.run, contracts)
                async with feed_cm as feed:
                    ref_msgs = await refs.get()
                    recs = decode_messages(ref_msgs, trio.current_time(), self._bad,
                                           decoder=self._decoder, foreign=self._foreign)
                    if recs:
                        self._contracts.inc(len(recs))
                        await self.outbox.send(Batch(recs, 0))
                    self.ctx.log.info("ingest starting", stream=cfg.stream,
                                      deliver=str(deliver), epoch=restore.epoch,
                                      continued=restore.continued,
                                      snapshots=len(restore.snapshots),
                                      contracts=len(ref_msgs),
                                      owned=None if owned is None else len(owned),
                                      generation=self._generation)
                    self.ctx.set_ready()
                    await self._consume(feed)

    @staticmethod
    def _deliver(cfg: IngestConfig, src: StreamState, restore: Restore | None) -> Deliver:
        """Where the source feed starts: the restore point's replay, else ``start``."""
        if restore is not None and restore.replay_from:
            return ("seq", restore.replay_from)
        if cfg.start == "all":
            return "all"
        if cfg.start == "seq":
            return ("seq", cfg.start_seq)
        if cfg.start == "time":
            return ("time", datetime.datetime.fromisoformat(cfg.start_time))
        return ("seq", src.last_seq + 1)

    async def _consume(self, feed: JsFeed) -> None:
        rate, bad, send, door = self._rate, self._bad, self.outbox.send, self._door
        decoder = self._decoder
        traces = parent_reader("ingest", self.ctx.metrics, self.ctx.log)
        async for msgs in feed:
            now = trio.current_time()
            foreign = self._foreign
            recs = decode_messages(msgs, now, bad, door, wall_us(), decoder, foreign, traces)
            if foreign is not None and foreign.skipped:
                self._foreign_count.labels("ingest").inc(foreign.skipped)
                foreign.skipped = 0
            ticks = sum(1 for r in recs if type(r) is TickRec)
            rate.add(ticks)
            if ticks < len(recs):
                self._contracts.inc(len(recs) - ticks)
            last = msgs[-1]
            if last.reply:
                lag = pending_of(last.reply)
                self.ctx.report_pressure(
                    lag / self.config.max_lag,
                    f"stream {self.config.stream} backlog {lag}/{self.config.max_lag} messages",
                )
            watermark = last.seq or stream_seq_of(last.reply)
            await send(Batch(recs, watermark))
            self._watch.data(watermark)
            # Only now may the server send more: the downstream budget sets the pace.
            feed.ack(msgs)

    # ------------------------------------------------------------------ rebuild

    async def _last_per_subject(self, js: JetStream, stream: str, subjects: str,
                                stored: int | None = None) -> list[Msg]:
        """Every subject's last message in ``stream`` (``stored`` messages in it, if known: an
        empty stream costs no round trip). A read cut short (the server went away) raises
        ``NatsTimeout`` instead of passing for the whole: a restore point missing groups would
        rebuild them empty.

        One push consumer delivers them in the bridge's batches (a pull ``fetch`` hands them
        over one asyncio wake-up each: 5,000 contracts took ~0.9 s of a rebuild that way); how
        many to wait for is what its creation reports pending."""
        if stored == 0:
            return []
        out: list[Msg] = []
        async with js_feed(self._nc, stream, deliver="last_per_subject",
                           filter_subject=subjects, max_pending=min(stored or 65_536, 65_536),
                           max_batch=4096, log=self.ctx.log) as feed:
            expected = feed.pending_at_start
            if expected == 0:
                return out
            with trio.move_on_after(max(5.0, expected / 5_000)) as guard:
                async for msgs in feed:
                    out.extend(msgs)
                    feed.ack(msgs)
                    if len(out) >= expected or pending_of(msgs[-1].reply) == 0:
                        break
        if guard.cancelled_caught:
            raise NatsTimeout(f"last message per subject of {stream!r} ({subjects}): "
                              f"{len(out)} of {expected} read, then nothing")
        return out

    async def _restore(self, js: JetStream, src: StreamState, owned: frozenset[str] | None,
                       kept: frozenset[str] = frozenset()) -> Restore | None:
        """The restore point of ``owned`` (``None``: every group): their stored snapshots and
        delta checkpoints, an epoch per group, the replay from their oldest snapshot. For the
        groups ``kept`` from the previous restore, what publish has let out counts as a
        checkpoint too (the stored one may not have caught up)."""
        cfg: IngestConfig = self.config
        state = cfg.state
        log = self.ctx.log
        snap_prefix, ckpt_prefix = state.snapshot_prefix + ".", state.checkpoint_prefix + "."

        def ours(subject: str, prefix: str) -> bool:
            return owned is None or subject[len(prefix):].split(".", 1)[0] in owned

        # The stored snapshots and delta checkpoints at once (two independent reads).
        stored_snaps, stored_ckpts = await both(
            lambda: self._last_per_subject(js, state.snapshot_stream, f"{snap_prefix}>"),
            lambda: self._last_per_subject(js, state.checkpoint_stream, f"{ckpt_prefix}>"))
        snapshots: list[Snapshot] = []
        for m in stored_snaps:
            if not ours(m.subject, snap_prefix) or "." in m.subject[len(snap_prefix):]:
                # Another aggregator's group, or a projection's snapshot (``G.p.NAME``: a
                # projection restarts from its group): not even decoded.
                continue
            try:
                snapshots.append(self._decoder.decode(Snapshot, m.data, where=m.subject))
            except ContractError as exc:
                log.warning("ignoring an undecodable stored snapshot", code=RebuildError.code,
                            subject=m.subject, error=str(exc))
        checkpoints: list[Delta] = []
        for m in stored_ckpts:
            if not ours(m.subject, ckpt_prefix):
                continue
            try:
                checkpoints.append(self._decoder.decode(Delta, m.data, where=m.subject))
            except ContractError as exc:
                log.warning("ignoring an undecodable delta checkpoint", code=RebuildError.code,
                            subject=m.subject, error=str(exc))
        share = self._share
        own = share.ownership
        unproven = frozenset(
            g for g in owned or () if own is not None and (lease := own.lease(g)) is not None
            and lease.taken_from)
        known = Known(kept, share.published, share.first_tick, share.routed_through,
                      share.seen_from, unproven)
        plan = plan_owned_restore(snapshots, checkpoints, owned=owned, known=known,
                                  first_seq=src.first_seq if src.messages else 0,
                                  fresh=wall_us())
        for gone in plan.ignored:
            log.info("stored snapshot left out of the restore point", code=RESTORE_SNAPSHOT_IGNORED,
                     group=gone.group, source_stream_seq=gone.source_stream_seq,
                     reason=gone.reason,
                     replay_from=plan.restore.replay_from if plan.restore else 0)
        self._decided(plan.decided)
        return plan.restore

    def _decided(self, decided: dict[str, GroupEpoch]) -> None:
        """Count and log what a restore decided per group."""
        continued = 0
        for e in decided.values():
            if e.continued:
                continued += 1
                continue
            self.ctx.log.warning("cannot continue a group's delta sequence: new epoch",
                                 code=AGG_GROUP_NEW_EPOCH, group=e.group, reason=e.reason,
                                 epoch=e.epoch)
        self._group_epochs.labels("true").inc(continued)
        self._group_epochs.labels("false").inc(len(decided) - continued)


__all__ = ["ForeignFilter", "Ingest", "IngestConfig", "decode_messages"]
