// The browser side's pure logic: reconnect backoff and the cap on concurrent attempts,
// per-stream sequence/epoch tracking, trade-safe merging of symbol states into batches,
// per-group reference counting across tabs, the state checksum and small statistics.
//
// Nothing here touches a socket, a timer, a port or the clock: every method takes `now`
// (milliseconds) and returns what the caller should do. xy-worker.js wraps it with I/O, and
// tests/node/ drives it directly.

// ------------------------------------------------------------------------------ types

/**
 * A protobuf int64/uint64 field as the generated code gives it (bigint), or as a JS number.
 * @typedef {bigint | number | null | undefined} Int64
 */
/**
 * One price level of a book side, with JS numbers.
 * @typedef {{ price: number, size: number, orders: number }} Level
 */
/**
 * A SymbolState as a plain object with JS numbers (plainState): what tabs receive.
 * @typedef {object} State
 * @property {string} venue
 * @property {string} symbol
 * @property {number} seq
 * @property {number} tsExchangeUs
 * @property {number} tsArrivalUs
 * @property {number} last
 * @property {number} lastSize
 * @property {Level[]} bids
 * @property {Level[]} asks
 * @property {number} vol
 * @property {number} oi
 * @property {number} flags
 * @property {number} priceDecimals
 * @property {number} windowHigh
 * @property {number} windowLow
 * @property {number} windowTrades
 * @property {number} windowVolume
 * @property {number} windowTicks
 * @property {number} totalTrades
 * @property {number} checksum
 * @property {boolean} trimmed
 */
/**
 * A SymbolState as it comes off the wire (the protobuf-es message, or a plain object with some
 * fields absent): what plainState accepts.
 * @typedef {object} WireState
 * @property {string} venue
 * @property {string} symbol
 * @property {Int64} [seq]
 * @property {Int64} [tsExchangeUs]
 * @property {Int64} [tsArrivalUs]
 * @property {Int64} [last]
 * @property {Int64} [lastSize]
 * @property {{ price?: Int64, size?: Int64, orders?: number }[]} [bids]
 * @property {{ price?: Int64, size?: Int64, orders?: number }[]} [asks]
 * @property {Int64} [vol]
 * @property {Int64} [oi]
 * @property {number} [flags]
 * @property {number} [priceDecimals]
 * @property {Int64} [windowHigh]
 * @property {Int64} [windowLow]
 * @property {number} [windowTrades]
 * @property {Int64} [windowVolume]
 * @property {number} [windowTicks]
 * @property {Int64} [totalTrades]
 * @property {number} [checksum]
 * @property {boolean} [trimmed]
 */
/**
 * A delta as SeqTracker judges it (the protobuf-es Delta, or a plain object).
 * @typedef {{ group: string, shard?: number, seq: Int64, firstSeq?: Int64, epoch: Int64 }} DeltaHead
 */
/**
 * A delta as plain object (mergeDeltas' input and output).
 * @typedef {object} PlainDelta
 * @property {string} group
 * @property {number} [shard]
 * @property {number} epoch
 * @property {number} seq
 * @property {number} [firstSeq]
 * @property {number} [windowMs]
 * @property {number} [level]
 * @property {number} [tsEmitUs]
 * @property {string[]} [removed] wire keys "venue.symbol"
 * @property {State[]} [symbols]
 */
/**
 * A snapshot as plain object (what the hub keeps and tabs receive).
 * @typedef {object} PlainSnapshot
 * @property {string} group
 * @property {number} [version]
 * @property {number} [epoch]
 * @property {State[]} symbols
 * @property {TopEntry[]} [top] the group's Top-K, best first
 * @property {string} [topBy]
 * @property {number} [tsEmitUs]
 * @property {boolean} [synthetic] true for a GroupBook view (no snapshot on the wire)
 */
/** @typedef {{ venue: string, symbol: string, value: number }} TopEntry */
/**
 * What a tab's subscription receives: every change of one group since the last batch.
 * @typedef {object} Batch
 * @property {string} group
 * @property {PlainSnapshot | null} snapshot set when the group was (re)built from a snapshot
 * @property {State[]} symbols the latest state of each symbol that changed
 * @property {string[]} removed symbolKeys ("venue:symbol") that left the group
 * @property {number} deltas how many deltas the batch folds
 * @property {number} minArrivalUs the oldest tick arrival time it stands for (0: unknown)
 * @property {Record<number, number>} seqs the last sequence per shard
 */
/** @typedef {"apply" | "duplicate" | "gap" | "far_future" | "stale_epoch" | "future_epoch"} Verdict */
/** @typedef {"ok" | "mismatch" | "skipped"} ChecksumResult */

// ------------------------------------------------------------------------------ errors

/**
 * What to say of a caught value: its message when it has one, else the value.
 * @param {unknown} err
 */
export function errorText(err) {
  return /** @type {{ message?: unknown } | null | undefined} */ (err)?.message ?? err;
}

// ------------------------------------------------------------------------------ numbers

/** A protobuf int64/uint64 field as a JS number, whether the generated code gave bigint or number. */
/**
 * @param {Int64} value
 * @returns {number}
 */
export function num(value) {
  return typeof value === "bigint" ? Number(value) : (value ?? 0);
}

// ------------------------------------------------------------------------------ backoff

/**
 * Exponential backoff with "equal jitter": the n-th retry waits between half and all of
 * min(cap, base * factor^n), so retries spread out without ever collapsing to zero.
 * The first retry after a connection that was up is immediate (`firstImmediate`): a dropped
 * socket usually reconnects at once, and the ≤ 3 s recovery target leaves no room to wait.
 */
export class Backoff {
  /** @param {{ baseMs?: number, capMs?: number, factor?: number, firstImmediate?: boolean, random?: () => number }} [options] */
  constructor({ baseMs = 100, capMs = 2000, factor = 2, firstImmediate = true, random = Math.random } = {}) {
    if (!(baseMs > 0) || !(capMs >= baseMs) || !(factor >= 1)) {
      throw new RangeError(`Backoff: expected 0 < baseMs <= capMs and factor >= 1, got baseMs=${baseMs} capMs=${capMs} factor=${factor}`);
    }
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.factor = factor;
    this.firstImmediate = firstImmediate;
    this.random = random;
  }

  /**
   * Delay before retry number `attempt` (0 = the first retry).
   * @param {number} attempt
   * @returns {number}
   */
  delay(attempt) {
    if (attempt === 0 && this.firstImmediate) return 0;
    const n = this.firstImmediate ? attempt - 1 : attempt;
    const ceiling = Math.min(this.capMs, this.baseMs * this.factor ** Math.min(n, 64));
    return ceiling / 2 + this.random() * (ceiling / 2);
  }
}

/**
 * When to (re)connect, and how many connection attempts may be in flight at once.
 *
 * The caller asks `due(now)`; when it says so it calls `begin(now)` (which refuses beyond
 * `maxConcurrent`), then reports `opened(id, now)` or `failed(id, now)`. Attempts that neither
 * opened nor failed within `attemptTimeoutMs` come back from `expired(now)` so the caller can
 * abandon them. A connection counts as stable (resetting the backoff) after `stableMs`.
 */
export class Reconnector {
  /** @param {{ backoff?: Backoff, maxConcurrent?: number, attemptTimeoutMs?: number, stableMs?: number }} [options] */
  constructor({ backoff = new Backoff(), maxConcurrent = 1, attemptTimeoutMs = 5000, stableMs = 5000 } = {}) {
    if (!(maxConcurrent >= 1)) throw new RangeError(`Reconnector: maxConcurrent must be >= 1, got ${maxConcurrent}`);
    this.backoff = backoff;
    this.maxConcurrent = maxConcurrent;
    this.attemptTimeoutMs = attemptTimeoutMs;
    this.stableMs = stableMs;
    this.failures = 0; // consecutive failed attempts since the last stable connection
    this.nextAt = 0; // earliest time the next attempt may start
    /** @type {Map<number, number>} */
    this.inFlight = new Map(); // id -> start time
    /** @type {number | null} */
    this.openedAt = null; // when the current connection opened
    this.reconnects = 0; // connections opened after the first
    this.everOpened = false;
    /** @type {number | null} */
    this.hintMs = null; // a GoAway's retry hint, for the first failure after the move
    this._ids = 0;
  }

  /** May an attempt start now? (connected == false and not at the concurrency cap) */
  /** @param {number} now */
  due(now) {
    return this.openedAt === null && this.inFlight.size < this.maxConcurrent && now >= this.nextAt;
  }

  /** Milliseconds until `due` may turn true (0 when it is already). */
  /** @param {number} now */
  waitMs(now) {
    return Math.max(0, this.nextAt - now);
  }

  /**
   * @param {number} now
   * @returns {number | null} the attempt's id, null at the concurrency cap
   */
  begin(now) {
    if (this.inFlight.size >= this.maxConcurrent) return null;
    const id = ++this._ids;
    this.inFlight.set(id, now);
    return id;
  }

  /**
   * @param {number | null} id
   * @param {number} now
   */
  opened(id, now) {
    if (id !== null) this.inFlight.delete(id);
    if (this.everOpened) this.reconnects += 1;
    this.everOpened = true;
    this.openedAt = now;
  }

  /**
   * An attempt failed (`id`) or the open connection closed (`id` null); returns the delay
   * before the next attempt. Failures only reset once a connection stayed up `stableMs`, so a
   * flapping gateway keeps pushing the delay up instead of being hammered.
   */
  /**
   * @param {number | null} id
   * @param {number} now
   * @returns {number}
   */
  failed(id, now) {
    if (id !== null) this.inFlight.delete(id);
    if (this.openedAt !== null && now - this.openedAt >= this.stableMs) this.failures = 0;
    this.openedAt = null;
    const delay = this.failures === 0 && this.hintMs !== null ? this.hintMs : this.backoff.delay(this.failures);
    this.hintMs = null;
    this.failures += 1;
    this.nextAt = now + delay;
    return delay;
  }

  /**
   * The open connection ended by a planned move (the gateway's GoAway, or its draining close
   * 4100): not a failure. The next attempt may start at once; should it fail, the one after it
   * waits `retryMs` (the gateway's hint).
   * @param {number} now
   * @param {number} retryMs
   */
  moved(now, retryMs) {
    this.openedAt = null;
    this.failures = 0;
    this.nextAt = now;
    this.hintMs = retryMs;
  }

  /** Attempts that have been in flight longer than attemptTimeoutMs (the caller abandons them). */
  /** @param {number} now */
  expired(now) {
    /** @type {number[]} */
    const out = [];
    for (const [id, started] of this.inFlight) {
      if (now - started >= this.attemptTimeoutMs) out.push(id);
    }
    return out;
  }
}

// ------------------------------------------------------------------------------ refcount

/** Which tabs want which keys (groups). A key stays wanted while any tab holds it. */
export class RefCount {
  constructor() {
    /** @type {Map<string, Set<string>>} */
    this.byKey = new Map(); // key -> Set(tab)
    /** @type {Map<string, Set<string>>} */
    this.byTab = new Map(); // tab -> Set(key)
  }

  /** Returns true when `key` went from unwanted to wanted (subscribe upstream). */
  /**
   * @param {string} tab
   * @param {string} key
   */
  add(tab, key) {
    let tabs = this.byKey.get(key);
    const first = tabs === undefined;
    if (tabs === undefined) this.byKey.set(key, (tabs = new Set()));
    tabs.add(tab);
    let keys = this.byTab.get(tab);
    if (keys === undefined) this.byTab.set(tab, (keys = new Set()));
    keys.add(key);
    return first;
  }

  /** Returns true when `key` is no longer wanted by anyone (unsubscribe upstream). */
  /**
   * @param {string} tab
   * @param {string} key
   */
  remove(tab, key) {
    const tabs = this.byKey.get(key);
    if (tabs === undefined || !tabs.delete(tab)) return false;
    this.byTab.get(tab)?.delete(key);
    if (tabs.size === 0) {
      this.byKey.delete(key);
      return true;
    }
    return false;
  }

  /** Forget a tab; returns the keys nobody wants any more. */
  /** @param {string} tab */
  removeTab(tab) {
    const keys = this.byTab.get(tab);
    this.byTab.delete(tab);
    /** @type {string[]} */
    const dropped = [];
    if (keys === undefined) return dropped;
    for (const key of keys) {
      const tabs = this.byKey.get(key);
      if (tabs === undefined) continue;
      tabs.delete(tab);
      if (tabs.size === 0) {
        this.byKey.delete(key);
        dropped.push(key);
      }
    }
    return dropped;
  }

  /** @param {string} key */
  holders(key) {
    return this.byKey.get(key) ?? new Set();
  }

  /** @param {string} tab */
  keysOf(tab) {
    return this.byTab.get(tab) ?? new Set();
  }

  keys() {
    return [...this.byKey.keys()];
  }

  get tabs() {
    return this.byTab.size;
  }
}

// ------------------------------------------------------------------------------ sequences

/**
 * How far a delta may jump past its stream's last sequence and still be believed as a gap
 * (the same bound as xypipe/_md/seqrules.py DEFAULT_MAX_GAP; docs/protocol.md "Sequence rules").
 */
export const MAX_GAP = 256;

/** Verdicts that are never believed: counted, the baseline stays where it was. */
/** @type {ReadonlySet<string>} */
export const REJECTED = new Set(["far_future", "stale_epoch", "future_epoch"]);

/**
 * Judge a delta `{epoch, firstSeq, seq}` against its stream's baseline `[epoch, last]` (null
 * when there is none). The one rule both languages apply (proto/scenarios/sequence.json):
 *   "apply"        – no baseline yet, or same epoch and first = last + 1;
 *   "duplicate"    – same epoch, seq <= last;
 *   "gap"          – same epoch, last + 1 < first <= last + 1 + maxGap (or an overlap): resync;
 *   "far_future"   – same epoch, first beyond last + 1 + maxGap: rejected, re-anchor from a snapshot;
 *   "stale_epoch"  – an older epoch: rejected, nothing else happens;
 *   "future_epoch" – a newer epoch: held until a snapshot of it arrives.
 */
/**
 * @param {[number, number] | null | undefined} baseline
 * @param {number} epoch
 * @param {number} firstSeq
 * @param {number} seq
 * @returns {Verdict}
 */
export function judgeDelta(baseline, epoch, firstSeq, seq, maxGap = MAX_GAP) {
  if (baseline === null || baseline === undefined) return "apply";
  const [baseEpoch, last] = baseline;
  if (epoch < baseEpoch) return "stale_epoch";
  if (epoch > baseEpoch) return "future_epoch";
  const first = firstSeq || seq;
  if (seq <= last) return "duplicate";
  if (first === last + 1) return "apply";
  if (first > last + 1 + maxGap) return "far_future";
  return "gap";
}

/**
 * The gateway's resume rule for one stream `[epoch, firstHeld, last]` (null: unknown shard)
 * and the client's point `[epoch, seq]` (null: none for that stream); "bridged" or the reason
 * the group restarts from a snapshot.
 */
/**
 * @param {[number, number, number] | null | undefined} stream
 * @param {[number, number] | null | undefined} point
 */
export function judgeResume(stream, point) {
  if (stream === null || stream === undefined) return "unknown_shard";
  if (point === null || point === undefined) return "missing_shard";
  const [epoch, firstHeld, last] = stream;
  const [pEpoch, pSeq] = point;
  if (pEpoch !== epoch) return "other_epoch";
  if (pSeq > last) return "ahead";
  if (pSeq + 1 < firstHeld) return "too_old";
  return "bridged";
}

/**
 * Per-(group, shard) epoch and sequence. Classifies each delta with `judgeDelta`:
 *   "apply"        – next in sequence (or the first seen for the stream), apply it;
 *   "duplicate"    – already applied, drop it;
 *   "gap"          – deltas were missed: ask for a snapshot, hold this one;
 *   "far_future"   – implausible jump: drop it (never the baseline) and ask for a snapshot;
 *   "stale_epoch"  – from an aggregator incarnation already replaced: drop it, nothing else;
 *   "future_epoch" – a new aggregator incarnation: ask for a snapshot, hold this one;
 *   "held"         – a snapshot is already on its way for this group: hold the delta until it lands.
 * Held deltas are replayed by `applySnapshot`, which returns those newer than the snapshot.
 */
/**
 * @template {DeltaHead} [D=DeltaHead]
 */
export class SeqTracker {
  /** @param {{ maxHeld?: number, maxGap?: number }} [options] */
  constructor({ maxHeld = 256, maxGap = MAX_GAP } = {}) {
    /** @type {Map<string, { group: string, shard: number, epoch: number, seq: number }>} */
    this.streams = new Map(); // "group\u0000shard" -> {group, shard, epoch, seq}
    /** @type {Map<string, { since: number, held: D[] }>} */
    this.resyncing = new Map(); // group -> {since, held: [delta]}
    this.maxHeld = maxHeld;
    this.maxGap = maxGap;
  }

  /**
   * @param {string} group
   * @param {number} shard
   */
  static key(group, shard) {
    return `${group}\u0000${shard}`;
  }

  /**
   * @param {D} delta
   * @returns {Verdict | "held"}
   */
  check(delta) {
    const group = delta.group;
    const shard = delta.shard ?? 0;
    const seq = num(delta.seq);
    const first = num(delta.firstSeq) || seq;
    const epoch = num(delta.epoch);
    const pending = this.resyncing.get(group);
    const known = this.streams.get(SeqTracker.key(group, shard));
    const verdict = judgeDelta(known === undefined ? null : [known.epoch, known.seq], epoch, first, seq, this.maxGap);
    if (pending !== undefined) {
      if (verdict === "duplicate" || verdict === "stale_epoch") return verdict;
      if (verdict !== "far_future") this._hold(pending, delta);
      return verdict === "far_future" ? verdict : "held";
    }
    if (verdict === "apply") {
      if (known === undefined) this.streams.set(SeqTracker.key(group, shard), { group, shard, epoch, seq });
      else known.seq = seq;
    }
    return verdict;
  }

  /** Start holding the group's deltas until its snapshot arrives (returns false if already). */
  /**
   * @param {string} group
   * @param {number} now
   * @param {D | null} [delta]
   */
  beginResync(group, now, delta = null) {
    let pending = this.resyncing.get(group);
    const fresh = pending === undefined;
    if (pending === undefined) this.resyncing.set(group, (pending = { since: now, held: [] }));
    if (delta !== null) this._hold(pending, delta);
    return fresh;
  }

  /** @param {string} group */
  isResyncing(group) {
    return this.resyncing.has(group);
  }

  /** Groups whose snapshot has not arrived within `timeoutMs` (ask again). */
  /**
   * @param {number} now
   * @param {number} timeoutMs
   */
  overdue(now, timeoutMs) {
    /** @type {string[]} */
    const out = [];
    for (const [group, p] of this.resyncing) {
      if (now - p.since >= timeoutMs) {
        p.since = now;
        out.push(group);
      }
    }
    return out;
  }

  /**
   * @param {{ since: number, held: D[] }} pending
   * @param {D} delta
   */
  _hold(pending, delta) {
    pending.held.push(delta);
    if (pending.held.length > this.maxHeld) pending.held.shift();
  }

  /**
   * A snapshot of `group` arrived: its epoch and per-shard sequences become the baseline.
   * Returns the held deltas that follow it, in order, already accounted for (apply them).
   */
  /**
   * @param {{ group: string, epoch?: Int64, shardSeq?: Record<number, Int64> }} snapshot
   * @returns {D[]}
   */
  applySnapshot(snapshot) {
    const group = snapshot.group;
    const epoch = num(snapshot.epoch);
    for (const [k, s] of [...this.streams]) {
      if (s.group === group) this.streams.delete(k);
    }
    for (const [shard, seq] of Object.entries(snapshot.shardSeq ?? {})) {
      const s = Number(shard);
      this.streams.set(SeqTracker.key(group, s), { group, shard: s, epoch, seq: num(seq) });
    }
    const pending = this.resyncing.get(group);
    this.resyncing.delete(group);
    /** @type {D[]} */
    const follow = [];
    if (pending === undefined) return follow;
    const held = [...pending.held].sort((a, b) => ((a.shard ?? 0) - (b.shard ?? 0)) || (num(a.seq) - num(b.seq)));
    for (const d of held) {
      if (num(d.epoch) !== epoch) continue;
      const verdict = this.check(d);
      if (verdict === "apply") follow.push(d);
      else if (verdict === "gap" || verdict === "far_future") {
        // Still missing deltas between the snapshot and what we held: drop the held rest and
        // ask again; the caller sees the group resyncing.
        this.beginResync(group, pending.since);
        return follow;
      }
    }
    return follow;
  }

  /** @param {string} group */
  forgetGroup(group) {
    for (const [k, s] of [...this.streams]) {
      if (s.group === group) this.streams.delete(k);
    }
    this.resyncing.delete(group);
  }

  /**
   * What to ask for after a reconnect (proto/scenarios/resume.json): `points` to resume the
   * groups this client holds live from, and the groups to `subscribe` afresh (no point held,
   * or waiting for a snapshot). The same rule as xypipe/_md/seqrules.py's SeqTracker.
   */
  /** @param {string[]} groups */
  reconnectPlan(groups) {
    const live = groups.filter((g) => !this.isResyncing(g));
    const points = this.resumePoints(live);
    const resumed = new Set(points.map((p) => p.group));
    return { points, subscribe: groups.filter((g) => !resumed.has(g)) };
  }

  /** Where we stand in every stream of `groups`, for a Resume frame after reconnecting. */
  /** @param {Iterable<string>} groups */
  resumePoints(groups) {
    const wanted = new Set(groups);
    /** @type {{ group: string, shard: number, epoch: number, seq: number }[]} */
    const out = [];
    for (const s of this.streams.values()) {
      if (wanted.has(s.group)) out.push({ group: s.group, shard: s.shard, epoch: s.epoch, seq: s.seq });
    }
    return out;
  }
}

// ------------------------------------------------------------------------------ symbol states

/** A SymbolState (protobuf-es message) as a plain object with JS numbers; what tabs receive. */
/**
 * @param {WireState} s
 * @returns {State}
 */
export function plainState(s) {
  return {
    venue: s.venue,
    symbol: s.symbol,
    seq: num(s.seq),
    tsExchangeUs: num(s.tsExchangeUs),
    tsArrivalUs: num(s.tsArrivalUs),
    last: num(s.last),
    lastSize: num(s.lastSize),
    bids: (s.bids ?? []).map((l) => ({ price: num(l.price), size: num(l.size), orders: l.orders ?? 0 })),
    asks: (s.asks ?? []).map((l) => ({ price: num(l.price), size: num(l.size), orders: l.orders ?? 0 })),
    vol: num(s.vol),
    oi: num(s.oi),
    flags: s.flags ?? 0,
    priceDecimals: s.priceDecimals ?? 0,
    windowHigh: num(s.windowHigh),
    windowLow: num(s.windowLow),
    windowTrades: s.windowTrades ?? 0,
    windowVolume: num(s.windowVolume),
    windowTicks: s.windowTicks ?? 0,
    totalTrades: num(s.totalTrades),
    checksum: s.checksum ?? 0,
    trimmed: Boolean(s.trimmed),
  };
}

/** @param {{ venue: string, symbol: string }} s */
export function symbolKey(s) {
  return `${s.venue}:${s.symbol}`;
}

/** The symbolKey of a wire key "venue.symbol" (Delta.removed). */
/** @param {string} wireKey */
export function removedKey(wireKey) {
  const i = wireKey.indexOf(".");
  return i < 0 ? wireKey : `${wireKey.slice(0, i)}:${wireKey.slice(i + 1)}`;
}

/**
 * Merge a newer state of the same symbol over an older one without hiding a trade (the same
 * rule as the aggregator's and the gateway's merge, xypipe/_md/conflation.py merge_entries):
 * the current-state fields come from the newer entry, the window fields cover both windows
 * (high/low over the windows that traded, trades/volume/ticks summed) and the arrival time is
 * the oldest, so latency is measured from the first tick the merged entry stands for.
 */
/**
 * @param {State} older
 * @param {State} newer
 * @returns {State}
 */
export function mergeState(older, newer) {
  let windowHigh = newer.windowHigh;
  let windowLow = newer.windowLow;
  if (older.windowTrades) {
    if (newer.windowTrades) {
      windowHigh = Math.max(older.windowHigh, newer.windowHigh);
      windowLow = Math.min(older.windowLow, newer.windowLow);
    } else {
      windowHigh = older.windowHigh;
      windowLow = older.windowLow;
    }
  }
  return {
    ...newer,
    tsArrivalUs: older.tsArrivalUs && (!newer.tsArrivalUs || older.tsArrivalUs < newer.tsArrivalUs)
      ? older.tsArrivalUs
      : newer.tsArrivalUs,
    windowHigh,
    windowLow,
    windowTrades: older.windowTrades + newer.windowTrades,
    windowVolume: older.windowVolume + newer.windowVolume,
    windowTicks: older.windowTicks + newer.windowTicks,
  };
}

/**
 * Fold one delta's entries into `symbols` (Map symbolKey -> state) and `removed` (Set of
 * symbolKeys), the rule of xypipe/_md/conflation.py merge_deltas (proto/scenarios/merge.json):
 * removals first (an entry pending for a removed symbol goes, its removal stays), then each
 * entry merges over the one pending for its symbol (mergeState) and clears a removal of it (it
 * came back). With `isStale(prev, s)`, an entry it calls stale is skipped. Returns how many
 * entries merged over a pending one and how many were skipped as stale.
 */
/**
 * @param {Map<string, State>} symbols
 * @param {Set<string>} removed
 * @param {Iterable<string>} removedKeys
 * @param {Iterable<State>} states
 * @param {((prev: State, s: State) => boolean) | null} [isStale]
 */
export function foldEntries(symbols, removed, removedKeys, states, isStale = null) {
  let merged = 0;
  let stale = 0;
  for (const k of removedKeys) {
    symbols.delete(k);
    removed.add(k);
  }
  for (const s of states) {
    const k = symbolKey(s);
    removed.delete(k);
    const prev = symbols.get(k);
    if (prev === undefined) symbols.set(k, s);
    else if (isStale !== null && isStale(prev, s)) stale += 1;
    else {
      symbols.set(k, mergeState(prev, s));
      merged += 1;
    }
  }
  return { merged, stale };
}

/**
 * Consecutive deltas of one (group, shard) stream as one delta: what one longer window would
 * have produced. The same function as xypipe/_md/conflation.py merge_deltas, checked against it
 * by the shared vectors (proto/scenarios/merge.json). Deltas and the result are plain objects:
 * {group, shard, epoch, seq, firstSeq, windowMs, level, tsEmitUs, removed: ["venue.symbol"],
 * symbols: [plainState]}. Throws for no delta, mixed streams or epochs, or a sequence gap
 * (merging must never hide a gap).
 */
/**
 * @param {PlainDelta[]} deltas
 * @returns {PlainDelta & { shard: number, firstSeq: number, symbols: State[], removed: string[] }}
 */
export function mergeDeltas(deltas) {
  if (!deltas.length) throw new RangeError("mergeDeltas: expected at least one delta, got none");
  const first = deltas[0];
  const last = deltas[deltas.length - 1];
  /** @type {Map<string, State>} */
  const symbols = new Map();
  /** @type {Set<string>} */
  const removed = new Set();
  /** @type {Map<string, string>} */
  const wire = new Map(); // symbolKey -> the removed key as it came ("venue.symbol")
  /** @type {PlainDelta | null} */
  let prev = null;
  let windowMs = 0;
  for (const d of deltas) {
    if (d.group !== first.group || (d.shard ?? 0) !== (first.shard ?? 0) || d.epoch !== first.epoch) {
      throw new RangeError(`mergeDeltas: expected deltas of one stream, got ${d.group}/${d.shard ?? 0} epoch ${d.epoch} after ${first.group}/${first.shard ?? 0} epoch ${first.epoch}`);
    }
    const from = d.firstSeq || d.seq;
    if (prev !== null && from !== prev.seq + 1) {
      throw new RangeError(`mergeDeltas: ${d.group}/${d.shard ?? 0}: expected seq ${prev.seq + 1} after ${prev.seq}, got ${from} (a gap cannot be merged)`);
    }
    prev = d;
    windowMs += d.windowMs ?? 0;
    const keys = (d.removed ?? []).map((w) => {
      const k = removedKey(w);
      wire.set(k, w);
      return k;
    });
    foldEntries(symbols, removed, keys, d.symbols ?? []);
  }
  return {
    group: first.group,
    shard: first.shard ?? 0,
    epoch: first.epoch,
    seq: last.seq,
    firstSeq: deltas.length > 1 || first.firstSeq ? (first.firstSeq || first.seq) : 0,
    windowMs,
    level: last.level ?? 0,
    tsEmitUs: last.tsEmitUs ?? 0,
    symbols: [...symbols.values()],
    removed: [...removed].map((k) => wire.get(k) ?? k),
  };
}

/** An entry older than the one pending for its symbol (possible only across streams). */
/** @type {(prev: State, s: State) => boolean} */
const olderThanPending = (prev, s) => s.seq !== 0 && prev.seq !== 0 && s.seq < prev.seq;

/**
 * The batch being built for each group from one gateway frame. Deltas fold into one entry per
 * symbol (foldEntries; an entry older than the one pending is dropped as stale); a snapshot
 * replaces whatever was pending for its group. `drain()` returns one batch per group with
 * something new, and starts over.
 */
export class BatchMerger {
  constructor() {
    /** @type {Map<string, { snapshot: PlainSnapshot | null, symbols: Map<string, State>, removed: Set<string>, deltas: number, minArrivalUs: number, seqs: Record<number, number> }>} */
    this.pending = new Map(); // group -> {snapshot, symbols: Map, removed: Set, deltas, minArrivalUs, seqs}
    this.merged = 0; // symbol entries folded into an existing one (lifetime)
    this.stale = 0; // symbol entries dropped as older than the pending one (lifetime)
  }

  /** @param {string} group */
  _entry(group) {
    let e = this.pending.get(group);
    if (e === undefined) {
      e = { snapshot: null, symbols: new Map(), removed: new Set(), deltas: 0, minArrivalUs: 0, seqs: {} };
      this.pending.set(group, e);
    }
    return e;
  }

  /**
   * `states` are plain states (plainState) of one delta; `removed` the symbolKeys it says left
   * the group (Delta.removed, applied first: a symbol in both came back).
   */
  /**
   * @param {string} group
   * @param {number} shard
   * @param {number} seq
   * @param {State[]} states
   * @param {string[]} [removed]
   */
  addDelta(group, shard, seq, states, removed = []) {
    const e = this._entry(group);
    e.deltas += 1;
    e.seqs[shard] = seq;
    const { merged, stale } = foldEntries(e.symbols, e.removed, removed, states, olderThanPending);
    this.merged += merged;
    this.stale += stale;
    for (const s of states) {
      if (s.tsArrivalUs && (!e.minArrivalUs || s.tsArrivalUs < e.minArrivalUs)) e.minArrivalUs = s.tsArrivalUs;
    }
  }

  /** `snapshot` = {group, version, epoch, symbols: [plain], top, topBy, tsEmitUs}. */
  /**
   * @param {string} group
   * @param {PlainSnapshot} snapshot
   */
  addSnapshot(group, snapshot) {
    const e = this._entry(group);
    e.snapshot = snapshot;
    e.symbols.clear();
    e.removed.clear();
    e.deltas = 0;
    e.minArrivalUs = 0;
  }

  get size() {
    return this.pending.size;
  }

  /** @returns {Batch[]} */
  drain() {
    /** @type {Batch[]} */
    const out = [];
    for (const [group, e] of this.pending) {
      out.push({
        group,
        snapshot: e.snapshot,
        symbols: [...e.symbols.values()],
        removed: [...e.removed],
        deltas: e.deltas,
        minArrivalUs: e.minArrivalUs,
        seqs: e.seqs,
      });
    }
    this.pending.clear();
    return out;
  }
}

/**
 * The live state of one group, kept by the hub so a tab that subscribes to a group another
 * tab already has gets the current view at once instead of waiting for the next snapshot.
 */
export class GroupBook {
  /** @param {string} group */
  constructor(group) {
    this.group = group;
    /** @type {Map<string, State>} */
    this.symbols = new Map();
    /** @type {TopEntry[]} */
    this.top = [];
    this.topBy = "";
    this.version = 0;
    this.epoch = 0;
  }

  /** @param {PlainSnapshot} snap */
  applySnapshot(snap) {
    this.symbols.clear();
    for (const s of snap.symbols) this.symbols.set(symbolKey(s), s);
    this.top = snap.top ?? [];
    this.topBy = snap.topBy ?? "";
    this.version = snap.version ?? 0;
    this.epoch = snap.epoch ?? 0;
  }

  /** Drop symbols that left the group (symbolKeys). */
  /** @param {Iterable<string>} keys */
  remove(keys) {
    for (const k of keys) this.symbols.delete(k);
  }

  /** @param {Iterable<State>} states */
  applyStates(states) {
    for (const s of states) {
      const k = symbolKey(s);
      const prev = this.symbols.get(k);
      this.symbols.set(k, prev === undefined ? s : mergeState(prev, s));
    }
  }

  /**
   * Apply one delta's entries (plain states) after dropping the symbols it says left the group
   * (wire keys "venue.symbol"): a trimmed entry keeps the deeper levels held (keepDepth), every
   * other entry's checksum is verified (proto/scenarios/checksum.json, "apply"). Returns the
   * states as held now, the removed symbolKeys and one verifyChecksum result per entry.
   */
  /**
   * @param {Iterable<string>} removedWire
   * @param {State[]} entries
   */
  applyDelta(removedWire, entries) {
    /** @type {string[]} */
    const removed = [];
    for (const w of removedWire) {
      const k = removedKey(w);
      if (this.symbols.delete(k)) removed.push(k);
    }
    const states = entries.map((s) => keepDepth(this.symbols.get(symbolKey(s)), s));
    const checks = states.map(verifyChecksum);
    this.applyStates(states);
    return { states, removed, checks };
  }

  /**
   * The whole group as a snapshot-shaped object (what a late-joining tab is sent).
   * @returns {PlainSnapshot & { version: number, epoch: number, top: TopEntry[], topBy: string }}
   */
  view() {
    return {
      group: this.group,
      version: this.version,
      epoch: this.epoch,
      symbols: [...this.symbols.values()],
      top: this.top,
      topBy: this.topBy,
      synthetic: true,
    };
  }
}

// ------------------------------------------------------------------------------ checksum

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, as zlib.crc32) of a byte array. */
/** @param {ArrayLike<number>} bytes */
export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const UTF8 = new TextEncoder();

/**
 * The canonical text SymbolState.checksum covers (docs/protocol.md, "Canonical checksum";
 * xypipe/_md/book.py canonical_string):
 *   venue:symbol:seq:last:last_size:vol:oi:flags:total_trades[:bid_px:bid_sz][:ask_px:ask_sz]...
 * the book interleaved level by level (best first), a missing level on one side skipped, every
 * number a base-10 integer (prices are fixed-point).
 */
/** @param {State} s */
export function canonicalState(s) {
  /** @type {(string | number)[]} */
  const parts = [s.venue, s.symbol, s.seq, s.last, s.lastSize, s.vol, s.oi, s.flags, s.totalTrades];
  const nb = s.bids.length;
  const na = s.asks.length;
  for (let i = 0; i < Math.max(nb, na); i++) {
    if (i < nb) parts.push(s.bids[i].price, s.bids[i].size);
    if (i < na) parts.push(s.asks[i].price, s.asks[i].size);
  }
  return parts.join(":");
}

/**
 * "ok", "mismatch", or "skipped" for a trimmed entry (degradation level 2: its checksum covers
 * the full book, which it does not carry). docs/protocol.md: ok = trimmed || crc32 === checksum.
 */
/**
 * @param {State} s
 * @returns {ChecksumResult}
 */
export function verifyChecksum(s) {
  if (s.trimmed) return "skipped";
  return crc32(UTF8.encode(canonicalState(s))) === s.checksum ? "ok" : "mismatch";
}

/**
 * The state to hold for a trimmed entry (best level only): the entry with the deeper levels of
 * the state held before it (docs/protocol.md, "Deltas"). Any other entry is held as it came.
 */
/**
 * @param {State | null | undefined} held
 * @param {State} entry
 * @returns {State}
 */
export function keepDepth(held, entry) {
  if (!entry.trimmed || held === undefined || held === null) return entry;
  return {
    ...entry,
    bids: [...entry.bids, ...held.bids.slice(entry.bids.length)],
    asks: [...entry.asks, ...held.asks.slice(entry.asks.length)],
  };
}

// ------------------------------------------------------------------------------ statistics

/** Nearest-rank percentiles of a list of numbers: percentiles([..], [50, 95, 99]). */
/**
 * @param {ArrayLike<number> & Iterable<number>} values
 * @param {number[]} ps
 */
export function percentiles(values, ps) {
  /** @type {Record<string, number | null>} */
  const out = {};
  if (values.length === 0) {
    for (const p of ps) out[`p${p}`] = null;
    return out;
  }
  const sorted = Float64Array.from(values).sort();
  for (const p of ps) {
    const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    out[`p${p}`] = sorted[rank];
  }
  return out;
}

/**
 * A bounded sample of values between two reports: keeps at most `cap` of them by reservoir
 * sampling (Algorithm R), so a report is representative however many were added.
 */
export class Reservoir {
  constructor(cap = 512, random = Math.random) {
    this.cap = cap;
    this.random = random;
    /** @type {number[]} */
    this.values = [];
    this.seen = 0;
  }

  /** @param {number} v */
  add(v) {
    this.seen += 1;
    if (this.values.length < this.cap) {
      this.values.push(v);
    } else {
      const j = Math.floor(this.random() * this.seen);
      if (j < this.cap) this.values[j] = v;
    }
  }

  drain() {
    const out = this.values;
    this.values = [];
    this.seen = 0;
    return out;
  }
}

/**
 * Maps the local wall clock to the gateway's (microseconds). Each Pong gives one estimate
 * server - (sent + received) / 2; the one with the shortest round trip wins, since its error
 * is bounded by half that round trip.
 */
export class ClockOffset {
  constructor() {
    this.offsetUs = 0;
    this.bestRttUs = Infinity;
    this.samples = 0;
  }

  /**
   * @param {number} sentUs
   * @param {number} receivedUs
   * @param {number} serverUs
   */
  observe(sentUs, receivedUs, serverUs) {
    const rtt = receivedUs - sentUs;
    if (!(rtt >= 0) || !serverUs) return;
    this.samples += 1;
    if (rtt <= this.bestRttUs) {
      this.bestRttUs = rtt;
      this.offsetUs = serverUs - (sentUs + receivedUs) / 2;
    }
  }

  /** Before any Pong: one-way estimate from a server timestamp received now. */
  /**
   * @param {number} receivedUs
   * @param {number} serverUs
   */
  seed(receivedUs, serverUs) {
    if (this.samples === 0 && serverUs) this.offsetUs = serverUs - receivedUs;
  }
}
