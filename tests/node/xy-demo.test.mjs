// The demo page's pure logic (ui-static/demo-core.js): the rolling latency window, sample
// rings, live top movers and the watchlists' sort order.
// Run: node --test tests/node/
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  RollingHistogram, Ring, drawDue, nextSort, rowComparator, sortValues, topMovers, visibleRows,
} from "../../ui-static/demo-core.js";

function st(symbol, over = {}) {
  return {
    venue: "X", symbol, last: 100, vol: 0, oi: 0, totalTrades: 0, priceDecimals: 2,
    bids: [{ price: 99, size: 1 }], asks: [{ price: 101, size: 1 }], ...over,
  };
}

// ---------------------------------------------------------------------------- latency window

test("the latency window gives percentiles of the samples it holds, to half a bin", () => {
  const h = new RollingHistogram({ windowMs: 5000, slotMs: 500, binMs: 0.5, maxMs: 2000 });
  for (let i = 1; i <= 100; i++) h.add(i, 1000);
  const p = h.percentiles(1000, [50, 95, 99]);
  assert.equal(p.n, 100);
  assert.ok(Math.abs(p.p50 - 50) <= 0.5, `p50 ${p.p50}`);
  assert.ok(Math.abs(p.p95 - 95) <= 0.5, `p95 ${p.p95}`);
  assert.ok(Math.abs(p.p99 - 99) <= 0.5, `p99 ${p.p99}`);
});

test("samples older than the window drop out, and their slots are reused", () => {
  const h = new RollingHistogram({ windowMs: 2000, slotMs: 500 });
  h.add(500, 0); // slow, long ago
  for (let i = 0; i < 10; i++) h.add(10, 1900);
  assert.equal(h.percentiles(1900, [50]).n, 11);
  assert.ok(h.percentiles(1900, [99]).p99 > 400, "the old sample is still inside the window");
  const later = h.percentiles(2100, [50, 99]);
  assert.equal(later.n, 10, "the slot of t=0 left the window at 2000 ms");
  assert.ok(later.p99 < 11);
  h.add(20, 2100); // reuses the slot of t=0 (same ring position)
  assert.equal(h.percentiles(2100, [50]).n, 11);
  assert.equal(h.percentiles(99_999, [50]).p50, null, "nothing in the window: no value");
});

test("latencies above the range read as the range's top, below zero as zero", () => {
  const h = new RollingHistogram({ binMs: 1, maxMs: 100 });
  h.add(5000, 0);
  h.add(-3, 0);
  const p = h.percentiles(0, [50, 99]);
  assert.equal(p.p50, 0.5);
  assert.equal(p.p99, 100);
});

test("a ring keeps the last values pushed", () => {
  const r = new Ring(3);
  for (const v of [1, 2, 3, 4, 5]) r.push(v);
  assert.deepEqual([...r.values()].sort(), [3, 4, 5]);
  r.clear();
  assert.equal(r.values().length, 0);
});

// ---------------------------------------------------------------------------- top movers

test("top movers rank the live states of every group, so later deltas move them", () => {
  const books = new Map([
    ["fx", new Map([["X:A", st("A", { vol: 10 })], ["X:B", st("B", { vol: 30 })]])],
    ["eq", new Map([["X:C", st("C", { vol: 20 })], ["X:D", st("D", { vol: 5 })]])],
  ]);
  const names = (top) => top.map((m) => `${m.group}/${m.symbol}=${m.value}`);
  assert.deepEqual(names(topMovers(books, "vol", 3)), ["fx/B=30", "eq/C=20", "fx/A=10"]);
  books.get("eq").set("X:D", st("D", { vol: 50 })); // a delta: D traded
  assert.deepEqual(names(topMovers(books, "vol", 2)), ["eq/D=50", "fx/B=30"]);
  assert.deepEqual(topMovers(books, "vol", 0), []);
});

test("top movers by trades, oi, last, and change from the snapshot's last by absolute value", () => {
  const books = new Map([["g", new Map([
    ["X:A", st("A", { totalTrades: 3, oi: 9, last: 105 })],
    ["X:B", st("B", { totalTrades: 7, oi: 1, last: 90 })],
    ["X:C", st("C", { totalTrades: 5, oi: 4, last: 100 })],
  ])]]);
  const syms = (by, baseline) => topMovers(books, by, 3, baseline).map((m) => m.symbol).join("");
  assert.equal(syms("trades"), "BCA");
  assert.equal(syms("oi"), "ACB");
  assert.equal(syms("last"), "ACB");
  const baseline = new Map([["X:A", 100], ["X:B", 100], ["X:C", 100]]);
  const change = topMovers(books, "change", 3, baseline);
  assert.deepEqual(change.map((m) => [m.symbol, m.value]), [["B", -10], ["A", 5], ["C", 0]]);
  assert.equal(syms("nonsense"), syms("vol"), "an unknown ranking falls back to volume");
});

// ---------------------------------------------------------------------------- sorting

test("watchlist rows sort by real prices across decimals, empty sides last, ties by key", () => {
  const rows = [
    { key: "X:A", vals: sortValues(st("A", { last: 12345, priceDecimals: 2 }), 12000) }, // 123.45
    { key: "X:B", vals: sortValues(st("B", { last: 1234, priceDecimals: 1, bids: [] }), 1234) }, // 123.4
    { key: "X:C", vals: sortValues(st("C", { last: 99999, priceDecimals: 3 }), 99999) }, // 99.999
    { key: "X:D", vals: sortValues(st("D", { last: 12345, priceDecimals: 2 }), 12345) },
  ];
  const order = (col, dir) => rows.slice().sort(rowComparator(col, dir)).map((r) => r.key.slice(2)).join("");
  assert.equal(order(1, -1), "ADBC");
  assert.equal(order(1, 1), "CBAD");
  assert.equal(order(2, -1), "ABCD", "change: A +3.45, the others 0 (ties by key)");
  assert.equal(order(3, 1), "CADB", "bids 0.099, 0.99, 0.99; B has none: last either way");
  assert.equal(order(3, -1), "ADCB");
  assert.equal(order(0, -1), "DCBA");
});

test("a click on the sorted column flips it; a new column starts ascending for names only", () => {
  assert.deepEqual(nextSort({ col: 0, dir: 1 }, 0), { col: 0, dir: -1 });
  assert.deepEqual(nextSort({ col: 0, dir: 1 }, 5), { col: 5, dir: -1 });
  assert.deepEqual(nextSort({ col: 5, dir: -1 }, 5), { col: 5, dir: 1 });
  assert.deepEqual(nextSort({ col: 5, dir: 1 }, 0), { col: 0, dir: 1 });
});

// ---------------------------------------------------------------------------- drawing

test("rows in view: the scrolled window under the header, with overscan, clamped", () => {
  // 20 px rows under a 24 px header, a 200 px tall view.
  assert.deepEqual(visibleRows(0, 200, 24, 20, 100, 0), [0, 8]);
  assert.deepEqual(visibleRows(0, 200, 24, 20, 100, 2), [0, 10]);
  assert.deepEqual(visibleRows(1000, 200, 24, 20, 100, 0), [48, 58]);
  assert.deepEqual(visibleRows(1000, 200, 24, 20, 50, 0), [48, 49], "clamped to the last row");
  assert.deepEqual(visibleRows(0, 200, 24, 0, 7), [0, 6], "not measured yet: every row");
  assert.deepEqual(visibleRows(0, 200, 24, 20, 0), [0, -1], "no rows");
});

test("a tab draws every frame at 60 fps, every other one at 30, none at 0", () => {
  const frames = Array.from({ length: 12 }, (_, i) => i * 16.7 + (i % 3 === 1 ? 1.5 : 0)); // jittered vsync
  const drawn = (fps) => {
    let last = -Infinity;
    return frames.filter((ts) => (drawDue(ts, last, fps) ? ((last = ts), true) : false)).length;
  };
  assert.equal(drawn(60), 12);
  assert.equal(drawn(30), 6);
  assert.equal(drawn(0), 0);
});
