"""The market the chaos suite feeds in, and what the source stream says was accepted.

:class:`Feed` is a venue adapter driven by the test: a seeded :class:`MarketSim` published on
``xy.src.tick.*`` through a NATS connection that outlives server restarts (nats-py buffers
during an outage), one pacing step every 10 ms. What was *accepted* is what the source stream
``XY_SRC`` stored — :func:`accepted` reads it back — so "nothing accepted is lost" compares the
clients' books with the stream, not with what the adapter merely tried to send.
"""

from __future__ import annotations

import time

import attrs
import trio

from xypipe._errors import BridgeError
from xypipe._nats import NatsClient
from xypipe._publisher import (
    TRADE,
    GroundTruth,
    MarketSim,
    Pacer,
    contract_subject,
    stamp_arrival,
    tick_subject,
)
from xypipe._stages._md_common import wall_us
from xypipe.contracts import Tick

SOURCE_STREAM = "XY_SRC"


#: How often the feed publishes its reference contracts again (seconds).
CONTRACTS_EVERY_S = 2.0


class Feed:
    """Publish ``rate`` ticks/s over ``symbols`` instruments until :meth:`stop`."""

    def __init__(self, nc: NatsClient, *, symbols: int = 40, rate: float = 200.0,
                 seed: int = 7, step_s: float = 0.01) -> None:
        self.nc = nc
        self.sim = MarketSim(symbols, seed=seed)
        self.rate = rate
        self.step_s = step_s
        self.sent = GroundTruth()
        self.publish_errors: list[str] = []
        self._stop = trio.Event()
        self.done = trio.Event()
        #: ``(time.monotonic(), kind)`` of the feed's own connection events: when the adapter
        #: itself was cut off and back, so a slow recovery is not blamed on the pipelines.
        self.connection_events: list[tuple[float, str]] = []

    async def watch_connection(self, *, task_status: trio.TaskStatus[None]
                               = trio.TASK_STATUS_IGNORED) -> None:
        with self.nc.events() as events:
            task_status.started()
            async for event in events:
                self.connection_events.append((time.monotonic(), event.kind))

    def reconnected_after(self, t0: float) -> float | None:
        """Seconds from ``t0`` (monotonic) to the feed's first reconnect after it, if any."""
        return next((t - t0 for t, kind in self.connection_events
                     if t >= t0 and kind == "reconnected"), None)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        nc = self.nc
        try:
            for c in self.sim.contracts():
                await nc.publish(contract_subject(c.venue, c.symbol), c.SerializeToString())
            await nc.flush()
            task_status.started()
            pacer = Pacer(self.rate)
            pacer.due(trio.current_time())
            next_t = trio.current_time()
            # Contracts again every few seconds, as the real publisher does
            # (`contracts_every_s`): published while the source stream is still being created
            # (a cluster electing its leaders), the first ones may be stored by nobody.
            contracts_at = next_t + CONTRACTS_EVERY_S
            while not self._stop.is_set():
                next_t += self.step_s
                with trio.move_on_at(next_t):
                    await self._stop.wait()
                if trio.current_time() >= contracts_at:
                    contracts_at += CONTRACTS_EVERY_S
                    for c in self.sim.contracts():
                        try:
                            await nc.publish(contract_subject(c.venue, c.symbol),
                                             c.SerializeToString())
                        except BridgeError:
                            break  # an outage: the next round sends them again
                for _ in range(pacer.due(trio.current_time())):
                    tick = self.sim.next_tick(wall_us())
                    key = f"{tick.venue}.{tick.symbol}"
                    try:
                        # Waits for room in the bridge's queue rather than dropping.
                        await nc.publish(tick_subject(tick.venue, tick.symbol),
                                         stamp_arrival(tick.SerializeToString(), wall_us()))
                    except BridgeError as exc:
                        # What an adapter sees when nats-py's reconnect buffer overflowed.
                        self.publish_errors.append(f"{key} #{tick.seq}: {exc}")
                        continue
                    self.sent.record(key, tick)
            with trio.move_on_after(5):
                while True:
                    try:
                        await nc.flush(timeout=1.0)
                        break
                    except BridgeError as exc:
                        # Flushing through an outage: wait for the reconnect (bounded above).
                        self.publish_errors.append(f"final flush: {exc}")
                        await trio.sleep(0.1)
        finally:
            self.done.set()


@attrs.frozen
class Accepted:
    """What the source stream holds for one ``venue.symbol``."""

    last_seq: int
    vol: int  # the session volume the newest tick carried
    trades: int
    traded_volume: int  # sum of the sizes of every stored trade


async def accepted(nc: NatsClient) -> dict[str, Accepted]:
    """Every tick ``XY_SRC`` stored, folded per symbol (a full read of the stream)."""
    js = nc.jetstream()
    state = await js.stream_state(SOURCE_STREAM)
    seen: dict[str, tuple[int, int, int, int]] = {}
    # A tick stored twice is one tick (the aggregator drops the second): count each seq once.
    counted: set[tuple[str, int]] = set()
    async with js.pull(SOURCE_STREAM, "xy.src.tick.>", deliver="all", batch=2048) as consumer:
        while True:
            got = await consumer.fetch(2048, timeout=0.5)
            for m in got:
                t = Tick.FromString(m.data)
                key = f"{t.venue}.{t.symbol}"
                if (key, t.seq) in counted:
                    continue
                counted.add((key, t.seq))
                seq, vol, trades, volume = seen.get(key, (0, 0, 0, 0))
                if t.flags & TRADE:
                    trades += 1
                    volume += t.last_size
                if t.seq > seq:
                    seq, vol = t.seq, t.vol
                seen[key] = (seq, vol, trades, volume)
            if not got or m.seq >= state.last_seq:
                break
    return {k: Accepted(*v) for k, v in seen.items()}
