// The epoch, resume and checksum rules through the browser's pure core (ui-static/xy-core.js),
// from the scenario vectors the Python side reads too (proto/scenarios/{epoch,resume,checksum}.json;
// tests/contracts/test_{epoch,resume,checksum}_vectors.py run the gateway's hub and xypipe.client).
// Run: node --test tests/node/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { GroupBook, SeqTracker, canonicalState, crc32, symbolKey, verifyChecksum } from "../../ui-static/xy-core.js";

const load = (name) => JSON.parse(readFileSync(new URL(`../../proto/scenarios/${name}.json`, import.meta.url), "utf8"));
const epochs = load("epoch");
const resume = load("resume");
const checksums = load("checksum");
const UTF8 = new TextEncoder();

// ---------------------------------------------------------------------------- streams

/**
 * One client fed the vectors' messages the way the worker handles frames (xy-worker.js
 * _onSnapshot/_onDelta): the tracker's verdicts, resync on gap/future_epoch (holding the delta)
 * and far_future (not holding it), held deltas replayed after a snapshot.
 */
class Client {
  constructor(maxGap) {
    this.tracker = new SeqTracker({ maxGap });
  }

  snapshot(group, snap) {
    const follow = this.tracker.applySnapshot({ group, epoch: snap.epoch, shardSeq: snap.shard_seq });
    return follow.map((d) => [d.epoch, d.shard, d.seq]);
  }

  delta(group, d) {
    const delta = { group, shard: d.shard, epoch: d.epoch, firstSeq: d.first_seq, seq: d.seq };
    const verdict = this.tracker.check(delta);
    if (verdict === "gap" || verdict === "future_epoch") this.tracker.beginResync(group, 0, delta);
    else if (verdict === "far_future") this.tracker.beginResync(group, 0);
    return verdict;
  }

  /** Feed one step; check what the step says the client concludes (if it says anything). */
  step(step, where) {
    const group = step.group ?? "g";
    const expect = step.client;
    if (step.snapshot) {
      if (expect === null) return; // the gateway never forwards it
      const replayed = this.snapshot(group, step.snapshot);
      if (expect) assert.deepEqual(replayed, expect.replayed, `${where}: replayed`);
    } else {
      const verdict = this.delta(group, step.delta);
      if (expect) assert.equal(verdict, expect.verdict, where);
    }
    if (expect) assert.equal(this.tracker.isResyncing(group), expect.resyncing, `${where}: resyncing`);
  }
}

test("the epoch vectors are written for the core's gap bound", () => {
  assert.equal(new SeqTracker().maxGap, epochs.max_gap);
});

for (const s of epochs.scenarios) {
  test(`epoch: ${s.name}`, () => {
    const client = new Client(epochs.max_gap);
    s.steps.forEach((step, i) => client.step(step, `${s.name}, step ${i}`));
  });
}

// ---------------------------------------------------------------------------- resume

for (const v of resume.reconnect) {
  test(`reconnect: ${v.name}`, () => {
    const client = new Client(epochs.max_gap);
    v.steps.forEach((step, i) => client.step(step, `${v.name}, step ${i}`));
    const plan = client.tracker.reconnectPlan(v.groups);
    assert.deepEqual(plan.points.map((p) => [p.group, p.shard, p.epoch, p.seq]), v.resume, "resume points");
    assert.deepEqual(plan.subscribe, v.subscribe, "subscribed afresh");
    // A group subscribed afresh starts over from its snapshot, as after SNAPSHOT_UNAVAILABLE.
    v.then.forEach((step, i) => client.step(step, `${v.name}, then ${i}`));
  });
}

// ---------------------------------------------------------------------------- checksum

/** A vector's state as the worker holds one (plainState's field names). */
function plain(v) {
  const level = ([price, size, orders = 0]) => ({ price, size, orders });
  return {
    venue: v.venue, symbol: v.symbol, seq: v.seq, last: v.last, lastSize: v.last_size, vol: v.vol, oi: v.oi,
    flags: v.flags, totalTrades: v.total_trades, bids: v.bids.map(level), asks: v.asks.map(level),
    checksum: v.checksum ?? 0, trimmed: Boolean(v.trimmed),
    tsArrivalUs: 0, windowHigh: 0, windowLow: 0, windowTrades: 0, windowVolume: 0, windowTicks: 0,
  };
}

/** The canonical fields of a held state, for comparison with a vector's. */
function canonicalFields(s) {
  return {
    venue: s.venue, symbol: s.symbol, seq: s.seq, last: s.last, lastSize: s.lastSize, vol: s.vol, oi: s.oi,
    flags: s.flags, totalTrades: s.totalTrades, checksum: s.checksum, trimmed: s.trimmed,
    bids: s.bids.map((l) => [l.price, l.size]), asks: s.asks.map((l) => [l.price, l.size]),
  };
}

for (const v of checksums.canonical) {
  test(`canonical: ${v.name}`, () => {
    const s = plain(v.state);
    assert.equal(canonicalState(s), v.text);
    assert.equal(crc32(UTF8.encode(canonicalState(s))), v.checksum);
  });
}

for (const v of checksums.verify) {
  test(`verify: ${v.name}`, () => {
    assert.equal(verifyChecksum(plain(v.state)), v.check);
  });
}

for (const v of checksums.apply) {
  test(`apply: ${v.name}`, () => {
    const book = new GroupBook("g");
    book.applySnapshot({ symbols: v.held.map(plain) });
    const { checks, removed } = book.applyDelta(v.delta.removed, v.delta.symbols.map(plain));
    assert.deepEqual(checks, v.checks, "checks");
    assert.deepEqual(removed, v.removed.map((w) => w.replace(".", ":")), "removed");
    const held = v.book.map(plain);
    assert.deepEqual([...book.symbols.keys()].sort(), held.map(symbolKey).sort(), "symbols held");
    for (const [i, want] of held.entries()) {
      const got = book.symbols.get(symbolKey(want));
      assert.deepEqual(canonicalFields(got), canonicalFields(want), `state of ${symbolKey(want)}`);
      const full = crc32(UTF8.encode(canonicalState(got))) === got.checksum ? "ok" : "mismatch";
      assert.equal(full, v.full_checks[i], `full-book check of ${symbolKey(want)}`);
    }
  });
}
