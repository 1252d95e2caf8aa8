"""When a draining gateway worker tells each client to move, and when it stops waiting for it.

A sans-I/O core: :class:`DrainPlan` is fed the connections, the times and who left, and answers
which connections to send a ``GoAway`` now (:meth:`DrainPlan.moves_due`), which ones were told
and are still there after ``close_in_s`` (:meth:`DrainPlan.overdue`: closed with 4100), and
when the shell must look again (:meth:`DrainPlan.next_at`). It has no clock of its own.

Why staggered: every client of the draining worker reconnects at once when told, so telling
them all together would land them on the other workers in one burst — each with a hello, a
token check and a resume (or a snapshot). The moves are spread evenly over the first
``drain_s - close_in_s`` seconds, oldest connection first, so the last one told still has
``close_in_s`` to leave before ``drain_s`` ends. A connection that arrives while draining (it
was in the accept queue) is told at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = ["DrainPlan", "DrainPolicy", "DrainStatistics"]


@attrs.frozen
class DrainPolicy:
    #: The whole drain: moves spread over it, and whoever is left at its end is closed.
    drain_s: float
    #: How long a client told to move has before its socket is closed.
    close_in_s: float

    @property
    def spread_s(self) -> float:
        """The window the moves are spread over (the last one told still has ``close_in_s``)."""
        return max(0.0, self.drain_s - self.close_in_s)


@attrs.frozen
class DrainStatistics:
    #: Connections still to be told.
    waiting: int
    #: Told, not gone yet.
    told: int
    #: Told and gone by themselves.
    left: int
    #: Told, still there after ``close_in_s``: closed by the gateway.
    closed: int


class DrainPlan:
    """The moves of one drain that began at ``start`` (see the module docstring)."""

    def __init__(self, conn_ids: Iterable[int], start: float, policy: DrainPolicy) -> None:
        self.policy = policy
        self.start = start
        #: Every client must be gone by then (the shell closes the rest).
        self.end = start + policy.drain_s
        ids = sorted(conn_ids)
        step = policy.spread_s / len(ids) if ids else 0.0
        #: (when, conn) still to be told, in time order.
        self._schedule: list[tuple[float, int]] = [(start + i * step, c)
                                                   for i, c in enumerate(ids)]
        self._next = 0
        self._told: dict[int, float] = {}
        self._left = 0
        self._closed = 0
        self._gone: set[int] = set()

    def arrived(self, conn_id: int, now: float) -> None:
        """A connection opened while draining: it is told at once."""
        self._schedule.insert(self._next, (now, conn_id))

    def left(self, conn_id: int) -> None:
        """A connection ended (told or not)."""
        if conn_id in self._gone:
            return
        self._gone.add(conn_id)
        if self._told.pop(conn_id, None) is not None:
            self._left += 1

    def moves_due(self, now: float) -> list[int]:
        """Connections to tell now (each once); they count as told from ``now``."""
        due = []
        while self._next < len(self._schedule) and self._schedule[self._next][0] <= now:
            conn = self._schedule[self._next][1]
            self._next += 1
            if conn not in self._gone:
                self._told[conn] = now
                due.append(conn)
        return due

    def overdue(self, now: float) -> list[int]:
        """Connections told ``close_in_s`` ago or more and still there: close them (each
        once). At ``end`` every connection left is overdue, told or not."""
        limit = self.policy.close_in_s
        out = [c for c, at in self._told.items() if now - at >= limit or now >= self.end]
        if now >= self.end:
            out += [c for _, c in self._schedule[self._next:] if c not in self._gone]
            self._next = len(self._schedule)
        for c in out:
            self._told.pop(c, None)
            self._gone.add(c)
        self._closed += len(out)
        return out

    def next_at(self) -> float:
        """When the shell must call :meth:`moves_due`/:meth:`overdue` again (at most ``end``)."""
        times = [self.end]
        if self._next < len(self._schedule):
            times.append(self._schedule[self._next][0])
        if self._told:
            times.append(min(self._told.values()) + self.policy.close_in_s)
        return min(times)

    @property
    def done(self) -> bool:
        """Nobody left to tell and nobody told still there."""
        return self._next >= len(self._schedule) and not self._told

    def statistics(self) -> DrainStatistics:
        waiting = sum(1 for _, c in self._schedule[self._next:] if c not in self._gone)
        return DrainStatistics(waiting=waiting, told=len(self._told), left=self._left,
                               closed=self._closed)
