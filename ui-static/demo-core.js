// The demo page's pure logic, apart from the DOM and with no clock of its own (callers pass the
// time): the rolling latency window, bounded sample rings, the live top movers and the
// watchlists' sort order. demo.js draws with them; tests/node/xy-demo.test.mjs checks them.

/** @typedef {import("./xy-core.js").State} State */
/**
 * One row of the top movers: the symbol's state and the value it is ranked by.
 * @typedef {{ group: string, key: string, symbol: string, value: number, rank: number, state: State }} Mover
 */

/**
 * Percentiles of the samples added in the last `windowMs`. Samples go into per-slot histograms
 * (`binMs` wide bins up to `maxMs`, the last bin holding everything above), so adding one is
 * O(1) and a read-out is one pass over the bins, however many samples arrived — a page draws
 * thousands of rows a second. A value is reported as its bin's middle (the overflow bin as
 * `maxMs`); slots older than the window are skipped, then reused.
 */
export class RollingHistogram {
  /** @param {{ windowMs?: number, slotMs?: number, binMs?: number, maxMs?: number }} [options] */
  constructor({ windowMs = 5000, slotMs = 500, binMs = 0.5, maxMs = 2000 } = {}) {
    this.windowMs = windowMs;
    this.slotMs = slotMs;
    this.binMs = binMs;
    this.maxMs = maxMs;
    this.bins = Math.ceil(maxMs / binMs) + 1;
    this.slots = Array.from({ length: Math.max(1, Math.ceil(windowMs / slotMs)) }, () => ({
      id: -Infinity, n: 0, counts: new Uint32Array(this.bins),
    }));
    this.sum = new Float64Array(this.bins);
  }

  /**
   * @param {number} ms
   * @param {number} nowMs
   */
  add(ms, nowMs) {
    const id = Math.floor(nowMs / this.slotMs);
    const slot = this.slots[((id % this.slots.length) + this.slots.length) % this.slots.length];
    if (slot.id !== id) {
      slot.id = id;
      slot.n = 0;
      slot.counts.fill(0);
    }
    // A latency a little below zero is the clock-offset estimate's error, not a sample to drop.
    const bin = ms > 0 ? Math.min(this.bins - 1, Math.floor(ms / this.binMs)) : 0;
    slot.counts[bin] += 1;
    slot.n += 1;
  }

  /** `{n, p50, p95, ...}` for `ps` (ascending) over the window ending at `nowMs`; null when empty. */
  /**
   * @param {number} nowMs
   * @param {number[]} ps
   * @returns {{ n: number } & Record<string, number | null>}
   */
  percentiles(nowMs, ps) {
    const id = Math.floor(nowMs / this.slotMs);
    const live = this.slots.filter((s) => s.id <= id && s.id > id - this.slots.length && s.n > 0);
    let n = 0;
    for (const s of live) n += s.n;
    /** @type {{ n: number } & Record<string, number | null>} */
    const out = { n };
    for (const p of ps) out[`p${p}`] = null;
    if (n === 0) return out;
    let cum = 0;
    let j = 0;
    for (let b = 0; b < this.bins && j < ps.length; b++) {
      for (const s of live) cum += s.counts[b];
      while (j < ps.length && cum >= Math.max(1, Math.ceil((ps[j] / 100) * n))) {
        out[`p${ps[j]}`] = b === this.bins - 1 ? this.maxMs : (b + 0.5) * this.binMs;
        j += 1;
      }
    }
    return out;
  }
}

/** The last `cap` numbers pushed (a fixed buffer: pushing never allocates). */
export class Ring {
  /** @param {number} cap */
  constructor(cap) {
    this.buf = new Float64Array(cap);
    this.size = 0;
    this.next = 0;
  }

  /** @param {number} v */
  push(v) {
    this.buf[this.next] = v;
    this.next = (this.next + 1) % this.buf.length;
    if (this.size < this.buf.length) this.size += 1;
  }

  /** The values held (in no particular order: for percentiles). */
  values() {
    return this.buf.subarray(0, this.size);
  }

  clear() {
    this.size = 0;
    this.next = 0;
  }
}

/** @type {Record<string, (s: State) => number>} */
const MOVER_VALUE = {
  vol: (s) => s.vol,
  oi: (s) => s.oi,
  trades: (s) => s.totalTrades,
  last: (s) => s.last,
};

/**
 * The top `k` symbols of every book (`Map(group -> Map(key -> state))`) by `by`, ranked as the
 * aggregator ranks its snapshots' Top-K (docs/protocol.md): `vol`, `oi`, `trades`, `last`, or
 * `change` = last minus `baseline.get(key)` (the last the page's snapshot had), by absolute
 * value. Computed from the live states, so values and ranks follow every delta.
 */
/**
 * @param {Map<string, Map<string, State>>} books
 * @param {string} by
 * @param {number} k
 * @param {Map<string, number>} [baseline]
 * @returns {Mover[]}
 */
export function topMovers(books, by, k, baseline = new Map()) {
  const change = by === "change";
  const valueOf = Object.hasOwn(MOVER_VALUE, by) ? MOVER_VALUE[by] : MOVER_VALUE.vol;
  /** @type {Mover[]} */
  const out = [];
  if (k <= 0) return out;
  for (const [group, book] of books) {
    for (const [key, s] of book) {
      const value = change ? s.last - (baseline.get(key) ?? s.last) : valueOf(s);
      const rank = change ? Math.abs(value) : value;
      if (out.length === k && rank <= out[k - 1].rank) continue;
      const entry = { group, key, symbol: s.symbol, value, rank, state: s };
      let i = out.length;
      if (i === k) i -= 1;
      else out.push(entry); // a place at the end, filled below
      while (i > 0 && out[i - 1].rank < rank) {
        out[i] = out[i - 1];
        i -= 1;
      }
      out[i] = entry;
    }
  }
  return out;
}

/** Watchlist columns, in table order. */
export const WATCH_COLUMNS = ["Symbol", "Last", "Chg", "Bid", "Ask", "Vol", "Trades"];

/**
 * What each watchlist column shows and sorts by, for state `s` whose first price seen was
 * `open`: the symbol's name, then real numbers (fixed-point prices scaled by their own
 * decimals, so symbols quoted with different decimals compare right). A side without a quote
 * is null (sorted last, either direction).
 */
/**
 * @param {State} s
 * @param {number} open
 * @returns {[string, number, number, number | null, number | null, number, number]}
 */
export function sortValues(s, open) {
  const scale = 10 ** (s.priceDecimals || 0);
  return [
    s.symbol,
    s.last / scale,
    (s.last - open) / scale,
    s.bids.length ? s.bids[0].price / scale : null,
    s.asks.length ? s.asks[0].price / scale : null,
    s.vol,
    s.totalTrades,
  ];
}

/**
 * A comparator of rows (objects with `vals` from sortValues and a `key`) by column `col`,
 * `dir` 1 ascending / -1 descending; ties by key, so the order is total and stable.
 */
/**
 * @param {number} col
 * @param {number} dir
 * @returns {(a: { vals: (string | number | null)[], key: string }, b: { vals: (string | number | null)[], key: string }) => number}
 */
export function rowComparator(col, dir) {
  return (a, b) => {
    const x = a.vals[col];
    const y = b.vals[col];
    if (x !== y) {
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * dir;
    }
    return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
  };
}

/** The sort after a click on column `col`: the same column flips, a new one starts ascending
 * for names and descending for numbers (largest first, as a desk reads a column). */
/**
 * @param {{ col: number, dir: number }} current
 * @param {number} col
 * @returns {{ col: number, dir: number }}
 */
export function nextSort(current, col) {
  if (current.col === col) return { col, dir: -current.dir };
  return { col, dir: col === 0 ? 1 : -1 };
}

/**
 * The rows of a scroll container in view, as an inclusive index range [first, last]: rows of
 * `rowHeight` px under a header of `headHeight` px, the container scrolled to `scrollTop` and
 * `viewHeight` px tall, `overscan` rows more on each side (so a row is drawn before it shows).
 * Before the rows are measured (rowHeight 0) every row counts as in view; with no rows, last <
 * first.
 */
/**
 * @param {number} scrollTop
 * @param {number} viewHeight
 * @param {number} headHeight
 * @param {number} rowHeight
 * @param {number} count
 * @returns {[number, number]}
 */
export function visibleRows(scrollTop, viewHeight, headHeight, rowHeight, count, overscan = 2) {
  if (count <= 0) return [0, -1];
  if (!(rowHeight > 0)) return [0, count - 1];
  const top = scrollTop - headHeight;
  const first = Math.max(0, Math.floor(top / rowHeight) - overscan);
  const last = Math.min(count - 1, Math.ceil((top + viewHeight) / rowHeight) - 1 + overscan);
  return [first, Math.max(first - 1, last)];
}

/**
 * Whether a tab drawing at `fps` draws in the animation frame at `ts` (ms), its last drawn
 * frame having been at `lastDrawn`: at 60 every frame, at 30 every other one (a frame counts as
 * due a few ms early, so frame-time jitter never skips two), at 0 none.
 */
/**
 * @param {number} ts
 * @param {number} lastDrawn
 * @param {number} fps
 */
export function drawDue(ts, lastDrawn, fps) {
  if (!(fps > 0)) return false;
  return ts - lastDrawn >= 1000 / fps - 4;
}

/** What the degradation level means for this page (docs/protocol.md, slow consumers). */
export const LEVEL_MEANING = ["full rate", "conflated", "top of book", "groups paused"];
