"""Builders shared by the aggregator tests."""

from __future__ import annotations

from xypipe._md.records import Batch, TickRec
from xypipe._stages.shard import Router, Shard
from xypipe.contracts import PriceLevel, Tick, TickFlag
from xypipe.testing import make_config

TRADE = int(TickFlag.TICK_FLAG_TRADE)


def tick(venue: str = "V", symbol: str = "AAA", seq: int = 1, *, last: int = 100,
         size: int = 0, vol: int = 0, oi: int = 0, trade: bool = False, depth: int = 5,
         mid: int | None = None, arrival_us: int = 1_000) -> Tick:
    m = last if mid is None else mid
    return Tick(
        venue=venue, symbol=symbol, seq=seq, ts_exchange_us=arrival_us - 10,
        ts_arrival_us=arrival_us, last=last, last_size=size,
        bids=[PriceLevel(price=m - 1 - i, size=10 + i, orders=1) for i in range(depth)],
        asks=[PriceLevel(price=m + 1 + i, size=20 + i, orders=1) for i in range(depth)],
        vol=vol, oi=oi, flags=TRADE if trade else 0, price_decimals=2,
    )


def rec(t: Tick, sseq: int = 0, t_in: float = 0.0) -> TickRec:
    # With its payload, as ingest makes it (the emitted entry is built from those bytes).
    return TickRec(f"{t.venue}.{t.symbol}", t, sseq, t_in, raw=t.SerializeToString())


class Routed:
    """Makes routed batches the way ingest + shard would."""

    def __init__(self, **shard_options: object) -> None:
        self.router = Router(make_config(Shard, dict(shard_options)))
        self.sseq = 0

    def batch(self, ticks: list[Tick], t_in: float = 0.0) -> Batch:
        recs = []
        for t in ticks:
            self.sseq += 1
            r = rec(t, self.sseq, t_in)
            r.route = self.router.route(r.key)
            recs.append(r)
        return Batch(recs, self.sseq)
