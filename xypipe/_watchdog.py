"""Staleness watchdog: is each input stream of a pipeline fresh, given what its source does?

A sans-I/O core. A :class:`StreamWatch` is fed "data seen at ``t`` (up to position ``p``)" and,
where the source can be observed, "the source is at position ``p`` at ``t``"; it is asked
"what is your status at ``now``?". It has no clock of its own: the Trio shell
(:class:`Watch`, handed to stages by :meth:`xypipe.StageContext.watch`) passes
``trio.current_time()``, tests pass plain numbers.

Two kinds of stream:

* **source-gated** (``gated=True``): silence alone proves nothing (an idle market is quiet).
  The stream is stale when the source is *ahead* of what was delivered (its last position is
  past the last delivered one, or — position unknown — it has grown since watching began) and
  no data has arrived for ``stale_after`` seconds since it was first seen ahead — or when
  neither data nor a reading of the source's position has come for ``stale_after`` seconds
  (the server stopped answering). The aggregator's ingest watches the source stream
  ``XY_SRC`` this way.
* **cadence** (``gated=False``): the source promises data every so often whatever the market
  does (the aggregator publishes every group's snapshot every 2-5 s), so ``stale_after``
  seconds without data is stale. The gateway watches ``xy.md.snapshot.*`` this way.

Status, worst first: ``stale`` > ``catching_up`` (a replay that has not reached its target
position yet) > ``starting`` (no data since start, and no proof yet that there is nothing to
receive) > ``fresh``. Only ``fresh`` is ready.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import attrs


class Status(enum.Enum):
    FRESH = "fresh"
    STARTING = "starting"
    CATCHING_UP = "catching_up"
    STALE = "stale"


@attrs.frozen
class Verdict:
    """One stream's status at one moment, with the reason an operator reads when not fresh."""

    stream: str
    status: Status
    #: Seconds since the last data (since the watch began when none has arrived).
    silence_s: float
    #: Empty when fresh; otherwise names the stream and what is wrong.
    reason: str = ""

    @property
    def fresh(self) -> bool:
        return self.status is Status.FRESH


@attrs.frozen
class Change:
    """A stream's status moved (logged and counted by the shell)."""

    old: Status
    new: Status
    verdict: Verdict

    @property
    def became_stale(self) -> bool:
        return self.new is Status.STALE

    @property
    def recovered(self) -> bool:
        return self.old is Status.STALE and self.new is not Status.STALE


class StreamWatch:
    """The freshness of one stream (see the module doc for the rules)."""

    def __init__(self, stream: str, stale_after: float, *, gated: bool, now: float,
                 position: int | None = None) -> None:
        if not stale_after > 0:
            raise ValueError(f"stale_after: expected seconds > 0, got {stale_after!r}")
        self.stream = stream
        self.stale_after = stale_after
        self.gated = gated
        self.started_at = now
        #: Highest position delivered (None: unknown until the first positioned data).
        self.position = position
        self.data_at: float | None = None
        self.source_position: int | None = None
        #: When the source's position was last read (None: never).
        self.source_at: float | None = None
        self._source_first: int | None = None
        #: When the source was first seen ahead of the delivered position (None: not ahead).
        self._behind_since: float | None = None
        self._in_sync = False
        self.target: int | None = None
        self.status = Status.STARTING

    # ------------------------------------------------------------------ events

    def data(self, now: float, position: int | None = None) -> None:
        """Data arrived (up to ``position`` when the stream has positions)."""
        self.data_at = now
        if position is not None and (self.position is None or position > self.position):
            self.position = position
        if not self._ahead():
            self._behind_since = None

    def source(self, now: float, position: int) -> None:
        """The source is at ``position`` (e.g. a stream's last sequence from stream info)."""
        self.source_at = now
        if self._source_first is None:
            self._source_first = position
        if self.source_position is None or position > self.source_position:
            self.source_position = position
        if self._ahead():
            if self._behind_since is None:
                self._behind_since = now
        else:
            self._behind_since = None
            # Everything the source has was delivered: nothing to wait for, even before data.
            self._in_sync = True

    def catch_up(self, target: int) -> None:
        """Not ready until data has reached ``target`` (a replay after a restart)."""
        self.target = target

    # ------------------------------------------------------------------ questions

    def _ahead(self) -> bool:
        src = self.source_position
        if src is None:
            return False
        if self.position is not None:
            return src > self.position
        return self._source_first is not None and src > self._source_first

    def silence(self, now: float) -> float:
        return max(now - (self.data_at if self.data_at is not None else self.started_at), 0.0)

    def check(self, now: float) -> Verdict:
        """The status at ``now`` (also remembered in :attr:`status`)."""
        silence = self.silence(now)
        status, reason = self._judge(now, silence)
        self.status = status
        return Verdict(self.stream, status, silence, reason)

    def _judge(self, now: float, silence: float) -> tuple[Status, str]:
        name = self.stream
        if self.gated:
            since = self._behind_since
            if since is not None:
                waited = now - max(since, self.data_at if self.data_at is not None else since)
                if waited > self.stale_after:
                    return Status.STALE, (
                        f"stream {name}: no data for {silence:.1f} s while the source advanced "
                        f"(source at {self.source_position}, delivered up to "
                        f"{_pos(self.position)}; stale after {self.stale_after:g} s)")
            # A server that stopped answering (frozen, partitioned) neither delivers nor says
            # how far the source is: that silence cannot be told from an idle market's, and
            # the client library may still believe it is connected. Not ready.
            unread = now - self.source_at if self.source_at is not None else 0.0
            if unread > self.stale_after and silence > self.stale_after:
                return Status.STALE, (
                    f"stream {name}: no data for {silence:.1f} s and the source's position "
                    f"unread for {unread:.1f} s (is NATS answering?)")
        elif silence > self.stale_after:
            return Status.STALE, (f"stream {name}: no data for {silence:.1f} s "
                                  f"(expected within {self.stale_after:g} s)")
        if self.target is not None and (self.position or 0) < self.target:
            return Status.CATCHING_UP, (
                f"stream {name}: replaying, at {_pos(self.position)} of {self.target}")
        if self.data_at is None and not (self.gated and self._in_sync):
            return Status.STARTING, f"stream {name}: no data since start {silence:.1f} s ago"
        return Status.FRESH, ""


def _pos(p: int | None) -> str:
    return "nothing" if p is None else str(p)


class Watchdog:
    """The watches of one pipeline. :meth:`check` returns every verdict plus the status
    changes since the previous check, so a transition is reported exactly once."""

    def __init__(self) -> None:
        self._watches: dict[str, StreamWatch] = {}
        self._last: dict[str, Status] = {}

    def add(self, watch: StreamWatch) -> StreamWatch:
        if watch.stream in self._watches:
            raise ValueError(f"stream {watch.stream!r} is already watched")
        self._watches[watch.stream] = watch
        return watch

    def get(self, stream: str) -> StreamWatch | None:
        return self._watches.get(stream)

    def remove(self, stream: str) -> None:
        self._watches.pop(stream, None)
        self._last.pop(stream, None)

    def __iter__(self) -> Iterator[StreamWatch]:
        return iter(list(self._watches.values()))

    def __len__(self) -> int:
        return len(self._watches)

    def check(self, now: float) -> tuple[list[Verdict], list[Change]]:
        verdicts: list[Verdict] = []
        changes: list[Change] = []
        for name, w in list(self._watches.items()):
            v = w.check(now)
            verdicts.append(v)
            old = self._last.get(name, Status.STARTING)
            if v.status is not old:
                changes.append(Change(old, v.status, v))
            self._last[name] = v.status
        return verdicts, changes


__all__ = ["Change", "Status", "StreamWatch", "Verdict", "Watchdog"]
