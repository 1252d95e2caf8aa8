// The trade-safe merge of consecutive deltas, from the vectors the Python side reads too
// (proto/scenarios/merge.json; tests/contracts/test_merge_vectors.py runs merge_deltas, the
// gateway's merge): through xy-core.js mergeDeltas, and through the worker's own per-tab merge
// (xy-outlet.js), which is what a busy or slower tab is sent.
// Run: node --test tests/node/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { mergeDeltas, removedKey, verifyChecksum } from "../../ui-static/xy-core.js";
import { Outlet } from "../../ui-static/xy-outlet.js";

const vectors = JSON.parse(readFileSync(new URL("../../proto/scenarios/merge.json", import.meta.url), "utf8")).merge;
const ERRORS = { empty: /expected at least one delta/, stream: /expected deltas of one stream/, gap: /a gap cannot be merged/ };

/** A vector's state as the worker holds one (plainState's field names). */
function plain(v) {
  const level = ([price, size, orders = 0]) => ({ price, size, orders });
  return {
    venue: v.venue, symbol: v.symbol, seq: v.seq, tsExchangeUs: 0, tsArrivalUs: v.ts_arrival_us, last: v.last,
    lastSize: v.last_size, bids: v.bids.map(level), asks: v.asks.map(level), vol: v.vol, oi: v.oi, flags: v.flags,
    priceDecimals: 0, windowHigh: v.window_high, windowLow: v.window_low, windowTrades: v.window_trades,
    windowVolume: v.window_volume, windowTicks: v.window_ticks, totalTrades: v.total_trades,
    checksum: v.checksum, trimmed: Boolean(v.trimmed),
  };
}

function delta(v) {
  return {
    group: v.group, shard: v.shard, epoch: v.epoch, seq: v.seq, firstSeq: v.first_seq, windowMs: v.window_ms,
    level: v.level, tsEmitUs: v.ts_emit_us, removed: v.removed, symbols: v.symbols.map(plain),
  };
}

function checkStates(got, want) {
  assert.deepEqual(got, want.map(plain), "merged states, in first-seen order");
  for (const s of got) if (!s.trimmed) assert.equal(verifyChecksum(s), "ok", `${s.symbol}: checksum still valid`);
}

for (const v of vectors) {
  test(`mergeDeltas: ${v.name}`, () => {
    const deltas = v.deltas.map(delta);
    if (v.error) {
      assert.throws(() => mergeDeltas(deltas), ERRORS[v.error]);
      return;
    }
    const m = mergeDeltas(deltas);
    const w = v.merged;
    assert.deepEqual([m.seq, m.firstSeq, m.windowMs, m.level, m.tsEmitUs], [w.seq, w.first_seq, w.window_ms, w.level, w.ts_emit_us]);
    assert.deepEqual(m.removed, w.removed);
    checkStates(m.symbols, w.symbols);
  });
}

for (const v of vectors.filter((x) => x.merged)) {
  test(`a busy tab is sent the merge: ${v.name}`, () => {
    // Each vector delta is one batch of the hub (what BatchMerger makes of one frame); the tab
    // is busy with an earlier delivery while they arrive, and takes them in as one.
    const outlet = new Outlet();
    outlet.setTab("t", { acks: true });
    outlet.addView("t", "g", 0, 0);
    const first = outlet.offer([{ id: 1, group: "g", snapshot: null, symbols: [], removed: [], deltas: 1, minArrivalUs: 0, seqs: {} }], 0);
    assert.equal(first.length, 1, "the first batch goes to the idle tab at once");
    v.deltas.forEach((d, i) => {
      const batch = {
        id: i + 2, group: "g", snapshot: null, symbols: d.symbols.map(plain), removed: d.removed.map(removedKey),
        deltas: 1, minArrivalUs: 0, seqs: { [d.shard]: d.seq },
      };
      assert.deepEqual(outlet.offer([batch], 1 + i), [], "held while the tab is busy");
    });
    const [delivery] = outlet.ack("t", 10);
    const [b] = delivery.batches;
    assert.equal(b.deltas, v.deltas.length);
    assert.deepEqual(b.removed, v.merged.removed.map(removedKey));
    checkStates(b.symbols, v.merged.symbols);
  });
}
