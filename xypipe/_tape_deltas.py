"""The deterministic replay: a tape through the aggregator's sans-I/O cores on the tape's clock.

The live aggregator closes its windows on Trio's clock and stamps wall-clock times, so two runs
over the same input emit different bytes. This runs the same cores its stages run —
``decode_messages`` and the door (:mod:`xypipe._md.validate`), the reorder window
(:mod:`xypipe._md.reorder`), the router (``shard``), the conflation window
(:mod:`xypipe._md.conflation`) and the snapshot mirrors (:mod:`xypipe._md.snapshots`) — with the
tape's own timestamps as the only clock:

* a batch is the tape's records that share a timestamp (the publisher sends a pacing step's
  ticks together); its arrival time (``ts_arrival_us`` of the entries, the door's reference)
  is ``created_us + t_us`` and its stream sequence the record's index + 1 (what a fresh
  stream holding only this tape would assign);
* windows close every ``interval_ms`` of tape time, at L0, ``ts_emit_us`` = the tape time they
  close at and ``window_ms`` = the interval; held ticks expire at their tape-time deadlines;
  snapshots are built every ``snapshot.interval_ms`` of tape time (0 = only the last round);
* the epoch is fixed (``epoch``, by default the tape's ``created_us``);
* at the end the last window closes (paused groups included, as at a stop) and one last round
  of snapshots is built, so the output ends with the full books.

Output: :class:`~xypipe._tape.TapeRecord` values on the subjects the ``publish`` stage would
use (``xy.md.tick.{group}[.{shard}]``, ``xy.md.snapshot.{group}``), in the order it would send
them; written with :func:`write_deltas` they make a tape of their own (header ``source`` =
``"xypipe tape deltas"``, same ``created_us`` and seed), byte for byte the same for the same
tape and configuration. Deltas carry ``fence`` 0 (no lease) — publish stamps the fence live.
What the live path adds and this leaves out: timing (window boundaries fall where Trio's clock
puts them, degradation levels follow load), the wall-clock stamps, the restore after a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs

from xypipe._contracts import ContractDecoder
from xypipe._degrade import Level
from xypipe._errors import SourceDataError
from xypipe._md.conflation import Conflator
from xypipe._md.records import Batch, ContractRec, Restore, TickRec
from xypipe._md.reorder import ReorderWindow
from xypipe._md.snapshots import SnapshotBuilder
from xypipe._md.validate import TickBounds, TickValidator
from xypipe._stages._md_common import PRIORITIES
from xypipe._stages.conflate import ConflateConfig
from xypipe._stages.dedupe import DedupeConfig
from xypipe._stages.ingest import BadSourceCounter, decode_messages
from xypipe._stages.shard import Router, ShardConfig
from xypipe._stages.snapshot import SnapshotConfig
from xypipe._tape import Tape, TapeHeader, TapeRecord, write_tape


@attrs.frozen
class ReplayConfig:
    """The aggregator's stage configurations the replay uses (defaults: each stage's)."""

    dedupe: DedupeConfig = attrs.field(factory=DedupeConfig)
    shard: ShardConfig = attrs.field(factory=ShardConfig)
    conflate: ConflateConfig = attrs.field(factory=ConflateConfig)
    snapshot: SnapshotConfig = attrs.field(factory=SnapshotConfig)
    bounds: TickBounds = attrs.field(factory=TickBounds)
    #: The epoch every delta carries; 0 = the tape's ``created_us``.
    epoch: int = 0
    #: Build snapshots every ``snapshot.interval_ms`` of tape time (False: only at the end).
    periodic_snapshots: bool = True


@attrs.frozen
class _Msg:
    """A tape record as ingest reads a source message (stream sequence = record index + 1)."""

    subject: str
    data: bytes
    seq: int
    reply: str = ""
    headers: dict[str, str] | None = None  # a tape keeps no headers


@attrs.define
class ReplayStats:
    """What the replay saw: records in, skipped (with reasons), deltas and snapshots out."""

    records: int = 0
    ticks: int = 0
    contracts: int = 0
    bad: dict[str, int] = attrs.field(factory=dict)
    duplicates: int = 0
    reordered: int = 0
    gaps: int = 0
    deltas: int = 0
    snapshots: int = 0


class _Bad(BadSourceCounter):
    """The ``bad`` callback of ``decode_messages``: counts reasons in the stats; no metric, no
    clock, no log line (the stage's counter limits its lines by the wall clock)."""

    def __init__(self, stats: ReplayStats) -> None:  # no stage context: nothing of the base
        self._stats = stats

    def __call__(self, reason: str, subject: str, detail: str, *,
                 code: str = SourceDataError.code, what: str = "") -> None:
        self._stats.bad[reason] = self._stats.bad.get(reason, 0) + 1


def _exchange_time(rec: TickRec) -> int:
    ts: int = rec.tick.ts_exchange_us
    return ts


class DeterministicReplay:
    """The cores wired as the aggregator's stages wire them, driven by tape time."""

    def __init__(self, header: TapeHeader, cfg: ReplayConfig | None = None) -> None:
        cfg = cfg or ReplayConfig()
        self.cfg = cfg
        self.created_us = header.created_us
        self.stats = ReplayStats()
        epoch = cfg.epoch or header.created_us
        c = cfg.conflate
        self._door = TickValidator(cfg.bounds)
        self._window: ReorderWindow[TickRec] = ReorderWindow(
            cfg.dedupe.hold_ms / 1000, cfg.dedupe.max_held, stamp=_exchange_time)
        self._router = Router(cfg.shard)
        self._conflator = Conflator(epoch, levels=c.levels, priorities={
            g: PRIORITIES[p] for g, p in c.priorities.items()})
        s = cfg.snapshot
        self._snaps = SnapshotBuilder(epoch, subject_prefix=s.prefix, top_by=s.top_by,
                                      top_k=s.top_k)
        restore = Restore(epoch=epoch)
        self._conflator.restore(restore)
        self._snaps.restore(restore)
        self._decoder = ContractDecoder()
        self._bad = _Bad(self.stats)
        self._interval_us = c.interval_ms * 1000
        self._next_window = self._interval_us
        self._snap_us = s.interval_ms * 1000 if cfg.periodic_snapshots else 0
        self._next_snap = self._snap_us or None
        self._watermark = 0

    # ------------------------------------------------------------------ driving

    def run(self, tape: Tape) -> Iterator[TapeRecord]:
        """Every delta and snapshot the tape produces, in publish order."""
        records = tape.records
        i, n = 0, len(records)
        while i < n:
            t = records[i].t_us
            j = i
            msgs = []
            while j < n and records[j].t_us == t:
                r = records[j]
                msgs.append(_Msg(r.subject, r.data, j + 1))
                j += 1
            yield from self._advance(t)
            self._batch(t, msgs)
            i = j
        yield from self.finish(tape.duration_us)

    def _advance(self, t_us: int) -> Iterator[TapeRecord]:
        """Everything due before ``t_us`` (held ticks expiring, windows, snapshot rounds), in
        time order; an event due exactly at ``t_us`` happens before that batch arrives."""
        while True:
            deadline = self._window.next_deadline()
            due_hold = None if deadline is None else round(deadline * 1e6)
            candidates = [self._next_window]
            if due_hold is not None:
                candidates.append(due_hold)
            if self._next_snap is not None:
                candidates.append(self._next_snap)
            at = min(candidates)
            if at > t_us:
                return
            if deadline is not None and due_hold == at:
                self._expire(deadline)
            if self._next_window == at:
                yield from self._close_window(at, Level.L0)
                self._next_window += self._interval_us
            if self._next_snap is not None and self._next_snap == at:
                yield from self._snapshot_round(at)
                self._next_snap += self._snap_us

    def _expire(self, deadline: float) -> None:
        out: list[TickRec | ContractRec] = []
        self._window.expire(deadline, out)
        self._route_and_apply(out)

    def _batch(self, t_us: int, msgs: list[_Msg]) -> None:
        stats = self.stats
        stats.records += len(msgs)
        now = t_us / 1e6
        recs = decode_messages(msgs, now, self._bad, self._door, self.created_us + t_us,
                               self._decoder)
        out: list[TickRec | ContractRec] = []
        push = self._window.push
        for rec in recs:
            if type(rec) is TickRec:
                stats.ticks += 1
                push(rec, now, out)
            else:
                stats.contracts += 1
                out.append(rec)
        self._window.expire(now, out)
        self._watermark = msgs[-1].seq
        self._route_and_apply(out)

    def _route_and_apply(self, out: list[TickRec | ContractRec]) -> None:
        router, cfg = self._router, self.cfg.shard
        for rec in out:
            if type(rec) is TickRec:
                rec.route = router.route(rec.key)
            elif type(rec) is ContractRec:
                if cfg.use_contracts and rec.contract.group:
                    rec.moved_from = router.learn(rec.key, rec.contract.group)
                rec.route = router.route(rec.key)
        router.without_contract.clear()
        lowest = self._window.min_held_sseq()
        watermark = self._watermark if lowest is None else min(self._watermark, lowest - 1)
        self._conflator.apply(Batch(out, watermark))
        self._conflator.take_moves()

    def _close_window(self, t_us: int, level: Level) -> Iterator[TapeRecord]:
        deltas = self._conflator.emit(self.created_us + t_us, level,
                                      self.cfg.conflate.interval_ms)
        snaps = self._snaps
        if not deltas:
            snaps.advance(self._conflator.watermark)
        for d in deltas:
            snaps.apply(d)
            self.stats.deltas += 1
            yield TapeRecord(t_us, d.subject, d.payload)

    def _snapshot_round(self, t_us: int) -> Iterator[TapeRecord]:
        for s in self._snaps.build_all(self.created_us + t_us, self.cfg.conflate.interval_ms):
            self.stats.snapshots += 1
            yield TapeRecord(t_us, s.subject, s.payload)

    def finish(self, end_us: int) -> Iterator[TapeRecord]:
        """The end of the tape: held ticks given up on, the last window (paused groups too),
        the last round of snapshots — at the first window boundary at or after ``end_us``."""
        yield from self._advance(end_us)
        out: list[TickRec | ContractRec] = []
        self._window.flush(out)
        self._route_and_apply(out)
        w = self._window
        self.stats.duplicates, self.stats.reordered, self.stats.gaps = (
            w.duplicates, w.reordered, w.gaps)
        at = self._next_window
        yield from self._close_window(at, self._conflator.levels.unpaused(Level.L0))
        yield from self._snapshot_round(at)


def replay_deltas(tape: Tape, cfg: ReplayConfig | None = None,
                  ) -> tuple[list[TapeRecord], ReplayStats]:
    """The deltas and snapshots ``tape`` gives (see the module docstring) and the stats."""
    replay = DeterministicReplay(tape.header, cfg)
    out = list(replay.run(tape))
    return out, replay.stats


def write_deltas(path: str | Path, tape: Tape, cfg: ReplayConfig | None = None,
                 ) -> tuple[TapeHeader, ReplayStats]:
    """:func:`replay_deltas` written as a tape of ``xy.md.*`` messages."""
    c = cfg or ReplayConfig()
    out, stats = replay_deltas(tape, c)
    h = tape.header
    header = TapeHeader(created_us=h.created_us, source="xypipe tape deltas", seed=h.seed,
                        subjects=(f"{c.shard.prefix}.>", f"{c.snapshot.prefix}.>"))
    return write_tape(path, header, out), stats


__all__ = ["DeterministicReplay", "ReplayConfig", "ReplayStats", "replay_deltas",
           "write_deltas"]
