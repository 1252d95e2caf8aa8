"""``dedupe``: per (venue, symbol) sequence continuity — drop duplicates, put reordered ticks
back in order, give up on gaps the window cannot close.

Input/output: :class:`~xypipe._md.records.Batch` (ticks in, ticks in sequence order out;
contracts pass straight through) and the ``Restore`` record, whose symbol sequences become
the starting point (a ``Restore`` in mid-stream resets the window: whatever it held is
dropped, the stream is replayed from the new restore point). The batch watermark is lowered
below any tick still held, so a snapshot never claims a source message that is waiting here.

Metrics: ``src_duplicates_total``, ``reorder_count_total``, ``src_gap_total`` (gaps given up
on) and ``src_gap_ticks_total`` (sequences they skipped), ``dedupe_held`` (gauge).
"""

from __future__ import annotations

import math

import attrs
import trio

from xypipe._errors import SRC_SEQUENCE_RESET
from xypipe._md.records import Batch, ContractRec, Restore, TickRec
from xypipe._md.reorder import ReorderWindow
from xypipe._stage import Stage
from xypipe._validate import in_range


@attrs.frozen
class DedupeConfig:
    #: How long an out-of-order tick waits for the ones before it.
    hold_ms: int = attrs.field(default=20, validator=in_range(0, 10_000))
    #: Most ticks held per symbol before the window gives up on the missing ones.
    max_held: int = attrs.field(default=32, validator=in_range(1, 100_000))


class Dedupe(Stage[Restore | Batch, Restore | Batch, DedupeConfig]):
    """Drop duplicate ticks and release out-of-order ones in sequence (a small window)."""

    async def run(self) -> None:
        cfg = self.config
        window = ReorderWindow(cfg.hold_ms / 1000, cfg.max_held, stamp=_exchange_time)
        m = self.ctx.metrics
        dups = m.counter("src_duplicates", "Duplicate source ticks dropped")
        reorders = m.counter("reorder_count", "Source ticks that arrived out of order and were "
                                              "released in order")
        gaps = m.counter("src_gap", "Sequence gaps the reorder window could not close")
        gap_ticks = m.counter("src_gap_ticks", "Source sequences skipped by those gaps")
        held = m.gauge("dedupe_held", "Ticks held by the reorder window")
        resets = m.counter("src_resets", "Sources that restarted their sequence at 1 (a new "
                                         "session): the key starts over instead of dropping")
        seen = [0, 0, 0, 0]
        seen_resets = 0

        def count_from(w: ReorderWindow[TickRec]) -> None:
            nonlocal seen
            counts = (w.duplicates, w.reordered, w.gaps, w.gap_missing)
            if counts != tuple(seen):
                dups.inc(counts[0] - seen[0])
                reorders.inc(counts[1] - seen[1])
                gaps.inc(counts[2] - seen[2])
                gap_ticks.inc(counts[3] - seen[3])
                seen = list(counts)

        watermark_in = 0
        inbox, send = self.inbox, self.outbox.send
        while True:
            deadline = window.next_deadline()
            item: Restore | Batch | None = None
            with trio.move_on_at(math.inf if deadline is None else deadline):
                try:
                    item = await inbox.receive()
                except trio.EndOfChannel:
                    break
            now = trio.current_time()
            out: list[TickRec | ContractRec] = []
            if isinstance(item, Restore):
                # A restore is a fresh start (mid-stream too: the groups owned changed and the
                # stream is replayed from the new restore point); what was held is dropped.
                count_from(window)
                window = ReorderWindow(cfg.hold_ms / 1000, cfg.max_held, stamp=_exchange_time)
                held.set(0)
                seen, seen_resets = [0, 0, 0, 0], 0
                states = [s for snap in item.snapshots for s in snap.symbols]
                window.restore({f"{s.venue}.{s.symbol}": s.seq for s in states},
                               {f"{s.venue}.{s.symbol}": s.ts_exchange_us for s in states})
                watermark_in = max(item.replay_from - 1, 0)
                await send(item)
                continue
            if item is not None:
                push = window.push
                for rec in item.recs:
                    if type(rec) is TickRec:
                        push(rec, now, out)
                    else:
                        out.append(rec)
                if item.watermark > watermark_in:
                    watermark_in = item.watermark
            window.expire(now, out)
            count_from(window)
            if window.resets != seen_resets:
                resets.inc(window.resets - seen_resets)
                self.ctx.log.warning("source sequences restarted at 1; following the new session",
                                     code=SRC_SEQUENCE_RESET, restarted=window.resets - seen_resets)
                seen_resets = window.resets
            held.set(window.held_count)
            lowest = window.min_held_sseq()
            watermark = watermark_in if lowest is None else min(watermark_in, lowest - 1)
            if out or item is not None:
                await send(Batch(out, watermark))
        out = []
        window.flush(out)
        if out:
            await send(Batch(out, watermark_in))


def _exchange_time(rec: TickRec) -> int:
    ts: int = rec.tick.ts_exchange_us
    return ts
