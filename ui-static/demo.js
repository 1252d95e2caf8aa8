// The demo page: five panels fed by the browser's single gateway connection.
//
// Batches only mark rows dirty; drawing happens in requestAnimationFrame at the rate the hub asks
// of this tab (60 fps, 30 when several windows are visible or frames overrun, none while hidden),
// each panel within its own budget (8 ms by default): whatever a panel cannot draw in time stays
// dirty for the next frame, so a burst never produces a long frame. Rows update in place, and only
// those in view of their scroll container; a cell is written only when its text changes. The
// watchlists and the ladder take every batch (tier "live"); the top movers take one merged batch
// per 250 ms (tier "overview"). Frame times, per-panel render times and tick-arrival -> drawn
// latencies are kept in window.__xy for the browser tests and bench/e2e_latency.py, and latencies
// are reported to the hub (ClientMetrics); the header shows their p50/p95 over the last 5 s.
//
// What each panel subscribes to is what it draws: the watchlists take their group's watchlist
// projection (`group/watch`, a fixed list of symbols) and the top movers every group's Top-K
// projection (`group/top`), as /config.json names them ("projections"); the ladder draws the
// selected watchlist row, so it reads the watchlist's stream. A config without projections, or
// ?streams=groups, subscribes every panel to whole groups (bench/demo_tabs.py compares the two).
//
// URL flags: ?mode=leader (no SharedWorker: leader election), ?groups=a,b, ?budget=8,
// ?streams=groups.

import { TIERS, connect, loadConfig } from "./xy-client.js";
import { percentiles, symbolKey } from "./xy-core.js";
import {
  LEVEL_MEANING, RollingHistogram, Ring, WATCH_COLUMNS, drawDue, nextSort, rowComparator, sortValues, topMovers,
  visibleRows,
} from "./demo-core.js";

const params = new URLSearchParams(location.search);
const BUDGET_MS = Number(params.get("budget") ?? 8);
const MAX_SAMPLES = 200_000;
const READOUT_MS = 250;
const MAX_MOVERS = 15; // what the panel shows without scrolling at 1400x900

const stats = {
  received: 0, // batches of the live subscriptions (watchlists, ladder)
  byGroup: {}, // group -> batches received (of the group or of a projection of it)
  byStream: {}, // stream ("group" or "group/projection") -> batches received, either tier
  streams: { live: [], overview: [] }, // what the page subscribed to, per tier
  overview: 0, // batches of the movers' overview subscriptions
  pace: null, // the draw rate the hub asks of this tab (fps)
  draws: 0, // animation frames drawn in (the others skipped at 30 fps)
  latencies: [], // ms, tick arrival -> drawn (bounded; cleared by __xyReset)
  // ms per live batch, where a latency goes (bounded; cleared by __xyReset): oldest tick arrival
  // -> the hub posted the batch (gateway and worker), and posted -> this tab took it in.
  hubMs: [],
  postMs: [],
  frames: [], // ms between animation frames (bounded; cleared by __xyReset)
  panels: {}, // name -> [ms] per frame (bounded; cleared by __xyReset)
  overBudget: {}, // name -> frames where the panel stopped at its budget
  status: null,
  errors: [],
  degrade: null,
};
// What the page shows: recent windows that keep moving however long the page runs (the arrays
// above stop growing at MAX_SAMPLES).
const recent = {
  latency: new RollingHistogram({ windowMs: 5000 }),
  frames: new Ring(300),
  panels: {}, // name -> Ring
};
window.__xy = stats;
window.__xyReset = () => {
  stats.latencies = [];
  stats.hubMs = [];
  stats.postMs = [];
  stats.frames = [];
  for (const k of Object.keys(stats.panels)) stats.panels[k] = [];
  for (const k of Object.keys(stats.overBudget)) stats.overBudget[k] = 0;
};

function push(list, value) {
  if (list.length < MAX_SAMPLES) list.push(value);
}

function fmtPrice(v, decimals) {
  return decimals ? (v / 10 ** decimals).toFixed(decimals) : String(v);
}

function fmtMs(v) {
  return v === null ? "—" : v < 10 ? v.toFixed(1) : String(Math.round(v));
}

/** Write `text` into `cell` only when it differs from what `texts[i]` says is there. */
function put(cell, texts, i, text) {
  if (texts[i] !== text) {
    texts[i] = text;
    cell.textContent = text;
  }
}

// Server "now" in µs: local wall clock plus the hub's estimate of the gateway clock offset.
let offsetUs = 0;
function serverNowUs() {
  return (performance.timeOrigin + performance.now()) * 1000 + offsetUs;
}

// ------------------------------------------------------------------------------ panels

/** The group a stream belongs to ("fx" of "fx/watch"). */
function groupOf(stream) {
  return stream.split("/")[0];
}

class Watchlist {
  constructor(root, group, stream, client, onSelect) {
    this.name = `watch:${group}`;
    this.root = root;
    this.group = group;
    this.stream = stream; // the group, or its projection the panel draws
    this.client = client;
    this.scroller = root.querySelector(".scroll");
    this.head = root.querySelector("thead");
    this.body = root.querySelector("tbody");
    this.count = root.querySelector(".count");
    root.querySelector(".group").textContent = group;
    this.rows = new Map(); // key -> {key, tr, cells, texts, state, open, arrivalUs, vals, index}
    this.order = []; // rows in table order
    this.dirty = new Set();
    this.onSelect = onSelect;
    this.sort = { col: 0, dir: 1 };
    this.orderDirty = false;
    this.inView = [0, -1]; // row indexes in view (visibleRows), measured at the frame's start
    this.geometry = null; // {headHeight, rowHeight}, measured once rows exist (again on resize)
    new ResizeObserver(() => { this.geometry = null; }).observe(this.scroller);
    this.heads = [...root.querySelectorAll("thead th")];
    this.heads.forEach((th, col) => {
      th.tabIndex = 0;
      th.title = `sort by ${WATCH_COLUMNS[col]}`;
      th.addEventListener("click", () => this.sortBy(col));
      th.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          this.sortBy(col);
        }
      });
    });
    this._showSort();
  }

  sortBy(col) {
    this.sort = nextSort(this.sort, col);
    this._showSort();
    this.orderDirty = true;
  }

  _showSort() {
    this.heads.forEach((th, col) => {
      if (col === this.sort.col) th.setAttribute("aria-sort", this.sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }

  apply(batch) {
    if (batch.snapshot) {
      // A snapshot is the whole stream: symbols it no longer has are gone.
      const keep = new Set(batch.snapshot.symbols.map(symbolKey));
      for (const k of this.rows.keys()) if (!keep.has(k)) this._remove(k);
      for (const s of batch.snapshot.symbols) this._set(s, 0);
    }
    for (const k of batch.removed ?? []) this._remove(k);
    for (const s of batch.symbols) this._set(s, s.tsArrivalUs);
  }

  _remove(key) {
    const row = this.rows.get(key);
    if (row === undefined) return;
    row.tr.remove();
    this.rows.delete(key);
    this.dirty.delete(key);
    this.orderDirty = true;
  }

  _set(s, arrivalUs) {
    const key = symbolKey(s);
    let row = this.rows.get(key);
    if (row === undefined) {
      const tr = document.createElement("tr");
      const cells = [];
      for (let i = 0; i < WATCH_COLUMNS.length; i++) cells.push(tr.appendChild(document.createElement("td")));
      cells[0].textContent = s.symbol;
      tr.title = `${s.venue}:${s.symbol}`;
      tr.addEventListener("click", () => this.onSelect(this.stream, key));
      // Not in the body yet: it goes in at its sorted place at the next reorder (appended now,
      // it would show out of order at the bottom until then).
      row = { key, tr, cells, texts: [s.symbol, "", "", "", "", "", "", ""], state: s, open: s.last, arrivalUs: 0, vals: sortValues(s, s.last), index: this.order.length };
      this.rows.set(key, row);
      this.order.push(row);
      this.orderDirty = true;
    }
    row.state = s;
    // Rows are ordered by what they hold, in view or not, so the rows in view are the right ones.
    const vals = sortValues(s, row.open);
    if (vals[this.sort.col] !== row.vals[this.sort.col]) this.orderDirty = true;
    row.vals = vals;
    if (arrivalUs && (!row.arrivalUs || arrivalUs < row.arrivalUs)) row.arrivalUs = arrivalUs;
    this.dirty.add(key);
  }

  /** Reads only (called for every panel before any draws, so no read forces a layout). */
  measure() {
    const sc = this.scroller;
    const first = this.geometry === null ? this.body.firstElementChild : null;
    if (first !== null) {
      this.geometry = { headHeight: this.head.offsetHeight, rowHeight: first.getBoundingClientRect().height };
    }
    const g = this.geometry;
    this.inView = visibleRows(sc.scrollTop, sc.clientHeight, g?.headHeight ?? 0, g?.rowHeight ?? 0, this.order.length);
  }

  render(deadline) {
    if (this.orderDirty) this._reorder();
    let complete = true;
    const [first, last] = this.inView;
    for (const key of this.dirty) {
      const row = this.rows.get(key);
      if (row.index < first || row.index > last) {
        // Out of view: drawn when it scrolls in; a latency is only measured for what is seen.
        row.arrivalUs = 0;
        continue;
      }
      if (performance.now() > deadline) {
        complete = false;
        break;
      }
      this.dirty.delete(key);
      const s = row.state;
      const d = s.priceDecimals;
      const chg = s.last - row.open;
      const c = row.cells;
      const t = row.texts;
      put(c[1], t, 1, fmtPrice(s.last, d));
      put(c[2], t, 2, fmtPrice(chg, d));
      put(c[3], t, 3, s.bids.length ? fmtPrice(s.bids[0].price, d) : "");
      put(c[4], t, 4, s.asks.length ? fmtPrice(s.asks[0].price, d) : "");
      put(c[5], t, 5, String(s.vol));
      put(c[6], t, 6, String(s.totalTrades));
      const cls = chg > 0 ? "up" : chg < 0 ? "down" : "";
      if (t[7] !== cls) {
        t[7] = cls;
        c[2].className = cls;
      }
      if (row.arrivalUs) {
        const ms = (serverNowUs() - row.arrivalUs) / 1000;
        row.arrivalUs = 0;
        push(stats.latencies, ms);
        recent.latency.add(ms, performance.now());
        this.client.reportRender(ms);
      }
    }
    return complete;
  }

  /** Put the rows in sort order, moving only those out of place; rows that moved into view
   * are drawn in this frame (the range was measured before any move). */
  _reorder() {
    this.orderDirty = false;
    const rows = [...this.rows.values()].sort(rowComparator(this.sort.col, this.sort.dir));
    let node = this.body.firstElementChild;
    rows.forEach((row, i) => {
      if (row.index !== i) {
        row.index = i;
        this.dirty.add(row.key); // its place in view may be new: draw it if it is in view
      }
      if (row.tr === node) node = node.nextElementSibling;
      else this.body.insertBefore(row.tr, node);
    });
    this.order = rows;
    const n = String(rows.length);
    if (this.count.textContent !== n) this.count.textContent = n;
  }

  setPaused(paused) {
    const flag = this.root.querySelector(".paused-flag");
    if (flag.hidden === paused) flag.hidden = !paused;
  }

  select(key) {
    for (const [k, row] of this.rows) row.tr.classList.toggle("selected", k === key);
  }
}

class Movers {
  constructor(root, books, baseline, projections) {
    this.name = "movers";
    this.projections = projections; // ranking each group's Top-K projection, not whole groups
    this.body = root.querySelector("tbody");
    this.topBy = root.querySelector(".top-by");
    this.valueHead = root.querySelector(".top-col");
    this.books = books; // group -> Map(key -> latest state)
    this.baseline = baseline; // key -> last in the group's latest snapshot (for "change")
    this.by = "vol";
    this.k = 10;
    this.dirty = false;
    this.rows = []; // {cells, texts}
    this._label();
  }

  _label() {
    this.topBy.textContent = `by ${this.by}, live`;
    this.valueHead.textContent = this.by === "change" ? "Chg" : this.by.charAt(0).toUpperCase() + this.by.slice(1);
  }

  /** Ranking and K follow the aggregator's snapshots (top_by, top_k); values come live. A Top-K
   * projection's snapshot lists its members so far (a handful right after it starts), and the
   * config gives each group's Top-K at least the rows the panel shows: K is the panel's. */
  configure(snapshot) {
    if (snapshot.topBy) this.by = snapshot.topBy;
    if (this.projections) this.k = MAX_MOVERS;
    else if (snapshot.top?.length) this.k = Math.min(MAX_MOVERS, snapshot.top.length);
    this._label();
    this.dirty = true;
  }

  touch() {
    this.dirty = true;
  }

  render() {
    if (!this.dirty) return true;
    this.dirty = false;
    const top = topMovers(this.books, this.by, this.k, this.baseline);
    while (this.rows.length < top.length) {
      const tr = this.body.appendChild(document.createElement("tr"));
      const cells = [0, 1, 2, 3, 4].map(() => tr.appendChild(document.createElement("td")));
      cells[0].textContent = String(this.rows.length + 1);
      cells[2].className = "muted";
      this.rows.push({ tr, cells, texts: [String(this.rows.length + 1), "", "", "", ""] });
    }
    while (this.rows.length > top.length) this.rows.pop().tr.remove();
    const price = this.by === "last" || this.by === "change";
    for (let i = 0; i < top.length; i++) {
      const m = top[i];
      const s = m.state;
      const { cells, texts } = this.rows[i];
      put(cells[1], texts, 1, m.symbol);
      put(cells[2], texts, 2, m.group);
      put(cells[3], texts, 3, price ? fmtPrice(m.value, s.priceDecimals) : String(m.value));
      put(cells[4], texts, 4, fmtPrice(s.last, s.priceDecimals));
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
    this.rows = []; // {cells, texts}
    this.noteText = "";
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
    const d = s.priceDecimals;
    const levels = Math.max(s.bids.length, s.asks.length);
    while (this.rows.length < levels) {
      const tr = this.body.appendChild(document.createElement("tr"));
      const cells = [0, 1, 2, 3].map(() => tr.appendChild(document.createElement("td")));
      cells[0].className = "bid";
      cells[1].className = "bid";
      cells[2].className = "ask";
      cells[3].className = "ask";
      this.rows.push({ cells, texts: ["", "", "", ""] });
    }
    for (let i = 0; i < this.rows.length; i++) {
      if (performance.now() > deadline) {
        this.dirty = true;
        return false;
      }
      const b = s.bids[i];
      const a = s.asks[i];
      const { cells, texts } = this.rows[i];
      put(cells[0], texts, 0, b ? String(b.size) : "");
      put(cells[1], texts, 1, b ? fmtPrice(b.price, d) : "");
      put(cells[2], texts, 2, a ? fmtPrice(a.price, d) : "");
      put(cells[3], texts, 3, a ? String(a.size) : "");
    }
    const note = s.trimmed ? "depth trimmed (L2+)" : "";
    if (note !== this.noteText) this.note.textContent = this.noteText = note;
    return true;
  }
}

// [label, wide]: a wide field takes a whole line of the two-pair grid.
const STATUS_FIELDS = [
  ["latency p50/95/99", true], ["frame p50/95/99", true], ["panel p95 (ms)", true],
  ["batches", false], ["frames / deltas", false], ["rtt", false], ["reconnects", false],
  ["dup / gaps / resyncs", false], ["checksums ok / bad", false], ["last recovery", false],
  ["tabs", false],
];

class StatusPanel {
  constructor(root) {
    this.name = "status";
    this.degrade = root.querySelector(".degrade");
    this.event = root.querySelector(".event");
    this.conn = document.getElementById("conn");
    this.level = document.getElementById("level");
    this.latency = document.getElementById("latency");
    this.mode = document.getElementById("mode");
    const dl = root.querySelector(".stats");
    this.fields = new Map();
    for (const [label, wide] of STATUS_FIELDS) {
      dl.appendChild(document.createElement("dt")).textContent = label;
      const dd = dl.appendChild(document.createElement("dd"));
      if (wide) dd.className = "wide";
      dd.textContent = "—";
      this.fields.set(label, dd);
    }
    this.texts = new Map();
    this.lastDrawn = -Infinity;
  }

  set(el, text) {
    if (this.texts.get(el) !== text) {
      this.texts.set(el, text);
      el.textContent = text;
    }
  }

  field(label, text) {
    this.set(this.fields.get(label), text);
  }

  render() {
    const now = performance.now();
    if (now - this.lastDrawn < READOUT_MS) return true;
    this.lastDrawn = now;
    const st = stats.status;
    const deg = stats.degrade ?? st?.degrade ?? null;
    if (deg) {
      const lvl = deg.level ?? 0;
      this.set(this.level, `L${lvl} · ${LEVEL_MEANING[lvl] ?? "degraded"}`);
      if (this.level.dataset.level !== String(lvl)) this.level.dataset.level = String(lvl);
      this.level.title = lvl
        ? `degradation level ${lvl}: ${deg.reason || "gateway"}; recovery: ${deg.recovery || "when the queue drains"}`
        : "degradation level 0: every delta at full rate";
      this.set(this.degrade, lvl
        ? `L${lvl}: ${deg.reason || "gateway"} — recovery: ${deg.recovery || "when the queue drains"}${deg.paused?.length ? ` · paused: ${deg.paused.join(", ")}` : ""}`
        : "");
    }
    if (st) {
      this.set(this.conn, st.state);
      if (this.conn.dataset.state !== st.state) this.conn.dataset.state = st.state;
      this.conn.title = st.wsUrl;
      this.set(this.mode, `${st.mode}${st.role && st.role !== "worker-client" ? ` · this tab: ${st.role}` : ""}`);
      const c = st.counters;
      this.field("frames / deltas", `${c.frames} / ${c.deltas}`);
      this.field("rtt", st.rttMs === null ? "—" : `${st.rttMs.toFixed(1)} ms`);
      this.field("reconnects", String(st.reconnects));
      this.field("dup / gaps / resyncs", `${c.duplicates} / ${c.gaps} / ${c.snapshotRequests}`);
      this.field("checksums ok / bad", `${c.checksumsVerified} / ${c.checksumMismatches}`);
      this.field("last recovery", st.lastRecoveryMs === null ? "—" : `${Math.round(st.lastRecoveryMs)} ms`);
      this.field("tabs", String(st.tabs));
      if (st.lastError) {
        this.set(this.event, `last event ${st.lastError.code}: ${st.lastError.message}`);
        this.event.title = this.event.textContent;
      }
    }
    const lat = recent.latency.percentiles(now, [50, 95, 99]);
    this.set(this.latency, lat.n ? `latency (5 s) p50 ${fmtMs(lat.p50)} ms · p95 ${fmtMs(lat.p95)} ms` : "latency —");
    this.field("latency p50/95/99", lat.n ? `${fmtMs(lat.p50)} / ${fmtMs(lat.p95)} / ${fmtMs(lat.p99)} ms (${lat.n} in 5 s)` : "—");
    const fr = percentiles(recent.frames.values(), [50, 95, 99]);
    this.field("frame p50/95/99", fr.p50 === null ? "—" : `${fmtMs(fr.p50)} / ${fmtMs(fr.p95)} / ${fmtMs(fr.p99)} ms`);
    this.field("batches", String(stats.received));
    this.field("panel p95 (ms)", Object.entries(recent.panels)
      .map(([k, ring]) => `${k.replace("watch:", "")} ${fmtMs(percentiles(ring.values(), [95]).p95)}`).join(" · "));
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
  const wholeGroups = params.get("streams") === "groups";
  const projection = (name) => (g) => (name && !wholeGroups ? `${g}/${name}` : g);
  const watchStream = projection(config.projections?.watch);
  const moversStream = projection(config.projections?.movers);

  const books = new Map(); // stream -> Map(key -> latest state), for the ladder (live tier)
  const overview = new Map(); // group -> Map(key -> state), for the movers (overview tier)
  const baseline = new Map(); // key -> last in its group's first snapshot (the movers' "change")
  const ladder = new Ladder(document.getElementById("panel-ladder"));
  const movers = new Movers(document.getElementById("panel-movers"), overview, baseline,
    Boolean(config.projections?.movers) && !wholeGroups);
  const status = new StatusPanel(document.getElementById("panel-status"));
  const watchRoots = [document.getElementById("panel-watch-a"), document.getElementById("panel-watch-b")];
  const watches = [];
  const select = (stream, key) => {
    ladder.select(stream, key);
    const s = books.get(stream)?.get(key);
    if (s) ladder.offer(stream, s);
    for (const w of watches) w.select(w.stream === stream ? key : null);
  };
  groups.slice(0, 2).forEach((g, i) => watches.push(new Watchlist(watchRoots[i], g, watchStream(g), client, select)));
  for (const root of watchRoots.slice(watches.length)) root.hidden = true;

  const onBatch = (batch) => {
    stats.received += 1;
    const group = groupOf(batch.group);
    stats.byGroup[group] = (stats.byGroup[group] ?? 0) + 1;
    stats.byStream[batch.group] = (stats.byStream[batch.group] ?? 0) + 1;
    offsetUs = batch.offsetUs ?? offsetUs;
    if (batch.minArrivalUs && batch.flushedUs) {
      // Both stamps are this machine's wall clock (the worker's and this tab's).
      push(stats.hubMs, (batch.flushedUs + offsetUs - batch.minArrivalUs) / 1000);
      push(stats.postMs, ((performance.timeOrigin + performance.now()) * 1000 - batch.flushedUs) / 1000);
    }
    let book = books.get(batch.group);
    if (book === undefined) books.set(batch.group, (book = new Map()));
    if (batch.snapshot) {
      book.clear();
      for (const s of batch.snapshot.symbols) {
        book.set(symbolKey(s), s);
        ladder.offer(batch.group, s);
      }
    }
    for (const k of batch.removed ?? []) book.delete(k);
    for (const s of batch.symbols) {
      book.set(symbolKey(s), s);
      ladder.offer(batch.group, s);
    }
    for (const w of watches) if (w.stream === batch.group) w.apply(batch);
  };
  // The movers rank every group's symbols (or its Top-K): four merged batches a second are plenty.
  const onOverview = (batch) => {
    stats.overview += 1;
    stats.byStream[batch.group] = (stats.byStream[batch.group] ?? 0) + 1;
    const group = groupOf(batch.group);
    let book = overview.get(group);
    if (book === undefined) overview.set(group, (book = new Map()));
    if (batch.snapshot) {
      book.clear();
      for (const s of batch.snapshot.symbols) {
        const key = symbolKey(s);
        book.set(key, s);
        // A snapshot the hub made for a tab that came back into view is no new baseline.
        if (!batch.snapshot.synthetic || !baseline.has(key)) baseline.set(key, s.last);
      }
      movers.configure(batch.snapshot);
    }
    for (const k of batch.removed ?? []) book.delete(k);
    for (const s of batch.symbols) book.set(symbolKey(s), s);
    movers.touch();
  };
  // On whole groups the ladder may follow any symbol of any group, so every group is live.
  const live = wholeGroups || !config.projections?.watch ? groups : watches.map((w) => w.stream);
  for (const s of live) {
    client.subscribe(s, onBatch, { everyMs: TIERS.live });
    stats.streams.live.push(s);
  }
  for (const g of groups) {
    client.subscribe(moversStream(g), onOverview, { everyMs: TIERS.overview });
    stats.streams.overview.push(moversStream(g));
  }
  stats.pace = client.pace;
  client.on("pace", (fps) => {
    stats.pace = fps;
  });
  // Both carry the hub's current level: a status also reaches a tab that opened after a change.
  const onDegrade = (d) => {
    stats.degrade = d;
    for (const w of watches) w.setPaused(d.paused.includes(w.group));
  };
  client.on("status", (st) => {
    stats.status = st;
    if (st.degrade) onDegrade(st.degrade);
  });
  client.on("degrade", onDegrade);
  client.on("error", (e) => {
    if (stats.errors.length < 100) stats.errors.push(e);
  });

  const panels = [...watches, movers, ladder, status];
  for (const p of panels) {
    stats.panels[p.name] = [];
    stats.overBudget[p.name] = 0;
    recent.panels[p.name] = new Ring(300);
  }
  let lastTs = 0;
  let lastDrawn = -Infinity;
  let fpsFrames = 0;
  let fpsSince = performance.now();
  const frame = (ts) => {
    if (lastTs) {
      push(stats.frames, ts - lastTs);
      recent.frames.push(ts - lastTs);
    }
    lastTs = ts;
    if (drawDue(ts, lastDrawn, stats.pace)) {
      lastDrawn = ts;
      stats.draws += 1;
      // Every read before any write: no panel's measuring forces a layout another one dirtied.
      for (const p of panels) p.measure?.();
      for (const p of panels) {
        const t0 = performance.now();
        const complete = p.render(t0 + BUDGET_MS);
        const spent = performance.now() - t0;
        push(stats.panels[p.name], spent);
        recent.panels[p.name].push(spent);
        if (!complete) stats.overBudget[p.name] += 1;
      }
    }
    fpsFrames += 1;
    const now = performance.now();
    if (now - fpsSince >= 1000) {
      client.reportFrames((fpsFrames * 1000) / (now - fpsSince), percentiles(recent.frames.values(), [95]).p95 ?? 0);
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
