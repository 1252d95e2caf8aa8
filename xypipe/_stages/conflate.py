"""``conflate``: one delta per (group, shard) every ``interval_ms`` with the latest state of each
symbol that changed — nothing for a quiet window.

Input: ``Restore`` then routed ``Batch`` values. Output: ``Restore`` (forwarded), then one
``list[DeltaOut]`` per window that had changes. A ``Restore`` in mid-stream (the groups owned
changed) is a fresh start: the state is dropped and rebuilt from it, epochs and sequences are
per group (``Restore.epochs``, ``Restore.checkpoints``), and every delta carries the restore's
generation so what an older one emitted is not published.

Degradation (one :class:`~xypipe._levels.LevelPolicy` built from this config, see
:mod:`xypipe._md.conflation`): L1 stretches the window ``l1_factor`` times, L2 trims depth beyond
``trim_depth`` levels on the wire, L3 holds back groups whose priority is in
``pause_priorities`` (priorities from ``priorities`` or, failing that, the highest priority of
the group's reference contracts). Going back down restores the normal window at once and sends
whatever the paused groups accumulated in the next window.

Tracing (the otel extra, :mod:`xypipe._tracing`): a delta that folded sampled ticks gets a
``conflate`` span continuing the oldest one's trace and linking every one (at most
``MAX_LINKS``), with the level as ``xy.level``; the span rides on ``DeltaOut.trace`` to publish.

The window clock is Trio's, so the mock clock drives it in tests: windows close exactly every
``interval_ms`` (a window that falls behind is skipped, not bunched up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from xypipe._errors import SYMBOL_MOVED
from xypipe._levels import LevelPolicy
from xypipe._md.conflation import Conflator, DeltaOut
from xypipe._md.records import Batch, Restore, TickRec, Watermark
from xypipe._stage import Stage
from xypipe._stages._md_common import PRIORITIES, wall_us
from xypipe._tracing import active as active_tracer
from xypipe._validate import Invalid, group_problem, in_range

if TYPE_CHECKING:
    from xypipe._tracing import SpanContext, Tracer


#: Most sampled ticks a delta's span links (the SDK's default link limit).
MAX_LINKS = 128


@attrs.frozen
class ConflateConfig:
    interval_ms: int = attrs.field(default=33, validator=in_range(16, 100))
    #: At L1 the window is this many times longer.
    l1_factor: int = attrs.field(default=3, validator=in_range(1, 10))
    #: At L2 entries keep this many levels per side on the wire.
    trim_depth: int = attrs.field(default=1, validator=in_range(1, 10))
    #: At L3 groups with these priorities stop updating.
    pause_priorities: list[str] = attrs.field(factory=lambda: ["low"])
    #: Group -> "low" | "normal" | "high" (wins over the reference contracts).
    priorities: dict[str, str] = attrs.field(factory=dict)
    #: Epoch until ingest's ``Restore`` names one (which always wins); 0 = from the clock.
    epoch: int = attrs.field(default=0, validator=in_range(0, 1 << 62))
    #: After a restart, no window closes while the replay catches up, for at most this long
    #: (then windows resume as usual); 0 = windows as usual during a replay.
    catch_up_ms: int = attrs.field(default=2000, validator=in_range(0, 600_000))

    def __attrs_post_init__(self) -> None:
        for p in self.pause_priorities:
            if p not in PRIORITIES:
                raise Invalid("pause_priorities", 'expected a list of "low", "normal", "high"',
                              list(self.pause_priorities))
        for group, p in self.priorities.items():
            problem = group_problem(group)
            if problem is not None:
                raise Invalid("priorities", "expected group names made of letters, digits, "
                              f"'_' or '-'; {problem}", group)
            if p not in PRIORITIES:
                raise Invalid(f"priorities.{group}", 'expected one of "low", "normal", "high"',
                              p)

    @property
    def levels(self) -> LevelPolicy:
        """What each degradation level does to this stage's windows and deltas."""
        return LevelPolicy(window_factor=self.l1_factor, trim_depth=self.trim_depth,
                           paused_priorities=[PRIORITIES[p] for p in self.pause_priorities])


class Conflate(Stage[Restore | Batch, Restore | list[DeltaOut] | list[Watermark], ConflateConfig]):
    """Merge ticks into per-symbol state; emit one delta per group/shard per window."""

    async def run(self) -> None:
        cfg: ConflateConfig = self.config
        self.core = Conflator(
            cfg.epoch or wall_us(),
            levels=cfg.levels,
            priorities={g: PRIORITIES[p] for g, p in cfg.priorities.items()},
        )
        m = self.ctx.metrics
        self._deltas = m.counter("conflate_deltas", "Deltas emitted by conflation")
        self._pending = m.gauge("conflate_pending_symbols",
                                "Symbols changed but not yet emitted (paused groups included)")
        self._rebuild_s = m.gauge("aggregator_rebuild_seconds",
                                  "Time the last start took to rebuild state (snapshot + replay)")
        self._rebuilds = m.counter("aggregator_rebuilds", "Starts that rebuilt state",
                                   ["continued"])
        self._moves = m.counter("symbols_moved", "Symbols moved to another group (removed "
                                "explicitly from the old group's stream)")
        self._rebuild: Restore | None = None
        #: Set once a rebuild's replay has caught up (or at once when there is none).
        self._caught_up = trio.Event()
        self._caught_up.set()
        #: While a replay catches up: when windows resume even if it has not.
        self._hold_until: float | None = None
        self._stop = False
        self._wake = trio.Event()
        #: Tracing on only: sampled ticks' spans per (group, shard), until their delta.
        self._tracer = tracer = active_tracer()
        self._folded: dict[tuple[str, int], list[SpanContext]] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_level)
            async with trio.open_nursery() as windows:
                windows.start_soon(self._ticker)
                async for item in self.inbox:
                    if isinstance(item, Restore):
                        # A fresh start, mid-stream too (the groups owned changed): the core
                        # forgets everything, an earlier catch-up is over.
                        self.core.restore(item)
                        self._folded.clear()
                        self._rebuild = None
                        await self.outbox.send(item)
                        if item.replay_from and item.target_seq >= item.replay_from:
                            self._catch_up(item)
                            continue
                        self._caught_up.set()
                        if item.replay_from:
                            self._rebuilt(item)  # nothing to replay
                        continue
                    self.core.apply(item)
                    if tracer is not None:
                        self._fold_traces(item)
                    if self.core.moves:
                        self._moved(self.core.take_moves())
                    if self._rebuild is not None and item.watermark >= self._rebuild.target_seq:
                        self._rebuilt(self._rebuild)
                        self._rebuild = None
                self._stop = True
                self._caught_up.set()
                self._wake.set()
            nursery.cancel_scope.cancel()

    def _fold_traces(self, batch: Batch) -> None:
        folded = self._folded
        for rec in batch.recs:
            if type(rec) is not TickRec:
                continue
            sc = rec.trace
            if sc is not None and rec.route is not None:
                links = folded.setdefault((rec.route.group, rec.route.shard), [])
                if len(links) < MAX_LINKS:
                    links.append(sc)

    def _trace_deltas(self, tracer: Tracer, deltas: list[DeltaOut], now: float) -> None:
        """The ``conflate`` span of each delta that folded sampled ticks: from the ingest of
        its oldest tick to the window's close (the clock ``aggregator_latency_seconds`` starts
        from), ending at the delta's ``ts_emit_us``."""
        for d in deltas:
            links = self._folded.pop((d.group, d.shard), None)
            if links:
                end_ns = d.ts_emit_us * 1000
                start_ns = end_ns - round(max(now - d.t_oldest, 0.0) * 1e9)
                d.trace = tracer.span(
                    "conflate", links[0], start_ns, end_ns,
                    {"xy.level": int(d.level), "xy.group": d.group, "xy.shard": d.shard,
                     "xy.seq": d.seq, "xy.ticks": d.n_ticks}, links)

    def _moved(self, moves: list[tuple[str, str, str]]) -> None:
        self._moves.inc(len(moves))
        for key, old, new in moves[:5]:
            self.ctx.log.info("symbol moved to another group: removed from the old one",
                              code=SYMBOL_MOVED, symbol=key, old_group=old, new_group=new)
        if len(moves) > 5:
            self.ctx.log.info("more symbols moved to other groups", code=SYMBOL_MOVED,
                              symbols=len(moves) - 5)

    def _catch_up(self, r: Restore) -> None:
        """Replay after a restart: the ticks fold into the books and no window closes until
        the state holds everything the stream had at the start (or ``catch_up_ms`` has
        passed). Then one delta per (group, shard) goes out at once, carrying the replay's
        changes as one window: what many would have carried, without building each symbol's
        entry once per window on the way (sequences go on from the checkpoints either way)."""
        self._rebuild = r
        hold = self.config.catch_up_ms / 1000
        if hold:
            earlier, self._caught_up = self._caught_up, trio.Event()
            self._hold_until = trio.current_time() + hold
            earlier.set()  # a ticker waiting for an earlier catch-up now waits for this one
            self._wake.set()  # a window already running waits for the catch-up instead

    def _rebuilt(self, r: Restore) -> None:
        self._caught_up.set()
        took = trio.current_time() - r.started_at
        self._rebuild_s.set(took)
        self._rebuilds.labels("true" if r.continued else "false").inc()
        self.ctx.log.info("state rebuilt", seconds=round(took, 4), epoch=r.epoch,
                          continued=r.continued, symbols=len(self.core.books),
                          snapshots=len(r.snapshots), replayed_to=r.target_seq)

    async def _watch_level(self) -> None:
        seen = self.ctx.level
        while True:
            seen = await self.ctx.degradation.wait_change(seen)
            self._wake.set()

    async def _ticker(self) -> None:
        """Close a window every interval; a level change re-times the running window at once
        (L1 stretches it, recovery shortens it and closes it now if it is already due)."""
        cfg: ConflateConfig = self.config
        levels = self.core.levels
        base = cfg.interval_ms / 1000
        start = trio.current_time()
        sent_watermark = 0
        generation = self.core.generation
        while True:
            level = self.ctx.level
            interval = base * levels.at(level).window_factor
            deadline = start + interval
            while self._hold_until is not None:
                caught_up = self._caught_up
                with trio.move_on_at(self._hold_until):
                    await caught_up.wait()
                if caught_up is self._caught_up:  # else a newer restore's catch-up began
                    self._hold_until = None
                deadline = trio.current_time()  # the replay's window closes now
            with trio.move_on_at(deadline):
                await self._wake.wait()
            now = trio.current_time()
            if self._wake.is_set():
                self._wake = trio.Event()
                if not self._stop and now < deadline:
                    continue  # re-time this window for the new level
            if self._stop:
                level = levels.unpaused(level)  # the last window: paused groups go out too
            deltas: list[DeltaOut] = self.core.emit(wall_us(), level,
                                                    round((now - start) * 1000))
            self._pending.set(self.core.pending())
            # A window that fell behind (a slow downstream) is skipped, never bunched up.
            start = deadline if now - deadline < interval else now
            if self.core.generation != generation:
                generation, sent_watermark = self.core.generation, 0  # restored meanwhile
            if deltas:
                if self._tracer is not None:
                    self._trace_deltas(self._tracer, deltas, now)
                self._deltas.inc(len(deltas))
                await self.outbox.send(deltas)
            elif self.core.watermark > sent_watermark:
                await self.outbox.send([Watermark(self.core.watermark)])
            sent_watermark = self.core.watermark
            if self._stop:
                return
