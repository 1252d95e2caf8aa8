// bench/fanout.py's Node load generator (`--client node`): N WebSocket connections to the
// gateway in one Node process (the `ws` package, pinned in package.json), each speaking the
// browser protocol (hello with the token, subscribe to the groups, a ClientFrame ping every 2 s)
// and counting every frame and byte it receives. Every SAMPLE_EVERY-th frame of each connection
// is read just far enough to find its deltas' emit stamps (Delta.ts_emit_us, the publisher's
// wall clock) and its degrade level: latency = now - the oldest stamp in the frame, as the
// Python clients measure it. A stack independent of the default picows client (another language,
// another WebSocket library), to cross-check its latency; it costs about twice as much CPU per
// frame, still well under the gateway.
//
// Driven by bench/fanout.py:
//   node bench/fanout_client.mjs --port P --token JWT --clients N --seconds S [--warmup W]
// prints "READY" when the measured window opens and "RESULT {json}" when it closes (the
// orchestrator reads both processes' CPU from /proc at those two lines).

import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import {
  ClientFrameSchema, DegradeChangeSchema, DeltaSchema, ServerFrameSchema, create, fromBinary,
  toBinary,
} from "../contracts/es/index.js";

export const SAMPLE_EVERY = 10;
export const PING_EVERY_MS = 2000;
const CONNECTING_AT_ONCE = 50;

// Field numbers from the generated schema, so a renumbered contract cannot silently skew the
// scan.
const F = {
  welcome: ServerFrameSchema.field.welcome.number,
  deltas: ServerFrameSchema.field.deltas.number,
  error: ServerFrameSchema.field.error.number,
  degrade: ServerFrameSchema.field.degrade.number,
  tsEmit: DeltaSchema.field.tsEmitUs.number,
  level: DegradeChangeSchema.field.level.number,
};

// What a sampled frame carries, read without decoding the rest: its number of deltas, the oldest
// delta's emit stamp (µs, Infinity when none), the degrade level it announces (-1 when none), and
// whether it holds a welcome or an error.
export function scanFrame(bytes) {
  const r = new BinaryReader(bytes);
  const out = { deltas: 0, minEmitUs: Infinity, level: -1, welcome: false, error: false };
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (wt !== WireType.LengthDelimited) {
      r.skip(wt, no);
    } else if (no === F.deltas) {
      out.deltas += 1;
      const end = r.uint32() + r.pos;
      while (r.pos < end) {
        const [dno, dwt] = r.tag();
        if (dno === F.tsEmit && dwt === WireType.Varint) {
          const ts = Number(r.int64());
          if (ts < out.minEmitUs) out.minEmitUs = ts;
        } else {
          r.skip(dwt, dno);
        }
      }
    } else if (no === F.degrade) {
      const end = r.uint32() + r.pos;
      out.level = 0; // proto3: a level of 0 is absent on the wire
      while (r.pos < end) {
        const [lno, lwt] = r.tag();
        if (lno === F.level && lwt === WireType.Varint) out.level = r.uint32();
        else r.skip(lwt, lno);
      }
    } else {
      if (no === F.welcome) out.welcome = true;
      else if (no === F.error) out.error = true;
      r.skip(wt, no);
    }
  }
  return out;
}

export function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// Wall clock in µs with sub-millisecond resolution (Date.now() has only milliseconds).
export function nowUs() {
  return (performance.timeOrigin + performance.now()) * 1000;
}

// The counters of all connections together: frames and bytes always, latency and deltas only for
// sampled frames, and only while `measuring`.
export class Recorder {
  constructor(clock = nowUs) {
    this.clock = clock;
    this.measuring = false;
    this.frames = 0;
    this.bytes = 0;
    this.sampled = 0;
    this.deltasSampled = 0;
    this.lat = [];
    this.levels = [];
  }

  // One frame of one connection; `n` is that connection's frame count (1-based).
  frame(bytes, n) {
    if (!this.measuring) return;
    this.frames += 1;
    this.bytes += bytes.length;
    if (n % SAMPLE_EVERY !== 0) return;
    const s = scanFrame(bytes);
    this.sampled += 1;
    this.deltasSampled += s.deltas;
    if (s.deltas > 0) this.lat.push((this.clock() - s.minEmitUs) / 1000);
    if (s.level >= 0) this.levels.push(s.level);
  }

  result(clients, seconds) {
    const lat = Float64Array.from(this.lat).sort();
    const levels = [];
    for (const l of this.levels) if (levels.at(-1) !== l) levels.push(l);
    return {
      client_kind: "node", clients, seconds,
      frames: this.frames, bytes: this.bytes,
      frames_per_s: this.frames / seconds,
      mbytes_per_s: this.bytes / seconds / 1e6,
      deltas_per_frame: this.deltasSampled / Math.max(1, this.sampled),
      lat_p50_ms: percentile(lat, 0.5), lat_p99_ms: percentile(lat, 0.99),
      lat_samples: lat.length, levels_seen: levels, slow_levels: [], slow_frames: 0,
    };
  }
}

export function helloFrames(token, groups) {
  return [
    toBinary(ClientFrameSchema, create(ClientFrameSchema, {
      id: 1, hello: { token, protocolVersion: 1, client: "bench-node" },
    })),
    toBinary(ClientFrameSchema, create(ClientFrameSchema, {
      id: 2, subscribe: { groups: groups.map((group) => ({ group })) },
    })),
  ];
}

export const PING = toBinary(ClientFrameSchema, create(ClientFrameSchema, { ping: { nonce: 1 } }));

// One connection: open, hello + subscribe, resolve once the gateway's welcome arrived. A fatal
// error frame or a close before the welcome rejects with what the gateway said.
function connectOne(WebSocket, url, hello, recorder, onLost) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
    let n = 0;
    let welcomed = false;
    ws.on("open", () => { for (const f of hello) ws.send(f); });
    ws.on("message", (data) => {
      n += 1;
      if (!welcomed) {
        const s = scanFrame(data);
        if (s.error) {
          const e = fromBinary(ServerFrameSchema, data).error;
          reject(new Error(`gateway refused the connection: ${e.code} ${e.message}`));
          ws.terminate();
          return;
        }
        if (s.welcome) { welcomed = true; resolve(ws); }
      }
      recorder.frame(data, n);
    });
    ws.on("error", (err) => { if (!welcomed) reject(err); });
    ws.on("close", (code, reason) => {
      if (!welcomed) reject(new Error(`closed before the welcome: ${code} ${reason}`));
      else onLost(code, String(reason));
    });
  });
}

// Opens `clients` connections, CONNECTING_AT_ONCE at a time (a burst of a thousand SYNs
// overflows the gateway's listen backlog).
export async function openAll(WebSocket, { port, token, clients, groups, recorder, onLost }) {
  const url = `ws://127.0.0.1:${port}/ws`;
  const hello = helloFrames(token, groups);
  const sockets = [];
  let next = 0;
  async function lane() {
    while (next < clients) {
      next += 1;
      sockets.push(await connectOne(WebSocket, url, hello, recorder, onLost));
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONNECTING_AT_ONCE, clients) }, lane));
  return sockets;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function loadWs() {
  try {
    return (await import("ws")).default;
  } catch (err) {
    throw new Error("the `ws` package is missing: run `npm ci` in the repository (package.json "
                    + `pins it as a devDependency): ${err.message}`);
  }
}

export async function main(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string" }, token: { type: "string" }, clients: { type: "string" },
      seconds: { type: "string", default: "8" }, warmup: { type: "string", default: "5" },
      groups: { type: "string", default: "g0,g1,g2,g3,g4" },
    },
  });
  const WebSocket = await loadWs();
  const clients = Number(values.clients);
  const recorder = new Recorder();
  const lost = [];
  const sockets = await openAll(WebSocket, {
    port: Number(values.port), token: values.token, clients,
    groups: values.groups.split(","), recorder, onLost: (code, reason) => lost.push([code, reason]),
  });
  const pinger = setInterval(() => { for (const ws of sockets) ws.send(PING); }, PING_EVERY_MS);
  await sleep(Number(values.warmup) * 1000); // snapshots delivered, levels settled at L0
  process.stdout.write("READY\n");
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  recorder.measuring = true;
  await sleep(Number(values.seconds) * 1000);
  recorder.measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const res = recorder.result(clients, elapsed);
  res.client_cpu_pct = (100 * (cpu.user + cpu.system) / 1e6) / elapsed;
  res.client_sys_pct = (100 * cpu.system / 1e6) / elapsed;
  res.connections_lost = lost.length;
  if (lost.length) res.first_lost = lost[0];
  process.stdout.write(`RESULT ${JSON.stringify(res)}\n`);
  clearInterval(pinger);
  for (const ws of sockets) ws.terminate();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (err) => { process.stderr.write(`fanout_client: ${err.stack ?? err}\n`); process.exit(2); },
  );
}
