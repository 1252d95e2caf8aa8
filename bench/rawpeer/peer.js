// The raw-tick peer of bench/e2e_latency.py: a tab subscribed straight to nats-server's WebSocket
// listener for the raw ticks (`xy.src.tick.<venue>.<symbol>`) of the symbols the demo page shows,
// drawing one row per symbol in requestAnimationFrame, as lean as a page can be. What it records,
// in window.__peer (cleared by __peerReset):
//   received: tick arrival at the publisher (`ts_arrival_us`, same host clock) -> message handled
//   drawn: the same -> the row written in the DOM
//   frames: ms between animation frames; work: ms of drawing per frame
//   bytes: the NATS protocol bytes of every message (`MSG <subject> <sid> <size>\r\n<payload>\r\n`)
// Bundled by the bench with esbuild (nats.ws is pinned in package.json).

import { connect } from "nats.ws";
import { TickSchema, fromBinary } from "../../ui-static/gen/xy_contracts.js";

const MAX_SAMPLES = 200_000;
const stats = { received: [], drawn: [], frames: [], work: [], messages: 0, bytes: 0, error: null };
window.__peer = stats;
window.__peerReset = () => {
  stats.received = [];
  stats.drawn = [];
  stats.frames = [];
  stats.work = [];
  stats.messages = 0;
  stats.bytes = 0;
};

const push = (list, v) => {
  if (list.length < MAX_SAMPLES) list.push(v);
};
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
const enc = new TextEncoder();

const rows = new Map(); // key -> {cells, tick}
const dirty = new Set();
const table = document.getElementById("rows");

function rowFor(key) {
  let row = rows.get(key);
  if (row === undefined) {
    const tr = document.createElement("tr");
    const cells = [];
    for (let i = 0; i < 6; i++) cells.push(tr.appendChild(document.createElement("td")));
    cells[0].textContent = key;
    table.appendChild(tr);
    row = { cells, texts: ["", "", "", "", "", ""], tick: null };
    rows.set(key, row);
  }
  return row;
}

function put(row, i, text) {
  if (row.texts[i] !== text) {
    row.texts[i] = text;
    row.cells[i].textContent = text;
  }
}

function price(v, d) {
  // int64 fields decode as BigInt
  return d ? (Number(v) / 10 ** d).toFixed(d) : String(v);
}

let lastTs = 0;
function frame(ts) {
  if (lastTs) push(stats.frames, ts - lastTs);
  lastTs = ts;
  const t0 = performance.now();
  const now = nowUs();
  for (const key of dirty) {
    const row = rows.get(key);
    const t = row.tick;
    const d = t.priceDecimals;
    put(row, 1, price(t.last, d));
    put(row, 2, String(t.lastSize));
    put(row, 3, t.bids.length ? price(t.bids[0].price, d) : "");
    put(row, 4, t.asks.length ? price(t.asks[0].price, d) : "");
    put(row, 5, String(t.vol));
    push(stats.drawn, (now - Number(t.tsArrivalUs)) / 1000);
  }
  dirty.clear();
  push(stats.work, performance.now() - t0);
  requestAnimationFrame(frame);
}

async function main() {
  const cfg = await (await fetch("peer.json")).json();
  const nc = await connect({ servers: cfg.nats });
  const handle = (err, m) => {
    if (err) {
      stats.error = String(err);
      return;
    }
    try {
      stats.messages += 1;
      stats.bytes += 4 + enc.encode(m.subject).length + 1 + String(m.sid).length + 1
        + String(m.data.length).length + 2 + m.data.length + 2;
      const t = fromBinary(TickSchema, m.data);
      push(stats.received, (nowUs() - Number(t.tsArrivalUs)) / 1000);
      const key = `${t.venue}.${t.symbol}`;
      rowFor(key).tick = t;
      dirty.add(key);
    } catch (e) {
      // Shown by the bench (a thrown callback would silently stop the subscription).
      stats.error = `message on ${m.subject}: ${e?.stack ?? e}`;
    }
  };
  for (const subject of cfg.subjects) nc.subscribe(subject, { callback: handle });
  requestAnimationFrame(frame);
}

main().catch((err) => {
  stats.error = String(err?.message ?? err);
});
