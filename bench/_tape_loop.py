"""The replay benchmark's input for a tape: the tape replayed onto NATS at a speed, pass after
pass, for as long as the benchmark runs.

A tape is short (bench/data/demo-market.tape: 2 s) and a pass replayed twice would be all
duplicates to the aggregator (same sequences), so pass ``k`` moves every tick's ``seq`` on by
``k`` times its symbol's span on the tape (appended as a field, which overrides the earlier one:
no re-encoding): each symbol's sequence continues across passes, gap-free where the tape is.
Everything else is the tape's, byte for byte, retimed by :func:`xypipe._tape.replay_tape` (the
send time as ``ts_arrival_us``). Reference data goes out on the first pass only.

    python bench/_tape_loop.py NATS_URL TAPE SPEED
"""

from __future__ import annotations

import sys

import trio
import trio.lowlevel

from xypipe._errors import BridgeError
from xypipe._md.wire import varint_field, varint_tag
from xypipe._tape import TICK_PREFIX, Tape, TapeRecord, parse_speed, read_tape, replay_tape
from xypipe.contracts import Tick

_SEQ_TAG = varint_tag(Tick.DESCRIPTOR.fields_by_name["seq"].number)


def passes(tape: Tape) -> tuple[list[TapeRecord], list[tuple[TapeRecord, int, int]]]:
    """(reference records, (tick record, its seq, its symbol's span) for every tick)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    ticks: list[tuple[TapeRecord, int]] = []
    ref: list[TapeRecord] = []
    for r in tape:
        if not r.subject.startswith(TICK_PREFIX):
            ref.append(r)
            continue
        seq = Tick.FromString(r.data).seq
        first[r.subject] = min(seq, first.get(r.subject, seq))
        last[r.subject] = max(seq, last.get(r.subject, seq))
        ticks.append((r, seq))
    return ref, [(r, seq, last[r.subject] - first[r.subject] + 1) for r, seq in ticks]


def shifted(tape: Tape, ref: list[TapeRecord], ticks: list[tuple[TapeRecord, int, int]],
            k: int) -> Tape:
    out = [TapeRecord(r.t_us, r.subject, r.data + varint_field(_SEQ_TAG, seq + k * span))
           for r, seq, span in ticks]
    if k == 0:
        out = sorted([*ref, *out], key=lambda r: r.t_us)
    return Tape(tape.header, tuple(out), tape.path)


async def loop(url: str, path: str, speed_text: str) -> None:
    from xypipe._log import get_logger
    from xypipe._nats import connect
    from xypipe._stages._srcstream import SourceStream

    tape = read_tape(path)
    speed = parse_speed(speed_text)
    ref, ticks = passes(tape)
    async with connect(url, name="xypipe-bench-tape") as nc:
        await SourceStream().ensure(nc.jetstream(), owner=False, log=get_logger("bench"))
        k = 0
        while True:
            try:
                await replay_tape(nc, shifted(tape, ref, ticks, k), speed)
            except BridgeError:
                # NATS away (the benchmark kills it on purpose): the pass resumes from the
                # next one, as a live feed would after a drop.
                await trio.sleep(0.1)
            k += 1
            if speed is None:
                await trio.lowlevel.checkpoint()


if __name__ == "__main__":
    trio.run(loop, *sys.argv[1:4])
