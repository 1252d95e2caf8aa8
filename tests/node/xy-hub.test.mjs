// The hub (ui-static/xy-worker.js) against a scripted gateway: a fake WebSocket speaking the
// real protobuf frames and a manual clock, so reconnects, heartbeats and batching are driven
// step by step. Run: node --test tests/node/
import { test } from "node:test";
import assert from "node:assert/strict";

import { ClientFrameSchema, ServerFrameSchema, create, fromBinary, toBinary } from "../../ui-static/gen/xy_contracts.js";
import { Hub } from "../../ui-static/xy-worker.js";
import { canonicalState, crc32 } from "../../ui-static/xy-core.js";

class Clock {
  constructor() {
    this.t = 0;
    this.timers = new Map();
    this.ids = 0;
  }
  setTimeout(fn, ms) {
    const id = ++this.ids;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  /** Run every timer due within `ms`, in time order, moving the clock with them. */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      await settle();
      let next = null;
      for (const [id, tm] of this.timers) if (tm.at <= end && (next === null || tm.at < next[1].at)) next = [id, tm];
      if (next === null) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
    await settle();
  }
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closed = null;
    FakeSocket.all.push(this);
  }
  send(bytes) {
    this.sent.push(fromBinary(ClientFrameSchema, bytes));
  }
  close(code, reason) {
    this.readyState = 3;
    this.closed = { code, reason };
  }
  // gateway side
  accept() {
    this.readyState = 1;
    this.onopen?.();
  }
  frame(init) {
    const bytes = toBinary(ServerFrameSchema, create(ServerFrameSchema, init));
    this.onmessage?.({ data: bytes.slice().buffer });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  kinds() {
    return this.sent.map((f) => ["hello", "subscribe", "unsubscribe", "resume", "ping", "refresh", "snapshotRequest", "metrics"].find((k) => f[k]));
  }
}

function sym(symbol, seq, over = {}) {
  const s = { venue: "X", symbol, seq, tsArrivalUs: 1_000_000, last: 100 + seq, lastSize: 1, vol: seq, oi: 0, flags: 0, totalTrades: seq, bids: [{ price: 99, size: 1, orders: 1 }], asks: [{ price: 101, size: 1, orders: 1 }], ...over };
  const plain = { ...s, priceDecimals: 0 };
  if (!("checksum" in over)) s.checksum = crc32(new TextEncoder().encode(canonicalState(plain)));
  return s;
}

function setup(config = {}) {
  FakeSocket.all = [];
  const clock = new Clock();
  const env = {
    WebSocket: FakeSocket,
    setTimeout: (fn, ms) => clock.setTimeout(fn, ms),
    clearTimeout: (id) => clock.clearTimeout(id),
    now: () => clock.t,
    wallUs: () => 1_000_000 + clock.t * 1000,
    fetch: null,
    locks: null,
  };
  const hub = new Hub("shared-worker", env);
  const inbox = { t1: [], t2: [] };
  hub.attach("t1", { post: (m) => inbox.t1.push(m) });
  hub.attach("t2", { post: (m) => inbox.t2.push(m) });
  hub.handle("t1", { t: "hello", tab: "t1", config: { wsUrl: "ws://gw/ws", token: "jwt-1", heartbeatMs: 1000, backoffBaseMs: 100, backoffCapMs: 1000, ...config } });
  hub.handle("t2", { t: "hello", tab: "t2", config: {} });
  return { hub, clock, inbox };
}

async function open(clock, { session = "s1" } = {}) {
  await clock.advance(0);
  const ws = FakeSocket.all.at(-1);
  ws.accept();
  ws.frame({ welcome: { sessionId: session, protocolVersion: 1, heartbeatMs: 1000, serverTimeUs: 1_000_000 + clock.t * 1000 } });
  return ws;
}

const batches = (msgs) => msgs.filter((m) => m.t === "batches").flatMap((m) => m.list);

test("the hub opens one socket and says hello with the token", async () => {
  const { clock } = setup();
  const ws = await open(clock);
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(ws.url, "ws://gw/ws");
  assert.equal(ws.sent[0].hello.token, "jwt-1");
  assert.equal(ws.sent[0].hello.protocolVersion, 1);
});

test("two tabs on one group make one upstream subscription, released by the last", async () => {
  const { hub, clock } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  hub.handle("t2", { t: "sub", group: "fx" });
  assert.deepEqual(ws.kinds(), ["hello", "subscribe"]);
  hub.handle("t1", { t: "unsub", group: "fx" });
  assert.deepEqual(ws.kinds(), ["hello", "subscribe"]);
  hub.handle("t2", { t: "bye" });
  assert.deepEqual(ws.kinds(), ["hello", "subscribe", "unsubscribe"]);
  assert.equal(ws.sent[2].unsubscribe.groups[0].group, "fx");
});

test("deltas are merged per group and broadcast once per batch period to every holder", async () => {
  const { hub, clock, inbox } = setup({ batchMs: 20 });
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  hub.handle("t2", { t: "sub", group: "fx" });
  await clock.advance(25); // the first frame flushes at once after a quiet period
  ws.frame({ deltas: [{ group: "fx", shard: 0, seq: 1, epoch: 1, symbols: [sym("AAA", 1)] }] });
  await clock.advance(5);
  ws.frame({ deltas: [{ group: "fx", shard: 0, seq: 2, epoch: 1, symbols: [sym("AAA", 2), sym("BBB", 2)] }] });
  ws.frame({ deltas: [{ group: "fx", shard: 0, seq: 2, epoch: 1, symbols: [sym("AAA", 2)] }] }); // duplicate
  ws.frame({ deltas: [{ group: "fx", shard: 0, seq: 3, epoch: 1, symbols: [sym("AAA", 3)] }] });
  await clock.advance(20);
  for (const tab of ["t1", "t2"]) {
    const got = batches(inbox[tab]);
    assert.equal(got.length, 2, `${tab} got the first delta, then one merged batch`);
    const merged = got[1];
    assert.equal(merged.deltas, 2, "two new deltas merged, the duplicate dropped");
    assert.deepEqual(merged.symbols.map((s) => [s.symbol, s.seq]).sort(), [["AAA", 3], ["BBB", 2]]);
  }
  assert.equal(hub.counters.duplicates, 1);
  assert.equal(hub.counters.checksumsVerified, 4);
  assert.equal(batches(inbox.t1)[1].id, batches(inbox.t2)[1].id, "one batch id for everyone");
});

test("a gap asks for a snapshot and the held deltas follow it", async () => {
  const { hub, clock, inbox } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  ws.frame({ deltas: [{ group: "fx", seq: 1, epoch: 1, symbols: [sym("AAA", 1)] }] });
  ws.frame({ deltas: [{ group: "fx", seq: 4, epoch: 1, symbols: [sym("AAA", 4)] }] });
  assert.equal(ws.kinds().at(-1), "snapshotRequest");
  assert.equal(ws.sent.at(-1).snapshotRequest.group, "fx");
  ws.frame({ deltas: [{ group: "fx", seq: 5, epoch: 1, symbols: [sym("AAA", 5)] }] });
  assert.equal(ws.kinds().filter((k) => k === "snapshotRequest").length, 1, "asked once");
  ws.frame({ snapshots: [{ group: "fx", epoch: 1, version: 2, shardSeq: { 0: 3 }, symbols: [sym("AAA", 3), sym("BBB", 3)] }] });
  await clock.advance(40);
  const last = batches(inbox.t1).at(-1);
  assert.ok(last.snapshot, "the snapshot reached the tab");
  assert.deepEqual(last.symbols.map((s) => s.seq), [5], "held deltas 4 and 5 applied over it");
  assert.equal(hub.counters.gaps, 1);
});

test("a far-future delta is rejected and never reaches a tab; a stale epoch changes nothing", async () => {
  const { hub, clock, inbox } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  ws.frame({ deltas: [{ group: "fx", seq: 1, epoch: 5, symbols: [sym("AAA", 1)] }] });
  ws.frame({ deltas: [{ group: "fx", seq: 1, epoch: 4, symbols: [sym("AAA", 99)] }] });
  assert.ok(!ws.kinds().includes("snapshotRequest"), "a stale epoch asks for nothing");
  ws.frame({ deltas: [{ group: "fx", seq: 1_000_000, epoch: 5, symbols: [sym("AAA", 77)] }] });
  assert.equal(ws.kinds().at(-1), "snapshotRequest", "re-anchor from a fresh snapshot");
  ws.frame({ snapshots: [{ group: "fx", epoch: 5, version: 2, shardSeq: { 0: 1 }, symbols: [sym("AAA", 1)] }] });
  ws.frame({ deltas: [{ group: "fx", seq: 2, epoch: 5, symbols: [sym("AAA", 2)] }] });
  await clock.advance(40);
  const seen = batches(inbox.t1).flatMap((b) => b.symbols.map((s) => s.seq));
  assert.ok(!seen.includes(77) && !seen.includes(99), `rejected states never reach a tab: ${seen}`);
  assert.equal(seen.at(-1), 2);
  assert.equal(hub.counters.rejected, 2);
});

test("a checksum mismatch asks for a snapshot", async () => {
  const { hub, clock } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  ws.frame({ deltas: [{ group: "fx", seq: 1, epoch: 1, symbols: [sym("AAA", 1, { checksum: 12345 })] }] });
  assert.equal(ws.kinds().at(-1), "snapshotRequest");
  assert.equal(hub.counters.checksumMismatches, 1);
});

test("after a drop the hub reconnects at once and resumes from the last sequence", async () => {
  const { hub, clock, inbox } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  hub.handle("t1", { t: "sub", group: "crypto" });
  ws.frame({ deltas: [{ group: "fx", shard: 2, seq: 41, epoch: 9, symbols: [sym("AAA", 1)] }] });
  await clock.advance(6000); // stable
  ws.drop();
  await clock.advance(0);
  assert.equal(FakeSocket.all.length, 2, "reconnected without waiting");
  const ws2 = await open(clock, { session: "s2" });
  assert.equal(ws2.sent[0].hello.sessionId, "s1", "hello names the previous session");
  const resume = ws2.sent.find((f) => f.resume).resume;
  assert.deepEqual(resume.points.map((p) => [p.group, p.shard, Number(p.epoch), Number(p.seq)]), [["fx", 2, 9, 41]]);
  const sub = ws2.sent.find((f) => f.subscribe).subscribe;
  assert.deepEqual(sub.groups.map((g) => g.group), ["crypto"], "groups with no stream yet are subscribed");
  ws2.frame({ deltas: [{ group: "fx", shard: 2, seq: 42, epoch: 9, symbols: [sym("AAA", 2)] }] });
  assert.equal(hub.reconnector.reconnects, 1);
  assert.ok(hub.lastRecoveryMs !== null);
  assert.equal(inbox.t1.filter((m) => m.t === "status").at(-1).state, "open");
});

test("failed attempts back off exponentially, one attempt at a time", async () => {
  const { clock } = setup({ backoffBaseMs: 100, backoffCapMs: 400, connectTimeoutMs: 1000 });
  const starts = [];
  for (let i = 0; i < 6; i++) {
    await clock.advance(0);
    const ws = FakeSocket.all.at(-1);
    starts.push(clock.t);
    assert.equal(FakeSocket.all.filter((s) => s.readyState < 3).length, 1, "never two attempts at once");
    ws.drop();
    // wait until the next socket exists
    const n = FakeSocket.all.length;
    while (FakeSocket.all.length === n) await clock.advance(10);
  }
  const gaps = starts.slice(1).map((t, i) => t - starts[i]);
  assert.ok(gaps[0] <= 10, "first retry at once");
  for (const g of gaps.slice(1)) assert.ok(g <= 410, `delay ${g} within the cap`);
  assert.ok(gaps[2] > gaps[1] || gaps[2] >= 200, `delays grow: ${gaps}`);
});

test("an attempt that never gets a Welcome is abandoned after the connect timeout", async () => {
  const { clock } = setup({ connectTimeoutMs: 500 });
  await clock.advance(0);
  const first = FakeSocket.all[0];
  first.accept(); // open but the gateway never answers the hello
  await clock.advance(600);
  assert.ok(first.closed, "the hanging attempt was closed");
  await clock.advance(2000);
  assert.ok(FakeSocket.all.length >= 2, "and another attempt made");
});

test("a silent socket is declared dead after missed heartbeats", async () => {
  const { clock } = setup();
  const ws = await open(clock); // heartbeat 1000 ms, dead after 3 beats
  await clock.advance(1000);
  assert.ok(ws.kinds().includes("ping"), "pings while open");
  await clock.advance(2600);
  assert.ok(ws.closed, "closed after 3 s without a frame");
  assert.equal(FakeSocket.all.length, 2, "and reconnected");
});

test("render latencies reported by tabs go to the gateway as ClientMetrics", async () => {
  const { hub, clock } = setup({ metricsMs: 1000 });
  const ws = await open(clock);
  hub.handle("t1", { t: "render", lat: [12.5, 30], fps: 60 });
  hub.handle("t2", { t: "render", lat: [8], fps: 58 });
  await clock.advance(1000);
  const m = ws.sent.find((f) => f.metrics).metrics;
  assert.deepEqual([...m.renderLatencyMs].sort((a, b) => a - b), [8, 12.5, 30]);
  assert.equal(m.tabs, 2);
  assert.equal(m.fps, 59);
});

test("a late tab gets the group's current view at once", async () => {
  const { hub, clock, inbox } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  ws.frame({ snapshots: [{ group: "fx", epoch: 1, shardSeq: { 0: 1 }, symbols: [sym("AAA", 1), sym("BBB", 1)] }] });
  await clock.advance(40);
  hub.handle("t2", { t: "sub", group: "fx" });
  const view = batches(inbox.t2).at(-1);
  assert.equal(view.snapshot.symbols.length, 2);
  assert.equal(ws.kinds().filter((k) => k === "subscribe").length, 1);
});

test("a symbol a delta removes (it moved group) leaves the tabs' batch and the hub's view", async () => {
  const { hub, clock, inbox } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  ws.frame({ snapshots: [{ group: "fx", epoch: 1, shardSeq: { 0: 1 }, symbols: [sym("AAA", 1), sym("BBB", 1)] }] });
  await clock.advance(40);
  ws.frame({ deltas: [{ group: "fx", seq: 2, epoch: 1, removed: ["X.AAA"], symbols: [sym("BBB", 2)] }] });
  await clock.advance(40);
  const last = batches(inbox.t1).at(-1);
  assert.deepEqual(last.removed, ["X:AAA"]);
  assert.deepEqual(last.symbols.map((s) => s.symbol), ["BBB"]);
  assert.equal(hub.counters.gaps, 0);
  // A tab joining later is not shown the symbol either.
  hub.handle("t2", { t: "sub", group: "fx" });
  const view = batches(inbox.t2).at(-1);
  assert.deepEqual(view.snapshot.symbols.map((s) => s.symbol), ["BBB"]);
});

test("the gateway's degradation level reaches every tab", async () => {
  const { clock, inbox } = setup();
  const ws = await open(clock);
  ws.frame({ degrade: { level: 2, reason: "send queue 80% of budget", recovery: "queue below 20% for 2 s", pausedGroups: [] } });
  for (const tab of ["t1", "t2"]) {
    const d = inbox[tab].find((m) => m.t === "degrade");
    assert.equal(d.level, 2);
    assert.match(d.recovery, /queue below/);
  }
});

test("a Welcome answering a token refresh moves the expiry and resumes nothing", async () => {
  const { hub, clock } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  ws.frame({ snapshots: [{ group: "fx", epoch: 1, shardSeq: { 0: 1 }, symbols: [sym("AAA", 1)] }] });
  const sent = ws.kinds().length;
  ws.frame({ welcome: { sessionId: "s1", protocolVersion: 1, heartbeatMs: 1000, tokenExpiresUs: 9_000_000 } });
  assert.equal(hub.tokenExpiresUs, 9_000_000);
  assert.deepEqual(ws.kinds().slice(sent), [], "no resume, no subscribe: the session goes on");
  assert.equal(hub.reconnector.reconnects, 0);
});

test("a trimmed entry keeps the deeper levels the hub holds, and is not verified", async () => {
  const { hub, clock, inbox } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  const deep = sym("AAA", 1, {
    bids: [{ price: 99, size: 1, orders: 1 }, { price: 98, size: 2, orders: 1 }],
    asks: [{ price: 101, size: 1, orders: 1 }, { price: 102, size: 2, orders: 1 }],
  });
  ws.frame({ snapshots: [{ group: "fx", epoch: 1, shardSeq: { 0: 1 }, symbols: [deep] }] });
  await clock.advance(40);
  const trimmed = sym("AAA", 2, { trimmed: true, checksum: 1,
    bids: [{ price: 100, size: 3, orders: 1 }], asks: [{ price: 101, size: 4, orders: 1 }] });
  ws.frame({ deltas: [{ group: "fx", seq: 2, epoch: 1, symbols: [trimmed] }] });
  await clock.advance(40);
  const got = batches(inbox.t1).at(-1).symbols[0];
  assert.deepEqual(got.bids.map((l) => [l.price, l.size]), [[100, 3], [98, 2]]);
  assert.deepEqual(got.asks.map((l) => [l.price, l.size]), [[101, 4], [102, 2]]);
  assert.equal(hub.counters.checksumMismatches, 0);
  assert.deepEqual(hub.books.get("fx").symbols.get("X:AAA").bids.map((l) => l.price), [100, 98]);
});

// ---------------------------------------------------------------------------- delivery to tabs

/** Tabs as xy-client.js is: they say they acknowledge, and do when told (`ack`). */
function setupAcking(config = {}, { visible = { t1: true, t2: true } } = {}) {
  const s = setup(config);
  for (const tab of ["t1", "t2"]) s.hub.handle(tab, { t: "hello", tab, config: {}, acks: true, visible: visible[tab] });
  s.ack = (tab) => s.hub.handle(tab, { t: "ack" });
  return s;
}

test("a tab that acknowledges gets each frame's batch on arrival, and while busy the merge with its ack", async () => {
  const { hub, clock, inbox, ack } = setupAcking();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  ws.frame({ deltas: [{ group: "fx", seq: 1, epoch: 1, symbols: [sym("AAA", 1)] }] });
  assert.equal(batches(inbox.t1).length, 1, "sent at once, no batch timer");
  ws.frame({ deltas: [{ group: "fx", seq: 2, epoch: 1, symbols: [sym("AAA", 2)] }] });
  ws.frame({ deltas: [{ group: "fx", seq: 3, epoch: 1, symbols: [sym("AAA", 3), sym("BBB", 3)] }] });
  assert.equal(batches(inbox.t1).length, 1, "held while the first is in flight");
  ack("t1");
  const got = batches(inbox.t1);
  assert.equal(got.length, 2);
  assert.equal(got[1].deltas, 2);
  assert.deepEqual(got[1].symbols.map((s) => [s.symbol, s.seq]), [["AAA", 3], ["BBB", 3]]);
  assert.equal(got[1].symbols[0].tsArrivalUs, 1_000_000, "the merged entry's latency counts from its oldest tick");
  assert.equal(hub.counters.coalesced, 1);
  ack("t1");
  ws.frame({ deltas: [{ group: "fx", seq: 4, epoch: 1, symbols: [sym("AAA", 4)] }] });
  assert.equal(batches(inbox.t1).length, 3);
});

test("one upstream subscription serves a live view and a 250 ms view, which gets the merge", async () => {
  const { hub, clock, inbox, ack } = setupAcking();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx", everyMs: 0 });
  hub.handle("t2", { t: "sub", group: "fx", everyMs: 250 });
  hub.handle("t2", { t: "sub", group: "fx", everyMs: 0 });
  assert.equal(ws.kinds().filter((k) => k === "subscribe").length, 1, "one gateway subscription");
  for (let seq = 1; seq <= 30; seq++) {
    ws.frame({ deltas: [{ group: "fx", seq, epoch: 1, symbols: [sym("AAA", seq)] }] });
    ack("t1");
    ack("t2");
    await clock.advance(20);
    ack("t2");
  }
  const live1 = batches(inbox.t1);
  const slow = batches(inbox.t2).filter((b) => b.everyMs === 250);
  const live2 = batches(inbox.t2).filter((b) => b.everyMs === 0);
  assert.equal(live1.length, 30);
  assert.equal(live2.length, 30, "a tab's live view is not slowed by its slower one");
  assert.ok(slow.length >= 2 && slow.length <= 3, `${slow.length} overview batches in 600 ms`);
  assert.ok(slow.reduce((n, b) => n + b.deltas, 0) >= 25, "every delta reaches the slower view, merged");
  assert.equal(slow.at(-1).symbols[0].totalTrades, slow.at(-1).symbols[0].seq, "the latest state");
  hub.handle("t2", { t: "unsub", group: "fx", everyMs: 250 });
  hub.handle("t1", { t: "unsub", group: "fx", everyMs: 0 });
  assert.ok(!ws.kinds().includes("unsubscribe"), "t2's live view still holds the group");
  hub.handle("t2", { t: "unsub", group: "fx", everyMs: 0 });
  assert.equal(ws.kinds().at(-1), "unsubscribe");
});

test("a hidden tab is sent nothing, and the group's current state at once when it shows", async () => {
  const { hub, clock, inbox, ack } = setupAcking({}, { visible: { t1: true, t2: false } });
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  hub.handle("t2", { t: "sub", group: "fx" });
  ws.frame({ snapshots: [{ group: "fx", epoch: 1, shardSeq: { 0: 1 }, symbols: [sym("AAA", 1), sym("BBB", 1)] }] });
  for (let seq = 2; seq <= 5; seq++) {
    ws.frame({ deltas: [{ group: "fx", seq, epoch: 1, symbols: [sym("AAA", seq)] }] });
    ack("t1");
    await clock.advance(20);
  }
  assert.equal(batches(inbox.t1).length, 5);
  assert.equal(batches(inbox.t2).length, 0, "nothing while hidden");
  hub.handle("t2", { t: "vis", visible: true });
  const [view] = batches(inbox.t2);
  assert.ok(view.snapshot.synthetic);
  assert.deepEqual(view.snapshot.symbols.map((s) => [s.symbol, s.seq]), [["AAA", 5], ["BBB", 1]]);
  ack("t2");
  ws.frame({ deltas: [{ group: "fx", seq: 6, epoch: 1, symbols: [sym("BBB", 6)] }] });
  assert.deepEqual(batches(inbox.t2).at(-1).symbols.map((s) => s.seq), [6], "live again");
});

test("the hub tells each tab how fast to draw: full rate alone, 30 fps with more windows, none hidden", async () => {
  const { hub, clock, inbox } = setupAcking({}, { visible: { t1: true, t2: false } });
  await open(clock);
  const pace = (tab) => inbox[tab].filter((m) => m.t === "pace").at(-1)?.fps;
  assert.equal(pace("t1"), 60);
  assert.equal(pace("t2"), 0);
  hub.attach("t3", { post: (m) => (inbox.t3 ??= []).push(m) });
  hub.handle("t3", { t: "hello", tab: "t3", config: {}, acks: true, visible: true });
  hub.handle("t2", { t: "vis", visible: true });
  assert.deepEqual(["t1", "t2", "t3"].map(pace), [30, 30, 30], "three windows in view");
  hub.handle("t3", { t: "bye" });
  assert.deepEqual(["t1", "t2"].map(pace), [60, 60]);
  hub.handle("t1", { t: "render", lat: [], fps: 31, frameP95: 45 });
  assert.deepEqual(["t1", "t2"].map(pace), [30, 60], "t1's frames overrun");
});

test("a GoAway moves the hub at once, to its own wsUrl only, resuming from the last sequence", async () => {
  const { hub, clock } = setup();
  const ws = await open(clock);
  hub.handle("t1", { t: "sub", group: "fx" });
  ws.frame({ deltas: [{ group: "fx", shard: 0, seq: 7, epoch: 3, symbols: [sym("AAA", 1)] }] });
  // Not yet stable (a move is not a failure either way); a forged address rides in the reason.
  ws.frame({ deltas: [{ group: "fx", shard: 0, seq: 8, epoch: 3, symbols: [sym("AAA", 2)] }], goAway: { retryMs: 300, reason: "go to ws://evil/ws", closeInMs: 2000 } });
  assert.deepEqual(ws.closed, { code: 1000, reason: "moving (GoAway)" });
  await clock.advance(0);
  assert.equal(FakeSocket.all.length, 2, "reconnected without waiting");
  assert.equal(FakeSocket.all[1].url, "ws://gw/ws", "to the configured URL");
  const ws2 = await open(clock, { session: "s2" });
  const resume = ws2.sent.find((f) => f.resume).resume;
  assert.deepEqual(resume.points.map((p) => [p.group, p.shard, Number(p.epoch), Number(p.seq)]), [["fx", 0, 3, 8]], "the GoAway frame's own delta counts");
  assert.equal(hub.counters.moves, 1);
  assert.equal(hub.reconnector.failures, 0, "a move is not a failure");
});

test("a failed move waits the GoAway's retry hint; the draining close 4100 is a move too", async () => {
  const { clock } = setup({ backoffBaseMs: 100, backoffCapMs: 1000 });
  const ws = await open(clock);
  ws.frame({ goAway: { retryMs: 700, reason: "draining: SIGTERM", closeInMs: 2000 } });
  await clock.advance(0);
  FakeSocket.all.at(-1).drop(1006); // the first attempt fails
  await clock.advance(690);
  assert.equal(FakeSocket.all.length, 2, "waits the hint");
  await clock.advance(20);
  assert.equal(FakeSocket.all.length, 3);
  const ws3 = await open(clock, { session: "s3" });
  ws3.drop(4100);
  await clock.advance(0);
  assert.equal(FakeSocket.all.length, 4, "4100: reconnected at once");
  assert.ok(FakeSocket.all.every((s) => s.url === "ws://gw/ws"));
});
