"""The Trio shell around the staleness watchdog: stage handles, logging, metrics.

A stage asks its context for a :class:`Watch` (``ctx.watch("XY_SRC", stale_after=5.0,
gated=True)``) and feeds it; the runner asks :class:`PipelineWatchdog` for the verdicts when it
answers ``/healthz`` and every :data:`CHECK_INTERVAL` seconds, so a transition to stale (and
back) is logged and counted even when nobody is probing.

Metrics (rows in docs/observability/field-dictionary.md):

* ``stream_stale_total{stream}``: transitions of a watched stream to stale.
* ``stream_fresh{stream}``: 1 while the stream is fresh, 0 otherwise (starting, replaying,
  stale).
* ``stream_silence_seconds{stream}``: seconds since the stream last delivered data, as of the
  last check.
"""

from __future__ import annotations

import trio

from xypipe._errors import HEALTH_STREAM_FORGOTTEN, HEALTH_STREAM_RECOVERED, HEALTH_STREAM_STALE
from xypipe._log import Logger
from xypipe._metrics import Metrics
from xypipe._watchdog import Change, Status, StreamWatch, Verdict, Watchdog

#: How often the runner checks the watches when nobody asks (seconds).
CHECK_INTERVAL = 0.5


class Watch:
    """A stage's handle on one watched stream; time comes from Trio's clock."""

    __slots__ = ("_owner", "core")

    def __init__(self, core: StreamWatch, owner: PipelineWatchdog) -> None:
        self.core = core
        self._owner = owner

    @property
    def stream(self) -> str:
        return self.core.stream

    def data(self, position: int | None = None) -> None:
        """Data arrived (up to ``position``, e.g. the last stream sequence handed on)."""
        self.core.data(trio.current_time(), position)

    def source(self, position: int) -> None:
        """The source stands at ``position`` (its last sequence, polled from stream info)."""
        self.core.source(trio.current_time(), position)

    def catch_up(self, target: int) -> None:
        """Not ready until data has reached ``target`` (a replay in progress)."""
        self.core.catch_up(target)

    def status(self) -> Verdict:
        return self.core.check(trio.current_time())

    def close(self) -> None:
        """Stop watching (the stage is done with the stream)."""
        self._owner.forget(self.core.stream, reason="")


class PipelineWatchdog:
    """The watches of one pipeline, with their log lines and metrics."""

    def __init__(self, metrics: Metrics, log: Logger) -> None:
        self.core = Watchdog()
        self._log = log
        self._stale = metrics.counter(
            "stream_stale", "Transitions of a watched input stream to stale", ["stream"])
        self._fresh = metrics.gauge(
            "stream_fresh", "1 while a watched input stream is fresh, else 0", ["stream"])
        self._silence = metrics.gauge(
            "stream_silence_seconds", "Seconds since a watched input stream last delivered data",
            ["stream"])

    def watch(self, stream: str, *, stale_after: float, gated: bool,
              position: int | None = None) -> Watch:
        existing = self.core.get(stream)
        if existing is not None:
            # A restarted stage watches again: start over rather than inherit old silence.
            self.core.remove(stream)
        core = self.core.add(StreamWatch(stream, stale_after, gated=gated,
                                         now=trio.current_time(), position=position))
        self._fresh.labels(stream).set(0)
        self._stale.labels(stream)  # reads 0 until the first stale: alerts see that one too
        return Watch(core, self)

    def get(self, stream: str) -> StreamWatch | None:
        return self.core.get(stream)

    def forget(self, stream: str, *, reason: str) -> None:
        if self.core.get(stream) is None:
            return
        self.core.remove(stream)
        self._fresh.remove(stream)
        self._silence.remove(stream)
        if reason:
            self._log.info("stream no longer watched", code=HEALTH_STREAM_FORGOTTEN,
                           stream=stream, reason=reason)

    def check(self) -> list[Verdict]:
        verdicts, changes = self.core.check(trio.current_time())
        for v in verdicts:
            self._fresh.labels(v.stream).set(1 if v.fresh else 0)
            self._silence.labels(v.stream).set(round(v.silence_s, 3))
        for c in changes:
            self._report(c)
        return verdicts

    def _report(self, c: Change) -> None:
        v = c.verdict
        if c.became_stale:
            self._stale.labels(v.stream).inc()
            self._log.warning("input stream stale", code=HEALTH_STREAM_STALE, stream=v.stream,
                              silence_s=round(v.silence_s, 3), reason=v.reason,
                              was=c.old.value)
        elif c.recovered:
            self._log.info("input stream fresh again", code=HEALTH_STREAM_RECOVERED,
                           stream=v.stream, status=v.status.value,
                           silence_s=round(v.silence_s, 3))
        elif c.new is Status.FRESH:
            self._log.info("input stream fresh", stream=v.stream, was=c.old.value)


__all__ = ["CHECK_INTERVAL", "PipelineWatchdog", "Watch"]
