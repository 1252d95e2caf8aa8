"""A market-data producer of another contract version, as its own process.

Publishes what an aggregator publishes — a snapshot of a group into the snapshot stream, then
consecutive deltas on ``xy.md.tick.GROUP`` — encoded with a generated contract of another
version (``proto_versions``: ``vnext`` adds ``producer_note`` everywhere, ``vprev`` lacks
``fence``). The state is a pure function of the sequence, so two runs continue one stream; every
entry carries the canonical checksum, computed over the fields every version shares.

    python md_publisher.py NATS_URL PYDIR VERSION GROUP --first 1 --count 10 [--snapshot]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import trio

from xypipe._md.book import state_checksum
from xypipe._nats import connect
from xypipe.contracts import SymbolState

EPOCH = 7
SYMBOLS = 3
SNAPSHOT_STREAM = "XY_MD_SNAPSHOT"


def note(kind: str, seq: int) -> str:
    return f"{kind} #{seq} from a newer producer"


def states(md, levels, seq: int, version: str) -> list:  # type: ignore[no-untyped-def, type-arg]
    out = []
    for i in range(SYMBOLS):
        last = 1000 + 3 * seq + i
        s = md.SymbolState(venue="XTST", symbol=f"S{i}", last=last, vol=10 * seq, seq=seq,
                           ts_arrival_us=int(time.time() * 1e6), window_trades=1,
                           window_volume=10, window_high=last, window_low=last, window_ticks=1)
        s.bids.extend(levels.PriceLevel(price=last - k - 1, size=10 + k) for k in range(3))
        s.asks.extend(levels.PriceLevel(price=last + k + 1, size=10 + k) for k in range(3))
        # The checksum covers the fields every version shares: computed on the v1 reading.
        s.checksum = state_checksum(SymbolState.FromString(s.SerializeToString()))
        if version == "vnext":
            s.producer_note = note("entry", seq)
        out.append(s)
    return out


async def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    for name in ("nats", "pydir", "version", "group"):
        p.add_argument(name)
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--snapshot", action="store_true", help="first a snapshot at --first - 1")
    args = p.parse_args(argv)
    sys.path.insert(0, args.pydir)
    md = importlib.import_module(f"xy.md.{args.version}.marketdata_pb2")
    levels = importlib.import_module(f"xy.md.{args.version}.tick_pb2")
    extra = {"producer_note": ""} if args.version == "vnext" else {}
    async with connect(args.nats, name=f"md-publisher-{args.version}") as nc:
        js = nc.jetstream()
        await js.ensure_stream(SNAPSHOT_STREAM, ["xy.md.snapshot.>"], max_msgs_per_subject=1,
                               storage="file")
        if args.snapshot:
            at = args.first - 1
            if extra:
                extra["producer_note"] = note("snapshot", at)
            snap = md.Snapshot(group=args.group, version=1, epoch=EPOCH, shard_seq={0: at},
                               shards=1, ts_emit_us=int(time.time() * 1e6),
                               symbols=states(md, levels, at, args.version), window_ms=33, **extra)
            await js.publish(f"xy.md.snapshot.{args.group}", snap.SerializeToString())
        for seq in range(args.first, args.first + args.count):
            if extra:
                extra["producer_note"] = note("delta", seq)
            d = md.Delta(group=args.group, shard=0, seq=seq, epoch=EPOCH,
                         ts_emit_us=int(time.time() * 1e6),
                         symbols=states(md, levels, seq, args.version), window_ms=33, **extra)
            nc.publish_nowait(f"xy.md.tick.{args.group}", d.SerializeToString())
        await nc.flush()


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
