"""Write ``proto/scenarios/merge.json``: the trade-safe merge of consecutive deltas.

The cases and their expected results are written out here by hand (never computed by the code
under test); this script only stamps every state with the checksum of its canonical fields, so
the vectors stay valid when a case is edited. Read by ``tests/contracts/test_merge_vectors.py``
(``xypipe._md.conflation.merge_deltas``) and ``tests/node/xy-merge.test.mjs``
(``ui-static/xy-core.js`` ``mergeDeltas`` and the worker's per-tab merge).

    .venv/bin/python scripts/gen_merge_vectors.py
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "proto" / "scenarios" / "merge.json"

ABOUT = (
    "Merging consecutive deltas of one (group, shard) stream into one (docs/protocol.md, "
    "'Deltas'): what one longer window would have produced. seq of the last, first_seq of "
    "the first (0 for a single delta that had none), window_ms summed, level and ts_emit_us of the "
    "last. Per symbol: removals first (an entry pending for a removed symbol goes, its removal "
    "stays; a symbol back after its removal keeps only its new entry and is no longer removed), "
    "then the newest state with the windows combined: window_trades/volume/ticks summed, "
    "window_high/low over the windows that traded, ts_arrival_us the oldest non-zero. Symbols in "
    "first-seen order. Every merged state keeps the checksum of its canonical fields (a trimmed "
    "one that of the full book). 'error': the merge is refused (empty, stream = mixed "
    "group/shard/epoch, gap). Read by tests/contracts/test_merge_vectors.py "
    "(xypipe._md.conflation.merge_deltas) and tests/node/xy-merge.test.mjs (ui-static/xy-core.js "
    "mergeDeltas and the worker's per-tab merge, xy-outlet.js). Written by "
    "scripts/gen_merge_vectors.py, which stamps the checksums."
)


def canonical(s: dict[str, Any], bids: list[list[int]], asks: list[list[int]]) -> str:
    parts = [s["venue"], s["symbol"], s["seq"], s["last"], s["last_size"], s["vol"], s["oi"],
             s["flags"], s["total_trades"]]
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts += bids[i][:2]
        if i < len(asks):
            parts += asks[i][:2]
    return ":".join(str(p) for p in parts)


def st(symbol: str, seq: int, *, last: int = 100, vol: int = 10, trades: int = 1,
       arrival: int = 0, high: int = 0, low: int = 0, wtrades: int = 0, wvol: int = 0,
       ticks: int = 1, bids: list[list[int]] | None = None, asks: list[list[int]] | None = None,
       trimmed_from: tuple[list[list[int]], list[list[int]]] | None = None) -> dict[str, Any]:
    """One state; ``trimmed_from`` = the full book a trimmed entry's checksum covers."""
    s: dict[str, Any] = {
        "venue": "X", "symbol": symbol, "seq": seq, "last": last, "last_size": 1, "vol": vol,
        "oi": 0, "flags": 1, "total_trades": trades,
        "bids": bids if bids is not None else [[last - 1, 5]],
        "asks": asks if asks is not None else [[last + 1, 5]],
        "ts_arrival_us": arrival, "window_high": high, "window_low": low,
        "window_trades": wtrades, "window_volume": wvol, "window_ticks": ticks,
    }
    full = trimmed_from or (s["bids"], s["asks"])
    s["checksum"] = zlib.crc32(canonical(s, *full).encode())
    if trimmed_from is not None:
        s["trimmed"] = True
    return s


def with_window(s: dict[str, Any], **window: int) -> dict[str, Any]:
    """``s`` (the newest state) as it stands merged: its canonical fields and checksum, the
    combined window fields."""
    names = {"arrival": "ts_arrival_us", "high": "window_high", "low": "window_low",
             "wtrades": "window_trades", "wvol": "window_volume", "ticks": "window_ticks"}
    return {**s, **{names[k]: v for k, v in window.items()}}


def delta(seq: int, symbols: list[dict[str, Any]], *, first_seq: int = 0, removed: list[str] = (),
          window_ms: int = 33, level: int = 0, ts: int = 0, shard: int = 0, epoch: int = 7,
          group: str = "g") -> dict[str, Any]:
    return {"group": group, "shard": shard, "epoch": epoch, "seq": seq, "first_seq": first_seq,
            "window_ms": window_ms, "level": level, "ts_emit_us": ts or 1_000_000 + seq,
            "removed": list(removed), "symbols": symbols}


def merged(seq: int, symbols: list[dict[str, Any]], *, first_seq: int, window_ms: int,
           removed: list[str] = (), level: int = 0, ts: int = 0) -> dict[str, Any]:
    return {"seq": seq, "first_seq": first_seq, "window_ms": window_ms, "level": level,
            "ts_emit_us": ts or 1_000_000 + seq, "removed": list(removed), "symbols": symbols}


def cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    a = st("A", 5, arrival=900, high=101, low=99, wtrades=1, wvol=3, ticks=2)
    out.append({"name": "one delta is itself", "deltas": [delta(5, [a])],
                "merged": merged(5, [a], first_seq=0, window_ms=33)})

    a1 = st("A", 10, last=100, vol=50, trades=5, arrival=1000, high=102, low=98, wtrades=2,
            wvol=20, ticks=3)
    a2 = st("A", 12, last=103, vol=60, trades=7, arrival=2000, high=104, low=101, wtrades=2,
            wvol=10, ticks=2, bids=[[102, 4], [101, 9]], asks=[[104, 3]])
    out.append({
        "name": "two windows of a symbol: the newest state, trades and volume summed, high/low "
                "over both, the oldest arrival",
        "deltas": [delta(1, [a1]), delta(2, [a2])],
        "merged": merged(2, [with_window(a2, arrival=1000, high=104, low=98, wtrades=4, wvol=30,
                                         ticks=5)], first_seq=1, window_ms=66)})

    t1 = st("A", 3, arrival=500, high=105, low=99, wtrades=2, wvol=7, ticks=2)
    q2 = st("A", 4, last=101, arrival=600, high=0, low=0, wtrades=0, wvol=0, ticks=1)
    out.append({
        "name": "a window without trades keeps the high/low of the one that had them",
        "deltas": [delta(8, [t1]), delta(9, [q2])],
        "merged": merged(9, [with_window(q2, arrival=500, high=105, low=99, wtrades=2, wvol=7,
                                         ticks=3)], first_seq=8, window_ms=66)})

    q1 = st("A", 3, arrival=500, high=0, low=0, wtrades=0, wvol=0, ticks=4)
    t2 = st("A", 4, last=110, arrival=600, high=110, low=110, wtrades=1, wvol=2, ticks=1)
    out.append({
        "name": "a window with trades after one without takes its own high/low",
        "deltas": [delta(8, [q1]), delta(9, [t2])],
        "merged": merged(9, [with_window(t2, arrival=500, high=110, low=110, wtrades=1, wvol=2,
                                         ticks=5)], first_seq=8, window_ms=66)})

    e1a = st("A", 1, arrival=0)
    e1b = st("B", 1, arrival=3000)
    e2a = st("A", 2, last=102, arrival=5000)
    e2b = st("B", 2, last=102, arrival=0)
    out.append({
        "name": "an arrival stamp of 0 (none) never wins: the oldest stamped tick does",
        "deltas": [delta(1, [e1a, e1b]), delta(2, [e2a, e2b])],
        "merged": merged(2, [with_window(e2a, arrival=5000, ticks=2),
                             with_window(e2b, arrival=3000, ticks=2)],
                         first_seq=1, window_ms=66)})

    fa1 = st("A", 1, arrival=10, high=100, low=100, wtrades=1, wvol=1)
    fb1 = st("B", 1, arrival=11, high=200, low=200, wtrades=1, wvol=2, last=200)
    fc2 = st("C", 1, arrival=20, last=300)
    fa2 = st("A", 2, arrival=21, last=97, high=97, low=95, wtrades=3, wvol=6, ticks=3)
    fb3 = st("B", 2, arrival=30, last=201)
    out.append({
        "name": "three deltas, several symbols: first-seen order, each symbol merged on its own",
        "deltas": [delta(4, [fa1, fb1], window_ms=16), delta(5, [fc2, fa2], window_ms=17),
                   delta(6, [fb3], window_ms=16)],
        "merged": merged(6, [with_window(fa2, arrival=10, high=100, low=95, wtrades=4, wvol=7,
                                         ticks=4),
                             with_window(fb3, arrival=11, high=200, low=200, wtrades=1, wvol=2,
                                         ticks=2),
                             fc2], first_seq=4, window_ms=49)})

    ga = st("A", 1)
    gb = st("B", 1, arrival=40)
    gb2 = st("B", 2, arrival=50, last=105)
    out.append({
        "name": "a symbol removed after its entry: the entry goes, the removal stays",
        "deltas": [delta(1, [ga, gb]), delta(2, [gb2], removed=["X.A"])],
        "merged": merged(2, [with_window(gb2, arrival=40, ticks=2)], first_seq=1, window_ms=66,
                         removed=["X.A"])})

    ha = st("A", 1, arrival=60, high=100, low=100, wtrades=1, wvol=4)
    ha3 = st("A", 3, arrival=80, last=120, high=120, low=120, wtrades=1, wvol=1)
    out.append({
        "name": "a symbol removed and back: only its new entry, no longer removed",
        "deltas": [delta(1, [ha]), delta(2, [], removed=["X.A"]), delta(3, [ha3])],
        "merged": merged(3, [ha3], first_seq=1, window_ms=99)})

    ia = st("A", 1)
    out.append({
        "name": "the removal of a symbol never seen in the merge stays",
        "deltas": [delta(1, [], removed=["X.Z"]), delta(2, [ia])],
        "merged": merged(2, [ia], first_seq=1, window_ms=66, removed=["X.Z"])})

    ja = st("A", 6)
    jb = st("A", 7, last=99)
    out.append({
        "name": "an already merged delta continued: first_seq of the first",
        "deltas": [delta(6, [ja], first_seq=4, window_ms=99), delta(7, [jb])],
        "merged": merged(7, [with_window(jb, ticks=2)], first_seq=4, window_ms=132)})
    out.append({
        "name": "a single merged delta keeps its first_seq",
        "deltas": [delta(6, [ja], first_seq=4, window_ms=99)],
        "merged": merged(6, [ja], first_seq=4, window_ms=99)})

    deep = ([[99, 5], [98, 6], [97, 7]], [[101, 5], [102, 6]])
    ka = st("A", 1, bids=deep[0], asks=deep[1], wtrades=1, high=100, low=100, wvol=5)
    kb = st("A", 2, last=100, bids=[[100, 1]], asks=[[101, 2]],
            trimmed_from=([[100, 1], [98, 6], [97, 7]], [[101, 2], [102, 6]]))
    out.append({
        "name": "a trimmed newer entry: the merged entry is trimmed, its checksum the full book's",
        "deltas": [delta(1, [ka]), delta(2, [kb], level=2)],
        "merged": merged(2, [with_window(kb, high=100, low=100, wtrades=1, wvol=5, ticks=2)],
                         first_seq=1, window_ms=66, level=2)})

    la = st("A", 1)
    lb = st("B", 1)
    out.append({
        "name": "level and ts_emit_us of the last delta",
        "deltas": [delta(1, [la], level=1, ts=500), delta(2, [lb], level=0, ts=900)],
        "merged": merged(2, [la, lb], first_seq=1, window_ms=66, level=0, ts=900)})

    x = st("A", 1)
    out += [
        {"name": "no delta", "deltas": [], "error": "empty"},
        {"name": "a gap cannot be merged", "deltas": [delta(1, [x]), delta(3, [x])],
         "error": "gap"},
        {"name": "a merged delta that skips a sequence is a gap",
         "deltas": [delta(3, [x]), delta(6, [x], first_seq=5)], "error": "gap"},
        {"name": "an overlapping delta is not the next", "deltas": [delta(3, [x]),
                                                                   delta(4, [x], first_seq=3)],
         "error": "gap"},
        {"name": "another shard", "deltas": [delta(1, [x]), delta(2, [x], shard=1)],
         "error": "stream"},
        {"name": "another epoch", "deltas": [delta(1, [x]), delta(2, [x], epoch=8)],
         "error": "stream"},
        {"name": "another group", "deltas": [delta(1, [x]), delta(2, [x], group="h")],
         "error": "stream"},
    ]
    return out


def main() -> None:
    doc = {"about": ABOUT, "merge": cases()}
    lines = ["{", f'  "about": {json.dumps(doc["about"], ensure_ascii=False)},', '  "merge": [']
    items = [f"    {json.dumps(c, ensure_ascii=False)}" for c in doc["merge"]]
    lines.append(",\n".join(items))
    lines += ["  ]", "}", ""]
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT} ({len(doc['merge'])} cases)")


if __name__ == "__main__":
    main()
