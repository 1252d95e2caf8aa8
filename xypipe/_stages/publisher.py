"""``publisher``: the demo's market — synthetic ticks (and their reference contracts) on
``xy.src.tick.{venue}.{symbol}`` at a paced rate, with optional faults, tape record/replay.

A source and a sink at once (a pipeline of one stage): it publishes straight to NATS, after
making sure the source stream exists (so its first contracts are kept even when it starts
before the aggregator), and republishes its contracts whenever that stream is created again
(:mod:`xypipe._stages._refwatch`), so any start order converges. The ground truth of what it
sent is its ``truth`` attribute and the faults it injected its ``faults`` (for tests:
``runner.stage("publisher", "publisher", Publisher).truth``).

With tracing on (the ``otel`` extra, :mod:`xypipe._tracing`) each tick starts a trace; the
sampler decides, and only a sampled tick carries a ``traceparent`` NATS header.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Never

import attrs
import trio

from xypipe._errors import NatsBackpressure
from xypipe._publisher import (
    DEFAULT_VENUES,
    FaultCounts,
    FaultInjector,
    FaultRates,
    GroundTruth,
    MarketSim,
    Pacer,
    TapeTick,
    TapeWriter,
    contract_for,
    contract_subject,
    load_tape,
    stamp_arrival,
    tick_subject,
)
from xypipe._retry import retrying
from xypipe._stage import Stage, StageContext
from xypipe._stages._md_common import wall_us
from xypipe._stages._refwatch import Event, follow_stream
from xypipe._stages._srcstream import SourceStream
from xypipe._tracing import active as active_tracer
from xypipe._validate import Invalid, in_range, non_empty
from xypipe.abc import NatsClient


@attrs.frozen
class PublisherConfig:
    symbols: int = attrs.field(default=500, validator=in_range(1, 1_000_000))
    venues: list[str] = attrs.field(factory=lambda: list(DEFAULT_VENUES), validator=non_empty())
    #: Ticks per second outside bursts.
    rate: float = attrs.field(default=4000.0, validator=in_range(0.0, 10_000_000.0))
    #: Every ``burst_every_s`` seconds (0 = never) the rate is ``burst_factor`` x for
    #: ``burst_s`` seconds.
    burst_factor: float = attrs.field(default=10.0, validator=in_range(1.0, 1000.0))
    burst_every_s: float = attrs.field(default=0.0, validator=in_range(0.0, 86_400.0))
    burst_s: float = attrs.field(default=1.0, validator=in_range(0.0, 3600.0))
    seed: int = attrs.field(default=0, validator=in_range(0, 1 << 62))
    depth: int = attrs.field(default=5, validator=in_range(1, 50))
    #: Fault rates per tick (0..1).
    duplicate: float = attrs.field(default=0.0, validator=in_range(0.0, 1.0))
    reorder: float = attrs.field(default=0.0, validator=in_range(0.0, 1.0))
    gap: float = attrs.field(default=0.0, validator=in_range(0.0, 1.0))
    malformed: float = attrs.field(default=0.0, validator=in_range(0.0, 1.0))
    #: Pacing step: ticks due are sent every ``interval_ms``.
    interval_ms: int = attrs.field(default=10, validator=in_range(1, 1000))
    #: Stop after this many ticks (0 = never; a replay stops at the end of its tape).
    max_ticks: int = attrs.field(default=0, validator=in_range(0, 1 << 40))
    #: Write every tick sent (before faults) to this tape; "" = no recording.
    record: str = ""
    #: Replay this tape instead of simulating; "" = simulate.
    replay: str = ""
    #: Re-publish the reference contracts every this many seconds (0 = only at start).
    contracts_every_s: float = attrs.field(default=30.0, validator=in_range(0.0, 86_400.0))
    #: The stream that keeps what is published (the aggregator reads it): made sure to exist
    #: before the first contract goes out, whoever starts first (see
    #: :mod:`xypipe._stages._srcstream`). Must name the same stream and subjects as the
    #: aggregator's ingest; retention is the aggregator's to set.
    source: SourceStream = attrs.field(factory=SourceStream)
    #: False: publish on core NATS only (no JetStream, nothing kept; tests and plain NATS).
    ensure_stream: bool = True

    def __attrs_post_init__(self) -> None:
        if self.record and self.replay:
            raise Invalid("replay", "expected either record or replay, not both", self.replay)
        if self.replay and not Path(self.replay).is_file():
            raise Invalid("replay", "expected the path of an existing tape file", self.replay)


class Publisher(Stage[Never, Never, PublisherConfig]):
    """Publish synthetic ticks (random walk, 5 levels, faults on demand) at a paced rate."""

    requires = frozenset({"nats"})
    nats_role = "adapter"

    def __init__(self, config: PublisherConfig, ctx: StageContext) -> None:
        super().__init__(config, ctx)
        #: What was really sent (after faults), per symbol.
        self.truth = GroundTruth()
        #: The faults injected so far.
        self.faults = FaultCounts()

    async def run(self) -> None:
        nc = self.ctx.require_nats()
        cfg = self.config
        sim = MarketSim(cfg.symbols, venues=cfg.venues, seed=cfg.seed, depth=cfg.depth)
        tape = self._open_record(cfg.record) if cfg.record else None
        writer = TapeWriter(tape) if tape else None
        tape_ticks = load_tape(cfg.replay) if cfg.replay else None
        contracts = (self._tape_contracts(tape_ticks) if tape_ticks is not None
                     else [(contract_subject(c.venue, c.symbol), c.SerializeToString())
                           for c in sim.contracts()])
        retries = self.ctx.metrics.counter(
            "js_retries", "JetStream calls that failed transiently and were retried", ["op"])
        republished = self.ctx.metrics.counter(
            "publisher_contracts_republished",
            "Times the publisher republished every contract because its stream was (re)made "
            "or its connection came back", ["reason"])
        for reason in ("created", "reconnected"):
            republished.labels(reason)

        async def ensure() -> None:
            js = nc.jetstream()
            await retrying(f"ensure the source stream {cfg.source.name!r}",
                           lambda: cfg.source.ensure(js, owner=False, log=self.ctx.log),
                           log=self.ctx.log, on_failure=lambda exc: retries.labels(
                               "source_stream").inc(), gave_up=lambda: nc.closed)

        async def republish(event: Event) -> None:
            for subject, payload in contracts:
                await nc.publish(subject, payload)
            republished.labels(event).inc()
            self.ctx.log.info("contracts republished", reason=event,
                              stream=cfg.source.name, contracts=len(contracts))

        async with trio.open_nursery() as nursery:
            # Listening before the stream is made and the first contract goes out: a stream
            # created in between is announced, not missed.
            await nursery.start(lambda task_status: follow_stream(
                nc, cfg.source.name, ensures_stream=cfg.ensure_stream, ensure=ensure,
                republish=republish, task_status=task_status))
            if cfg.ensure_stream:
                await ensure()
            await self._publish(nc, sim, contracts, writer, tape, tape_ticks)
            nursery.cancel_scope.cancel()

    async def _publish(self, nc: NatsClient, sim: MarketSim,
                       contracts: list[tuple[str, bytes]], writer: TapeWriter | None,
                       tape: BinaryIO | None, tape_ticks: list[TapeTick] | None) -> None:
        cfg = self.config
        faults = FaultInjector(FaultRates(cfg.duplicate, cfg.reorder, cfg.gap, cfg.malformed),
                               sim.rng)
        self.faults = faults.counts
        sent = self.ctx.metrics.counter("publisher_ticks", "Ticks generated by the publisher")
        wire = self.ctx.metrics.counter("publisher_msgs", "Messages published (faults included)")
        source = iter(tape_ticks) if tape_ticks is not None else None
        pacer = Pacer(cfg.rate, cfg.burst_factor, cfg.burst_every_s, cfg.burst_s)
        step = cfg.interval_ms / 1000
        total = 0
        # Tracing (the otel extra): decided once; a sampled tick's payload -> its traceparent.
        tracer = active_tracer()
        traced: dict[bytes, dict[str, str]] = {}
        try:
            # Contracts first, on the same connection as the ticks: the stream stores them in
            # that order, so the aggregator knows every symbol's group before its first tick.
            for subject, payload in contracts:
                await nc.publish(subject, payload)
            next_contracts = trio.current_time() + (cfg.contracts_every_s or float("inf"))
            pacer.due(trio.current_time())
            next_t = trio.current_time()
            while True:
                next_t += step
                await trio.sleep_until(next_t)
                now = trio.current_time()
                if now >= next_contracts:
                    next_contracts = now + cfg.contracts_every_s
                    for subject, payload in contracts:
                        await nc.publish(subject, payload)
                n = pacer.due(now)
                if cfg.max_ticks:
                    n = min(n, cfg.max_ticks - total)
                out: list[tuple[str, bytes]] = []
                ts = wall_us()
                made = 0
                for _ in range(n):
                    if source is not None:
                        tt = next(source, None)
                        if tt is None:
                            break
                        made += 1
                        stamped = stamp_arrival(tt.payload, ts)
                        if tracer is not None:
                            headers = tracer.tick_headers(tt.subject)
                            if headers is not None:
                                traced[stamped] = headers
                        if faults.feed(tt.key, tt.subject, stamped, out):
                            self.truth.record_raw(tt.key, tt.seq, tt.payload, tt.trade, tt.size)
                        elif traced:
                            traced.pop(stamped, None)  # a gap: never sent
                        continue
                    tick = sim.next_tick(ts - 50)
                    payload = tick.SerializeToString()
                    made += 1
                    if writer is not None:
                        writer.write(payload)
                    key = f"{tick.venue}.{tick.symbol}"
                    subject = tick_subject(tick.venue, tick.symbol)
                    stamped = stamp_arrival(payload, ts)
                    if tracer is not None:
                        headers = tracer.tick_headers(subject)
                        if headers is not None:
                            traced[stamped] = headers
                    if faults.feed(key, subject, stamped, out):
                        self.truth.record(key, tick)
                    elif traced:
                        traced.pop(stamped, None)  # a gap: never sent
                total += made
                await self._send(nc, out, traced)
                sent.inc(made)
                wire.inc(len(out))
                if made < n or (cfg.max_ticks and total >= cfg.max_ticks):
                    break
            rest: list[tuple[str, bytes]] = []
            faults.flush(rest)
            for subject, data in rest:
                await nc.publish(subject, data, traced.pop(data, None))
            await nc.flush()
            self.ctx.log.info("publisher done", ticks=total, faults=attrs.asdict(faults.counts))
        finally:
            if tape is not None:
                tape.close()

    @staticmethod
    async def _send(nc: NatsClient, out: list[tuple[str, bytes]],
                    traced: dict[bytes, dict[str, str]]) -> None:
        # One checkpoint per pacing step, not per message: at 40k ticks/s the per-message
        # scheduling would cost more than the ticks. ``traced``: the headers of sampled ticks
        # (popped when sent: a duplicate's second copy goes untraced; one held back for a
        # reorder keeps its headers until it is sent).
        publish_nowait = nc.publish_nowait
        for i, (subject, data) in enumerate(out):
            try:
                if traced:
                    publish_nowait(subject, data, traced.pop(data, None))
                else:
                    publish_nowait(subject, data)
            except NatsBackpressure:
                for subject2, data2 in out[i:]:
                    await nc.publish(subject2, data2, traced.pop(data2, None))
                return
        await trio.lowlevel.checkpoint()

    @staticmethod
    def _open_record(path: str) -> BinaryIO:
        # Tape writes are small buffered appends; the file is closed when the stage ends.
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p.open("wb")

    @staticmethod
    def _tape_contracts(ticks: list[TapeTick]) -> list[tuple[str, bytes]]:
        keys = dict.fromkeys(t.key for t in ticks)
        out = []
        for key in keys:
            venue, _, symbol = key.partition(".")
            out.append((contract_subject(venue, symbol),
                        contract_for(venue, symbol).SerializeToString()))
        return out
