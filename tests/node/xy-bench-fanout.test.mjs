// bench/fanout_client.mjs, the fan-out benchmark's Node load generator: its partial frame scan
// agrees with a full decode, it samples and counts as documented, and it speaks the gateway's
// handshake (hello, subscribe, wait for the welcome; a refusal is reported with the gateway's
// words) against a real WebSocket server. Run: node --test tests/node/xy-bench-fanout.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";

import { WebSocketServer } from "ws";

import {
  ClientFrameSchema, ErrorCode, ServerFrameSchema, create, fromBinary, toBinary,
} from "../../contracts/es/index.js";
import {
  PING, Recorder, SAMPLE_EVERY, helloFrames, openAll, percentile, scanFrame,
} from "../../bench/fanout_client.mjs";
import WebSocket from "ws";

const frame = (init) => toBinary(ServerFrameSchema, create(ServerFrameSchema, init));
const level = (price) => ({ price, size: 5 });
const delta = (group, tsEmitUs) => ({
  group, seq: 7, epoch: 1, tsEmitUs, windowMs: 33,
  symbols: [{ venue: "XBEN", symbol: `${group}-0`, seq: 7, bids: [level(9), level(8)],
    asks: [level(11)] }],
  removed: ["XBEN.gone"],
});

test("scanFrame reads what a full decode reads: deltas, the oldest emit stamp, the level", () => {
  const cases = [
    { deltas: [delta("g0", 1_733_580_000_123_456), delta("g1", 1_733_580_000_100_000)],
      snapshots: [{ group: "g0", version: 3, tsEmitUs: 5 }], tsSendUs: 42 },
    { deltas: [delta("g2", 17)], degrade: { level: 2, reason: "queue", pausedGroups: ["g3"] } },
    { degrade: { level: 0, reason: "recovered" } },
    { welcome: { sessionId: "s1", heartbeatMs: 5000 } },
    { error: { code: ErrorCode.ACL_DENIED, message: "no", fatal: true } },
    { pong: { nonce: 1 } },
  ];
  for (const init of cases) {
    const bytes = frame(init);
    const full = fromBinary(ServerFrameSchema, bytes);
    const s = scanFrame(bytes);
    assert.equal(s.deltas, full.deltas.length);
    const stamps = full.deltas.map((d) => Number(d.tsEmitUs));
    assert.equal(s.minEmitUs, stamps.length ? Math.min(...stamps) : Infinity);
    assert.equal(s.level, full.degrade ? full.degrade.level : -1);
    assert.equal(s.welcome, full.welcome !== undefined);
    assert.equal(s.error, full.error !== undefined);
  }
});

test("the recorder counts every frame and byte, samples every SAMPLE_EVERY-th, only while measuring", () => {
  const rec = new Recorder(() => 1_000_000 + 2_500); // the clock: 2.5 ms after the stamp below
  const bytes = frame({ deltas: [delta("g0", 1_000_000), delta("g1", 1_000_500)] });
  rec.frame(bytes, SAMPLE_EVERY); // not measuring yet: ignored
  rec.measuring = true;
  for (let n = 1; n <= 3 * SAMPLE_EVERY; n += 1) rec.frame(bytes, n);
  rec.frame(frame({ degrade: { level: 1 } }), 4 * SAMPLE_EVERY);
  const r = rec.result(2, 1.5);
  assert.equal(r.frames, 3 * SAMPLE_EVERY + 1);
  assert.equal(r.bytes, 3 * SAMPLE_EVERY * bytes.length + frame({ degrade: { level: 1 } }).length);
  assert.equal(r.lat_samples, 3);
  assert.equal(r.lat_p50_ms, 2.5);
  assert.equal(r.deltas_per_frame, 6 / 4);
  assert.deepEqual(r.levels_seen, [1]);
  assert.equal(r.frames_per_s, r.frames / 1.5);
});

test("percentile picks the rank's sample and is NaN without samples", () => {
  assert.ok(Number.isNaN(percentile([], 0.5)));
  const xs = Float64Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(xs, 0.5), 51);
  assert.equal(percentile(xs, 0.99), 100);
});

async function server(onHello) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await once(wss, "listening");
  const got = [];
  wss.on("connection", (ws) => {
    const frames = [];
    ws.on("message", (data) => {
      const f = fromBinary(ClientFrameSchema, data);
      frames.push(f);
      got.push(f);
      if (frames.length === 1) ws.send(onHello(f));
    });
  });
  return { wss, got, port: wss.address().port };
}

test("openAll says hello with the token, subscribes to every group and waits for the welcome", async () => {
  const srv = await server(() => frame({ welcome: { sessionId: "s" } }));
  const rec = new Recorder();
  const sockets = await openAll(WebSocket, {
    port: srv.port, token: "jwt", clients: 3, groups: ["g0", "g1"], recorder: rec,
    onLost: () => {},
  });
  assert.equal(sockets.length, 3);
  // Both frames of each connection were written before its welcome was read.
  const deadline = Date.now() + 5000;
  while (srv.got.length < 6 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  const hellos = srv.got.filter((f) => f.hello);
  const subs = srv.got.filter((f) => f.subscribe);
  assert.equal(hellos.length, 3);
  assert.ok(hellos.every((f) => f.hello.token === "jwt" && f.hello.protocolVersion === 1));
  assert.equal(subs.length, 3);
  assert.ok(subs.every((f) => f.subscribe.groups.map((g) => g.group).join() === "g0,g1"));
  for (const ws of sockets) ws.terminate();
  srv.wss.close();
});

test("a refused hello stops the load generator with the gateway's error", async () => {
  const srv = await server(() => frame({
    error: { code: ErrorCode.AUTH_INVALID, message: "token expired", fatal: true },
  }));
  await assert.rejects(
    openAll(WebSocket, { port: srv.port, token: "old", clients: 1, groups: ["g0"],
      recorder: new Recorder(), onLost: () => {} }),
    /gateway refused the connection: \d+ token expired/);
  srv.wss.close();
});

test("hello, subscribe and ping are well-formed ClientFrames", () => {
  const [hello, sub] = helloFrames("t", ["a", "b"]).map((b) => fromBinary(ClientFrameSchema, b));
  assert.equal(hello.id, 1);
  assert.equal(hello.hello.token, "t");
  assert.equal(sub.id, 2);
  assert.deepEqual(sub.subscribe.groups.map((g) => g.group), ["a", "b"]);
  assert.equal(fromBinary(ClientFrameSchema, PING).ping.nonce, 1n);
});
