"""The tick's flush: each due connection's frame built once and written by the gateway itself.

After each batch of the aggregator's messages (a *tick*) the hub hands over the connections the
batch made due (:meth:`~._hub.Hub.end_tick`); nobody was woken. :class:`TickFlush` then goes
through them once:

* a connection whose writer is parked and that may be written directly
  (:meth:`~._wire_core.ConnectionCore.can_write_now`: plaintext socket, plain L0, session open,
  nothing of its own pending) gets its frame now — built by the hub's frame builder, whose
  generation-keyed cache hands every connection due the same ranges at the same level the same
  bytes — written with one non-blocking send. What the socket does not take stays as that
  connection's pending tail and its writer is woken to finish it, in order;
* a parked connection that may not (L1+ holds frames so deltas merge, TLS, control frames, the
  close) has its writer woken;
* a connection whose writer is busy (sending, holding) is left alone: the writer looks for what
  is due before it parks again.

Metrics are added once per flush, not per frame: frames, bytes, forwarded messages; the
``gateway_send`` latency is observed once per distinct frame written in the flush (see
docs/observability/field-dictionary.md). Sans-I/O: the connections' sockets are behind
:meth:`DirectTarget.write_now`, so every rule is unit-tested with fake sockets
(tests/gateway/test_tick_flush.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import attrs

from xypipe._gateway._gmetrics import GatewayMetrics
from xypipe._gateway._hub import Built, Hub, Outbox

__all__ = ["DirectTarget", "FlushTally", "TickFlush"]


class DirectTarget(Protocol):
    """What the flush needs of a connection (:class:`~._wire_core.ConnectionCore`)."""

    @property
    def idle(self) -> bool:
        """The writer is parked with nothing due and not woken since."""

    @property
    def outbox(self) -> Outbox: ...

    def can_write_now(self) -> bool: ...

    def write_now(self, built: Built, now: float) -> int: ...


@attrs.define
class FlushTally:
    """What one flush did (the flush's counters, also the metrics it added)."""

    #: Frames written whole by the flush, and the bytes the sockets took (tails included).
    frames: int = 0
    bytes: int = 0
    #: Deltas and snapshots in the frames written whole.
    messages: int = 0
    #: Frames whose socket took only part (the writer finishes them).
    partial: int = 0
    #: Writers woken: the connection may not be written directly.
    woken: int = 0
    #: Distinct frame contents written (one ``gateway_send`` observation each).
    distinct: int = 0


class TickFlush:
    """Writes every due connection's frame after a tick. See the module docstring."""

    def __init__(self, hub: Hub, metrics: GatewayMetrics) -> None:
        self.hub = hub
        self.metrics = metrics
        self._e2e = metrics.e2e.labels("gateway_send")

    def flush(self, due: Iterable[Outbox], targets: Mapping[int, DirectTarget], now: float,
              wall: float) -> FlushTally:
        """Write the frames of ``due`` connections (``targets`` by connection id) at ``now``
        (monotonic) and ``wall`` (seconds since the epoch: frames carry it)."""
        tally = FlushTally()
        build = self.hub.build
        wall_us = int(wall * 1e6)
        written: dict[int, Built] = {}
        frames = nbytes = messages = 0
        for ob in due:
            target = targets.get(ob.conn_id)
            if target is None or not target.idle:
                continue  # gone, or its writer is awake and looks for what is due itself
            if not target.can_write_now():
                ob.notify()
                tally.woken += 1
                continue
            built = build(ob, wall_us)
            if built is None:
                continue  # e.g. a paused group, a snapshot still to come
            n = target.write_now(built, now)
            nbytes += n
            if n == len(built.data):
                frames += 1
                messages += built.deltas + built.snapshots
                written[id(built)] = built
            elif target.outbox.inflight_bytes:
                tally.partial += 1
        tally.frames, tally.bytes, tally.messages = frames, nbytes, messages
        tally.distinct = len(written)
        self._count(tally, written.values(), wall)
        return tally

    def _count(self, tally: FlushTally, written: Iterable[Built], wall: float) -> None:
        m = self.metrics
        if tally.frames:
            m.frames.inc(tally.frames)
            m.frames_direct.inc(tally.frames)
        if tally.partial:
            m.socket_full.inc(tally.partial)
        if tally.bytes:
            m.bytes_out.inc(tally.bytes)
        if tally.messages:
            m.ws_msgs.add(tally.messages)
        for built in written:
            if built.oldest_arrival_us:
                lat = wall - built.oldest_arrival_us / 1e6
                if lat >= 0:
                    self._e2e.observe(lat)
