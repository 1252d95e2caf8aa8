// What the hub hands each tab, and when: per-tab delivery with frequency tiers and flow control,
// and how fast each tab should draw. Pure: no port, no timer, no clock of its own (every method
// takes `now` in ms and returns what to post); xy-worker.js wraps it, tests/node/ drives it.
//
// A tab subscribes to a group at a tier (`everyMs`): 0 = every batch as it comes, or at most one
// batch per `everyMs` (e.g. 16 for a ladder, 250 for an overview). The hub keeps one gateway
// subscription per group whatever the tiers; what a view has not been sent yet is merged
// trade-safely (foldEntries: the rule of merge_deltas, proto/scenarios/merge.json).
//
// Flow control: a tab with room in flight (fewer than `maxInFlight` deliveries posted and not yet
// acknowledged) gets a batch the moment it arrives; while it has none (the tab is busy, e.g.
// drawing) what arrives is merged and goes out with the next ack. A hidden tab is sent nothing; on becoming visible it gets
// each group's current state at once (the hub's book as a snapshot, not a replay).

import { foldEntries, symbolKey } from "./xy-core.js";

/** @typedef {import("./xy-core.js").Batch} Batch */
/** @typedef {import("./xy-core.js").State} State */
/**
 * A batch as the hub numbers it (`id`); `owned` marks a view's own pending merge (Pending).
 * @typedef {Batch & { id: number, owned?: false }} HubBatch
 */
/**
 * A batch as a tab receives it: at the tier (`everyMs`) of the subscription it is for.
 * @typedef {HubBatch & { everyMs: number }} TierBatch
 */
/**
 * A view's own pending merge of batches (Maps, so later batches fold in place).
 * @typedef {object} Pending
 * @property {true} owned
 * @property {number} id
 * @property {string} group
 * @property {Batch["snapshot"]} snapshot
 * @property {Map<string, State>} symbols
 * @property {Set<string>} removed
 * @property {number} deltas
 * @property {number} minArrivalUs
 * @property {Record<number, number>} seqs
 */
/**
 * One tab's subscription of one group at one tier.
 * @typedef {{ tab: string, group: string, everyMs: number, pending: HubBatch | Pending | null, lastAt: number, needsView: boolean }} View
 */
/** @typedef {{ acks: boolean, visible: boolean, sent: number[], views: Map<string, View> }} OutletTab */
/** What to post to one tab: one message holding every batch due to it. */
/** @typedef {{ tab: string, batches: TierBatch[] }} Delivery */
/** @typedef {{ fps: number, until: number }} DrawPlan */

/** Named tiers (ms between deliveries); any interval in ms works as well. */
export const TIERS = Object.freeze({ live: 0, ladder: 16, overview: 250 });

/**
 * How fast tabs draw: full rate (60 fps) while at most `fullRateMaxVisible` tabs are visible and
 * the tab's frames keep time; 30 fps when more are visible, or for `holdMs` after the tab's
 * frame-interval p95 went over `overrunMs`; nothing while hidden.
 */
export const DRAW_POLICY = Object.freeze({ fullRateMaxVisible: 2, overrunMs: 20, holdMs: 5000 });

/**
 * The draw rate of every tab, from their reports: `tabs` maps tab -> {visible, frameP95} (the
 * p95 of the tab's animation-frame intervals, ms; 0 = not known yet), `prev` is the previous
 * plan (tab -> {fps, until}). Returns the new plan, tab -> {fps, until}, `until` being how long
 * an overrun keeps the tab at 30 fps.
 */
/**
 * @param {Map<string, { visible: boolean, frameP95: number }>} tabs
 * @param {Map<string, DrawPlan>} prev
 * @param {number} now
 * @returns {Map<string, DrawPlan>}
 */
export function planDraw(tabs, prev, now, policy = DRAW_POLICY) {
  let visible = 0;
  for (const t of tabs.values()) if (t.visible) visible += 1;
  /** @type {Map<string, DrawPlan>} */
  const plan = new Map();
  for (const [tab, t] of tabs) {
    const held = prev.get(tab)?.until ?? 0;
    if (!t.visible) plan.set(tab, { fps: 0, until: held });
    else if (t.frameP95 > policy.overrunMs) plan.set(tab, { fps: 30, until: now + policy.holdMs });
    else if (held > now || visible > policy.fullRateMaxVisible) plan.set(tab, { fps: 30, until: held });
    else plan.set(tab, { fps: 60, until: 0 });
  }
  return plan;
}

// ------------------------------------------------------------------------------ pending batches

/** A batch as a view's own pending merge (Maps, so later batches fold in place). */
/**
 * @param {HubBatch} b
 * @returns {Pending}
 */
function own(b) {
  return {
    owned: true,
    id: b.id,
    group: b.group,
    snapshot: b.snapshot,
    symbols: new Map(b.symbols.map((s) => [symbolKey(s), s])),
    removed: new Set(b.removed),
    deltas: b.deltas,
    minArrivalUs: b.minArrivalUs,
    seqs: { ...b.seqs },
  };
}

/** Fold batch `b` into the pending merge `p` (a snapshot in `b` replaces everything). */
/**
 * @param {Pending} p
 * @param {HubBatch} b
 * @returns {Pending}
 */
export function foldBatch(p, b) {
  if (b.snapshot) return own(b);
  foldEntries(p.symbols, p.removed, b.removed, b.symbols);
  p.id = b.id;
  p.deltas += b.deltas;
  if (b.minArrivalUs && (!p.minArrivalUs || b.minArrivalUs < p.minArrivalUs)) p.minArrivalUs = b.minArrivalUs;
  Object.assign(p.seqs, b.seqs);
  return p;
}

/**
 * @param {HubBatch | Pending} p
 * @returns {HubBatch}
 */
function asBatch(p) {
  if (!p.owned) return p;
  return {
    id: p.id,
    group: p.group,
    snapshot: p.snapshot,
    symbols: [...p.symbols.values()],
    removed: [...p.removed],
    deltas: p.deltas,
    minArrivalUs: p.minArrivalUs,
    seqs: p.seqs,
  };
}

// ------------------------------------------------------------------------------ the outlet

/**
 * Batches: {id, group, snapshot, symbols, removed, deltas, minArrivalUs, seqs} (BatchMerger's,
 * with the hub's id). Every method returns deliveries, [{tab, batches: [{...batch, everyMs}]}],
 * for the caller to post (one message per tab) — after the outlet's state is updated, so a tab
 * that acknowledges synchronously (the leader's own tab) is safe.
 *
 * `viewOf(group)` gives the group's current state as a batch with a snapshot (null when the hub
 * holds none); `maxInFlight` is how many deliveries a tab may hold unacknowledged, `ackTimeoutMs`
 * how long one may stay unacknowledged before it no longer counts, and `batchMs` how long a
 * delivery to a tab that never acknowledges (an older client) counts.
 */
export class Outlet {
  /** @param {{ viewOf?: (group: string) => HubBatch | null, batchMs?: number, ackTimeoutMs?: number, maxInFlight?: number }} [options] */
  constructor({ viewOf = () => null, batchMs = 16, ackTimeoutMs = 1000, maxInFlight = 1 } = {}) {
    this.viewOf = viewOf;
    this.batchMs = batchMs;
    this.ackTimeoutMs = ackTimeoutMs;
    this.maxInFlight = maxInFlight;
    /** @type {Map<string, OutletTab>} */
    this.tabs = new Map(); // tab -> {acks, visible, sent: [time posted, oldest first], views: Map(key -> view)}
    /** @type {Map<string, Set<View>>} */
    this.byGroup = new Map(); // group -> Set(view)
    this.stats = { deliveries: 0, batches: 0, coalesced: 0, ackTimeouts: 0 };
  }

  /**
   * @param {string} group
   * @param {number} everyMs
   */
  static key(group, everyMs) {
    return `${group}@${everyMs}`;
  }

  /** Add (or re-announce) a tab: whether it acknowledges deliveries, whether it is visible. */
  /**
   * @param {string} tab
   * @param {{ acks?: boolean, visible?: boolean }} [options]
   */
  setTab(tab, { acks = false, visible = true } = {}) {
    const t = this.tabs.get(tab);
    if (t === undefined) {
      this.tabs.set(tab, { acks, visible, sent: [], views: new Map() });
    } else {
      t.acks = acks;
      t.visible = visible;
      t.sent = [];
    }
  }

  /** @param {string} tab */
  removeTab(tab) {
    const t = this.tabs.get(tab);
    if (t === undefined) return;
    for (const v of t.views.values()) this.byGroup.get(v.group)?.delete(v);
    this.tabs.delete(tab);
  }

  /** A tab subscribes `group` at `everyMs`: it is sent the group's current state at once. */
  /**
   * @param {string} tab
   * @param {string} group
   * @param {number} everyMs
   * @param {number} now
   * @returns {Delivery[]}
   */
  addView(tab, group, everyMs, now) {
    const t = this.tabs.get(tab);
    if (t === undefined) return [];
    const key = Outlet.key(group, everyMs);
    let v = t.views.get(key);
    if (v === undefined) {
      v = { tab, group, everyMs, pending: null, lastAt: -Infinity, needsView: true };
      t.views.set(key, v);
      let set = this.byGroup.get(group);
      if (set === undefined) this.byGroup.set(group, (set = new Set()));
      set.add(v);
    }
    return this._flush(tab, t, now);
  }

  /** Returns true when the tab holds no other view of `group` (its reference can go). */
  /**
   * @param {string} tab
   * @param {string} group
   * @param {number} everyMs
   */
  removeView(tab, group, everyMs) {
    const t = this.tabs.get(tab);
    if (t === undefined) return false;
    const v = t.views.get(Outlet.key(group, everyMs));
    if (v === undefined) return false;
    t.views.delete(Outlet.key(group, everyMs));
    this.byGroup.get(group)?.delete(v);
    for (const other of t.views.values()) if (other.group === group) return false;
    return true;
  }

  /**
   * New batches (one gateway frame's, one per group): to every idle, visible tab now — all of a
   * tab's in one delivery —, merged for the others.
   */
  /**
   * @param {HubBatch[]} batches
   * @param {number} now
   * @returns {Delivery[]}
   */
  offer(batches, now) {
    /** @type {Set<string>} */
    const touched = new Set();
    for (const batch of batches) {
      for (const v of this.byGroup.get(batch.group) ?? []) {
        const t = this.tabs.get(v.tab);
        if (t === undefined || !t.visible || v.needsView) {
          // The current state goes out when it is next sent; nothing to merge until then.
          v.needsView = true;
          v.pending = null;
          continue;
        }
        if (v.pending === null) {
          v.pending = batch; // shared with every view that sends it on as it is
        } else {
          v.pending = foldBatch(v.pending.owned ? v.pending : own(v.pending), batch);
          this.stats.coalesced += 1;
        }
        touched.add(v.tab);
      }
    }
    /** @type {Delivery[]} */
    const out = [];
    for (const tab of touched) {
      const t = this.tabs.get(tab);
      if (t !== undefined) out.push(...this._flush(tab, t, now));
    }
    return out;
  }

  /** The tab took its delivery in: what it has pending goes now. */
  /**
   * @param {string} tab
   * @param {number} now
   * @returns {Delivery[]}
   */
  ack(tab, now) {
    const t = this.tabs.get(tab);
    if (t === undefined) return [];
    t.sent.shift();
    return this._flush(tab, t, now);
  }

  /**
   * @param {string} tab
   * @param {boolean} visible
   * @param {number} now
   * @returns {Delivery[]}
   */
  setVisible(tab, visible, now) {
    const t = this.tabs.get(tab);
    if (t === undefined || t.visible === visible) return [];
    t.visible = visible;
    if (!visible) {
      for (const v of t.views.values()) {
        v.pending = null;
        v.needsView = true;
      }
      return [];
    }
    t.sent = []; // whatever was in flight was taken in while hidden
    return this._flush(tab, t, now);
  }

  /** Whatever has come due by `now` (tiers whose interval passed, deliveries never acknowledged). */
  /**
   * @param {number} now
   * @returns {Delivery[]}
   */
  due(now) {
    /** @type {Delivery[]} */
    const out = [];
    for (const [tab, t] of this.tabs) out.push(...this._flush(tab, t, now));
    return out;
  }

  /**
   * When `due` next has something to send (null: nothing is waiting).
   * @returns {number | null}
   */
  nextAt() {
    /** @type {number | null} */
    let next = null;
    for (const t of this.tabs.values()) {
      if (!t.visible) continue;
      /** @type {number | null} */
      let at = null;
      for (const v of t.views.values()) {
        if (v.pending === null && !v.needsView) continue;
        const vAt = v.lastAt + v.everyMs;
        if (at === null || vAt < at) at = vAt;
      }
      if (at === null) continue;
      if (t.sent.length >= this.maxInFlight) at = Math.max(at, t.sent[0] + (t.acks ? this.ackTimeoutMs : this.batchMs));
      if (next === null || at < next) next = at;
    }
    return next;
  }

  /**
   * @param {string} tab
   * @param {OutletTab} t
   * @param {number} now
   * @returns {Delivery[]}
   */
  _flush(tab, t, now) {
    if (!t.visible) return [];
    const limit = t.acks ? this.ackTimeoutMs : this.batchMs;
    while (t.sent.length && now - t.sent[0] >= limit) {
      t.sent.shift();
      if (t.acks) this.stats.ackTimeouts += 1;
    }
    if (t.sent.length >= this.maxInFlight) return [];
    /** @type {TierBatch[]} */
    const batches = [];
    for (const v of t.views.values()) {
      if (v.pending === null && !v.needsView) continue;
      if (now - v.lastAt < v.everyMs) continue;
      /** @type {HubBatch | null} */
      let b = null;
      if (v.needsView) {
        b = this.viewOf(v.group);
        v.needsView = false;
      } else if (v.pending !== null) {
        b = asBatch(v.pending);
      }
      v.pending = null;
      if (b === null) continue;
      v.lastAt = now;
      batches.push({ ...b, everyMs: v.everyMs });
    }
    if (!batches.length) return [];
    t.sent.push(now);
    this.stats.deliveries += 1;
    this.stats.batches += batches.length;
    return [{ tab, batches }];
  }
}
