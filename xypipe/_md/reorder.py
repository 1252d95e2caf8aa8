"""Dedupe and reorder: per-key sequence continuity with a small holding window (sans-I/O).

Each key (``venue.symbol``) has an expected next sequence. A record is

* **released** at once when it is the expected one, and with it every held successor that is
  now contiguous (a record that arrives after a higher sequence of its key counts as
  ``reordered``);
* **dropped** as a duplicate when its sequence was already released;
* **held** when it is ahead of the expected one, until the missing ones arrive, the hold time
  passes, or the key holds ``max_held`` records. Then the window gives up on the missing
  sequences (one ``gaps`` event, ``gap_missing`` sequences) and moves on.

A sequence that starts over at 1 with a timestamp newer than anything released for its key is
the source restarting (a new session of the feed, a restarted publisher), not a duplicate — a
duplicate carries its original, older timestamp. Whatever is held for the key is released, the
key starts over from 1, and the restart is counted (``resets``). Without this, a restored state
would drop every tick of a restarted source as a duplicate. Detection needs a ``stamp``
function (the dedupe stage passes the exchange timestamp); without one, the window never resets.

A record marked ``reanchor`` (the door validator confirmed that its source really moved to a
new sequence range, see :mod:`xypipe._md.validate`) is followed wherever its sequence is:
whatever is held for the key is released, and the key continues from it (``reanchors``).

A key never seen (a fresh start without a restored state) takes its first sequence as the
baseline, except that a first sequence above 1 is held for the hold time so ticks reordered at
the very start still come out in order.

Time is whatever the caller passes as ``now`` (seconds, e.g. ``trio.current_time()``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Sequenced(Protocol):
    """What the window reads of a record: its key, its sequence, its stream sequence."""

    @property
    def key(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def sseq(self) -> int: ...


R = TypeVar("R", bound=Sequenced)
T_contra = TypeVar("T_contra", contravariant=True)


class Sink(Protocol[T_contra]):
    """Where released records go (a list of these records, or of anything they are)."""

    def append(self, item: T_contra, /) -> None: ...


class ReorderWindow(Generic[R]):
    """Per-key continuity over records of type ``R``; see the module docstring."""

    def __init__(self, hold: float, max_held: int,
                 stamp: Callable[[R], int] | None = None) -> None:
        if hold < 0 or max_held < 1:
            raise ValueError(f"hold must be >= 0 and max_held >= 1, got {hold}, {max_held}")
        self.hold = hold
        self.max_held = max_held
        self._last: dict[str, int] = {}
        # key -> {seq: (deadline, rec)}
        self._held: dict[str, dict[int, tuple[float, R]]] = {}
        self._deadlines: list[tuple[float, str]] = []
        self.duplicates = 0
        self.reordered = 0
        self.gaps = 0
        self.gap_missing = 0
        self.held_count = 0
        self.resets = 0
        self.reanchors = 0
        self._stamp = stamp
        self._last_rec: dict[str, R] = {}
        self._restored_stamp: dict[str, int] = {}

    # ------------------------------------------------------------------ state

    def restore(self, last_seqs: dict[str, int],
                last_stamps: dict[str, int] | None = None) -> None:
        """Continue from known last sequences (e.g. from a snapshot's symbol states), and the
        timestamps of those last records (to tell a restarted source from a duplicate)."""
        for key, seq in last_seqs.items():
            if seq > self._last.get(key, 0):
                self._last[key] = seq
                self._last_rec.pop(key, None)
                if last_stamps and key in last_stamps:
                    self._restored_stamp[key] = last_stamps[key]

    def last_seq(self, key: str) -> int | None:
        return self._last.get(key)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (``None``: nothing is held)."""
        dl = self._deadlines
        while dl:
            deadline, key = dl[0]
            held = self._held.get(key)
            if held and min(d for d, _ in held.values()) <= deadline:
                return deadline
            heapq.heappop(dl)
        return None

    def min_held_sseq(self) -> int | None:
        """Lowest stream sequence of any held record (the watermark must stay below it)."""
        if not self.held_count:
            return None
        return int(min(r.sseq for held in self._held.values() for _, r in held.values()))

    # ------------------------------------------------------------------ events

    def push(self, rec: R, now: float, out: Sink[R]) -> None:
        """Feed one record (with ``.key`` and ``.seq``); released records are appended to
        ``out`` in order."""
        key, seq = rec.key, rec.seq
        last = self._last.get(key)
        if last is None:
            if seq <= 1 and key not in self._held:
                self._last[key] = seq
                self._last_rec[key] = rec
                out.append(rec)
                return
        elif seq <= last:
            if seq == 1 and self._restarted(key, rec):
                self.resets += 1
                if key in self._held:
                    self._give_up(key, out, math.inf, force=False)
                self._last[key] = 1
                self._last_rec[key] = rec
                out.append(rec)
                return
            if getattr(rec, "reanchor", False):
                self._reanchor(key, rec, out)
                return
            self.duplicates += 1
            return
        elif seq == last + 1:
            self._last[key] = seq
            self._last_rec[key] = rec
            out.append(rec)
            if key in self._held:
                # Its successors came first: this one arrived out of order.
                self.reordered += 1
                self._release_contiguous(key, out)
            return
        elif getattr(rec, "reanchor", False):
            self._reanchor(key, rec, out)
            return
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = {}
        elif seq in held:
            self.duplicates += 1
            return
        elif held and seq < max(held):
            self.reordered += 1
        deadline = now + self.hold
        if not held:
            heapq.heappush(self._deadlines, (deadline, key))
        held[seq] = (deadline, rec)
        self.held_count += 1
        if len(held) > self.max_held:
            self._give_up(key, out, now, force=True)

    def expire(self, now: float, out: Sink[R]) -> None:
        """Release what has been held past its time, giving up on the sequences it waited for."""
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            _, key = heapq.heappop(dl)
            if self._held.get(key):
                self._give_up(key, out, now, force=False)

    def flush(self, out: Sink[R]) -> None:
        """Release everything held, in order (end of input)."""
        for key in list(self._held):
            self._give_up(key, out, math.inf, force=False)
        self._deadlines.clear()

    # ------------------------------------------------------------------ internals

    def _restarted(self, key: str, rec: R) -> bool:
        if self._stamp is None:
            return False
        prev = self._last_rec.get(key)
        prev_ts = self._stamp(prev) if prev is not None else self._restored_stamp.get(key)
        return prev_ts is not None and self._stamp(rec) > prev_ts

    def _reanchor(self, key: str, rec: R, out: Sink[R]) -> None:
        self.reanchors += 1
        if key in self._held:
            self._give_up(key, out, math.inf, force=False)
        self._last[key] = rec.seq
        self._last_rec[key] = rec
        out.append(rec)

    def _release_one(self, key: str, held: dict[int, tuple[float, R]], seq: int,
                     out: Sink[R]) -> None:
        rec = held.pop(seq)[1]
        out.append(rec)
        self._last_rec[key] = rec
        self._last[key] = seq
        self.held_count -= 1

    def _release_run(self, key: str, held: dict[int, tuple[float, R]], out: Sink[R]) -> None:
        """Release every held successor of the last released sequence that is contiguous."""
        nxt = self._last[key] + 1
        while nxt in held:
            self._release_one(key, held, nxt, out)
            nxt += 1

    def _release_contiguous(self, key: str, out: Sink[R]) -> None:
        held = self._held[key]
        self._release_run(key, held, out)
        if not held:
            del self._held[key]
        else:
            self._schedule(key)

    def _give_up(self, key: str, out: Sink[R], now: float, *, force: bool) -> None:
        """Stop waiting: with ``force`` (too many held) for the lowest missing sequences until
        the key is within ``max_held``; in any case for every sequence below a held record
        whose time is up. Skipped ranges count as gaps (not for a key without a baseline)."""
        held = self._held.get(key)
        if held:
            if force:
                while len(held) > self.max_held:
                    self._release_upto(key, held, min(held), out)
            due = [s for s, (d, _) in held.items() if d <= now]
            if due:
                self._release_upto(key, held, max(due), out)
        if not held:
            self._held.pop(key, None)
        else:
            self._schedule(key)

    def _release_upto(self, key: str, held: dict[int, tuple[float, R]], upto: int,
                      out: Sink[R]) -> None:
        for seq in sorted(s for s in held if s <= upto):
            last = self._last.get(key)
            if last is not None and seq > last + 1:
                self.gaps += 1
                self.gap_missing += seq - last - 1
            self._release_one(key, held, seq, out)
        self._release_run(key, held, out)

    def _schedule(self, key: str) -> None:
        held = self._held[key]
        heapq.heappush(self._deadlines, (min(d for d, _ in held.values()), key))
