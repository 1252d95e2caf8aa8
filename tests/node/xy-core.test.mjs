// The browser's pure logic (ui-static/xy-core.js): backoff and the connect cap, reference
// counting, sequence/epoch tracking, trade-safe merging, checksums, statistics.
// Run: node --test tests/node/
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  Backoff,
  BatchMerger,
  ClockOffset,
  GroupBook,
  Reconnector,
  RefCount,
  Reservoir,
  SeqTracker,
  canonicalState,
  crc32,
  mergeState,
  percentiles,
  plainState,
  removedKey,
  verifyChecksum,
} from "../../ui-static/xy-core.js";

const fixed = (v) => () => v;

function state(over = {}) {
  return plainState({
    venue: "X", symbol: "AAA", seq: 1, tsArrivalUs: 1000, last: 100, lastSize: 1,
    bids: [{ price: 99, size: 5, orders: 1 }], asks: [{ price: 101, size: 7, orders: 2 }],
    vol: 10, oi: 0, flags: 0, priceDecimals: 2, windowHigh: 0, windowLow: 0, windowTrades: 0,
    windowVolume: 0, windowTicks: 1, totalTrades: 0, checksum: 0, trimmed: false, ...over,
  });
}

// ---------------------------------------------------------------------------- backoff

test("backoff retries at once after a drop, then grows exponentially up to the cap", () => {
  const b = new Backoff({ baseMs: 100, capMs: 1000, random: fixed(1) });
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((n) => b.delay(n)), [0, 100, 200, 400, 800, 1000, 1000]);
});

test("backoff jitter stays between half and all of the exponential step", () => {
  const lo = new Backoff({ baseMs: 100, capMs: 1000, random: fixed(0) });
  const hi = new Backoff({ baseMs: 100, capMs: 1000, random: fixed(0.999999) });
  for (let n = 1; n < 10; n++) {
    const step = Math.min(1000, 100 * 2 ** (n - 1));
    assert.equal(lo.delay(n), step / 2);
    assert.ok(hi.delay(n) <= step && hi.delay(n) > step * 0.99);
  }
});

test("backoff with random jitter spreads a fleet's retries", () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const b = new Backoff({ baseMs: 100, capMs: 2000, random: rnd });
  const delays = Array.from({ length: 200 }, () => b.delay(4));
  assert.ok(new Set(delays.map((d) => Math.round(d))).size > 100, "jitter makes delays distinct");
});

test("backoff rejects a cap below its base", () => {
  assert.throws(() => new Backoff({ baseMs: 500, capMs: 100 }), /baseMs <= capMs/);
});

// ---------------------------------------------------------------------------- reconnector

test("reconnector refuses attempts beyond the concurrency cap", () => {
  const r = new Reconnector({ maxConcurrent: 2, backoff: new Backoff({ random: fixed(1) }) });
  assert.ok(r.due(0));
  const a = r.begin(0);
  const b = r.begin(0);
  assert.ok(a !== null && b !== null);
  assert.equal(r.begin(0), null, "third concurrent attempt refused");
  assert.equal(r.due(0), false);
  r.failed(a, 10);
  assert.notEqual(r.begin(10), null, "a slot freed by a failure can be reused");
});

test("reconnector backs off on consecutive failures and resets after a stable connection", () => {
  const r = new Reconnector({ backoff: new Backoff({ baseMs: 100, capMs: 1000, random: fixed(1) }), stableMs: 5000 });
  const delays = [];
  let now = 0;
  for (let i = 0; i < 6; i++) {
    const id = r.begin(now);
    const d = r.failed(id, now);
    delays.push(d);
    assert.equal(r.due(now + d), true);
    if (d > 0) assert.equal(r.due(now + d - 1), false, "not before the delay");
    now += d;
  }
  assert.deepEqual(delays, [0, 100, 200, 400, 800, 1000]);
  const id = r.begin(now);
  r.opened(id, now);
  assert.equal(r.due(now), false, "no attempt while connected");
  assert.equal(r.failed(null, now + 6000), 0, "stable connection dropped: retry at once");
  assert.equal(r.reconnects, 0, "first connection is not a reconnect");
  r.opened(r.begin(now + 6000), now + 6000);
  assert.equal(r.reconnects, 1);
});

test("reconnector does not reset the backoff for a connection that flaps", () => {
  const r = new Reconnector({ backoff: new Backoff({ baseMs: 100, capMs: 1000, random: fixed(1) }), stableMs: 5000 });
  let now = 0;
  const seen = [];
  for (let i = 0; i < 4; i++) {
    r.opened(r.begin(now), now);
    const d = r.failed(null, now + 100); // up for 100 ms only
    seen.push(d);
    now += 100 + d;
  }
  assert.deepEqual(seen, [0, 100, 200, 400]);
});

test("reconnector reports attempts that hang past the attempt timeout", () => {
  const r = new Reconnector({ attemptTimeoutMs: 4000 });
  const id = r.begin(0);
  assert.deepEqual(r.expired(3999), []);
  assert.deepEqual(r.expired(4000), [id]);
});

// ---------------------------------------------------------------------------- refcount

test("a group stays subscribed while any tab wants it", () => {
  const rc = new RefCount();
  assert.equal(rc.add("t1", "fx"), true, "first tab subscribes upstream");
  assert.equal(rc.add("t2", "fx"), false, "second tab adds no subscription");
  assert.equal(rc.add("t2", "fx"), false, "same tab twice is idempotent");
  assert.equal(rc.remove("t1", "fx"), false, "t2 still wants it");
  assert.equal(rc.remove("t1", "fx"), false, "removing twice is harmless");
  assert.equal(rc.remove("t2", "fx"), true, "last holder gone: unsubscribe upstream");
  assert.deepEqual(rc.keys(), []);
});

test("a closed tab releases only the groups nobody else holds", () => {
  const rc = new RefCount();
  rc.add("t1", "fx");
  rc.add("t1", "crypto");
  rc.add("t2", "fx");
  assert.deepEqual(rc.removeTab("t1"), ["crypto"]);
  assert.deepEqual(rc.keys(), ["fx"]);
  assert.deepEqual(rc.removeTab("t1"), []);
  assert.equal(rc.tabs, 1);
});

// ---------------------------------------------------------------------------- sequences

const delta = (seq, over = {}) => ({ group: "fx", shard: 0, seq, epoch: 7, firstSeq: 0, symbols: [], ...over });

test("consecutive deltas apply and repeats are dropped as duplicates", () => {
  const t = new SeqTracker();
  assert.equal(t.check(delta(5)), "apply", "first delta of a stream is the baseline");
  assert.equal(t.check(delta(6)), "apply");
  assert.equal(t.check(delta(6)), "duplicate");
  assert.equal(t.check(delta(3)), "duplicate");
  assert.equal(t.check(delta(7)), "apply");
});

test("a sequence gap or a new epoch asks for a snapshot", () => {
  const t = new SeqTracker();
  t.check(delta(1));
  assert.equal(t.check(delta(3)), "gap");
  const u = new SeqTracker();
  u.check(delta(1));
  assert.equal(u.check(delta(2, { epoch: 8 })), "future_epoch");
});

test("a gateway-merged delta continues the sequence from its first_seq", () => {
  const t = new SeqTracker();
  t.check(delta(4));
  assert.equal(t.check(delta(9, { firstSeq: 5 })), "apply");
  assert.equal(t.check(delta(12, { firstSeq: 11 })), "gap");
});

test("shards of a group are separate streams", () => {
  const t = new SeqTracker();
  assert.equal(t.check(delta(10, { shard: 0 })), "apply");
  assert.equal(t.check(delta(50, { shard: 1 })), "apply");
  assert.equal(t.check(delta(11, { shard: 0 })), "apply");
  assert.equal(t.check(delta(51, { shard: 1 })), "apply");
});

test("deltas held during a resync are replayed after the snapshot, older ones dropped", () => {
  const t = new SeqTracker();
  t.check(delta(1));
  assert.equal(t.check(delta(4)), "gap");
  t.beginResync("fx", 0, delta(4));
  assert.equal(t.check(delta(5)), "held");
  assert.equal(t.check(delta(6)), "held");
  const follow = t.applySnapshot({ group: "fx", epoch: 7, shardSeq: { 0: 4n } });
  assert.deepEqual(follow.map((d) => d.seq), [5, 6]);
  assert.equal(t.isResyncing("fx"), false);
  assert.equal(t.check(delta(7)), "apply");
});

test("a snapshot older than the held deltas' start leaves the group resyncing", () => {
  const t = new SeqTracker();
  t.check(delta(1));
  t.beginResync("fx", 0, delta(10));
  const follow = t.applySnapshot({ group: "fx", epoch: 7, shardSeq: { 0: 5 } });
  assert.deepEqual(follow, []);
  assert.equal(t.isResyncing("fx"), true, "still missing 6..9: ask again");
});

test("a snapshot of a new epoch resets the stream", () => {
  const t = new SeqTracker();
  t.check(delta(100));
  t.beginResync("fx", 0, delta(1, { epoch: 8 }));
  t.applySnapshot({ group: "fx", epoch: 8, shardSeq: { 0: 0 } });
  assert.equal(t.check(delta(2, { epoch: 8 })), "apply");
});

test("resume points list the last sequence of every stream of the wanted groups", () => {
  const t = new SeqTracker();
  t.check(delta(10));
  t.check(delta(20, { shard: 1 }));
  t.check(delta(3, { group: "crypto" }));
  assert.deepEqual(t.resumePoints(["fx"]), [
    { group: "fx", shard: 0, epoch: 7, seq: 10 },
    { group: "fx", shard: 1, epoch: 7, seq: 20 },
  ]);
});

test("an overdue snapshot is reported once per timeout", () => {
  const t = new SeqTracker();
  t.beginResync("fx", 0);
  assert.deepEqual(t.overdue(1999, 2000), []);
  assert.deepEqual(t.overdue(2000, 2000), ["fx"]);
  assert.deepEqual(t.overdue(2500, 2000), []);
});

// ---------------------------------------------------------------------------- merging

test("merging keeps the newest state and every trade of both windows", () => {
  const a = state({ seq: 1, tsArrivalUs: 1000, last: 100, windowHigh: 105, windowLow: 98, windowTrades: 2, windowVolume: 30, windowTicks: 3 });
  const b = state({ seq: 2, tsArrivalUs: 2000, last: 103, windowHigh: 110, windowLow: 101, windowTrades: 1, windowVolume: 5, windowTicks: 2 });
  const m = mergeState(a, b);
  assert.equal(m.last, 103);
  assert.equal(m.seq, 2);
  assert.equal(m.tsArrivalUs, 1000, "latency counts from the oldest merged tick");
  assert.deepEqual([m.windowHigh, m.windowLow, m.windowTrades, m.windowVolume, m.windowTicks], [110, 98, 3, 35, 5]);
});

test("a window without trades does not reset the high/low of one that had them", () => {
  const a = state({ windowHigh: 105, windowLow: 98, windowTrades: 2 });
  const b = state({ seq: 2, windowHigh: 0, windowLow: 0, windowTrades: 0 });
  const m = mergeState(a, b);
  assert.deepEqual([m.windowHigh, m.windowLow, m.windowTrades], [105, 98, 2]);
});

test("a batch holds one merged entry per symbol and drops stale ones", () => {
  const bm = new BatchMerger();
  bm.addDelta("fx", 0, 1, [state({ seq: 1 }), state({ symbol: "BBB", seq: 1 })]);
  bm.addDelta("fx", 0, 2, [state({ seq: 3, last: 120, windowTrades: 1 })]);
  bm.addDelta("fx", 0, 3, [state({ seq: 2, last: 110 })]); // older than what is pending
  const [batch] = bm.drain();
  assert.equal(batch.deltas, 3);
  assert.equal(batch.symbols.length, 2);
  const aaa = batch.symbols.find((s) => s.symbol === "AAA");
  assert.equal(aaa.last, 120);
  assert.equal(bm.stale, 1);
  assert.equal(bm.merged, 1);
  assert.deepEqual(bm.drain(), [], "drain starts over");
});

test("a snapshot replaces what was pending for its group", () => {
  const bm = new BatchMerger();
  bm.addDelta("fx", 0, 1, [state()]);
  bm.addDelta("crypto", 0, 1, [state({ symbol: "BTC" })]);
  bm.addSnapshot("fx", { group: "fx", symbols: [state({ symbol: "ZZZ" })] });
  bm.addDelta("fx", 0, 2, [state({ seq: 2 })]);
  const out = Object.fromEntries(bm.drain().map((b) => [b.group, b]));
  assert.equal(out.fx.snapshot.symbols[0].symbol, "ZZZ");
  assert.deepEqual(out.fx.symbols.map((s) => s.seq), [2]);
  assert.equal(out.crypto.symbols.length, 1);
});

test("a group book gives a late tab the whole current view", () => {
  const book = new GroupBook("fx");
  book.applySnapshot({ symbols: [state(), state({ symbol: "BBB" })], top: [{ venue: "X", symbol: "AAA", value: 9 }], topBy: "vol", version: 3, epoch: 7 });
  book.applyStates([state({ seq: 5, last: 150 })]);
  const view = book.view();
  assert.equal(view.symbols.length, 2);
  assert.equal(view.symbols.find((s) => s.symbol === "AAA").last, 150);
  assert.equal(view.version, 3);
  assert.equal(view.synthetic, true);
});

test("a symbol that left its group (Delta.removed) leaves the batch and the book", () => {
  const v = state().venue;
  assert.equal(removedKey(`${v}.AAA`), `${v}:AAA`);
  const bm = new BatchMerger();
  bm.addDelta("fx", 0, 1, [state(), state({ symbol: "BBB" })]);
  bm.addDelta("fx", 0, 2, [], [removedKey(`${v}.AAA`)]);
  let [batch] = bm.drain();
  assert.deepEqual(batch.symbols.map((s) => s.symbol), ["BBB"]);
  assert.deepEqual(batch.removed, [`${v}:AAA`]);
  // Removed, then back within the same batch: kept, not reported removed.
  bm.addDelta("fx", 0, 3, [], [`${v}:BBB`]);
  bm.addDelta("fx", 0, 4, [state({ symbol: "BBB", seq: 9 })]);
  [batch] = bm.drain();
  assert.deepEqual(batch.removed, []);
  assert.deepEqual(batch.symbols.map((s) => s.seq), [9]);
  const book = new GroupBook("fx");
  book.applySnapshot({ symbols: [state(), state({ symbol: "BBB" })] });
  book.remove([`${v}:AAA`]);
  assert.deepEqual(book.view().symbols.map((s) => s.symbol), ["BBB"]);
});

test("plainState turns bigint fields into numbers", () => {
  const s = plainState({ venue: "v", symbol: "s", seq: 3n, vol: 10n, bids: [{ price: 5n, size: 2n, orders: 1 }], asks: [] });
  assert.equal(s.seq, 3);
  assert.equal(s.vol, 10);
  assert.deepEqual(s.bids, [{ price: 5, size: 2, orders: 1 }]);
});

// ---------------------------------------------------------------------------- checksum

test("crc32 matches the IEEE check value", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array()), 0);
});

test("the canonical form interleaves the book level by level", () => {
  const s = state({
    venue: "X", symbol: "AAA", seq: 9, last: -5, lastSize: 2, vol: 100, oi: 3, flags: 1, totalTrades: 4,
    bids: [{ price: 10, size: 1 }, { price: 9, size: 2 }], asks: [{ price: 11, size: 3 }],
  });
  assert.equal(canonicalState(s), "X:AAA:9:-5:2:100:3:1:4:10:1:11:3:9:2");
});

test("a checksum is verified, a wrong one reported, a trimmed entry skipped", () => {
  const s = state();
  const good = crc32(new TextEncoder().encode(canonicalState(s)));
  assert.equal(verifyChecksum({ ...s, checksum: good }), "ok");
  assert.equal(verifyChecksum({ ...s, checksum: (good ^ 1) >>> 0 }), "mismatch");
  assert.equal(verifyChecksum({ ...s, checksum: (good ^ 1) >>> 0, trimmed: true }), "skipped");
});

// ---------------------------------------------------------------------------- statistics

test("percentiles use the nearest rank", () => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.deepEqual(percentiles(v, [50, 95, 99]), { p50: 50, p95: 95, p99: 99 });
  assert.deepEqual(percentiles([], [50]), { p50: null });
});

test("the reservoir keeps a bounded sample and starts over on drain", () => {
  const r = new Reservoir(10, fixed(0.5));
  for (let i = 0; i < 1000; i++) r.add(i);
  assert.equal(r.values.length, 10);
  assert.equal(r.drain().length, 10);
  assert.equal(r.values.length, 0);
});

test("the clock offset keeps the estimate with the shortest round trip", () => {
  const c = new ClockOffset();
  c.seed(1000, 1500);
  assert.equal(c.offsetUs, 500);
  c.observe(0, 1000, 2000); // rtt 1000, offset 1500
  assert.equal(c.offsetUs, 1500);
  c.observe(5000, 5100, 6550); // rtt 100, offset 1500
  c.observe(7000, 9000, 9000); // rtt 2000: ignored
  assert.equal(c.offsetUs, 1500);
  assert.equal(c.bestRttUs, 100);
});
