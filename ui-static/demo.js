// The demo page: five panels fed by the browser's single gateway connection.
//
// Batches only mark rows dirty; drawing happens in requestAnimationFrame, each panel within
// its own budget (8 ms by default): whatever a panel cannot draw in time stays dirty for the
// next frame, so a burst never produces a long frame. Frame times, per-panel render times and
// tick-arrival -> drawn latencies are kept in window.__xy for the browser tests and
// bench/e2e_latency.py, and latencies are reported to the hub (ClientMetrics).
//
// URL flags: ?mode=leader (no SharedWorker: leader election), ?groups=a,b, ?budget=8.

import { connect, loadConfig } from "./xy-client.js";
import { percentiles, symbolKey } from "./xy-core.js";

const params = new URLSearchParams(location.search);
const BUDGET_MS = Number(params.get("budget") ?? 8);
const MAX_SAMPLES = 200_000;
const MESSAGE_IDS_SHOWN = 24;

const stats = {
  received: 0,
  byGroup: {}, // group -> batches received
  batchIds: [],
  latencies: [], // ms, tick arrival -> drawn (bounded)
  frames: [], // ms between animation frames (bounded)
  panels: {}, // name -> [ms] per frame (bounded)
  overBudget: {}, // name -> frames where the panel stopped at its budget
  status: null,
  errors: [],
  degrade: null,
};
window.__xy = stats;
window.__xyReset = () => {
  stats.latencies = [];
  stats.frames = [];
  for (const k of Object.keys(stats.panels)) stats.panels[k] = [];
  for (const k of Object.keys(stats.overBudget)) stats.overBudget[k] = 0;
};
window.__xyStats = () => ({
  received: stats.received,
  latency: { n: stats.latencies.length, ...percentiles(stats.latencies, [50, 95, 99]) },
  frame: { n: stats.frames.length, ...percentiles(stats.frames, [50, 95, 99]) },
  panels: Object.fromEntries(Object.entries(stats.panels).map(([k, v]) => [k, { n: v.length, ...percentiles(v, [50, 95, 99]), max: v.length ? Math.max(...v) : null, overBudget: stats.overBudget[k] ?? 0 }])),
  status: stats.status,
});

function push(list, value) {
  if (list.length < MAX_SAMPLES) list.push(value);
}

function fmtPrice(v, decimals) {
  return decimals ? (v / 10 ** decimals).toFixed(decimals) : String(v);
}

// Server "now" in µs: local wall clock plus the hub's estimate of the gateway clock offset.
let offsetUs = 0;
function serverNowUs() {
  return (performance.timeOrigin + performance.now()) * 1000 + offsetUs;
}

// ------------------------------------------------------------------------------ panels

class Watchlist {
  constructor(root, group, client, onSelect) {
    this.name = `watch:${group}`;
    this.root = root;
    this.group = group;
    this.client = client;
    this.body = root.querySelector("tbody");
    root.querySelector(".group").textContent = group;
    this.rows = new Map(); // key -> {tr, cells, state, open, arrivalUs}
    this.dirty = new Set();
    this.onSelect = onSelect;
  }

  apply(batch) {
    if (batch.snapshot) {
      for (const s of batch.snapshot.symbols) this._set(s, 0);
    }
    for (const k of batch.removed ?? []) {
      const row = this.rows.get(k);
      if (row !== undefined) {
        row.tr.remove();
        this.rows.delete(k);
        this.dirty.delete(k);
      }
    }
    for (const s of batch.symbols) this._set(s, s.tsArrivalUs);
  }

  _set(s, arrivalUs) {
    const key = symbolKey(s);
    let row = this.rows.get(key);
    if (row === undefined) {
      const tr = document.createElement("tr");
      const cells = [];
      for (let i = 0; i < 7; i++) cells.push(tr.appendChild(document.createElement("td")));
      cells[0].textContent = s.symbol;
      tr.title = `${s.venue}:${s.symbol}`;
      tr.addEventListener("click", () => this.onSelect(this.group, key));
      this.body.appendChild(tr);
      row = { tr, cells, state: s, open: s.last, arrivalUs: 0 };
      this.rows.set(key, row);
    }
    row.state = s;
    if (arrivalUs && (!row.arrivalUs || arrivalUs < row.arrivalUs)) row.arrivalUs = arrivalUs;
    this.dirty.add(key);
  }

  render(deadline) {
    let complete = true;
    for (const key of this.dirty) {
      if (performance.now() > deadline) {
        complete = false;
        break;
      }
      this.dirty.delete(key);
      const row = this.rows.get(key);
      const s = row.state;
      const d = s.priceDecimals;
      const chg = s.last - row.open;
      const c = row.cells;
      c[1].textContent = fmtPrice(s.last, d);
      c[2].textContent = fmtPrice(chg, d);
      c[2].className = chg > 0 ? "up" : chg < 0 ? "down" : "";
      c[3].textContent = s.bids.length ? fmtPrice(s.bids[0].price, d) : "";
      c[4].textContent = s.asks.length ? fmtPrice(s.asks[0].price, d) : "";
      c[5].textContent = String(s.vol);
      c[6].textContent = String(s.totalTrades);
      if (row.arrivalUs) {
        const ms = (serverNowUs() - row.arrivalUs) / 1000;
        row.arrivalUs = 0;
        push(stats.latencies, ms);
        this.client.reportRender(ms);
      }
    }
    return complete;
  }

  setPaused(paused) {
    this.root.querySelector(".paused-flag").hidden = !paused;
  }

  select(key) {
    for (const [k, row] of this.rows) row.tr.classList.toggle("selected", k === key);
  }
}

class Movers {
  constructor(root, books) {
    this.name = "movers";
    this.list = root.querySelector(".movers");
    this.topBy = root.querySelector(".top-by");
    this.books = books; // group -> Map(key -> state)
    this.top = [];
    this.dirty = false;
    this.items = [];
  }

  setTop(group, snapshot) {
    // Top-K from the latest snapshot of the first group that has one.
    if (!snapshot.top?.length && this.top.length) return;
    this.top = snapshot.top.length
      ? snapshot.top.map((t) => ({ group, key: `${t.venue}:${t.symbol}`, symbol: t.symbol, value: t.value }))
      : snapshot.symbols.slice().sort((a, b) => b.vol - a.vol).slice(0, 10).map((s) => ({ group, key: symbolKey(s), symbol: s.symbol, value: s.vol }));
    this.topBy.textContent = snapshot.topBy ? `by ${snapshot.topBy}` : "by vol";
    this.dirty = true;
  }

  touch() {
    if (this.top.length) this.dirty = true;
  }

  render(deadline) {
    if (!this.dirty) return true;
    this.dirty = false;
    while (this.items.length < this.top.length) this.items.push(this.list.appendChild(document.createElement("li")));
    while (this.items.length > this.top.length) this.items.pop().remove();
    for (let i = 0; i < this.top.length; i++) {
      if (performance.now() > deadline) {
        this.dirty = true;
        return false;
      }
      const t = this.top[i];
      const s = this.books.get(t.group)?.get(t.key);
      const last = s ? ` · ${fmtPrice(s.last, s.priceDecimals)}` : "";
      this.items[i].textContent = `${t.symbol} ${t.value}${last}`;
    }
    return true;
  }
}

class Ladder {
  constructor(root) {
    this.name = "ladder";
    this.body = root.querySelector("tbody");
    this.title = root.querySelector(".ladder-symbol");
    this.note = root.querySelector(".ladder-note");
    this.key = null;
    this.group = null;
    this.state = null;
    this.dirty = false;
    this.rows = [];
  }

  select(group, key) {
    this.group = group;
    this.key = key;
    this.title.textContent = key;
    this.dirty = true;
  }

  offer(group, s) {
    if (this.key === null) this.select(group, symbolKey(s));
    if (group === this.group && symbolKey(s) === this.key) {
      this.state = s;
      this.dirty = true;
    }
  }

  render(deadline) {
    if (!this.dirty || this.state === null) return true;
    this.dirty = false;
    const s = this.state;
    const levels = Math.max(s.bids.length, s.asks.length);
    while (this.rows.length < levels) {
      const tr = this.body.appendChild(document.createElement("tr"));
      const cells = [0, 1, 2].map(() => tr.appendChild(document.createElement("td")));
      cells[0].className = "bid";
      cells[2].className = "ask";
      this.rows.push(cells);
    }
    for (let i = 0; i < this.rows.length; i++) {
      if (performance.now() > deadline) {
        this.dirty = true;
        return false;
      }
      const b = s.bids[i];
      const a = s.asks[i];
      const cells = this.rows[i];
      cells[0].textContent = b ? String(b.size) : "";
      cells[1].textContent = b && a ? `${fmtPrice(b.price, s.priceDecimals)} / ${fmtPrice(a.price, s.priceDecimals)}` : b ? fmtPrice(b.price, s.priceDecimals) : a ? fmtPrice(a.price, s.priceDecimals) : "";
      cells[2].textContent = a ? String(a.size) : "";
    }
    this.note.textContent = s.trimmed ? "(depth trimmed by degradation)" : "";
    return true;
  }
}

class StatusPanel {
  constructor(root) {
    this.name = "status";
    this.dl = root.querySelector(".stats");
    this.degrade = root.querySelector(".degrade");
    this.messages = document.getElementById("messages");
    this.conn = document.getElementById("conn");
    this.level = document.getElementById("level");
    this.mode = document.getElementById("mode");
    this.fields = new Map();
    this.newIds = [];
    this.dirty = true;
    this.lastStats = 0;
  }

  field(label) {
    let dd = this.fields.get(label);
    if (dd === undefined) {
      const dt = this.dl.appendChild(document.createElement("dt"));
      dt.textContent = label;
      dd = this.dl.appendChild(document.createElement("dd"));
      this.fields.set(label, dd);
    }
    return dd;
  }

  message(id) {
    this.newIds.push(id);
    if (this.newIds.length > MESSAGE_IDS_SHOWN) this.newIds.splice(0, this.newIds.length - MESSAGE_IDS_SHOWN);
  }

  render(deadline) {
    for (const id of this.newIds) {
      const span = document.createElement("span");
      span.textContent = `demo-msg-${id}`;
      span.className = "demo-msg";
      this.messages.prepend(span);
    }
    this.newIds = [];
    while (this.messages.childElementCount > MESSAGE_IDS_SHOWN) this.messages.lastElementChild.remove();
    const now = performance.now();
    if (now - this.lastStats < 250 || performance.now() > deadline) return true;
    this.lastStats = now;
    const st = stats.status;
    if (st) {
      this.conn.textContent = st.state;
      this.conn.dataset.state = st.state;
      this.mode.textContent = `${st.mode}${st.role && st.role !== "worker-client" ? ` · this tab: ${st.role}` : ""} · ${st.tabs} tab(s)`;
      const lvl = st.degrade?.level ?? 0;
      this.level.textContent = `L${lvl}`;
      this.level.dataset.level = String(lvl);
      this.degrade.textContent = lvl
        ? `Degraded to L${lvl}: ${st.degrade.reason || "gateway"} — recovers when ${st.degrade.recovery || "the queue drains"}`
        : "";
      this.field("gateway").textContent = st.wsUrl;
      this.field("reconnects").textContent = String(st.reconnects);
      this.field("last recovery").textContent = st.lastRecoveryMs === null ? "—" : `${Math.round(st.lastRecoveryMs)} ms`;
      this.field("rtt").textContent = st.rttMs === null ? "—" : `${st.rttMs.toFixed(1)} ms`;
      this.field("groups").textContent = st.groups.join(", ");
      const c = st.counters;
      this.field("frames / deltas").textContent = `${c.frames} / ${c.deltas}`;
      this.field("dup / gaps / snaps asked").textContent = `${c.duplicates} / ${c.gaps} / ${c.snapshotRequests}`;
      this.field("checksums ok / bad").textContent = `${c.checksumsVerified} / ${c.checksumMismatches}`;
      if (st.lastError) this.field("last event").textContent = `${st.lastError.code}: ${st.lastError.message}`;
    }
    const lat = percentiles(stats.latencies.slice(-2000), [50, 95, 99]);
    const fr = percentiles(stats.frames.slice(-600), [50, 95, 99]);
    const show = (v) => (v === null ? "—" : v.toFixed(1));
    this.field("latency p50/95/99").textContent = `${show(lat.p50)} / ${show(lat.p95)} / ${show(lat.p99)} ms`;
    this.field("frame p50/95/99").textContent = `${show(fr.p50)} / ${show(fr.p95)} / ${show(fr.p99)} ms`;
    this.field("batches received").textContent = String(stats.received);
    const panelTimes = Object.entries(stats.panels)
      .map(([k, v]) => `${k} ${show(percentiles(v.slice(-600), [95]).p95)}`).join(" · ");
    this.field("panel p95 (ms)").textContent = panelTimes;
    return true;
  }
}

// ------------------------------------------------------------------------------ wiring

async function main() {
  const config = await loadConfig();
  const groups = (params.get("groups") ?? (config.groups ?? []).join(",")).split(",").filter(Boolean);
  const mode = params.get("mode") ?? "auto";
  const client = await connect({ config, mode });
  window.__xyClient = client;

  const books = new Map(); // group -> Map(key -> latest state), for the movers panel
  const ladder = new Ladder(document.getElementById("panel-ladder"));
  const movers = new Movers(document.getElementById("panel-movers"), books);
  const status = new StatusPanel(document.getElementById("panel-status"));
  const watchRoots = [document.getElementById("panel-watch-a"), document.getElementById("panel-watch-b")];
  const watches = [];
  const select = (group, key) => {
    ladder.select(group, key);
    const s = books.get(group)?.get(key);
    if (s) ladder.offer(group, s);
    for (const w of watches) w.select(w.group === group ? key : null);
  };
  groups.slice(0, 2).forEach((g, i) => watches.push(new Watchlist(watchRoots[i], g, client, select)));
  for (const root of watchRoots.slice(watches.length)) root.hidden = true;

  const onBatch = (batch) => {
    stats.received += 1;
    stats.byGroup[batch.group] = (stats.byGroup[batch.group] ?? 0) + 1;
    if (stats.batchIds.length < MAX_SAMPLES) stats.batchIds.push(batch.id);
    offsetUs = batch.offsetUs ?? offsetUs;
    status.message(batch.id);
    let book = books.get(batch.group);
    if (book === undefined) books.set(batch.group, (book = new Map()));
    if (batch.snapshot) {
      book.clear();
      for (const s of batch.snapshot.symbols) {
        book.set(symbolKey(s), s);
        ladder.offer(batch.group, s);
      }
      movers.setTop(batch.group, batch.snapshot);
    }
    for (const k of batch.removed ?? []) book.delete(k);
    for (const s of batch.symbols) {
      book.set(symbolKey(s), s);
      ladder.offer(batch.group, s);
    }
    movers.touch();
    for (const w of watches) if (w.group === batch.group) w.apply(batch);
  };
  for (const g of groups) client.subscribe(g, onBatch);
  client.on("status", (st) => { stats.status = st; });
  client.on("degrade", (d) => {
    stats.degrade = d;
    for (const w of watches) w.setPaused(d.paused.includes(w.group));
  });
  client.on("error", (e) => {
    if (stats.errors.length < 100) stats.errors.push(e);
  });

  const panels = [...watches, movers, ladder, status];
  for (const p of panels) {
    stats.panels[p.name] = [];
    stats.overBudget[p.name] = 0;
  }
  let lastTs = 0;
  let fpsFrames = 0;
  let fpsSince = performance.now();
  const frame = (ts) => {
    if (lastTs) push(stats.frames, ts - lastTs);
    lastTs = ts;
    for (const p of panels) {
      const t0 = performance.now();
      const complete = p.render(t0 + BUDGET_MS);
      const spent = performance.now() - t0;
      push(stats.panels[p.name], spent);
      if (!complete) stats.overBudget[p.name] += 1;
    }
    fpsFrames += 1;
    const now = performance.now();
    if (now - fpsSince >= 1000) {
      const recent = stats.frames.slice(-120);
      client.reportFrames((fpsFrames * 1000) / (now - fpsSince), percentiles(recent, [95]).p95 ?? 0);
      fpsFrames = 0;
      fpsSince = now;
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

main().catch((err) => {
  document.getElementById("conn").textContent = `error: ${err.message ?? err}`;
  stats.errors.push({ code: "XY-UI-008", message: String(err.message ?? err) });
  console.error(err);
});
