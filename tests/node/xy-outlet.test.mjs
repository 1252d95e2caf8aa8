// The hub's delivery to tabs (ui-static/xy-outlet.js): tiers, flow control, hidden tabs, and
// the draw plan. Pure: fed batches, acks and times. Run: node --test tests/node/
import { test } from "node:test";
import assert from "node:assert/strict";

import { DRAW_POLICY, Outlet, TIERS, planDraw } from "../../ui-static/xy-outlet.js";

let ids = 0;
function st(symbol, seq, over = {}) {
  return {
    venue: "X", symbol, seq, tsArrivalUs: 1000 + seq, last: 100 + seq, lastSize: 1, bids: [], asks: [], vol: seq,
    oi: 0, flags: 0, priceDecimals: 0, windowHigh: 0, windowLow: 0, windowTrades: 0, windowVolume: 0,
    windowTicks: 1, totalTrades: seq, checksum: 0, trimmed: false, ...over,
  };
}
function batch(group, symbols, { removed = [], snapshot = null } = {}) {
  ids += 1;
  return { id: ids, group, snapshot, symbols, removed, deltas: 1, minArrivalUs: symbols[0]?.tsArrivalUs ?? 0, seqs: { 0: ids } };
}
const view = (group) => batch(group, [], { snapshot: { group, symbols: [st("V", 0)], synthetic: true } });
const symbolsOf = (d) => d.batches.flatMap((b) => b.symbols.map((s) => [s.symbol, s.seq]));

function outlet(opts = {}) {
  const o = new Outlet({ viewOf: () => null, ...opts });
  return o;
}

test("an idle tab gets a batch as it arrives, the very batch every idle tab gets", () => {
  const o = outlet();
  o.setTab("a", { acks: true });
  o.setTab("b", { acks: true });
  o.addView("a", "fx", TIERS.live, 0);
  o.addView("b", "fx", TIERS.live, 0);
  const b1 = batch("fx", [st("AAA", 1)]);
  const out = o.offer([b1], 1);
  assert.deepEqual(out.map((d) => d.tab), ["a", "b"]);
  assert.equal(out[0].batches[0].symbols, b1.symbols, "shared, not copied");
  assert.equal(out[0].batches[0].everyMs, 0);
  assert.equal(o.nextAt(), null, "nothing waits");
});

test("one frame's batches of several groups go to a tab in one delivery", () => {
  const o = outlet();
  o.setTab("a", { acks: true });
  o.addView("a", "fx", 0, 0);
  o.addView("a", "eq", 0, 0);
  const out = o.offer([batch("fx", [st("AAA", 1)]), batch("eq", [st("IBM", 1)]), batch("other", [st("Z", 1)])], 1);
  assert.equal(out.length, 1);
  assert.deepEqual(out[0].batches.map((b) => b.group), ["fx", "eq"]);
});

test("while a tab is busy what arrives is merged trade-safely and goes with its ack", () => {
  const o = outlet();
  o.setTab("a", { acks: true });
  o.addView("a", "fx", 0, 0);
  assert.equal(o.offer([batch("fx", [st("AAA", 1)])], 1).length, 1);
  assert.deepEqual(o.offer([batch("fx", [st("AAA", 2, { windowTrades: 2, windowVolume: 5, windowHigh: 9, windowLow: 7 })])], 2), []);
  assert.deepEqual(o.offer([batch("fx", [st("BBB", 3), st("AAA", 3, { windowTrades: 1, windowVolume: 4, windowHigh: 8, windowLow: 6 })])], 3), []);
  const [d] = o.ack("a", 4);
  assert.deepEqual(symbolsOf(d), [["AAA", 3], ["BBB", 3]]);
  const aaa = d.batches[0].symbols[0];
  assert.deepEqual([aaa.windowTrades, aaa.windowVolume, aaa.windowHigh, aaa.windowLow, aaa.windowTicks], [3, 9, 9, 6, 2]);
  assert.equal(aaa.tsArrivalUs, 1002, "latency counts from the oldest tick held");
  assert.equal(d.batches[0].deltas, 2);
  assert.equal(o.stats.coalesced, 1);
  assert.deepEqual(o.ack("a", 5), [], "nothing more pending");
});

test("with room for two deliveries in flight a tab is sent the next batch before it acknowledges the first", () => {
  const o = outlet({ maxInFlight: 2 });
  o.setTab("a", { acks: true });
  o.addView("a", "fx", 0, 0);
  assert.equal(o.offer([batch("fx", [st("AAA", 1)])], 1).length, 1);
  assert.equal(o.offer([batch("fx", [st("AAA", 2)])], 2).length, 1, "second in flight");
  assert.deepEqual(o.offer([batch("fx", [st("AAA", 3)])], 3), [], "no room: merged");
  assert.deepEqual(o.offer([batch("fx", [st("AAA", 4)])], 4), []);
  const [d] = o.ack("a", 5);
  assert.deepEqual(symbolsOf(d), [["AAA", 4]]);
  assert.equal(d.batches[0].deltas, 2);
});

test("a snapshot among the held batches replaces what was merged before it", () => {
  const o = outlet();
  o.setTab("a", { acks: true });
  o.addView("a", "fx", 0, 0);
  o.offer([batch("fx", [st("AAA", 1)])], 1);
  o.offer([batch("fx", [st("AAA", 2)])], 2);
  o.offer([batch("fx", [], { snapshot: { group: "fx", symbols: [st("ZZZ", 5)] } })], 3);
  o.offer([batch("fx", [st("ZZZ", 6)], { removed: ["X:OLD"] })], 4);
  const [b] = o.ack("a", 5)[0].batches;
  assert.equal(b.snapshot.symbols[0].symbol, "ZZZ");
  assert.deepEqual(b.symbols.map((s) => s.seq), [6]);
  assert.deepEqual(b.removed, ["X:OLD"]);
});

test("a slower tier gets one merged batch per interval from the same stream as a live view", () => {
  const o = outlet();
  o.setTab("a", { acks: true });
  o.addView("a", "fx", TIERS.live, 0);
  o.addView("a", "fx", TIERS.overview, 0);
  let t = 0;
  const sent = { 0: [], 250: [] };
  const take = (ds) => {
    for (const d of ds) {
      for (const b of d.batches) sent[b.everyMs].push(b);
      o.ack(d.tab, t); // the tab takes each delivery in at once
    }
  };
  for (let i = 1; i <= 30; i++) {
    t = i * 20;
    take(o.offer([batch("fx", [st("AAA", i)])], t));
    const next = o.nextAt();
    if (next !== null && next <= t + 20) take(o.due(next));
  }
  assert.equal(sent[0].length, 30, "the live view gets every batch");
  assert.ok(sent[250].length >= 2 && sent[250].length <= 3, `overview batches: ${sent[250].length}`);
  const total = sent[250].reduce((n, b) => n + b.deltas, 0);
  assert.ok(total >= 24, "each overview batch holds every delta since the previous one");
  assert.equal(sent[250].at(-1).symbols[0].windowTicks, sent[250].at(-1).deltas, "ticks accumulated");
});

test("a hidden tab is sent nothing and merges nothing; shown again it gets the current state at once", () => {
  const o = new Outlet({ viewOf: (g) => view(g) });
  o.setTab("a", { acks: true, visible: false });
  o.addView("a", "fx", 0, 0);
  assert.deepEqual(o.offer([batch("fx", [st("AAA", 1)])], 1), []);
  assert.deepEqual(o.offer([batch("fx", [st("AAA", 2)])], 2), []);
  assert.equal(o.nextAt(), null, "no timer for a hidden tab");
  assert.equal(o.stats.coalesced, 0);
  const [d] = o.setVisible("a", true, 3);
  assert.equal(d.batches.length, 1);
  assert.ok(d.batches[0].snapshot.synthetic, "the book's current view, not a replay");
  o.ack("a", 4);
  assert.equal(o.offer([batch("fx", [st("AAA", 3)])], 5).length, 1, "live again");
  assert.deepEqual(o.setVisible("a", false, 6), []);
  assert.deepEqual(o.offer([batch("fx", [st("AAA", 4)])], 7), []);
});

test("a new view is sent the group's current state first", () => {
  const o = new Outlet({ viewOf: (g) => view(g) });
  o.setTab("a", { acks: true });
  const [d] = o.addView("a", "fx", 0, 0);
  assert.ok(d.batches[0].snapshot);
  const none = new Outlet({ viewOf: () => null });
  none.setTab("a", { acks: true });
  assert.deepEqual(none.addView("a", "fx", 0, 0), [], "nothing held yet: nothing sent");
  assert.equal(none.offer([batch("fx", [st("AAA", 1)])], 1).length, 1);
});

test("a delivery never acknowledged stops holding the tab after ackTimeoutMs; one from an older client after batchMs", () => {
  const o = outlet({ ackTimeoutMs: 1000, batchMs: 16 });
  o.setTab("a", { acks: true });
  o.setTab("old", { acks: false });
  o.addView("a", "fx", 0, 0);
  o.addView("old", "fx", 0, 0);
  o.offer([batch("fx", [st("AAA", 1)])], 0);
  assert.deepEqual(o.offer([batch("fx", [st("AAA", 2)])], 5), []);
  assert.equal(o.nextAt(), 16, "the older client is free again after batchMs");
  assert.deepEqual(o.due(16).map((d) => d.tab), ["old"]);
  assert.deepEqual(o.due(999), []);
  assert.deepEqual(o.due(1000).map((d) => d.tab), ["a"]);
  assert.equal(o.stats.ackTimeouts, 1);
});

test("a view goes with its tier; the group's reference goes with the tab's last view of it", () => {
  const o = outlet();
  o.setTab("a", { acks: true });
  o.addView("a", "fx", 0, 0);
  o.addView("a", "fx", 250, 0);
  assert.equal(o.removeView("a", "fx", 0), false, "the overview view still holds fx");
  assert.equal(o.removeView("a", "fx", 0), false, "not held: nothing removed");
  assert.equal(o.removeView("a", "fx", 250), true);
  o.removeTab("a");
  assert.deepEqual(o.offer([batch("fx", [st("AAA", 1)])], 1), []);
});

// ---------------------------------------------------------------------------- draw plan

const tabs = (...specs) => new Map(specs.map(([tab, visible, frameP95 = 16.7]) => [tab, { visible, frameP95 }]));
const fps = (plan) => Object.fromEntries([...plan].map(([t, p]) => [t, p.fps]));

test("draw plan: full rate for a visible tab that keeps time, nothing for a hidden one", () => {
  assert.deepEqual(fps(planDraw(tabs(["a", true], ["b", false]), new Map(), 0)), { a: 60, b: 0 });
  assert.deepEqual(fps(planDraw(tabs(["a", true, 0]), new Map(), 0)), { a: 60 }, "no report yet: full rate");
});

test("draw plan: 30 fps once more windows are visible than may draw at full rate", () => {
  const n = DRAW_POLICY.fullRateMaxVisible;
  const some = Array.from({ length: n }, (_, i) => [`t${i}`, true]);
  assert.ok(Object.values(fps(planDraw(tabs(...some), new Map(), 0))).every((f) => f === 60));
  const more = [...some, ["x", true], ["h", false]];
  assert.deepEqual(fps(planDraw(tabs(...more), new Map(), 0)), { ...Object.fromEntries(some.map(([t]) => [t, 30])), x: 30, h: 0 });
});

test("draw plan: an overrunning tab draws at 30 fps, and stays there for holdMs after it recovers", () => {
  let plan = planDraw(tabs(["a", true, 40], ["b", true, 16.7]), new Map(), 1000);
  assert.deepEqual(fps(plan), { a: 30, b: 60 });
  plan = planDraw(tabs(["a", true, 16.7], ["b", true, 16.7]), plan, 1000 + DRAW_POLICY.holdMs - 1);
  assert.deepEqual(fps(plan), { a: 30, b: 60 }, "held");
  plan = planDraw(tabs(["a", true, 16.7], ["b", true, 16.7]), plan, 1000 + DRAW_POLICY.holdMs);
  assert.deepEqual(fps(plan), { a: 60, b: 60 });
});
