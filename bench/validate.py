"""What the door validator costs per tick: ingest's decode with and without the bounds.

    python bench/validate.py                 # 5,000 symbols, 200k ticks, 7 rounds
    python bench/validate.py --ticks 100000 --rounds 5

The tape is the one ``bench/aggregator.py`` replays (5 levels a side, 35 % trades), wrapped as
JetStream deliveries (reply subjects carry the stored time). Each round times
``decode_messages`` over every tick in batches of 1,024, once without a validator and once with
the default ``TickBounds``, alternating which goes first, so a busy machine slows both alike;
medians of the rounds are reported, with the validator's share of the decode and what it means
in cores at 4k and 40k ticks/s. Results: bench/results/validate.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _aggbench import env_note, save

from xypipe._degrade import LevelWatch
from xypipe._log import get_logger
from xypipe._md.validate import TickBounds, TickValidator
from xypipe._metrics import Metrics
from xypipe._publisher import MarketSim
from xypipe._stage import StageContext
from xypipe._stages.ingest import BadSourceCounter, decode_messages


class Delivery:
    __slots__ = ("data", "reply", "seq", "subject")

    def __init__(self, subject: str, data: bytes, reply: str) -> None:
        self.subject = subject
        self.data = data
        self.reply = reply
        self.seq = None


def deliveries(symbols: int, ticks: int) -> tuple[list[list[Delivery]], int]:
    now_us = time.time_ns() // 1000
    sim = MarketSim(symbols, seed=1)
    out: list[Delivery] = []
    for i in range(ticks):
        t = sim.next_tick(now_us - 50)
        reply = f"$JS.ACK.XY_SRC.bench.1.{i + 1}.{i + 1}.{now_us * 1000}.{ticks - i - 1}"
        out.append(Delivery(f"xy.src.tick.{t.venue}.{t.symbol}", t.SerializeToString(), reply))
    return [out[i:i + 1024] for i in range(0, len(out), 1024)], now_us


def timed(batches: list[list[Delivery]], now_us: int, door: TickValidator | None) -> float:
    ctx = StageContext("bench", "ingest", None, None, LevelWatch(), Metrics(),
                       get_logger("bench"))
    bad = BadSourceCounter(ctx, per_s=5)
    n = 0
    t0 = time.perf_counter()
    for batch in batches:
        n += len(decode_messages(batch, 0.0, bad, door, now_us))
    took = time.perf_counter() - t0
    if n != sum(len(b) for b in batches):
        raise SystemExit(f"the validator rejected {sum(len(b) for b in batches) - n} genuine "
                         f"ticks: the bench would measure the wrong thing")
    return took


def main(args: argparse.Namespace) -> None:
    batches, now_us = deliveries(args.symbols, args.ticks)
    n = args.ticks
    plain: list[float] = []
    checked: list[float] = []
    for r in range(args.rounds):
        order = [False, True] if r % 2 == 0 else [True, False]
        for with_door in order:
            door = TickValidator(TickBounds()) if with_door else None
            took = timed(batches, now_us, door)
            (checked if with_door else plain).append(took / n * 1e6)
        print(f"round {r + 1}: decode {plain[-1]:.2f} us/tick, decode + validate "
              f"{checked[-1]:.2f} us/tick")
    p, c = statistics.median(plain), statistics.median(checked)
    doc: dict[str, Any] = {
        "symbols": args.symbols, "ticks": n, "rounds": args.rounds,
        "decode_us_per_tick": p, "decode_validate_us_per_tick": c,
        "validate_us_per_tick": c - p, "ratio": c / p,
        "cores_at_4k": (c - p) * 4000 / 1e6, "cores_at_40k": (c - p) * 40_000 / 1e6,
        "env": env_note(),
    }
    lines = [
        f"# Door validator cost, {args.symbols:,} symbols, {n:,} ticks (medians of "
        f"{args.rounds} rounds)", "",
        "| decode µs/tick | decode + validate µs/tick | validator µs/tick | ratio | "
        "core share at 4k / 40k ticks/s |",
        "|---:|---:|---:|---:|---:|",
        f"| {p:.2f} | {c:.2f} | {c - p:.2f} | {c / p:.2f} | "
        f"{doc['cores_at_4k'] * 100:.1f} % / {doc['cores_at_40k'] * 100:.1f} % |", "",
        "Decode = ingest's `decode_messages` (protobuf decode, subject checks, records); the "
        "validator reads every size and price of 5 levels a side.",
        f"Machine: {doc['env']}",
    ]
    table = "\n".join(lines)
    print(table)
    save("validate", doc, table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=5000)
    ap.add_argument("--ticks", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    main(ap.parse_args())
